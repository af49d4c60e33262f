// Building the model sets of a test: adapters from configurations, the pointers a decoder
// takes, the vocabulary sizes a session takes.
#pragma once

#include <cstddef>  // std::size_t
#include <vector>   // std::vector

#include "models/synthetic_model.hpp"

namespace cospec::testing {

/// One adapter per configuration, each constructed from it.
template <class Model = examples::synthetic_model, class Config = examples::synthetic_model_config>
std::vector<Model> models_of(const std::vector<Config>& configs) {
  std::vector<Model> models;
  models.reserve(configs.size());
  for (const auto& config : configs) models.emplace_back(config);
  return models;
}

/// The addresses of `models`, as decoders take them (valid while the vector does not grow).
template <class Model>
std::vector<Model*> pointers(std::vector<Model>& models) {
  std::vector<Model*> result;
  for (auto& model : models) result.push_back(&model);
  return result;
}

template <class Model>
std::vector<std::size_t> vocabulary_sizes(const std::vector<Model>& models) {
  std::vector<std::size_t> sizes;
  for (const auto& model : models) sizes.push_back(model.vocabulary_size());
  return sizes;
}

}  // namespace cospec::testing

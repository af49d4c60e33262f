// The computation both units of the mixed-flags test run (tests/mixed_flags/unit_results.hpp).
// Included by each unit inside an anonymous namespace, so that each unit keeps its own copy of
// this function rather than one copy chosen by the linker.
#pragma once

#include <cmath>    // std::sin, std::cos
#include <cstddef>  // std::size_t
#include <span>     // std::span
#include <vector>   // std::vector

#include "cospec/cospec.hpp"
#include "models/synthetic_model.hpp"
#include "mixed_flags/unit_results.hpp"

namespace {

cospec::testing::unit_results compute_unit_results() {
  namespace kernels = cospec::kernels;
  cospec::testing::unit_results results;
  results.baseline = COSPEC_KERNELS_BASELINE;

  constexpr std::size_t size = 1237;  // not a multiple of any lane count: tails everywhere
  std::vector<float> a(size), b(size), out(size), weights(size);
  for (std::size_t j = 0; j < size; ++j) {
    a[j] = 9.0f * std::sin(0.37f * static_cast<float>(j));
    b[j] = 7.0f * std::cos(0.11f * static_cast<float>(j) + 1.0f);
  }
  auto keep = [&](std::span<const float> row) { results.floats.insert(results.floats.end(), row.begin(), row.end()); };

  results.floats.push_back(kernels::log_sum_exp(a, 0.7f));
  results.indices.push_back(kernels::max_argmax(b).index);
  const kernels::exp_row_stats stats = kernels::softmax(a, out, 1.3f);
  results.floats.push_back(stats.sum);
  keep(out);
  kernels::softmax(b, weights, 1.0f);
  results.floats.push_back(kernels::residual(out, weights, b));
  keep(b);
  const std::span<const float> rows[] = {a, weights};
  const float two_weights[] = {0.25f, -0.75f};
  kernels::linear_combination(rows, two_weights, out, 2.0f);
  keep(out);
  kernels::mixture(rows, two_weights, out);
  keep(out);
  for (double u : {0.0, 0.1, 0.5, 0.9, 0.999}) results.indices.push_back(kernels::sample_inverse_cdf(weights, u, 1.0));

  using cospec::examples::synthetic_model;
  synthetic_model small({.vocabulary_size = 300, .own_seed = 1, .agreement = 0.7});
  synthetic_model large({.vocabulary_size = 300, .own_seed = 2, .agreement = 0.7});
  std::vector<synthetic_model*> models{&small, &large};
  for (float temperature : {1.0f, 0.0f}) {
    cospec::sampling_settings sampling;
    sampling.temperature = temperature;
    sampling.seed = 7;
    cospec::decoder decoder(models, cospec::weighted_ensemble({0.5f, 0.5f}), cospec::alternating({3, 1}), sampling);
    cospec::generation_limits limits;
    limits.max_new_tokens = 48;
    const cospec::generation_result result = decoder.generate(std::vector<cospec::token_id>{1, 2, 3}, limits);
    results.tokens.insert(results.tokens.end(), result.tokens.begin(), result.tokens.end());
  }
  return results;
}

}  // namespace

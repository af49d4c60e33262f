// The weights of a llama-architecture transformer, laid out for the batched products of
// batched_matmul.hpp: every matrix row-major (output rows × input columns, as llama2.c stores
// them), with the projections that read the same input stacked into one matrix so that one
// pass over memory serves them all.
#pragma once

#include <cstddef>    // std::size_t
#include <stdexcept>  // std::invalid_argument
#include <string>     // std::string, std::to_string
#include <vector>     // std::vector

#include "transformer/eigen_core.hpp"

#include "transformer/config.hpp"

namespace cospec::examples::llama {

/// A row-major float matrix: row r is the weights of output r.
using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// One transformer block.
struct layer_weights {
  Eigen::VectorXf attention_norm;  ///< dim
  /// (dim + 2 kv_dim) × dim: the query rows (dim), then the key rows (kv_dim), then the value rows.
  row_matrix qkv;
  row_matrix attention_output;  ///< dim × dim (llama2.c's wo)
  Eigen::VectorXf ffn_norm;     ///< dim
  /// 2 hidden_dim × dim: the gate rows (llama2.c's w1), then the up rows (w3).
  row_matrix gate_up;
  row_matrix down;  ///< dim × hidden_dim (llama2.c's w2)
};

/// Everything a forward pass reads. Immutable once built and shared by every model instance
/// (and early-exit draft) that uses it.
struct transformer_weights {
  transformer_config config;
  row_matrix embedding;  ///< vocab_size × dim
  std::vector<layer_weights> layers;
  Eigen::VectorXf final_norm;  ///< dim
  row_matrix classifier;       ///< vocab_size × dim; empty when config.shared_classifier

  /// The unembedding: the embedding itself when tied.
  [[nodiscard]] const row_matrix& output_classifier() const noexcept {
    return config.shared_classifier ? embedding : classifier;
  }

  /// Throws std::invalid_argument naming the first matrix whose shape is not the one config
  /// gives it (or an invalid config): a forward pass or a writer trusts the shapes, and a
  /// wrong one would read past a matrix. `what` prefixes the message.
  void validate(const std::string& what = "llama transformer weights") const {
    config.validate();
    auto require = [&](const auto& matrix, std::size_t rows, std::size_t columns, const std::string& name) {
      if (static_cast<std::size_t>(matrix.rows()) != rows || static_cast<std::size_t>(matrix.cols()) != columns)
        throw std::invalid_argument(what + ": " + name + " is " + std::to_string(matrix.rows()) + "x" +
                                    std::to_string(matrix.cols()) + ", its config requires " + std::to_string(rows) +
                                    "x" + std::to_string(columns));
    };
    const std::size_t dim = config.dim;
    const std::size_t hidden = config.hidden_dim;
    require(embedding, config.vocab_size, dim, "the embedding");
    if (layers.size() != config.n_layers)
      throw std::invalid_argument(what + ": " + std::to_string(layers.size()) + " layers, config has " +
                                  std::to_string(config.n_layers));
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const layer_weights& layer = layers[l];
      const std::string name = "layer " + std::to_string(l) + " ";
      require(layer.attention_norm, dim, 1, name + "attention_norm");
      require(layer.qkv, dim + 2 * config.kv_dim(), dim, name + "qkv");
      require(layer.attention_output, dim, dim, name + "attention_output");
      require(layer.ffn_norm, dim, 1, name + "ffn_norm");
      require(layer.gate_up, 2 * hidden, dim, name + "gate_up");
      require(layer.down, dim, hidden, name + "down");
    }
    require(final_norm, dim, 1, "final_norm");
    if (!config.shared_classifier) require(classifier, config.vocab_size, dim, "the classifier");
  }

  /// Zero-filled weights of the right shapes for a validated config.
  static transformer_weights zeros(const transformer_config& config) {
    config.validate();
    transformer_weights w;
    w.config = config;
    const auto dim = static_cast<Eigen::Index>(config.dim);
    const auto hidden = static_cast<Eigen::Index>(config.hidden_dim);
    const auto kv_dim = static_cast<Eigen::Index>(config.kv_dim());
    const auto vocab = static_cast<Eigen::Index>(config.vocab_size);
    w.embedding = row_matrix::Zero(vocab, dim);
    w.layers.resize(config.n_layers);
    for (layer_weights& layer : w.layers) {
      layer.attention_norm = Eigen::VectorXf::Zero(dim);
      layer.qkv = row_matrix::Zero(dim + 2 * kv_dim, dim);
      layer.attention_output = row_matrix::Zero(dim, dim);
      layer.ffn_norm = Eigen::VectorXf::Zero(dim);
      layer.gate_up = row_matrix::Zero(2 * hidden, dim);
      layer.down = row_matrix::Zero(dim, hidden);
    }
    w.final_norm = Eigen::VectorXf::Zero(dim);
    if (!config.shared_classifier) w.classifier = row_matrix::Zero(vocab, dim);
    return w;
  }
};

}  // namespace cospec::examples::llama

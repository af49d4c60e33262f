// The weights of a llama-architecture transformer, laid out for the batched products of
// batched_matmul.hpp: every matrix row-major (output rows × input columns, as llama2.c stores
// them), with the projections that read the same input stacked into one matrix so that one
// pass over memory serves them all.
#pragma once

#include <cstddef>  // std::size_t
#include <vector>   // std::vector

#include <Eigen/Core>

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

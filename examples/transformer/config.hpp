// The shape of a llama-architecture transformer: the seven numbers of a llama2.c checkpoint
// header plus what that format leaves implicit (classifier sharing, RoPE base, norm epsilon).
#pragma once

#include <cstddef>    // std::size_t
#include <stdexcept>  // std::invalid_argument
#include <string>     // std::string, std::to_string

namespace cospec::examples::llama {

/// Hyperparameters. The defaults of rope_theta and norm_epsilon are llama2.c's.
struct transformer_config {
  std::size_t dim = 0;           ///< width of the residual stream
  std::size_t hidden_dim = 0;    ///< width of the SwiGLU feed-forward layer
  std::size_t n_layers = 0;
  std::size_t n_heads = 0;       ///< query heads; head size = dim / n_heads
  std::size_t n_kv_heads = 0;    ///< key/value heads (grouped-query attention when < n_heads)
  std::size_t vocab_size = 0;
  std::size_t seq_len = 0;       ///< the largest context a KV cache holds
  bool shared_classifier = true; ///< unembedding tied to the token embedding
  float rope_theta = 10000.0f;
  float norm_epsilon = 1e-5f;

  [[nodiscard]] std::size_t head_size() const noexcept { return n_heads == 0 ? 0 : dim / n_heads; }
  [[nodiscard]] std::size_t kv_dim() const noexcept { return n_kv_heads * head_size(); }

  /// Parameters of one layer: two norms, q/k/v/o projections, three feed-forward matrices.
  [[nodiscard]] std::size_t layer_parameters() const noexcept {
    return 2 * dim + dim * dim + 2 * dim * kv_dim() + dim * dim + 3 * dim * hidden_dim;
  }

  /// Every parameter, the embedding and (when not shared) the classifier included.
  [[nodiscard]] std::size_t parameter_count() const noexcept {
    const std::size_t embedding = vocab_size * dim;
    return embedding + n_layers * layer_parameters() + dim + (shared_classifier ? 0 : embedding);
  }

  /// Parameters one forward pass through the first `layers` layers reads per token: the
  /// layers, the final norm and the classifier (one embedding row is negligible and not
  /// counted). What makes a pass memory-bound.
  [[nodiscard]] std::size_t parameters_read(std::size_t layers) const noexcept {
    return layers * layer_parameters() + dim + vocab_size * dim;
  }

  /// Throws std::invalid_argument naming the first inconsistency.
  void validate() const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("llama transformer config: " + what); };
    if (dim == 0 || hidden_dim == 0 || n_layers == 0 || n_heads == 0 || n_kv_heads == 0 || vocab_size == 0 ||
        seq_len == 0)
      fail("every size must be positive");
    if (dim % n_heads != 0)
      fail("dim (" + std::to_string(dim) + ") is not a multiple of n_heads (" + std::to_string(n_heads) + ")");
    if (n_heads % n_kv_heads != 0)
      fail("n_heads (" + std::to_string(n_heads) + ") is not a multiple of n_kv_heads (" +
           std::to_string(n_kv_heads) + ")");
    if (head_size() % 2 != 0) fail("the head size must be even for rotary embeddings");
    if (!(rope_theta > 1.0f)) fail("rope_theta must be greater than 1");
    if (!(norm_epsilon > 0.0f)) fail("norm_epsilon must be positive");
  }
};

}  // namespace cospec::examples::llama

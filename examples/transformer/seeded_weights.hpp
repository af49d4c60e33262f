// Transformer weights built from a seed, for tests, benchmarks and the demo when no
// checkpoint is at hand. Random weights do not make a language model, but they make a network
// whose layers refine one residual stream, which is what an early-exit draft needs: the scale
// each block adds to the stream (`block_scale`) decides how far the full network's prediction
// moves from its first layers', and so the acceptance rate of such a draft
// (docs/benchmarks.md, "Transformer", says how the demo's value was chosen).
#pragma once

#include <cmath>    // std::sqrt
#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint64_t, std::uint32_t

#include "transformer/weights.hpp"

namespace cospec::examples::llama {

/// Scales of the random weights (uniform, zero mean, the standard deviations below).
struct seeded_weights_options {
  std::uint64_t seed = 1;
  /// Standard deviation of the token embeddings: the residual stream's starting scale.
  float embedding_scale = 1.0f;
  /// Each block's output projections (wo, w2) are scaled so that a block adds about this much
  /// RMS to the residual stream relative to the embedding: small values make later layers
  /// refine rather than replace the first layers' prediction.
  float block_scale = 0.1f;
  /// Standard deviation of the logits for a unit-RMS final state: larger is more confident.
  /// Only for an unshared classifier; a tied one is the embedding, whose scale then sets it.
  float logit_scale = 4.0f;
};

namespace detail {

// splitmix64: a seeded stream per matrix, so weights do not depend on fill order.
struct splitmix64 {
  std::uint64_t state;
  std::uint64_t next() noexcept {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
};

template <class Matrix>
void fill_uniform(Matrix& matrix, float standard_deviation, std::uint64_t seed, std::uint64_t stream) {
  splitmix64 random{seed * 0x100000001b3ULL + stream * 0x9e3779b97f4a7c15ULL};
  // Uniform on [-a, a] has standard deviation a / sqrt(3).
  const float half_width = standard_deviation * std::sqrt(3.0f);
  float* data = matrix.data();
  const auto size = static_cast<std::size_t>(matrix.size());
  for (std::size_t i = 0; i < size; i += 2) {
    const std::uint64_t bits = random.next();
    data[i] = half_width * (static_cast<float>(static_cast<std::uint32_t>(bits) >> 8) * 0x1p-23f - 1.0f);
    if (i + 1 < size) data[i + 1] = half_width * (static_cast<float>(static_cast<std::uint32_t>(bits >> 32) >> 8) * 0x1p-23f - 1.0f);
  }
}

}  // namespace detail

/// Weights for `config` drawn from `options.seed`; norms are 1. Same seed, same weights.
inline transformer_weights seeded_weights(const transformer_config& config, const seeded_weights_options& options) {
  transformer_weights w = transformer_weights::zeros(config);
  const auto dim = static_cast<float>(config.dim);
  const auto hidden = static_cast<float>(config.hidden_dim);
  const std::uint64_t seed = options.seed;
  std::uint64_t stream = 0;
  detail::fill_uniform(w.embedding, options.embedding_scale, seed, stream++);
  // Inputs of every product are unit-RMS after a norm: entries of 1/sqrt(fan_in) keep outputs
  // unit-RMS; the output projections add block_scale * embedding_scale to the stream (SwiGLU's
  // output has about half the RMS of its inputs, hence the factor 2 on w2).
  const float residual = options.block_scale * options.embedding_scale;
  for (layer_weights& layer : w.layers) {
    layer.attention_norm.setOnes();
    layer.ffn_norm.setOnes();
    detail::fill_uniform(layer.qkv, 1.0f / std::sqrt(dim), seed, stream++);
    detail::fill_uniform(layer.attention_output, residual / std::sqrt(dim), seed, stream++);
    detail::fill_uniform(layer.gate_up, 1.0f / std::sqrt(dim), seed, stream++);
    detail::fill_uniform(layer.down, 2.0f * residual / std::sqrt(hidden), seed, stream++);
  }
  w.final_norm.setOnes();
  if (!config.shared_classifier) detail::fill_uniform(w.classifier, options.logit_scale / std::sqrt(dim), seed, stream++);
  return w;
}

}  // namespace cospec::examples::llama

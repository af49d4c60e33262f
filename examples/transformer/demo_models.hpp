// The models of the transformer demos (cospec-transformer, cospec-transformer-serve): a
// large network and its draft, from llama2.c checkpoints or built from a seed, and the line
// each demo prints about them.
#pragma once

#include <chrono>   // std::chrono::steady_clock
#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint64_t
#include <cstdio>   // std::printf
#include <memory>   // std::shared_ptr, std::make_shared
#include <random>   // std::mt19937_64
#include <string>   // std::string
#include <vector>   // std::vector

#include <cospec/token.hpp>

#include "transformer/checkpoint.hpp"
#include "transformer/seeded_weights.hpp"
#include "transformer/thread_team.hpp"

namespace cospec::examples::llama {

/// Where the two models come from.
struct model_source {
  std::string checkpoint;        // the large model; empty: seed-built
  std::string draft_checkpoint;  // the small model; empty: early exit of the large one
  std::size_t draft_layers = 2;
  std::uint64_t seed = 1;
  float block_scale = 0.1f;
  bool quick = false;  // an 8M-parameter seed-built network instead of the 200M one
};

/// The seed-built network: 200M parameters (12 layers, dim 1024; its weights fit in no cache,
/// so a pass is memory-bound as on a GPU), or 8M for tests.
inline transformer_config seeded_config(bool quick) {
  transformer_config config;
  config.dim = quick ? 256 : 1024;
  config.hidden_dim = quick ? 688 : 2816;
  config.n_layers = quick ? 8 : 12;
  config.n_heads = quick ? 8 : 16;
  config.n_kv_heads = 4;
  config.vocab_size = quick ? 4096 : 32000;
  config.seq_len = 1024;
  config.shared_classifier = false;
  return config;
}

struct model_pair {
  std::shared_ptr<const transformer_weights> large;
  std::shared_ptr<const transformer_weights> small;  // == large for an early-exit draft
  std::size_t small_layers = 0;
};

inline model_pair load_models(const model_source& source) {
  model_pair pair;
  if (!source.checkpoint.empty()) {
    pair.large = std::make_shared<const transformer_weights>(load_checkpoint(source.checkpoint));
  } else {
    seeded_weights_options seeded;
    seeded.seed = source.seed;
    seeded.block_scale = source.block_scale;
    pair.large = std::make_shared<const transformer_weights>(seeded_weights(seeded_config(source.quick), seeded));
  }
  if (!source.draft_checkpoint.empty()) {
    pair.small = std::make_shared<const transformer_weights>(load_checkpoint(source.draft_checkpoint));
    pair.small_layers = pair.small->config.n_layers;
  } else {
    pair.small = pair.large;
    pair.small_layers = source.draft_layers;
  }
  return pair;
}

/// Prints what the models are, how much each pass reads and how long building took.
inline void print_models(const model_pair& pair, const model_source& source, const thread_team& team,
                         std::chrono::steady_clock::time_point building) {
  const transformer_config& large = pair.large->config;
  std::printf("large model: %zu layers, dim %zu, hidden %zu, %zu/%zu heads, vocabulary %zu: %.0fM parameters (%s)\n",
              large.n_layers, large.dim, large.hidden_dim, large.n_heads, large.n_kv_heads, large.vocab_size,
              static_cast<double>(large.parameter_count()) / 1e6,
              source.checkpoint.empty() ? "built from a seed" : source.checkpoint.c_str());
  if (pair.small == pair.large)
    std::printf("small model: its first %zu layers, then its final norm and classifier (early exit, shared weights)\n",
                pair.small_layers);
  else
    std::printf("small model: %s, %zu layers, dim %zu\n", source.draft_checkpoint.c_str(), pair.small_layers,
                pair.small->config.dim);
  std::printf("per-token weights read: large %.0f MB, small %.0f MB; %zu threads; built in %.1f s\n",
              4e-6 * static_cast<double>(large.parameters_read(large.n_layers)),
              4e-6 * static_cast<double>(pair.small->config.parameters_read(pair.small_layers)), team.size(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - building).count());
}

/// `count` prompts of 8 random tokens.
inline std::vector<std::vector<token_id>> random_prompts(std::size_t count, std::size_t vocabulary,
                                                         std::uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<std::vector<token_id>> prompts;
  for (std::size_t p = 0; p < count; ++p) {
    std::vector<token_id> prompt(8);
    for (token_id& token : prompt) token = static_cast<token_id>(random() % vocabulary);
    prompts.push_back(prompt);
  }
  return prompts;
}

}  // namespace cospec::examples::llama

// A synthetic language model for tests, sweeps and demos: context-dependent logits from a
// hash of the last few tokens, with a dial for how much two models agree.
#pragma once

#include <cmath>    // std::sqrt, std::log, std::cos
#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint64_t
#include <span>     // std::span
#include <vector>   // std::vector

#include <cospec/adapters/model_adapter.hpp>
#include <cospec/token.hpp>

namespace cospec::examples {

/// What a synthetic model computes.
struct synthetic_model_config {
  std::size_t vocabulary_size = 6;
  std::size_t window = 2;          ///< how many previous tokens the logits depend on
  std::uint64_t shared_seed = 1;   ///< the part of the logits every model with this seed shares
  std::uint64_t own_seed = 2;      ///< this model's private part
  double agreement = 0.5;          ///< 0: independent models, 1: identical to the shared part
  double sharpness = 2.0;          ///< scale of the logits: larger is more confident
  /// With segment_length > 0, the text alternates between segments of this many positions
  /// at `agreement` (easy) and at `hard_agreement` (hard), starting easy: a workload whose
  /// predictability changes over the run, like boilerplate followed by reasoning.
  std::size_t segment_length = 0;
  double hard_agreement = 0.0;
  /// With copy > 0, the token that followed the most recent earlier occurrence of the
  /// context's last two tokens gets copy * sharpness added to its logit: a model that quotes
  /// its context, as summaries, answers about a document and code edits do (what proposals
  /// from the context exploit).
  double copy = 0.0;
};

/// logits(t | context) = sharpness * (agreement * g(shared, context, t) + (1 - agreement) * g(own, context, t)),
/// with g a deterministic standard-normal-like hash of the last `window` tokens. Two models
/// with the same shared seed agree more as `agreement` grows. A complete ModelAdapter.
class synthetic_model {
 public:
  explicit synthetic_model(synthetic_model_config config) : config_(config) {}

  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return config_.vocabulary_size; }
  [[nodiscard]] std::size_t context_length() const noexcept { return context_.size(); }
  [[nodiscard]] const synthetic_model_config& config() const noexcept { return config_; }

  void feed(std::span<const token_id> tokens, logit_outputs rows) {
    const std::size_t first_row = tokens.size() - rows.size();
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      context_.push_back(tokens[i]);
      if (i >= first_row) logits_for_context(rows[i - first_row]);
    }
  }

  void truncate(std::size_t length) { context_.resize(length); }

  /// The logits after the current context, computed directly (for reference decoders).
  void logits_for_context(std::span<float> out) const {
    const std::uint64_t key = context_key();
    const bool hard = config_.segment_length > 0 && (context_.size() / config_.segment_length) % 2 == 1;
    const double agreement = hard ? config_.hard_agreement : config_.agreement;
    for (std::size_t t = 0; t < config_.vocabulary_size; ++t) {
      const double shared = gaussian(config_.shared_seed, key, t);
      const double own = gaussian(config_.own_seed, key, t);
      out[t] = static_cast<float>(config_.sharpness * (agreement * shared + (1.0 - agreement) * own));
    }
    if (config_.copy > 0.0 && context_.size() >= 3) {
      const std::size_t n = context_.size();
      for (std::size_t i = n - 2; i-- > 0;)
        if (context_[i] == context_[n - 2] && context_[i + 1] == context_[n - 1]) {
          if (i + 2 < n) out[static_cast<std::size_t>(context_[i + 2])] += static_cast<float>(config_.copy * config_.sharpness);
          break;
        }
    }
  }

 private:
  [[nodiscard]] std::uint64_t context_key() const noexcept {
    std::uint64_t key = 0x51ed270b27d0f3a5ULL;
    const std::size_t n = context_.size();
    const std::size_t start = n > config_.window ? n - config_.window : 0;
    for (std::size_t i = start; i < n; ++i) key = mix(key ^ static_cast<std::uint64_t>(context_[i] + 1));
    return mix(key ^ (n - start));
  }

  static std::uint64_t mix(std::uint64_t z) noexcept {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  /// Box-Muller from two hashed uniforms.
  static double gaussian(std::uint64_t seed, std::uint64_t key, std::size_t token) noexcept {
    const std::uint64_t a = mix(seed ^ mix(key ^ (token * 2 + 1)));
    const std::uint64_t b = mix(a);
    const double u1 = (static_cast<double>(a >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

  synthetic_model_config config_;
  std::vector<token_id> context_;
};

}  // namespace cospec::examples

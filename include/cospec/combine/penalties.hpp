// Repetition, frequency and presence penalties with llama.cpp's semantics, on a row of
// logits (docs/combiners.md, "Penalties").
//
// For every token t that occurs c > 0 times in the window (the last `last_n` tokens of the
// text before the position, prompt included), its logit l becomes
//     l' = (l > 0 ? l / repeat : l * repeat) - c * frequency - presence
// and every other logit is left as it is. This is llama.cpp's penalties sampler
// (src/llama-sampling.cpp, llama_sampler_penalties_apply), with the window that its main
// example and server fill by accepting the prompt and then each sampled token. Other
// engines differ in which tokens they count:
//  - Hugging Face transformers (RepetitionPenaltyLogitsProcessor) has the repetition penalty
//    only, over every token of the input ids (the prompt included) with no window; it
//    multiplies scores < 0 and divides the others, which gives the same result, as 0 * r and
//    0 / r are both 0.
//  - vLLM applies the repetition penalty to tokens of the prompt or of the output, and the
//    frequency and presence penalties to tokens of the output only (OpenAI's definition),
//    with no window; it also limits frequency and presence to [-2, 2], which is not done here.
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::clamp, std::min
#include <cmath>      // std::isfinite
#include <cstddef>    // std::size_t
#include <cstdint>    // std::int64_t, std::uint64_t
#include <limits>     // std::numeric_limits
#include <span>       // std::span
#include <string>     // std::string, std::to_string
#include <vector>     // std::vector

#include "cospec/errors.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// The penalties on tokens that already occur in the text (docs/combiners.md, "Penalties").
/// The defaults are llama.cpp's and penalise nothing.
struct penalty_settings {
  /// A repeated token's logit l becomes l / repeat if l > 0, l * repeat otherwise, once
  /// however often the token occurs. Finite and > 0; 1 disables it, > 1 discourages
  /// repetition, < 1 encourages it.
  float repeat = 1.0f;
  /// Subtracted from a repeated token's logit once per occurrence in the window. Finite; 0
  /// disables it, a negative value encourages repetition.
  float frequency = 0.0f;
  /// Subtracted once from the logit of every token that occurs in the window. Finite; 0
  /// disables it.
  float presence = 0.0f;
  /// The window: how many of the most recent tokens of the text before the position are
  /// counted (the prompt's included). 0 disables every penalty; -1 counts the whole text
  /// (llama.cpp's "context size", which the text never exceeds). >= -1.
  std::int64_t last_n = 64;

  /// Whether the penalties can change a logit: false if the window is disabled or all three
  /// penalties are neutral, the cases llama.cpp's sampler returns from without reading the row.
  [[nodiscard]] bool active() const noexcept {
    return last_n != 0 && (repeat != 1.0f || frequency != 0.0f || presence != 0.0f);
  }
};

/// Throws invalid_configuration naming the first setting that can never work.
inline void validate(const penalty_settings& settings) {
  // A repeat penalty of 0 would turn positive logits into +inf, a negative one would swap
  // the order of the tokens it touches.
  if (!(settings.repeat > 0.0f) || !std::isfinite(settings.repeat))
    throw invalid_configuration("penalties: repeat must be finite and > 0 (1 disables it), got " +
                                std::to_string(settings.repeat));
  if (!std::isfinite(settings.frequency))
    throw invalid_configuration("penalties: frequency must be finite (0 disables it), got " +
                                std::to_string(settings.frequency));
  if (!std::isfinite(settings.presence))
    throw invalid_configuration("penalties: presence must be finite (0 disables it), got " +
                                std::to_string(settings.presence));
  if (settings.last_n < -1)
    throw invalid_configuration(
        "penalties: last_n must be >= -1 (0 disables the penalties, -1 counts the whole text), got " +
        std::to_string(settings.last_n));
}

/// Applies one set of penalty_settings to logit rows, one position at a time, from the text
/// before each position. Stateless between calls apart from its workspace: the counts are
/// recomputed from the window at every call, so the text may grow, shrink or change (a
/// rejected proposal) between calls.
///
/// Workspace: one count per token of the vocabulary, all zero between calls. A call sets the
/// counts of the window's tokens and clears exactly those again, so it costs O(window) —
/// O(min(last_n, text size)) — whatever the vocabulary size, and allocates nothing once the
/// workspace has the row's length (given at construction, or grown by the first call with a
/// longer row).
class token_penalties {
 public:
  token_penalties() = default;

  /// Validates `settings` (invalid_configuration) and sizes the workspace for rows of
  /// `vocabulary_size` logits (0: at the first call). Allocates.
  explicit token_penalties(const penalty_settings& settings, std::size_t vocabulary_size = 0)
      : settings_(settings) {
    validate(settings_);
    counts_.resize(vocabulary_size);
  }

  [[nodiscard]] const penalty_settings& settings() const noexcept { return settings_; }

  /// Replaces the settings (validated first; on a throw nothing changes) and keeps the
  /// workspace.
  void set_settings(const penalty_settings& settings) {
    validate(settings);
    settings_ = settings;
  }

  /// How many per-token counts the workspace holds: the longest row seen or the vocabulary
  /// size given at construction, whichever is larger.
  [[nodiscard]] std::size_t workspace_size() const noexcept { return counts_.size(); }

  /// Penalises `logits` (one row of V logits) in place for the window of
  /// `text_before_position`. Finite logits stay finite (a result beyond float's range is
  /// clamped to +-FLT_MAX); -inf stays -inf, a mask whatever the penalty; NaN and +inf are
  /// left for the caller's checks to report, as merged_logit_bias does. Each result is
  /// computed in double and rounded once, so it may differ from llama.cpp's float arithmetic
  /// in the last bit.
  ///
  /// Throws usage_error if a token of the window is outside [0, V) (the decoder rejects such
  /// prompts before any model runs, so this is a caller's bug); the row and the workspace are
  /// then unchanged. Tokens before the window are not read. Does nothing, reading neither
  /// argument, when !settings().active().
  ///
  /// Complexity: two passes over the window. Allocates only when V exceeds workspace_size().
  void apply(std::span<const token_id> text_before_position, std::span<float> logits) {
    if (!settings_.active()) return;
    const std::span<const token_id> window = window_of(text_before_position);
    if (window.empty()) return;
    if (counts_.size() < logits.size()) counts_.resize(logits.size());
    count_window(window, text_before_position.size() - window.size(), logits.size());
    // The first visit of each distinct token penalises it and clears its count, so a token
    // is penalised once whatever its count, and the workspace is all zero again afterwards.
    for (const token_id token : window) {
      std::size_t& count = counts_[static_cast<std::size_t>(token)];
      if (count == 0) continue;
      float& logit = logits[static_cast<std::size_t>(token)];
      logit = penalised(logit, count);
      count = 0;
    }
  }

 private:
  static constexpr double largest_float = std::numeric_limits<float>::max();

  /// The last `last_n` tokens of the text, or all of it for -1 (settings_ is valid and active).
  [[nodiscard]] std::span<const token_id> window_of(std::span<const token_id> text) const noexcept {
    if (settings_.last_n < 0) return text;
    const auto last_n = static_cast<std::uint64_t>(settings_.last_n);
    return text.last(static_cast<std::size_t>(std::min<std::uint64_t>(last_n, text.size())));
  }

  /// Counts the window's tokens; on a token outside the row, clears what it counted and
  /// throws. `offset`: the window's first index in the text, for the message.
  void count_window(std::span<const token_id> window, std::size_t offset, std::size_t row_size) {
    for (std::size_t i = 0; i < window.size(); ++i) {
      const token_id token = window[i];
      if (token < 0 || static_cast<std::size_t>(token) >= row_size) {
        for (std::size_t j = 0; j < i; ++j) counts_[static_cast<std::size_t>(window[j])] = 0;
        throw usage_error("penalties: token " + std::to_string(token) + " at index " + std::to_string(offset + i) +
                          " of the text is outside the logit row of " + std::to_string(row_size));
      }
      ++counts_[static_cast<std::size_t>(token)];
    }
  }

  /// The penalised logit of a token that occurs `count` > 0 times in the window.
  [[nodiscard]] float penalised(float logit, std::size_t count) const noexcept {
    if (!std::isfinite(logit)) return logit;
    double value = logit;
    // Dividing a negative logit by a penalty > 1 would raise it, making the token more likely
    // (the rule of the CTRL paper, which llama.cpp, HF and vLLM all correct this way).
    value = value > 0.0 ? value / settings_.repeat : value * settings_.repeat;
    // In double: count * frequency neither overflows nor loses the count's low bits, and a
    // finite logit cannot become -inf (a mask no penalty is meant to be) or +inf, as in float.
    value -= static_cast<double>(count) * settings_.frequency + static_cast<double>(settings_.presence);
    return static_cast<float>(std::clamp(value, -largest_float, largest_float));
  }

  penalty_settings settings_;
  std::vector<std::size_t> counts_;  // per token; all zero between calls
};

}  // namespace cospec

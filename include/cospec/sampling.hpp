// Sampling settings: how the target distribution r is turned into the next token.
#pragma once

#include "cospec/abi.hpp"

#include <cmath>     // std::isfinite, std::isnan
#include <cstddef>   // std::size_t
#include <cstdint>   // std::uint64_t
#include <functional>  // std::function
#include <optional>  // std::optional
#include <span>      // std::span
#include <string>    // std::to_string
#include <utility>   // std::pair
#include <vector>    // std::vector

#include "cospec/combine/penalties.hpp"
#include "cospec/errors.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// What a logits processor is told about the row it receives.
struct processor_context {
  /// The text before the position: prompt, committed tokens and, for speculated positions,
  /// the proposals in front of it.
  std::span<const token_id> prefix;
  /// The request's temperature (0: greedy) and whether decoding is greedy. Greedy rows are
  /// at temperature 1 (a factor f on a weight is log f there, whatever `tempered` says).
  float temperature = 1.0f;
  bool greedy = false;
  /// Whether the row already includes the temperature, so nothing divides it afterwards (a
  /// mixture's target: the log of its normalised distribution at T; a proposer's row under a
  /// mixture: the log-softmax of its logits at T), or is divided by T after the processor
  /// (logit arithmetic's combined raw logits, and a proposer's raw logits under logit
  /// arithmetic). Greedy rows are at T = 1.
  bool tempered = false;
  /// Empty for the combined target; model k when the processor is applied to model k's own
  /// proposal distribution (sampling_settings::process_proposals).
  std::optional<std::size_t> proposer;
};

/// A hook applied, with the position's own prefix, to the combined target in logit space
/// (docs/combiners.md, "Sampling settings"): for logit arithmetic the combined raw logits
/// sum_i w_i l_i, for a mixture (or any other combiner) the log of its normalised target.
/// It may change any entry: add to a logit, set -inf to mask a token (grammars, bans); NaN
/// and +inf are invalid_logits. Called once per decided position, in order, and, with
/// process_proposals, once per proposal.
using logits_processor = std::function<void(const processor_context& context, std::span<float> logits)>;

/// How tokens are drawn (docs/combiners.md, "Sampling settings").
///
/// The target r at every position is the combiner's distribution at `temperature`; with
/// penalties or a processor, built in logit space: the penalties, then the processor, then
/// the softmax; then `logit_bias`, then top-k, top-p and min-p, in that order, renormalised.
/// Proposals are drawn from each model's own distribution at `temperature` with no
/// truncation (with `process_proposals`, after penalties, processor and bias too); the
/// verifier tests each against exactly that distribution. temperature == 0 is greedy: the
/// next token is argmax of the temperature-1 target after penalties, processor and bias
/// (truncation filters never change an argmax), and each proposer proposes the argmax of its
/// own logits (processed likewise with `process_proposals`).
struct sampling_settings {
  float temperature = 1.0f;
  std::optional<std::size_t> top_k;  ///< keep the k most likely tokens; k >= 1
  std::optional<float> top_p;        ///< keep the smallest set with mass >= p; 0 < p <= 1
  std::optional<float> min_p;        ///< keep tokens with probability >= min_p * max; 0 <= min_p <= 1
  /// Added to the target's log-probability of a token (equivalently, its probability is
  /// multiplied by exp(bias)); -inf bans the token. Finite or -inf. Entries for one token add
  /// up, in any order (-inf among them bans it); see merged_logit_bias.
  std::vector<std::pair<token_id, float>> logit_bias;
  /// The same seed and inputs give the same tokens on every run (docs/engine.md; the one
  /// opt-in exception is adaptive_options::measure_pass_costs).
  std::uint64_t seed = 0;
  /// Repetition, frequency and presence penalties on the combined target in logit space,
  /// with llama.cpp's semantics (docs/combiners.md, "Penalties"); the defaults penalise nothing.
  penalty_settings penalties;
  /// Applied to the target at every position, after the penalties (see logits_processor);
  /// empty: none.
  logits_processor processor;
  /// Applies the penalties, the processor and the logit bias to each proposer's own
  /// distribution too, in the target's scale (`proposer` set: raw logits for logit
  /// arithmetic, the log of the proposer's softmax at T for other combiners). The verifier
  /// tests every proposal against exactly the distribution it was drawn from, so the output
  /// is exact either way; what changes is acceptance: tokens the target penalises or bans are
  /// rarely proposed (docs/benchmarks.md, "Penalties on proposals").
  bool process_proposals = false;

  [[nodiscard]] bool greedy() const noexcept { return temperature == 0.0f; }
};

/// Throws invalid_configuration naming the first setting that can never work.
/// `vocabulary_size` (0 when not yet known) bounds the token ids of `logit_bias`.
inline void validate(const sampling_settings& settings, std::size_t vocabulary_size = 0) {
  if (!(settings.temperature >= 0.0f) || !std::isfinite(settings.temperature))
    throw invalid_configuration("sampling: temperature must be finite and >= 0 (0 means greedy), got " +
                                std::to_string(settings.temperature));
  // The kernels scale logits by 1 / temperature, which overflows for temperatures below
  // about 2.9e-39: every row would then come out invalid.
  if (!settings.greedy() && !std::isfinite(1.0f / settings.temperature))
    throw invalid_configuration("sampling: temperature " + detail::number_text(settings.temperature) +
                                " is too small for 1 / temperature to be a finite float; use 0 for greedy decoding");
  if (settings.top_k && *settings.top_k == 0)
    throw invalid_configuration("sampling: top_k must be >= 1 (leave it unset to disable it)");
  if (settings.top_k && vocabulary_size != 0 && *settings.top_k > vocabulary_size)
    throw invalid_configuration("sampling: top_k is " + std::to_string(*settings.top_k) + ", more than the vocabulary of " +
                                std::to_string(vocabulary_size) + " (it would keep every token: leave it unset)");
  if (settings.top_p && !(*settings.top_p > 0.0f && *settings.top_p <= 1.0f))
    throw invalid_configuration("sampling: top_p must be in (0, 1], got " + detail::number_text(*settings.top_p) +
                                (*settings.top_p > 1.0f && *settings.top_p <= 100.0f
                                     ? " (it looks like a percentage: top_p is a probability, 0.95 for 95 %)"
                                     : ""));
  if (settings.min_p && !(*settings.min_p >= 0.0f && *settings.min_p <= 1.0f))
    throw invalid_configuration("sampling: min_p must be in [0, 1], got " + detail::number_text(*settings.min_p) +
                                (*settings.min_p > 1.0f && *settings.min_p <= 100.0f
                                     ? " (it looks like a percentage: min_p is a fraction, 0.05 for 5 %)"
                                     : ""));
  validate(settings.penalties);
  for (const auto& [token, bias] : settings.logit_bias) {
    if (token < 0 || (vocabulary_size != 0 && static_cast<std::size_t>(token) >= vocabulary_size))
      throw invalid_configuration("sampling: logit_bias names token " + std::to_string(token) +
                                  ", outside the vocabulary of " + std::to_string(vocabulary_size));
    if (std::isnan(bias) || bias == INFINITY)
      throw invalid_configuration("sampling: logit_bias of token " + std::to_string(token) +
                                  " must be finite or -inf, got " + std::to_string(bias));
  }
}

}  // namespace cospec

// The target distribution at one position: the combiner's output, then the sampling
// transforms (penalties and logits processor in logit space, bias, top-k, top-p, min-p),
// normalised; and, with process_proposals, the same logit-space treatment of a proposer's
// own distribution.
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>   // std::copy
#include <cmath>       // std::isfinite, std::isnan, std::log
#include <cstddef>     // std::size_t
#include <functional>  // std::function
#include <limits>      // std::numeric_limits
#include <optional>    // std::optional
#include <span>        // std::span
#include <string>      // std::string, std::to_string
#include <utility>     // std::move, std::pair
#include <vector>      // std::vector

#include "cospec/combine/combiner.hpp"
#include "cospec/combine/logit_bias.hpp"
#include "cospec/combine/logit_rows.hpp"
#include "cospec/combine/penalties.hpp"
#include "cospec/errors.hpp"
#include "cospec/kernels/filter.hpp"
#include "cospec/kernels/reduce.hpp"
#include "cospec/kernels/transform.hpp"
#include "cospec/sampling.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Evaluates targets for one combiner and one set of sampling settings, reusing its
/// buffers (no allocation once it has seen the vocabulary size).
///
/// Without penalties and processor the target is built in the combiner's own domain (the
/// cheap path of docs/benchmarks.md). With either, it is built in logit space: the combined
/// logits (combiner_with_target_logits: logit arithmetic's raw combination, divided by the
/// temperature afterwards; otherwise the log of the combiner's normalised target at the
/// temperature), then penalties, then the processor, then the softmax, then the bias and the
/// filters.
template <combiner Combiner>
class target_evaluator {
 public:
  /// `settings` must outlive the evaluator. Its `logit_bias`, `penalties` and `processor` are
  /// read here, and again by settings_changed() (the bias merged per token:
  /// merged_logit_bias); the other settings at every call. A `processor` given here replaces
  /// the settings' one.
  target_evaluator(Combiner& combiner, const sampling_settings& settings, logits_processor processor = {})
      : combiner_(&combiner), settings_(&settings), own_processor_(std::move(processor)) {
    settings_changed();
  }

  /// Re-reads the settings' logit bias, penalties and processor (a new request). Allocates.
  void settings_changed() {
    bias_ = merged_logit_bias(settings_->logit_bias);
    banning_ = false;
    banned_bias_ = merged_logit_bias{};
    penalties_.set_settings(settings_->penalties);
    processor_ = own_processor_ ? &own_processor_ : settings_->processor ? &settings_->processor : nullptr;
  }

  /// Tokens the target bans while ban_tokens(true) (a request's stop tokens before its
  /// min_tokens: generation_limits::min_tokens), on top of the logit bias. Allocates.
  void set_bannable(std::span<const token_id> tokens) {
    std::vector<std::pair<token_id, float>> entries(settings_->logit_bias.begin(), settings_->logit_bias.end());
    for (token_id t : tokens) entries.emplace_back(t, -std::numeric_limits<float>::infinity());
    banned_bias_ = merged_logit_bias(entries);
  }
  /// Whether the targets evaluated from now on ban the set_bannable tokens.
  void ban_tokens(bool on) noexcept { banning_ = on; }

  /// Whether the target is built in logit space (penalties or a processor).
  [[nodiscard]] bool in_logit_space() const noexcept { return processor_ != nullptr || penalties_.settings().active(); }

  /// Whether proposals get the target's logit-space treatment (process_proposals, and
  /// something to apply).
  [[nodiscard]] bool processes_proposals() const noexcept {
    return settings_->process_proposals && (in_logit_space() || !bias().empty());
  }

  /// Whether the target is the combiner's distribution at the temperature, untouched: no
  /// penalties, processor, bias or truncation filter (mixture sampling needs this).
  [[nodiscard]] bool untransformed() const noexcept {
    return !in_logit_space() && bias().empty() && !settings_->top_k && !settings_->top_p && !settings_->min_p;
  }

  /// Whether the target's probability at one token can be had without building its row: the
  /// combiner evaluates at one token (combiner_with_point_target) and nothing needs the whole
  /// row (no penalties, processor, bias or truncation filter).
  [[nodiscard]] bool point_target() const noexcept {
    if constexpr (combiner_with_point_target<Combiner>)
      return has_point_target(*combiner_) && untransformed();
    else
      return false;
  }

  /// r(x) at one position by the combiner's evaluation at one token (`known` as for
  /// combiner_with_point_target), or nullopt where only the whole row can tell (distribution()
  /// then reports or handles it). Precondition: point_target(), !settings.greedy().
  std::optional<double> probability_at(logit_rows logits, token_id x, std::span<const double> known) {
    if constexpr (combiner_with_point_target<Combiner>)
      return combiner_->target_probability(logits, settings_->temperature, x, known);
    else
      return std::nullopt;
  }

  /// The normalised target r at one position, written to `out`. Throws invalid_logits if the
  /// rows define no distribution or the transforms mask every token.
  /// Precondition: !settings.greedy().
  void distribution(logit_rows logits, std::span<const token_id> prefix, std::span<float> out) {
    transformed(logits, prefix, out, settings_->temperature, true);
  }

  /// The distribution a greedy token is the argmax of: the target at temperature 1 with the
  /// penalties, processor and bias, without truncation filters (which never change an argmax),
  /// normalised into `out`. For log-probabilities under logprob_basis::sampled.
  void greedy_distribution(logit_rows logits, std::span<const token_id> prefix, std::span<float> out) {
    transformed(logits, prefix, out, 1.0f, false);
  }

  /// The combiner's own target at temperature 1, normalised into `out`, before any transform:
  /// log-probabilities under logprob_basis::model. Returns what the row summed to before
  /// normalising (the caller may skip the division).
  float untransformed_distribution(logit_rows logits, std::span<float> out) {
    const float sum = combiner_->target_weights(logits, 1.0f, out);
    if (!(sum > 0.0f) || !std::isfinite(sum)) throw_invalid_combination(logits, "the target masks every token");
    return sum;
  }

 private:
  void transformed(logit_rows logits, std::span<const token_id> prefix, std::span<float> out, float temperature,
                   bool filters) {
    float sum = 0.0f;
    if (in_logit_space()) {
      const bool tempered = target_logits(logits, temperature, out);
      apply_hooks({prefix, temperature, false, tempered, std::nullopt}, out);
      const kernels::exp_row_stats stats =
          kernels::unnormalized_softmax(out, out, tempered ? 1.0f : 1.0f / temperature);
      if (!stats.valid())
        throw_invalid_combination(logits, "the target masks every token (after penalties and the logits processor)");
      sum = stats.sum;
      if (!bias().empty()) {
        bias().apply_to_weights(out);
        sum = checked_sum(out);
      }
    } else {
      sum = combiner_->target_weights(logits, temperature, out);
      if (!bias().empty()) {
        bias().apply_to_weights(out);
        // Bias may move almost all the mass (banning a dominant token): the sum is recomputed
        // rather than updated, which would cancel catastrophically.
        sum = checked_sum(out);
      }
    }
    if (filters && settings_->top_k) sum = kernels::top_k_filter(out, *settings_->top_k, workspace_);
    if (filters && settings_->top_p) sum = kernels::top_p_filter(out, *settings_->top_p, workspace_);
    if (filters && settings_->min_p) sum = kernels::min_p_filter(out, *settings_->min_p);
    if (!(sum > 0.0f))
      throw_invalid_combination(logits, "the target masks every token (after penalties, processor, bias and filters)");
    normalise(out, sum);
  }

 public:

  /// The greedy token at one position; `scratch` has length V. `known_maxima` as for
  /// combiner_with_greedy_token (each model's largest logit where known, NaN elsewhere, or
  /// empty). Throws invalid_logits as `distribution` does.
  token_id greedy_token(logit_rows logits, std::span<const token_id> prefix, std::span<float> scratch,
                        std::span<const float> known_maxima = {}) {
    if constexpr (combiner_with_greedy_token<Combiner>) {
      if (!in_logit_space() && bias().empty())
        if (const std::optional<token_id> token = combiner_->greedy_token(logits, known_maxima)) return *token;
    }
    if (in_logit_space()) {
      // The same logits as sampling's, at T = 1 (whose argmax is the greedy token).
      const bool tempered = target_logits(logits, 1.0f, scratch);
      apply_hooks({prefix, 0.0f, true, tempered, std::nullopt}, scratch);
      bias().add_to_log_weights(scratch);
      return checked_argmax(logits, scratch);
    }
    if (combiner_->greedy_scores(logits, scratch) == score_domain::log_weights) {
      bias().add_to_log_weights(scratch);
      const kernels::max_location best = kernels::max_argmax(scratch);
      if (std::isfinite(best.value)) return static_cast<token_id>(best.index);
      // The cheap scores define no target. Unless a row is invalid, either bias or the
      // combination left no token, or combined logits overflowed float (finite inputs near
      // float max), which the combiner's own temperature-1 target handles exactly: the greedy
      // token is by definition that target's argmax (docs/combiners.md).
      throw_if_a_row_is_invalid(logits);
      combiner_->target_weights(logits, 1.0f, scratch);
    }
    bias().apply_to_weights(scratch);
    const kernels::max_location best = kernels::max_argmax(scratch);
    if (std::isfinite(best.value) && best.value > 0.0f) return static_cast<token_id>(best.index);
    throw_if_a_row_is_invalid(logits);
    if (const std::optional<std::size_t> bad = first_nan_or_plus_inf(scratch))
      throw invalid_logits("after logit bias, the greedy target has " +
                           std::string(std::isnan(scratch[*bad]) ? "NaN" : "+inf") + " at token " + std::to_string(*bad));
    throw_invalid_combination(logits, "the greedy target masks every token (after bias)");
  }

  /// Model `model`'s proposal distribution with the target's logit-space treatment
  /// (processes_proposals()), in the target's own scale: for a combiner with target logits
  /// its raw logits (divided by T afterwards), for others the log of its softmax at T (as the
  /// target is the log of the combined distribution), so that a penalty acts on the
  /// proposal as it acts on the target; then penalties, processor (`proposer` set), softmax,
  /// bias, normalised into `out`. No truncation filters: they would only save proposals the
  /// target then rejects. Precondition: !settings.greedy().
  void processed_proposal(std::size_t model, std::span<const float> logits, std::span<const token_id> prefix,
                          std::span<float> out) {
    if (!row_is_valid(logits)) throw_invalid_row(model, logits);
    const bool tempered = proposal_logits(model, logits, settings_->temperature, out);
    apply_proposal_hooks(model, {prefix, settings_->temperature, false, tempered, model}, out);
    const kernels::exp_row_stats stats =
        kernels::unnormalized_softmax(out, out, tempered ? 1.0f : 1.0f / settings_->temperature);
    if (!stats.valid())
      throw invalid_logits("model " + std::to_string(model) +
                           ": its proposal distribution masks every token (after penalties and the logits processor)");
    float sum = stats.sum;
    if (!bias().empty()) {
      bias().apply_to_weights(out);
      sum = checked_sum(out);
      if (!(sum > 0.0f))
        throw invalid_logits("model " + std::to_string(model) + ": its proposal distribution masks every token (after bias)");
    }
    normalise(out, sum);
  }

  /// Model `model`'s greedy proposal with the target's logit-space treatment; `scratch`
  /// (length V) holds its processed logits afterwards.
  token_id processed_greedy_proposal(std::size_t model, std::span<const float> logits, std::span<const token_id> prefix,
                                     std::span<float> scratch) {
    if (!row_is_valid(logits)) throw_invalid_row(model, logits);
    const bool tempered = proposal_logits(model, logits, 1.0f, scratch);
    apply_proposal_hooks(model, {prefix, 0.0f, true, tempered, model}, scratch);
    bias().add_to_log_weights(scratch);
    const kernels::max_location best = kernels::max_argmax(scratch);
    if (!std::isfinite(best.value))
      throw invalid_logits("model " + std::to_string(model) +
                           ": its greedy proposal masks every token (after penalties, processor and bias)");
    return static_cast<token_id>(best.index);
  }

 private:
  /// Writes a proposer's logits in the target's scale (see processed_proposal); returns
  /// whether they already include the temperature. Precondition: the row is valid.
  bool proposal_logits(std::size_t model, std::span<const float> logits, float temperature, std::span<float> out) {
    if constexpr (combiner_with_target_logits<Combiner>) {
      if (has_target_logits(*combiner_)) {
        std::copy(logits.begin(), logits.end(), out.begin());
        return false;
      }
    }
    const kernels::exp_row_stats stats = kernels::unnormalized_softmax(logits, out, 1.0f / temperature);
    if (!stats.valid()) throw_invalid_row(model, logits);
    const float log_sum = std::log(stats.sum);
    for (float& w : out)
      w = w > 0.0f ? std::log(w) - log_sum : -std::numeric_limits<float>::infinity();
    return true;
  }

  /// Writes the target's logits; returns whether they already include the temperature.
  bool target_logits(logit_rows logits, float temperature, std::span<float> out) {
    if constexpr (combiner_with_target_logits<Combiner>) {
      if (has_target_logits(*combiner_)) {
        combiner_->target_logits(logits, out);
        return false;
      }
    }
    combiner_->target_weights(logits, temperature, out);
    log_of_normalised(logits, out);
    return true;
  }

  /// weights -> log(weights / sum), in place (0 becomes -inf).
  static void log_of_normalised(logit_rows logits, std::span<float> row) {
    double sum = 0.0;
    for (float w : row) sum += w;
    if (!(sum > 0.0) || !std::isfinite(sum)) throw_invalid_combination(logits, "the target masks every token");
    const double log_sum = std::log(sum);
    for (float& w : row)
      w = w > 0.0f ? static_cast<float>(std::log(static_cast<double>(w)) - log_sum) : -std::numeric_limits<float>::infinity();
  }

  /// Penalties, then the processor, on a target's logits; then checks what they wrote.
  void apply_hooks(const processor_context& context, std::span<float> row) {
    penalties_.apply(context.prefix, row);
    if (processor_) (*processor_)(context, row);
    if (const std::optional<std::size_t> bad = first_nan_or_plus_inf(row))
      throw invalid_logits("after penalties and the logits processor, the target has " +
                           std::string(std::isnan(row[*bad]) ? "NaN" : "+inf") + " at token " + std::to_string(*bad));
  }

  void apply_proposal_hooks(std::size_t model, const processor_context& context, std::span<float> row) {
    penalties_.apply(context.prefix, row);
    if (processor_) (*processor_)(context, row);
    if (const std::optional<std::size_t> bad = first_nan_or_plus_inf(row))
      throw invalid_logits("model " + std::to_string(model) + ": after penalties and the logits processor, its proposal row has " +
                           std::string(std::isnan(row[*bad]) ? "NaN" : "+inf") + " at token " + std::to_string(*bad));
  }

  /// The first entry that is NaN or +inf (one max pass when there is none).
  static std::optional<std::size_t> first_nan_or_plus_inf(std::span<const float> row) {
    const float top = kernels::max_argmax(row).value;
    if (!std::isnan(top) && top != std::numeric_limits<float>::infinity()) return std::nullopt;
    for (std::size_t j = 0; j < row.size(); ++j)
      if (std::isnan(row[j]) || row[j] == std::numeric_limits<float>::infinity()) return j;
    return std::nullopt;
  }

  /// The argmax of a greedy target's logits (hooks and bias applied), checked.
  static token_id checked_argmax(logit_rows logits, std::span<const float> row) {
    const kernels::max_location best = kernels::max_argmax(row);
    if (std::isfinite(best.value)) return static_cast<token_id>(best.index);
    throw_invalid_combination(logits, "the greedy target masks every token (after penalties, processor and bias)");
  }

  /// Scales non-negative weights summing to `sum` (> 0) to sum 1.
  static void normalise(std::span<float> out, float sum) {
    if (!std::isfinite(sum)) throw invalid_logits("the target's weights sum to more than the largest float (after bias)");
    // Bias can push every weight into the subnormals, where 1 / sum overflows: an exact
    // power-of-two rescale first.
    if (sum < std::numeric_limits<float>::min()) {
      kernels::scale_row(out, 0x1p64f);
      sum *= 0x1p64f;
    }
    // The same operation as the proposal softmax's normalisation, so that a target equal to
    // a proposal is bit-identical to it and accepts every proposal.
    if (sum != 1.0f) kernels::scale_row(out, 1.0f / sum);
  }

  static float checked_sum(std::span<const float> weights) {
    double sum = 0.0;
    for (std::size_t j = 0; j < weights.size(); ++j) {
      if (!(weights[j] >= 0.0f) || !std::isfinite(weights[j]))
        throw invalid_logits("after logit bias, the target has weight " + std::to_string(weights[j]) + " at token " +
                             std::to_string(j) + "; weights must be finite and >= 0");
      sum += weights[j];
    }
    return static_cast<float>(sum);
  }

  Combiner* combiner_;
  const sampling_settings* settings_;
  logits_processor own_processor_;
  const logits_processor* processor_ = nullptr;
  token_penalties penalties_;
  kernels::filter_workspace workspace_;
  merged_logit_bias bias_;
  merged_logit_bias banned_bias_;  // bias_ plus the bannable tokens at -inf
  bool banning_ = false;

  [[nodiscard]] merged_logit_bias& bias() noexcept { return banning_ ? banned_bias_ : bias_; }
  [[nodiscard]] const merged_logit_bias& bias() const noexcept { return banning_ ? banned_bias_ : bias_; }
};

}  // namespace cospec

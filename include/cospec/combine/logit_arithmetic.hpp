// Logit arithmetic: r = softmax(sum_i w_i * l_i / T), optionally restricted to the tokens an
// expert finds plausible. Covers contrastive decoding (docs/algorithm.md, "Collaborative
// decoding"), product of experts / logit averaging, proxy-tuning and DExperts.
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::max
#include <cmath>      // std::isfinite, std::log, std::exp, std::fma
#include <cstddef>    // std::size_t
#include <limits>     // std::numeric_limits
#include <optional>   // std::optional
#include <span>       // std::span
#include <string>     // std::to_string
#include <utility>    // std::move
#include <vector>     // std::vector

#include "cospec/combine/combiner.hpp"
#include "cospec/combine/logit_rows.hpp"
#include "cospec/combine/proposal.hpp"
#include "cospec/errors.hpp"
#include "cospec/kernels/reduce.hpp"
#include "cospec/kernels/transform.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// The adaptive plausibility constraint of Li et al. (2023): only tokens whose probability
/// under model `expert` (at temperature 1) is at least `alpha` times that model's largest
/// probability may be produced. alpha in [0, 1]; 0 disables it.
struct plausibility_constraint {
  std::size_t expert = 0;
  float alpha = 0.1f;
};

/// softmax(sum_i weights[i] * l_i / T), with masks (-inf) of any model kept.
class logit_arithmetic {
 public:
  /// Weights may be any finite reals, not all zero. Throws invalid_configuration otherwise,
  /// or if the constraint names a model that does not exist or an alpha outside [0, 1].
  explicit logit_arithmetic(std::vector<float> weights, std::optional<plausibility_constraint> constraint = {})
      : weights_(std::move(weights)), constraint_(constraint) {
    if (weights_.empty()) throw invalid_configuration("logit_arithmetic: needs at least one model weight");
    bool any_nonzero = false;
    for (std::size_t i = 0; i < weights_.size(); ++i) {
      if (!std::isfinite(weights_[i]))
        throw invalid_configuration("logit_arithmetic: weight of model " + std::to_string(i) + " must be finite, got " +
                                    std::to_string(weights_[i]));
      any_nonzero = any_nonzero || weights_[i] != 0.0f;
    }
    if (!any_nonzero) throw invalid_configuration("logit_arithmetic: the weights are all zero");
    if (constraint_) {
      if (constraint_->expert >= weights_.size())
        throw invalid_configuration("logit_arithmetic: plausibility expert " + std::to_string(constraint_->expert) +
                                    " is not one of the " + std::to_string(weights_.size()) + " models");
      if (!(constraint_->alpha >= 0.0f && constraint_->alpha <= 1.0f))
        throw invalid_configuration("logit_arithmetic: plausibility alpha must be in [0, 1], got " +
                                    std::to_string(constraint_->alpha));
    }
  }

  [[nodiscard]] std::size_t model_count() const noexcept { return weights_.size(); }
  [[nodiscard]] std::span<const float> weights() const noexcept { return weights_; }
  [[nodiscard]] const std::optional<plausibility_constraint>& constraint() const noexcept { return constraint_; }

  /// Combination pass, then max and exp passes (in place); returns the sum of the exps.
  /// Finite logits whose float combination overflows (inputs near float max) are combined
  /// again exactly, so that the target is softmax of the real-valued combination
  /// (combine_exactly; the softmax's validity test finds them, so the hot path pays nothing).
  float target_weights(logit_rows logits, float temperature, std::span<float> out) {
    combine(logits, out);
    const kernels::exp_row_stats stats = kernels::unnormalized_softmax(out, out, 1.0f / temperature);
    if (stats.valid()) return stats.sum;
    // Invalid rows are reported as such. Valid rows leave no NaN: either the combination
    // masks every token (and combine_exactly finds that too), or it overflowed to +inf
    // somewhere or to -inf everywhere.
    throw_if_a_row_is_invalid(logits);
    combine_exactly(logits, out);
    return softmax_weights_in_place(logits, temperature, out);
  }

  /// The combined logits themselves: a greedy decision needs no exp at all. (A combination that
  /// overflowed leaves no finite argmax; target_evaluator then takes the argmax of
  /// target_weights at temperature 1, which is exact.)
  score_domain greedy_scores(logit_rows logits, std::span<float> out) {
    combine(logits, out);
    return score_domain::log_weights;
  }

  /// The combined logits z = sum_i w_i l_i (constraint applied), whose softmax at T is the
  /// target at T (combiner_with_target_logits). A combination that overflowed float is
  /// combined again exactly, shifted so that its largest entry is 0 (combine_exactly): the
  /// same softmax, which a penalty or processor then sees shifted.
  void target_logits(logit_rows logits, std::span<float> out) {
    combine(logits, out);
    if (std::isfinite(kernels::max_argmax(out).value)) return;
    // No finite maximum: an invalid row, a combination that masks every token, or one that
    // overflowed float to +inf somewhere or to -inf everywhere (combine_exactly tells).
    throw_if_a_row_is_invalid(logits);
    combine_exactly(logits, out);
  }

  /// r(x) without writing a row (combiner_with_point_target): exp(z_x - log sum_j exp(z_j)) for
  /// z = sum_i (w_i / T) l_i, whose normaliser kernels::combination_log_sum_exp computes from
  /// the rows (one pass, nothing written); `known` is not needed. nullopt with
  /// a plausibility constraint, for an invalid row and for a combination that overflows float:
  /// target_weights handles those.
  std::optional<double> target_probability(logit_rows logits, float temperature, token_id x,
                                           std::span<const double> /*known*/) {
    if (constrained()) return std::nullopt;
    check_row_shapes(logits, model_count());
    const auto j = static_cast<std::size_t>(x);
    if (x < 0 || j >= logits[0].size()) return std::nullopt;
    for (std::size_t i = 0; i < weights_.size(); ++i)
      if (weights_[i] == 0.0f && !row_is_valid(logits[i])) return std::nullopt;
    const float scale = 1.0f / temperature;
    const float log_normaliser = kernels::combination_log_sum_exp(logits, weights_, scale);
    if (!std::isfinite(log_normaliser)) return std::nullopt;
    // z_x as the kernel forms it: one fused multiply-add per model, masks kept.
    float z = 0.0f;
    for (std::size_t i = 0; i < weights_.size(); ++i) {
      if (weights_[i] == 0.0f) continue;
      const float l = logits[i][j];
      if (l == -std::numeric_limits<float>::infinity()) return 0.0;
      z = std::fma(weights_[i] * scale, l, z);
    }
    return std::exp(static_cast<double>(z) - static_cast<double>(log_normaliser));
  }

  void proposal_distribution(std::size_t model, std::span<const float> logits, float temperature,
                             std::span<float> out) const {
    softmax_proposal(model, logits, temperature, out);
  }

 private:
  [[nodiscard]] bool constrained() const noexcept { return constraint_ && constraint_->alpha != 0.0f; }

  void combine(logit_rows logits, std::span<float> out) const {
    check_row_shapes(logits, model_count());
    // The combination does not read the rows of models with weight 0; they are validated all
    // the same (docs/reliability.md), one max pass each (the constraint's expert has its own).
    for (std::size_t i = 0; i < weights_.size(); ++i)
      if (weights_[i] == 0.0f && !(constrained() && i == constraint_->expert) && !row_is_valid(logits[i]))
        throw_invalid_combination(logits);
    kernels::linear_combination(logits, weights_, out);
    apply_constraint(logits, out);
  }

  /// sum_i w_i (l_i - m_i) in double, m_i the largest logit of row i, then shifted so that the
  /// largest entry is 0 and rounded to float: the same softmax as sum_i w_i l_i (each shift
  /// moves every token alike), but finite inputs cannot overflow, and the small logits of one
  /// model are not lost next to another's near float max. Entries more than float's range
  /// below the largest become -inf, their probability in float anyway; masks as in
  /// `combine`. The cold path of overflowing combinations: scalar, each entry computed twice
  /// (for the maximum, then for the row) rather than stored. Precondition: every row valid.
  void combine_exactly(logit_rows logits, std::span<float> out) {
    constexpr double masked = -std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < weights_.size(); ++i)
      shifts_[i] = weights_[i] == 0.0f ? 0.0 : static_cast<double>(kernels::max_argmax(logits[i]).value);
    const auto exact = [&](std::size_t j) {
      double sum = 0.0;
      for (std::size_t i = 0; i < weights_.size(); ++i) {
        if (weights_[i] == 0.0f) continue;
        const float x = logits[i][j];
        if (x == -std::numeric_limits<float>::infinity()) return masked;
        sum += static_cast<double>(weights_[i]) * (static_cast<double>(x) - shifts_[i]);
      }
      return sum;
    };
    double top = masked;
    for (std::size_t j = 0; j < out.size(); ++j) top = std::max(top, exact(j));
    for (std::size_t j = 0; j < out.size(); ++j) {
      const double shifted = top == masked ? masked : exact(j) - top;
      out[j] = shifted < -static_cast<double>(std::numeric_limits<float>::max()) ? -std::numeric_limits<float>::infinity()
                                                                                 : static_cast<float>(shifted);
    }
    apply_constraint(logits, out);
  }

  /// The plausibility constraint, if any, on combined logits.
  void apply_constraint(logit_rows logits, std::span<float> out) const {
    if (!constrained()) return;
    const std::span<const float> expert = logits[constraint_->expert];
    const float expert_max = kernels::max_argmax(expert).value;
    if (!std::isfinite(expert_max)) throw_invalid_row(constraint_->expert, expert);
    // p_expert(x) >= alpha * max p_expert  <=>  l_expert(x) >= max l_expert + log(alpha).
    kernels::mask_below(expert, expert_max + std::log(constraint_->alpha), out);
  }

  std::vector<float> weights_;
  std::optional<plausibility_constraint> constraint_;
  std::vector<double> shifts_ = std::vector<double>(weights_.size());  // combine_exactly: each row's maximum
};

/// Contrastive decoding over models {0: expert, 1: amateur}: softmax((l_expert - mu *
/// l_amateur) / T), as in the paper (mu = 0.1). With `alpha`, also the plausibility
/// constraint of Li et al. on the expert. mu must be finite and >= 0.
inline logit_arithmetic contrastive_decoding(float mu, std::optional<float> alpha = {}) {
  if (!std::isfinite(mu) || mu < 0.0f)
    throw invalid_configuration("contrastive_decoding: mu must be finite and >= 0, got " + std::to_string(mu));
  std::optional<plausibility_constraint> constraint;
  if (alpha) constraint = plausibility_constraint{0, *alpha};
  return logit_arithmetic({1.0f, -mu}, constraint);
}

}  // namespace cospec

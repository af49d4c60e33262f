// Logit arithmetic: r = softmax(sum_i w_i * l_i / T), optionally restricted to the tokens an
// expert finds plausible. Covers contrastive decoding (cos-algorithm.md section 1, "CD"),
// product of experts / logit averaging, proxy-tuning and DExperts.
#pragma once

#include "cospec/abi.hpp"

#include <cmath>     // std::isfinite, std::log
#include <cstddef>   // std::size_t
#include <optional>  // std::optional
#include <span>      // std::span
#include <string>    // std::to_string
#include <utility>   // std::move
#include <vector>    // std::vector

#include "cospec/combine/combiner.hpp"
#include "cospec/combine/logit_rows.hpp"
#include "cospec/combine/proposal.hpp"
#include "cospec/errors.hpp"
#include "cospec/kernels/reduce.hpp"
#include "cospec/kernels/transform.hpp"

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
  float target_weights(logit_rows logits, float temperature, std::span<float> out) {
    combine(logits, out);
    return softmax_weights_in_place(logits, temperature, out);
  }

  /// The combined logits themselves: a greedy decision needs no exp at all.
  score_domain greedy_scores(logit_rows logits, std::span<float> out) {
    combine(logits, out);
    return score_domain::log_weights;
  }

  void proposal_distribution(std::size_t model, std::span<const float> logits, float temperature,
                             std::span<float> out) const {
    softmax_proposal(model, logits, temperature, out);
  }

 private:
  void combine(logit_rows logits, std::span<float> out) const {
    check_row_shapes(logits, model_count());
    kernels::linear_combination(logits, weights_, out);
    if (!constraint_ || constraint_->alpha == 0.0f) return;
    const std::span<const float> expert = logits[constraint_->expert];
    const float expert_max = kernels::max_argmax(expert).value;
    if (!std::isfinite(expert_max)) throw_invalid_row(constraint_->expert, expert);
    // p_expert(x) >= alpha * max p_expert  <=>  l_expert(x) >= max l_expert + log(alpha).
    kernels::mask_below(expert, expert_max + std::log(constraint_->alpha), out);
  }

  std::vector<float> weights_;
  std::optional<plausibility_constraint> constraint_;
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

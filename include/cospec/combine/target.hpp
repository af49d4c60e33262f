// The target distribution at one position: the combiner's output, then the sampling
// transforms (bias, logits processor, top-k, top-p, min-p), normalised.
#pragma once

#include "cospec/abi.hpp"

#include <cmath>       // std::isfinite, std::isnan
#include <cstddef>     // std::size_t
#include <functional>  // std::function
#include <limits>      // std::numeric_limits
#include <span>        // std::span
#include <string>      // std::string, std::to_string
#include <utility>     // std::move

#include "cospec/combine/combiner.hpp"
#include "cospec/combine/logit_bias.hpp"
#include "cospec/combine/logit_rows.hpp"
#include "cospec/errors.hpp"
#include "cospec/kernels/filter.hpp"
#include "cospec/kernels/reduce.hpp"
#include "cospec/kernels/transform.hpp"
#include "cospec/sampling.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Evaluates targets for one combiner and one set of sampling settings, reusing its
/// buffers (no allocation once it has seen the vocabulary size).
template <combiner Combiner>
class target_evaluator {
 public:
  /// `settings` must outlive the evaluator. Its `logit_bias` and `processor` are read here,
  /// and again by settings_changed() (the bias merged per token: merged_logit_bias); the
  /// other settings at every call. A `processor` given here replaces the settings' one.
  target_evaluator(Combiner& combiner, const sampling_settings& settings, logits_processor processor = {})
      : combiner_(&combiner), settings_(&settings), own_processor_(std::move(processor)) {
    settings_changed();
  }

  /// Re-reads the settings' logit bias and processor (a new request). Allocates.
  void settings_changed() {
    bias_ = merged_logit_bias(settings_->logit_bias);
    processor_ = own_processor_ ? &own_processor_ : settings_->processor ? &settings_->processor : nullptr;
  }

  /// The normalised target r at one position, written to `out`. Throws invalid_logits if the
  /// rows define no distribution or the transforms mask every token.
  /// Precondition: !settings.greedy().
  void distribution(logit_rows logits, std::span<const token_id> prefix, std::span<float> out) {
    float sum = combiner_->target_weights(logits, settings_->temperature, out);
    bias_.apply_to_weights(out);
    if (processor_) (*processor_)(prefix, out);
    // Bias and processor may move almost all the mass (banning a dominant token): the sum is
    // recomputed rather than updated, which would cancel catastrophically.
    if (processor_ || !bias_.empty()) sum = checked_sum(out);
    if (settings_->top_k) sum = kernels::top_k_filter(out, *settings_->top_k, workspace_);
    if (settings_->top_p) sum = kernels::top_p_filter(out, *settings_->top_p, workspace_);
    if (settings_->min_p) sum = kernels::min_p_filter(out, *settings_->min_p);
    if (!(sum > 0.0f))
      throw_invalid_combination(logits, "the target masks every token (after bias, processor and filters)");
    if (!std::isfinite(sum))
      throw invalid_logits("the target's weights sum to more than the largest float (after bias and processor)");
    // Bias or processor can push every weight into the subnormals, where 1 / sum overflows:
    // an exact power-of-two rescale first.
    if (sum < std::numeric_limits<float>::min()) {
      kernels::scale_row(out, 0x1p64f);
      sum *= 0x1p64f;
    }
    // The same operation as the proposal softmax's normalisation, so that a target equal to
    // a proposal is bit-identical to it and accepts every proposal.
    if (sum != 1.0f) kernels::scale_row(out, 1.0f / sum);
  }

  /// The greedy token at one position; `scratch` has length V. Throws invalid_logits as
  /// `distribution` does, for a processor's negative weight too.
  token_id greedy_token(logit_rows logits, std::span<const token_id> prefix, std::span<float> scratch) {
    if (combiner_->greedy_scores(logits, scratch) == score_domain::log_weights) {
      bias_.add_to_log_weights(scratch);
      if (!processor_) {
        const kernels::max_location best = kernels::max_argmax(scratch);
        if (std::isfinite(best.value)) return static_cast<token_id>(best.index);
      } else if (kernels::unnormalized_softmax(scratch, scratch).valid()) {
        // The processor works on weights: exp(s - max) keeps the argmax and the ratios.
        return processed_argmax(logits, prefix, scratch);
      }
      // The cheap scores define no target. Unless a row is invalid, either bias or the
      // combination left no token, or combined logits overflowed float (finite inputs near
      // float max), which the combiner's own temperature-1 target handles exactly: the greedy
      // token is by definition that target's argmax (docs/combiners.md).
      throw_if_a_row_is_invalid(logits);
      combiner_->target_weights(logits, 1.0f, scratch);
    }
    bias_.apply_to_weights(scratch);
    return processed_argmax(logits, prefix, scratch);
  }

 private:
  /// The argmax of target weights after the processor (bias already applied), checked.
  token_id processed_argmax(logit_rows logits, std::span<const token_id> prefix, std::span<float> weights) {
    if (processor_) {
      (*processor_)(prefix, weights);
      throw_if_negative(weights);
    }
    const kernels::max_location best = kernels::max_argmax(weights);
    if (std::isfinite(best.value) && best.value > 0.0f) return static_cast<token_id>(best.index);
    if (std::isnan(best.value) || best.value == std::numeric_limits<float>::infinity()) {
      // A model's row, or else what bias and processor made of the target.
      throw_if_a_row_is_invalid(logits);
      for (std::size_t j = 0; j < weights.size(); ++j)
        if (std::isnan(weights[j]) || weights[j] == std::numeric_limits<float>::infinity())
          throw invalid_logits("after logit bias and the logits processor, the greedy target has " +
                               std::string(std::isnan(weights[j]) ? "NaN" : "+inf") + " at token " +
                               std::to_string(j));
    }
    throw_invalid_combination(logits, "the greedy target masks every token (after bias and processor)");
  }

  /// A processor's negative weight, which the argmax would not notice (NaN and +inf it does).
  static void throw_if_negative(std::span<const float> weights) {
    bool negative = false;
    for (float w : weights) negative |= (w < 0.0f);  // no early exit: the loop vectorises
    if (!negative) return;
    for (std::size_t j = 0; j < weights.size(); ++j)
      if (weights[j] < 0.0f)
        throw invalid_logits("after logit bias and the logits processor, the greedy target has weight " +
                             std::to_string(weights[j]) + " at token " + std::to_string(j) +
                             "; weights must be finite and >= 0");
  }

  static float checked_sum(std::span<const float> weights) {
    double sum = 0.0;
    for (std::size_t j = 0; j < weights.size(); ++j) {
      if (!(weights[j] >= 0.0f) || !std::isfinite(weights[j]))
        throw invalid_logits("after logit bias and the logits processor, the target has weight " + std::to_string(weights[j]) + " at token " +
                             std::to_string(j) + "; weights must be finite and >= 0");
      sum += weights[j];
    }
    return static_cast<float>(sum);
  }

  Combiner* combiner_;
  const sampling_settings* settings_;
  logits_processor own_processor_;
  const logits_processor* processor_ = nullptr;
  kernels::filter_workspace workspace_;
  merged_logit_bias bias_;
};

}  // namespace cospec

// The target distribution at one position: the combiner's output, then the sampling
// transforms (bias, logits processor, top-k, top-p, min-p), normalised.
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>   // std::max
#include <cmath>       // std::exp, std::log, std::isfinite, std::isnan
#include <cstddef>     // std::size_t
#include <functional>  // std::function
#include <limits>      // std::numeric_limits
#include <span>        // std::span
#include <string>      // std::string, std::to_string
#include <utility>     // std::move
#include <vector>      // std::vector

#include "cospec/combine/combiner.hpp"
#include "cospec/combine/logit_rows.hpp"
#include "cospec/errors.hpp"
#include "cospec/kernels/filter.hpp"
#include "cospec/kernels/reduce.hpp"
#include "cospec/kernels/transform.hpp"
#include "cospec/sampling.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// A hook applied to the target at every position, with the text before that position
/// (prompt, committed tokens and, for speculated positions, the proposals in front of it).
/// It receives the target as non-negative weights (probabilities up to a constant) and may
/// rescale entries or set them to zero: a logit-space adjustment `a` of token t is
/// `weights[t] *= exp(a)`, a mask is `weights[t] = 0`. Repetition penalties and grammar
/// masks belong here. Called once per verified position, in order.
using logits_processor = std::function<void(std::span<const token_id> prefix, std::span<float> weights)>;

/// Evaluates targets for one combiner and one set of sampling settings, reusing its
/// buffers (no allocation once it has seen the vocabulary size).
template <combiner Combiner>
class target_evaluator {
 public:
  target_evaluator(Combiner& combiner, const sampling_settings& settings, logits_processor processor = {})
      : combiner_(&combiner), settings_(&settings), processor_(std::move(processor)) {}

  /// The normalised target r at one position, written to `out`. Throws invalid_logits if the
  /// rows define no distribution or the transforms mask every token.
  /// Precondition: !settings.greedy().
  void distribution(logit_rows logits, std::span<const token_id> prefix, std::span<float> out) {
    float sum = combiner_->target_weights(logits, settings_->temperature, out);
    apply_bias(out);
    if (processor_) processor_(prefix, out);
    // Bias and processor may move almost all the mass (banning a dominant token): the sum is
    // recomputed rather than updated, which would cancel catastrophically.
    if (processor_ || !settings_->logit_bias.empty()) sum = checked_sum(out);
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

  /// The greedy token at one position; `scratch` has length V.
  token_id greedy_token(logit_rows logits, std::span<const token_id> prefix, std::span<float> scratch) {
    const score_domain domain = combiner_->greedy_scores(logits, scratch);
    const bool log_domain = domain == score_domain::log_weights;
    if (log_domain) {
      for (const auto& [token, bias] : settings_->logit_bias) scratch[static_cast<std::size_t>(token)] += bias;
    } else {
      apply_bias(scratch);
    }
    bool weights_domain = !log_domain;
    if (processor_) {
      if (log_domain) {
        // The processor works on weights: exp(s - max) keeps the argmax and the ratios.
        const kernels::exp_row_stats stats = kernels::unnormalized_softmax(scratch, scratch);
        if (!stats.valid()) throw_invalid_combination(logits, "the greedy target masks every token (after bias)");
        weights_domain = true;
      }
      processor_(prefix, scratch);
    }
    const kernels::max_location best = kernels::max_argmax(scratch);
    const bool valid = std::isfinite(best.value) && (weights_domain ? best.value > 0.0f : true);
    if (!valid) {
      if (std::isnan(best.value) || best.value == std::numeric_limits<float>::infinity()) {
        // A model's row, or else what bias and processor made of the target.
        for (std::size_t i = 0; i < logits.size(); ++i)
          if (std::string problem = describe_invalid_row(i, logits[i]); !problem.empty()) throw invalid_logits(problem);
        for (std::size_t j = 0; j < scratch.size(); ++j)
          if (std::isnan(scratch[j]) || scratch[j] == std::numeric_limits<float>::infinity())
            throw invalid_logits("after logit bias and the logits processor, the greedy target has " +
                                 std::string(std::isnan(scratch[j]) ? "NaN" : "+inf") + " at token " +
                                 std::to_string(j));
      }
      throw_invalid_combination(logits, "the greedy target masks every token (after bias and processor)");
    }
    return static_cast<token_id>(best.index);
  }

 private:
  /// Biases above this are applied as a shift of the whole row: exp(bias) overflows float
  /// above about 88.7, and +100 is the usual way to force a token.
  static constexpr float largest_direct_bias = 64.0f;

  /// Multiplies each biased token's weight w by exp(bias) (entries for the same token add up).
  /// When some w * exp(bias) would pass exp(largest_direct_bias), every weight is first scaled
  /// by exp(-excess) and each biased token's weight becomes w * exp(bias - excess), which
  /// leaves the distribution unchanged (only weights negligible next to the biased token's
  /// underflow). One extra pass, only for such biases. A token the combination masks (w = 0)
  /// stays masked whatever its bias.
  void apply_bias(std::span<float> weights) {
    const auto& biases = settings_->logit_bias;
    float excess = 0.0f;
    for (const auto& [token, bias] : biases) {
      const float w = weights[static_cast<std::size_t>(token)];
      if (w > 0.0f) excess = std::max(excess, total_bias(token) + std::log(w) - largest_direct_bias);
    }
    // Zero weights are skipped: 0 * exp(1000) would be NaN.
    if (!(excess > 0.0f)) {
      for (const auto& [token, bias] : biases)
        if (float& w = weights[static_cast<std::size_t>(token)]; w != 0.0f) w *= std::exp(bias);
      return;
    }
    biased_weights_.resize(biases.size());
    for (std::size_t i = 0; i < biases.size(); ++i) biased_weights_[i] = weights[static_cast<std::size_t>(biases[i].first)];
    kernels::scale_row(weights, std::exp(-excess));
    for (std::size_t i = 0; i < biases.size(); ++i) {
      const token_id token = biases[i].first;
      if (biased_weights_[i] != 0.0f)
        weights[static_cast<std::size_t>(token)] = biased_weights_[i] * std::exp(total_bias(token) - excess);
    }
  }

  /// The sum of the biases listed for `token`.
  float total_bias(token_id token) const noexcept {
    float total = 0.0f;
    for (const auto& [listed, bias] : settings_->logit_bias)
      if (listed == token) total += bias;
    return total;
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
  logits_processor processor_;
  kernels::filter_workspace workspace_;
  std::vector<float> biased_weights_;  // apply_bias: the weights of biased tokens before a shift
};

}  // namespace cospec

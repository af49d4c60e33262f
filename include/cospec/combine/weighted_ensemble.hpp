// Weighted ensemble: r = sum_i lambda_i * softmax(l_i / T) (docs/algorithm.md, "Collaborative
// decoding").
#pragma once

#include "cospec/abi.hpp"

#include <cmath>    // std::isfinite
#include <cstddef>  // std::size_t
#include <span>     // std::span
#include <string>   // std::to_string
#include <utility>  // std::move
#include <vector>   // std::vector

#include "cospec/combine/logit_rows.hpp"
#include "cospec/combine/proposal.hpp"
#include "cospec/combine/combiner.hpp"
#include "cospec/errors.hpp"
#include "cospec/kernels/transform.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Mixture of the models' temperature-scaled distributions with fixed weights.
/// Because r >= lambda_i * q_i, a token proposed by model i is accepted with probability at
/// least lambda_i (before truncation filters): ensembles verify well.
class weighted_ensemble {
 public:
  /// `weights[i]` for model i: finite, >= 0, at least one positive; normalised to sum 1.
  /// Throws invalid_configuration otherwise.
  explicit weighted_ensemble(std::vector<float> weights) : weights_(std::move(weights)) {
    if (weights_.empty()) throw invalid_configuration("weighted_ensemble: needs at least one model weight");
    double sum = 0.0;
    for (std::size_t i = 0; i < weights_.size(); ++i) {
      if (!std::isfinite(weights_[i]) || weights_[i] < 0.0f)
        throw invalid_configuration("weighted_ensemble: weight of model " + std::to_string(i) +
                                    " must be finite and >= 0, got " + std::to_string(weights_[i]));
      sum += weights_[i];
    }
    if (!(sum > 0.0)) throw invalid_configuration("weighted_ensemble: the weights are all zero");
    for (float& w : weights_) w = static_cast<float>(w / sum);
    row_weights_.resize(weights_.size());
    views_.resize(weights_.size());
  }

  /// Equal weights 1/n, as in the paper's experiments.
  static weighted_ensemble uniform(std::size_t model_count) {
    return weighted_ensemble(std::vector<float>(model_count, 1.0f));
  }

  [[nodiscard]] std::size_t model_count() const noexcept { return weights_.size(); }
  [[nodiscard]] std::span<const float> weights() const noexcept { return weights_; }

  /// Writes the mixture; returns 1 (the weights are normalised; rounding leaves the written
  /// row's sum within a few ulps of it). One max pass and one exp pass per model with a
  /// positive weight, then one fused mixture pass: the normalisers 1/sum_i are folded into
  /// the mixture weights instead of costing their own pass. A model with weight 0 costs one
  /// max pass, which validates its row.
  float target_weights(logit_rows logits, float temperature, std::span<float> out) {
    check_row_shapes(logits, model_count());
    const std::size_t size = logits[0].size();
    if (scratch_.size() < size * model_count()) scratch_.resize(size * model_count());
    for (std::size_t i = 0; i < model_count(); ++i) {
      std::span<float> row(scratch_.data() + i * size, size);
      views_[i] = row;
      row_weights_[i] = 0.0f;
      if (weights_[i] == 0.0f) {
        // No say in the mixture, but its row is validated like the others (docs/reliability.md).
        if (!row_is_valid(logits[i])) throw_invalid_row(i, logits[i]);
        continue;
      }
      const kernels::exp_row_stats stats = kernels::unnormalized_softmax(logits[i], row, 1.0f / temperature);
      if (!stats.valid()) throw_invalid_row(i, logits[i]);
      row_weights_[i] = weights_[i] / stats.sum;
    }
    kernels::mixture(views_, row_weights_, out);
    return 1.0f;
  }

  /// The greedy target is the temperature-1 mixture itself.
  score_domain greedy_scores(logit_rows logits, std::span<float> out) {
    target_weights(logits, 1.0f, out);
    return score_domain::weights;
  }

  void proposal_distribution(std::size_t model, std::span<const float> logits, float temperature,
                             std::span<float> out) const {
    softmax_proposal(model, logits, temperature, out);
  }

 private:
  std::vector<float> weights_;
  std::vector<float> row_weights_;
  std::vector<std::span<const float>> views_;
  std::vector<float> scratch_;  // one exp row per model, grown once per vocabulary size
};

}  // namespace cospec

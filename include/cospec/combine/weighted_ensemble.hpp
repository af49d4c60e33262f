// Weighted ensemble: r = sum_i lambda_i * softmax(l_i / T) (docs/algorithm.md, "Collaborative
// decoding").
#pragma once

#include "cospec/abi.hpp"

#include <cmath>     // std::isfinite, std::isnan, std::exp, std::log
#include <cstddef>   // std::size_t
#include <cstdint>   // std::uint32_t
#include <limits>    // std::numeric_limits
#include <optional>  // std::optional
#include <span>      // std::span
#include <string>    // std::to_string
#include <utility>   // std::move
#include <vector>    // std::vector

#include "cospec/combine/logit_rows.hpp"
#include "cospec/combine/proposal.hpp"
#include "cospec/combine/combiner.hpp"
#include "cospec/errors.hpp"
#include "cospec/kernels/reduce.hpp"
#include "cospec/kernels/transform.hpp"
#include "cospec/token.hpp"

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
    log_normalisers_.resize(weights_.size());
    counts_.resize(weights_.size());
    candidates_.resize(weights_.size() * candidates_per_model);
  }

  /// Equal weights 1/n, as in the paper's experiments.
  static weighted_ensemble uniform(std::size_t model_count) {
    return weighted_ensemble(std::vector<float>(model_count, 1.0f));
  }

  [[nodiscard]] std::size_t model_count() const noexcept { return weights_.size(); }
  [[nodiscard]] std::span<const float> weights() const noexcept { return weights_; }
  /// The normalised weights (combiner_with_mixture_weights): r is exactly the mixture of the
  /// proposals softmax(l_i / T) with these weights, which mixture sampling draws from.
  [[nodiscard]] std::span<const float> mixture_weights() const noexcept { return weights_; }

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

  /// r(x) without writing a row (combiner_with_point_target): sum_i lambda_i softmax(l_i / T)(x),
  /// with known[i] where given and otherwise each model's normaliser from kernels::exp_sum (a
  /// max pass and an exp pass, nothing written). nullopt for an invalid row, which
  /// target_weights then reports; a model with weight 0 costs its validating max pass.
  std::optional<double> target_probability(logit_rows logits, float temperature, token_id x,
                                           std::span<const double> known) {
    check_row_shapes(logits, model_count());
    const auto j = static_cast<std::size_t>(x);
    if (x < 0 || j >= logits[0].size() || known.size() != model_count()) return std::nullopt;
    double r = 0.0;
    for (std::size_t i = 0; i < model_count(); ++i) {
      if (weights_[i] == 0.0f) {
        if (!row_is_valid(logits[i])) return std::nullopt;
        continue;
      }
      if (!std::isnan(known[i])) {
        r += static_cast<double>(weights_[i]) * known[i];
        continue;
      }
      const kernels::exp_row_stats stats = kernels::exp_sum(logits[i], 1.0f / temperature);
      if (!stats.valid()) return std::nullopt;
      r += static_cast<double>(weights_[i]) *
           std::exp((static_cast<double>(logits[i][j]) - stats.max) * static_cast<double>(stats.scale)) / stats.sum;
    }
    return r;
  }

  /// The greedy token without writing a row (combiner_with_greedy_token). With p_i model i's
  /// temperature-1 softmax and S_i its normaliser (the sum of exp(l_i - max l_i)), the mixture
  /// at model i's own argmax is at least lambda_i / S_i, while at a token j where every model
  /// has exp(l_ij - max l_i) < lambda_i it is below sum_i lambda_i * lambda_i / S_i <=
  /// max_i lambda_i / S_i (the weights sum to 1). So the argmax is among the tokens that some
  /// model puts within log(1 / lambda_i) of its maximum: kernels::exp_sum_collecting finds
  /// them in the exp pass that computes S_i (margin 1e-5 for rounding), and only they are
  /// evaluated, in double; ties go to the lowest index. A known maximum (the proposer's, from
  /// its argmax) saves that row's max pass. nullopt for an invalid row, or when more than 256
  /// tokens qualify for one model (near-uniform rows), where the full mixture decides.
  std::optional<token_id> greedy_token(logit_rows logits, std::span<const float> known_maxima = {}) {
    check_row_shapes(logits, model_count());
    if (!known_maxima.empty() && known_maxima.size() != model_count()) return std::nullopt;
    for (std::size_t i = 0; i < model_count(); ++i) {
      counts_[i] = 0;
      if (weights_[i] == 0.0f) {
        if (!row_is_valid(logits[i])) return std::nullopt;
        continue;
      }
      const std::span<std::uint32_t> found(candidates_.data() + i * candidates_per_model, candidates_per_model);
      const float known_max = known_maxima.empty() ? std::numeric_limits<float>::quiet_NaN() : known_maxima[i];
      const kernels::exp_row_stats stats =
          kernels::exp_sum_collecting(logits[i], 1.0f, weights_[i] * (1.0f - 1e-5f), found, counts_[i], known_max);
      if (!stats.valid() || counts_[i] > candidates_per_model) return std::nullopt;
      log_normalisers_[i] = static_cast<double>(stats.max) + std::log(static_cast<double>(stats.sum));
    }
    std::size_t best = 0;
    double best_score = -1.0;
    for (std::size_t m = 0; m < model_count(); ++m) {
      for (std::size_t c = 0; c < counts_[m]; ++c) {
        const std::size_t j = candidates_[m * candidates_per_model + c];
        double score = 0.0;
        for (std::size_t i = 0; i < model_count(); ++i)
          if (weights_[i] != 0.0f)
            score += static_cast<double>(weights_[i]) * std::exp(static_cast<double>(logits[i][j]) - log_normalisers_[i]);
        if (score > best_score || (score == best_score && j < best)) {
          best_score = score;
          best = j;
        }
      }
    }
    return static_cast<token_id>(best);
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
  // greedy_token's scratch: per model its log-normaliser and up to candidates_per_model tokens.
  static constexpr std::size_t candidates_per_model = 256;
  std::vector<double> log_normalisers_;
  std::vector<std::size_t> counts_;
  std::vector<std::uint32_t> candidates_;
};

}  // namespace cospec

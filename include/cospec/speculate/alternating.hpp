// CoS: models take turns as proposer and verifier (docs/algorithm.md, "Alternation" and
// "Invocations").
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::stable_sort
#include <cstddef>    // std::size_t
#include <numeric>    // std::iota
#include <string>     // std::to_string
#include <utility>    // std::move
#include <vector>     // std::vector

#include "cospec/errors.hpp"
#include "cospec/speculate/speculator.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Model i proposes gammas[i] tokens per invocation, the first being its bonus token from
/// the pass that verified the others' proposals. The next model to run is the first, in
/// cost order, that has not scored the oldest pending token; with nothing pending, the
/// first in cost order proposes afresh. gammas[i] == 0 makes model i a scorer only: it
/// verifies the others' proposals and never proposes (all zeros is standard decoding).
/// With p_min > 0, a proposer's run ends early after a token its own distribution gave a
/// probability below p_min (llama.cpp's `--draft-p-min`, HF's
/// `assistant_confidence_threshold`): unsure proposals are rarely accepted, and every
/// further one would cost a pass of the proposer. The token that fell below stays
/// proposed, since the verifier's pass scores it at almost no extra cost.
class alternating {
 public:
  /// Cost order is cheapest first; by default the models with longer proposals are taken as
  /// the cheaper ones (ties keep model order). p_min in [0, 1].
  explicit alternating(std::vector<std::size_t> gammas, std::vector<std::size_t> cost_order = {}, float p_min = 0.0f)
      : gammas_(std::move(gammas)), order_(std::move(cost_order)), p_min_(p_min) {
    if (!(p_min_ >= 0.0f && p_min_ <= 1.0f))
      throw invalid_configuration("alternating: p_min must be in [0, 1], got " + std::to_string(p_min_));
    if (order_.empty()) {
      order_.resize(gammas_.size());
      std::iota(order_.begin(), order_.end(), std::size_t{0});
      std::stable_sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) { return gammas_[a] > gammas_[b]; });
    }
  }

  [[nodiscard]] float p_min() const noexcept { return p_min_; }
  /// Early stops need the proposer's probabilities only when p_min is set.
  [[nodiscard]] bool wants_confidence() const noexcept { return p_min_ > 0.0f; }
  [[nodiscard]] bool continue_proposing(const proposal_confidence& confidence) const noexcept {
    return confidence.probability >= p_min_;
  }

  [[nodiscard]] const std::vector<std::size_t>& gammas() const noexcept { return gammas_; }
  [[nodiscard]] const std::vector<std::size_t>& cost_order() const noexcept { return order_; }

  void check(std::size_t model_count) const {
    if (gammas_.size() != model_count)
      throw invalid_configuration("alternating: " + std::to_string(gammas_.size()) + " gammas for " +
                                  std::to_string(model_count) + " models");
    std::vector<bool> seen(model_count, false);
    if (order_.size() != model_count)
      throw invalid_configuration("alternating: the cost order must list each of the " + std::to_string(model_count) +
                                  " models once");
    for (std::size_t model : order_) {
      if (model >= model_count || seen[model])
        throw invalid_configuration("alternating: the cost order must list each of the " +
                                    std::to_string(model_count) + " models once");
      seen[model] = true;
    }
  }

  invocation next(const schedule_view& view) const noexcept {
    const std::size_t oldest = 0;  // with nothing pending, slot 0 is the frontier
    for (std::size_t model : order_)
      if (!view.scored(model, oldest)) return {model, gammas_[model]};
    return {order_.front(), gammas_[order_.front()]};  // unreachable: the decoder settles first
  }

 private:
  std::vector<std::size_t> gammas_;
  std::vector<std::size_t> order_;
  float p_min_;
};

}  // namespace cospec

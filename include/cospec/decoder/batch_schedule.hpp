// How a batch decoder chooses the model of its next forward pass (docs/engine.md, "Serving
// many requests"): the step policy and its default; and whether the batch speculates at all
// (the speculation gate).
#pragma once

#include "cospec/abi.hpp"

#include <cmath>       // std::isfinite
#include <cstddef>     // std::size_t
#include <functional>  // std::function
#include <limits>      // std::numeric_limits
#include <span>        // std::span

#include "cospec/speculate/speculator.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// The requests whose next pass is on one model, as a step policy sees them.
struct waiting_pass_group {
  std::size_t requests = 0;      ///< requests waiting on this model
  std::size_t tokens = 0;        ///< tokens their passes would feed together
  std::size_t longest_wait = 0;  ///< steps the longest-waiting of them has waited
};

/// Chooses the model of the next pass from one group per model; must return a model whose
/// group has requests > 0 (anything else is a usage_error of the batch decoder).
using step_policy = std::function<std::size_t(std::span<const waiting_pass_group>)>;

/// The default step policy: the model most requests wait on (ties to the lower index), so
/// that each pass serves as many requests as it can; but once a request has waited `patience`
/// steps, the model of the longest wait, so that no request starves. Each request's passes are
/// the ones it would make alone whatever the order, so a pass serving r requests does the work
/// of r passes for one pass's fixed cost: on the cost clock the fullest pass saves the most.
struct fullest_pass {
  std::size_t patience = 8;

  [[nodiscard]] std::size_t operator()(std::span<const waiting_pass_group> groups) const noexcept {
    std::size_t fullest = groups.size();
    std::size_t starved = groups.size();
    for (std::size_t k = 0; k < groups.size(); ++k) {
      const waiting_pass_group& g = groups[k];
      if (g.requests == 0) continue;
      if (fullest == groups.size() || g.requests > groups[fullest].requests) fullest = k;
      if (g.longest_wait >= patience && (starved == groups.size() || g.longest_wait > groups[starved].longest_wait))
        starved = k;
    }
    return starved != groups.size() ? starved : fullest;
  }
};

/// Decides, for a whole batch, whether its requests speculate or only score (docs/engine.md,
/// "The batch decides whether to speculate"). A request that plans alone cannot see what its
/// speculation costs the others: in a compute-bound pass its extra tokens are paid by
/// everyone, and a request that speculates drifts out of step, so the passes it misses serve
/// fewer requests. The gate compares what the batch as a whole pays per committed token under
/// each advice. It keeps one advice for `epoch_steps` steps; after each such epoch it takes
/// the advice with the lower cost per token (each advice's sums decayed by `decay` per epoch of
/// that advice). Scoring only needs no trial when the caller predicts its cost (standard
/// decoding in lockstep pays exactly sum_k (a_k + b_k S) for S tokens); then speculation's
/// measured cost is compared with that prediction step by step (the cost of its steps over
/// what their tokens would have cost scoring only, at each step's own batch size), so that a
/// batch that shrinks or grows between the measurement and the decision (requests ending,
/// fixed costs shared by fewer) does not reverse it. Otherwise the gate tries an advice it has
/// never tried. It tries the other advice for one epoch `probe_every` epochs
/// after the last such probe; each probe that confirms the choice doubles that interval (up to
/// `probe_every * 8`), and one that overturns it sets it back, so that the worse advice costs
/// little once it is known while a change in the batch (more requests, other acceptance) is
/// still seen.
class speculation_gate {
 public:
  struct settings {
    std::size_t epoch_steps = 8;
    std::size_t probe_every = 8;
    double decay = 0.5;
  };

  speculation_gate() = default;
  explicit speculation_gate(settings s) : settings_(s), interval_(s.probe_every), next_probe_(s.probe_every) {}

  [[nodiscard]] batch_advice advice() const noexcept { return current_; }

  /// The batch's cost per committed token under `advice` so far (decayed), or +inf if unknown.
  [[nodiscard]] double cost_per_token(batch_advice advice) const noexcept {
    const std::size_t a = index(advice);
    return tokens_[a] > 0.0 ? cost_[a] / tokens_[a] : std::numeric_limits<double>::infinity();
  }

  /// Speculation's cost over what its tokens would have cost scoring only, as predicted at
  /// each of its steps (decayed like the sums), or +inf if no step of it had a prediction.
  [[nodiscard]] double speculation_relative_cost() const noexcept {
    return reference_ > 0.0 ? predicted_cost_ / reference_ : std::numeric_limits<double>::infinity();
  }

  /// One step under advice(): its pass cost `cost` on the cost clock and committed `tokens`;
  /// `score_only_cost` is the batch's cost per token of scoring only, as predicted now, or +inf
  /// if the caller cannot tell (then the gate measures it).
  void observe_step(double cost, std::size_t tokens,
                    double score_only_cost = std::numeric_limits<double>::infinity()) noexcept {
    predicted_ = score_only_cost;
    epoch_cost_ += cost;
    epoch_tokens_ += static_cast<double>(tokens);
    if (std::isfinite(score_only_cost)) {
      epoch_predicted_cost_ += cost;
      epoch_reference_ += static_cast<double>(tokens) * score_only_cost;
    }
    if (++steps_ < settings_.epoch_steps) return;
    const std::size_t a = index(current_);
    cost_[a] = settings_.decay * cost_[a] + epoch_cost_;
    tokens_[a] = settings_.decay * tokens_[a] + epoch_tokens_;
    if (current_ == batch_advice::speculate) {
      predicted_cost_ = settings_.decay * predicted_cost_ + epoch_predicted_cost_;
      reference_ = settings_.decay * reference_ + epoch_reference_;
    }
    tried_[a] = true;
    steps_ = 0;
    epoch_cost_ = epoch_tokens_ = epoch_predicted_cost_ = epoch_reference_ = 0.0;
    ++epochs_;
    const bool relative = std::isfinite(predicted_) && reference_ > 0.0;
    const bool speculation_dearer =
        relative ? speculation_relative_cost() > 1.0
                 : (std::isfinite(predicted_) ? predicted_ : cost_per_token(batch_advice::score_only)) <
                       cost_per_token(batch_advice::speculate);
    const batch_advice cheaper = speculation_dearer ? batch_advice::score_only : batch_advice::speculate;
    if (probing_) {
      probing_ = false;
      const std::size_t longest = settings_.probe_every * 8;
      interval_ = cheaper == chosen_ ? (interval_ * 2 < longest ? interval_ * 2 : longest) : settings_.probe_every;
      next_probe_ = epochs_ + interval_;
    }
    const batch_advice other = opposite(cheaper);
    const bool predicted = other == batch_advice::score_only && std::isfinite(predicted_);
    if (!predicted && (!tried_[index(other)] || epochs_ >= next_probe_)) {
      probing_ = tried_[index(other)];  // the first try of an advice is no probe of a choice
      chosen_ = cheaper;
      current_ = other;
      if (!probing_) next_probe_ = epochs_ + 1 + interval_;
      return;
    }
    current_ = cheaper;
  }

 private:
  static std::size_t index(batch_advice advice) noexcept { return advice == batch_advice::speculate ? 0 : 1; }
  static batch_advice opposite(batch_advice advice) noexcept {
    return advice == batch_advice::speculate ? batch_advice::score_only : batch_advice::speculate;
  }

  settings settings_;
  batch_advice current_ = batch_advice::speculate;
  batch_advice chosen_ = batch_advice::speculate;  // the choice a running probe tests
  bool probing_ = false;
  std::size_t interval_ = 8;    // epochs between probes
  std::size_t next_probe_ = 8;  // the epoch count at which the next probe starts
  double predicted_ = std::numeric_limits<double>::infinity();  // scoring only, per token
  std::size_t steps_ = 0;
  std::size_t epochs_ = 0;
  double epoch_cost_ = 0.0;
  double epoch_tokens_ = 0.0;
  double epoch_predicted_cost_ = 0.0;  // this epoch's cost over steps with a prediction
  double epoch_reference_ = 0.0;       // their tokens priced at the predicted score-only cost
  double predicted_cost_ = 0.0;        // the same for speculation's epochs, decayed
  double reference_ = 0.0;
  double cost_[2] = {0.0, 0.0};
  double tokens_[2] = {0.0, 0.0};
  bool tried_[2] = {false, false};
};

}  // namespace cospec

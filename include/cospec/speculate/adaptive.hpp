// Adaptive CoS: proposal lengths chosen online from observed acceptance and pass costs
// (docs/engine.md, "adaptive"; docs/theory.md, "The schedule does not matter").
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::stable_sort, std::clamp
#include <cmath>      // std::isfinite
#include <cstddef>    // std::size_t
#include <numeric>    // std::iota
#include <span>       // std::span
#include <string>     // std::to_string
#include <utility>    // std::move
#include <vector>     // std::vector

#include "cospec/errors.hpp"
#include "cospec/speculate/pass_cost_fit.hpp"
#include "cospec/speculate/speculator.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Settings of the adaptive policy.
struct adaptive_options {
  /// Longest proposal any model makes in one invocation.
  std::size_t max_gamma = 8;
  /// Weight of the past in the running estimates, per observation: 0.95 remembers about the
  /// last 20 outcomes, which follows a change of regime within a few dozen tokens while
  /// averaging out chance (0.9 follows faster but is noisier on steady text, 0.98 lags).
  double decay = 0.95;
  /// How many observations' worth of trust a position's estimate gives to the position before
  /// it: positions that are rarely reached start from their predecessor's estimate instead of
  /// the prior, so a long run is tried as soon as the short ones are accepted.
  double pooling = 4.0;
  /// Acceptance assumed before anything is observed.
  double prior_acceptance = 0.5;
  /// Relative cost of one forward pass of each model (the same for a pass over any number of
  /// tokens; give the decoder's cost clock's per-pass costs here to plan with them). Empty:
  /// every pass of every model costs the same, unless `measure_pass_costs`.
  std::vector<double> pass_costs;
  /// Opt-in: learn each model's pass cost from the adapters' wall-clock timings instead,
  /// fitted as `a + b * tokens` (`adaptive::observe_pass`), which is what a server with models
  /// of unknown relative speed wants. The price is reproducibility: the timings choose the
  /// schedule and the schedule which proposals are drawn, so one seed, models and prompt can
  /// give different tokens from run to run (each run is still an exact sample of the target;
  /// greedy output is unaffected). Off by default: the promise of docs/engine.md holds.
  /// Cannot be combined with `pass_costs`.
  bool measure_pass_costs = false;
  /// Ends a proposer's run early after a token its own distribution gave a probability below
  /// p_min, as alternating's p_min does (in [0, 1]; 0: never). The run's length is then the
  /// smaller of the planned one and where confidence fell; the acceptance estimates still see
  /// every verified token.
  float p_min = 0.0f;
};

/// CoS with each invocation's proposal length chosen to maximise expected committed tokens
/// per unit of cost.
///
/// Model k proposing g tokens in a round that every other model must score commits in
/// expectation `1 + sum_{i=1..g} A_i` tokens, A_i = prod_{j<i} a_k[j], where a_k[j] is the
/// running estimate of the probability that k's proposal at position j of its run is accepted
/// given that the ones before it were; the round costs `c_k(2) + (g - 1) c_k(1) +
/// sum_{m != k} c_m(g + 1) + A_g (1 - b) c_k(1)`, with c_m(t) the cost of a pass of model m
/// over t tokens and b the acceptance of the bonus token that ends a fully accepted run
/// (docs/theory.md, "Adaptive speculation"). The policy picks the g in [1, max_gamma] with the
/// most tokens per unit of cost. Given pass costs are per pass (c_m(t) = c_m), and so are the
/// equal costs of the default; measured ones (opt-in, `measure_pass_costs`) are fitted as
/// a + b t, since a real engine's verification pass grows with its tokens. Unless costs are
/// measured the policy is deterministic: one seed, models and prompt give one output.
///
/// The guard: with costs per pass, alternating with g = 1 costs in expectation no more per
/// token than standard decoding, whatever the acceptance (docs/theory.md): each pass is one
/// standard decoding would make anyway, and every accepted proposal saves one. So when
/// acceptance collapses the policy falls back to g = 1, which keeps measuring acceptance with
/// every bonus token (the probe is free) and lengthens proposals again when they pay. Only
/// measured costs that grow with a pass's tokens (a batch of many requests on a compute-bound
/// engine, docs/benchmarks.md, "Serving many requests") can make g = 1 dearer than standard
/// decoding; then the policy answers g = 0 (the model only scores) until the costs change,
/// unless a batch decoder's speculation gate advises it (advise()): whether to speculate at
/// all is then the batch's choice, and the policy only picks the length.
/// The schedule never changes the output distribution.
class adaptive {
 public:
  explicit adaptive(std::size_t model_count, adaptive_options options = {})
      : options_(std::move(options)), model_count_(model_count) {
    if (model_count_ == 0) throw invalid_configuration("adaptive: needs at least one model");
    if (options_.max_gamma == 0) throw invalid_configuration("adaptive: max_gamma must be >= 1");
    if (!(options_.decay >= 0.0 && options_.decay < 1.0))
      throw invalid_configuration("adaptive: decay must be in [0, 1), got " + std::to_string(options_.decay));
    if (!(options_.prior_acceptance > 0.0 && options_.prior_acceptance < 1.0))
      throw invalid_configuration("adaptive: prior_acceptance must be in (0, 1)");
    if (!(options_.pooling >= 0.0) || !std::isfinite(options_.pooling))
      throw invalid_configuration("adaptive: pooling must be finite and >= 0");
    if (!(options_.p_min >= 0.0f && options_.p_min <= 1.0f))
      throw invalid_configuration("adaptive: p_min must be in [0, 1], got " + std::to_string(options_.p_min));
    if (!options_.pass_costs.empty()) {
      if (options_.measure_pass_costs)
        throw invalid_configuration("adaptive: pass costs are given or measured, not both (leave pass_costs empty to "
                                    "measure them)");
      if (options_.pass_costs.size() != model_count_)
        throw invalid_configuration("adaptive: " + std::to_string(options_.pass_costs.size()) + " pass costs for " +
                                    std::to_string(model_count_) + " models");
      for (double c : options_.pass_costs)
        if (!(c > 0.0) || !std::isfinite(c)) throw invalid_configuration("adaptive: pass costs must be finite and > 0");
    }
    fits_.assign(model_count_, pass_cost_fit(options_.decay));  // unknown until measured; equal costs meanwhile
    accepted_.assign(model_count_, std::vector<double>(options_.max_gamma, 0.0));
    observed_.assign(model_count_, std::vector<double>(options_.max_gamma, 0.0));
    order_.resize(model_count_);
    update_order();
  }

  void check(std::size_t model_count) const {
    if (model_count != model_count_)
      throw invalid_configuration("adaptive: built for " + std::to_string(model_count_) + " models, used with " +
                                  std::to_string(model_count));
  }

  invocation next(const schedule_view& view) const {
    for (std::size_t model : order_)
      if (!view.scored(model, 0)) return {model, gamma_now(model)};
    return {order_.front(), gamma_now(order_.front())};  // unreachable: the decoder settles first
  }

  /// A batch decoder's advice (advisable_speculator): under batch_advice::score_only every
  /// invocation only scores, whatever the estimates say; under batch_advice::speculate every
  /// proposer proposes at least one token, since whether to speculate at all is then the
  /// batch's decision (a request alone cannot see what its choice costs the others, and
  /// requests that each switch between scoring and proposing drift apart). Not reset by
  /// reset(): it is the batch's.
  void advise(batch_advice advice) noexcept {
    advice_ = advice;
    advised_ = true;
  }
  /// Whether the schedule follows measured time already (measure_pass_costs).
  [[nodiscard]] bool follows_timings() const noexcept { return options_.measure_pass_costs; }

  [[nodiscard]] bool wants_confidence() const noexcept { return options_.p_min > 0.0f; }
  [[nodiscard]] bool continue_proposing(const proposal_confidence& confidence) const noexcept {
    return confidence.probability >= options_.p_min;
  }

  /// Records a verification outcome of `proposer` at position `chain_index` of its run.
  void observe(std::size_t proposer, std::size_t chain_index, bool accepted) {
    if (chain_index >= options_.max_gamma) return;
    double& a = accepted_[proposer][chain_index];
    double& n = observed_[proposer][chain_index];
    a = options_.decay * a + (accepted ? 1.0 : 0.0);
    n = options_.decay * n + 1.0;
  }

  /// A forward pass of `model` over `tokens` tokens took `seconds`; ignored unless
  /// `measure_pass_costs`. The cost of a pass is fitted as `a + b * tokens` by decayed least squares: on
  /// a real engine a verification pass over g + 1 tokens costs more than a one-token proposal
  /// pass (1.2-1.7x for 4-8 tokens on the transformer example), and a flat cost would make
  /// long proposals look cheaper than they are.
  void observe_pass(std::size_t model, std::size_t tokens, double seconds) {
    if (!options_.measure_pass_costs) return;
    fits_[model].observe(tokens, seconds);
    update_order();
  }

  /// The cost of a pass of `model` over `tokens` tokens, as the policy sees it now: the given
  /// pass cost, the fit of the measured ones (1 before any measurement), or 1.
  [[nodiscard]] double pass_cost_estimate(std::size_t model, std::size_t tokens = 1) const {
    if (!options_.pass_costs.empty()) return options_.pass_costs[model];
    if (!options_.measure_pass_costs || !fits_[model].measured()) return 1.0;
    return fits_[model].cost(tokens);
  }

  /// The proposal length model k would get now.
  [[nodiscard]] std::size_t best_gamma(std::size_t model) const { return best_round(model).gamma; }

  /// A round's plan: the proposer's length and the committed tokens it promises per unit of cost.
  struct round_plan {
    std::size_t gamma;
    double rate;
  };

  /// The best round for `model` (the length best_gamma() gives, and its rate), or, with
  /// `leading` (the acceptance of each of a run of proposals that cost no pass, from the
  /// context, given the ones before it), the best round whose chain starts with them: the
  /// model's pass scores them, its own g proposals (g in [0, max_gamma]) go on from their end
  /// and count only if every leading one is accepted, and every other model scores the lot.
  [[nodiscard]] round_plan best_round(std::size_t model, std::span<const double> leading = {}) const {
    std::size_t verifier = model;  // the most expensive other model: it ends a full run with its bonus
    for (std::size_t m = 0; m < model_count_; ++m)
      if (m != model && (verifier == model || cost(m) > cost(verifier))) verifier = m;
    // After a fully accepted run, the bonus token is verified by this model's next pass; if it
    // is rejected, that pass only fed a replacement and one more pass is needed.
    const double bonus_rejected = verifier == model ? 0.0 : 1.0 - acceptance_estimate(verifier, 0);
    const std::size_t lead = leading.size();
    double lead_tokens = 0.0;  // expected accepted free proposals
    double lead_alive = 1.0;   // probability that all of them are accepted
    for (double a : leading) {
      lead_alive *= a;
      lead_tokens += lead_alive;
    }
    double tokens = 1.0 + lead_tokens;  // the replacement or bonus that ends every round
    double reached = 1.0;               // probability that proposal g is reached and accepted
    double previous = options_.prior_acceptance;
    round_plan best{1, 0.0};
    for (std::size_t g = 1; g <= options_.max_gamma; ++g) {
      previous = estimate(model, g - 1, previous);
      reached *= previous;
      tokens += lead_alive * reached;
      // The proposer's first pass feeds what it has not seen (the other's last proposal and
      // bonus, and the free proposals), the others one token each; every other model scores
      // the free proposals, the g proposals and the token before them in one pass.
      double round_cost = pass_cost_estimate(model, lead + 2) + static_cast<double>(g - 1) * cost(model) +
                          lead_alive * reached * bonus_rejected * cost(model);
      for (std::size_t m = 0; m < model_count_; ++m)
        if (m != model) round_cost += pass_cost_estimate(m, lead + g + 1);
      const double rate = tokens / round_cost;
      if (rate > best.rate) best = {g, rate};
    }
    // A round in which every model only scores (the free proposals, if any). Without them it is
    // standard decoding, which with costs per pass is never better than g = 1 (the guard above);
    // with measured costs that grow with the tokens of a pass (a compute-bound batch) every
    // proposal can cost more than it saves, and then the model only scores.
    double scoring_cost = 0.0;
    for (std::size_t m = 0; m < model_count_; ++m) scoring_cost += pass_cost_estimate(m, lead + 1);
    const double scoring_rate = (1.0 + lead_tokens) / scoring_cost;
    if (scoring_rate > best.rate) best = {0, scoring_rate};
    return best;
  }

  /// The acceptance estimate of `model` at position `chain_index` of its runs.
  [[nodiscard]] double acceptance_estimate(std::size_t model, std::size_t chain_index) const {
    double previous = options_.prior_acceptance;
    for (std::size_t j = 0; j <= chain_index; ++j) previous = estimate(model, j, previous);
    return previous;
  }

 private:
  [[nodiscard]] std::size_t gamma_now(std::size_t model) const {
    if (advice_ == batch_advice::score_only) return 0;
    const std::size_t gamma = best_gamma(model);
    return advised_ && gamma == 0 ? 1 : gamma;
  }

  /// The cost of a one-token pass: what orders the models (cheapest proposes first).
  [[nodiscard]] double cost(std::size_t model) const { return pass_cost_estimate(model, 1); }

  /// Decayed acceptance count over decayed trials, pooled with `pooling` pseudo-trials at the
  /// estimate of the position before.
  [[nodiscard]] double estimate(std::size_t model, std::size_t chain_index, double previous) const {
    return (accepted_[model][chain_index] + options_.pooling * previous) /
           (observed_[model][chain_index] + options_.pooling);
  }

  /// Cheapest first: it proposes afresh after a rejection and verifies first.
  void update_order() {
    std::iota(order_.begin(), order_.end(), std::size_t{0});
    std::stable_sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) { return cost(a) < cost(b); });
  }

  adaptive_options options_;
  std::size_t model_count_;
  std::vector<pass_cost_fit> fits_;  // measured pass costs, per model
  std::vector<std::vector<double>> accepted_;  // decayed acceptances, [model][chain index]
  std::vector<std::vector<double>> observed_;  // decayed trials, [model][chain index]
  std::vector<std::size_t> order_;
  batch_advice advice_ = batch_advice::speculate;
  bool advised_ = false;  // a batch decoder gates this policy
};

}  // namespace cospec

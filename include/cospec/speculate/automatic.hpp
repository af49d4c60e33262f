// The policy that picks the fastest exact method for each request and keeps picking as it
// learns (docs/engine.md, "automatic"; docs/theory.md, "The automatic choice").
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::min, std::fill
#include <cmath>      // std::isnan
#include <cstddef>    // std::size_t
#include <span>       // std::span
#include <utility>    // std::move
#include <vector>     // std::vector

#include "cospec/errors.hpp"
#include "cospec/speculate/adaptive.hpp"
#include "cospec/speculate/mixture_sampling.hpp"
#include "cospec/speculate/speculator.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Settings of the automatic policy.
struct automatic_options {
  /// Relative cost of one forward pass of each model (empty: equal, unless measured). Give the
  /// cost clock's per-pass costs to plan with them.
  std::vector<double> pass_costs;
  /// Opt-in: learn each model's cost from the adapters' timings (a + b * tokens), as
  /// adaptive_options::measure_pass_costs does; the price is that one seed no longer gives one
  /// output (each run is still an exact sample; greedy output does not change).
  bool measure_pass_costs = false;
  /// Longest run of one model's proposals (CoS, speculative mixture sampling).
  std::size_t max_gamma = 8;
  /// Longest run of proposals from the context per invocation (0: never look them up).
  std::size_t max_context_proposals = 8;
  /// Memory of the acceptance estimates, per observation (adaptive_options::decay).
  double decay = 0.95;
  double prior_acceptance = 0.5;
  /// Where the text's end has a match, whether the policy may put it before a model's own
  /// proposals (invocation::context_first) when that is priced better.
  bool context_first = true;
  /// When sampling, only where the acceptance estimated at the last place of the match is at
  /// least this (a match that stays right deep into its run: text that loops). Under sampling
  /// the price misjudges: on the grid of docs/benchmarks.md ("The automatic choice") taking
  /// the context first wherever it was priced better lost 3-5 % in sampled three-model cells,
  /// and from 0.95 on it loses nowhere measured. Greedy decoding takes it wherever priced better.
  double sampled_context_first_acceptance = 0.95;
};

/// The fastest exact method for each request, chosen from its settings, the pass costs and the
/// acceptance it observes (docs/engine.md, "automatic"):
///  - a weighted ensemble sampled without transforms (the target is exactly the mixture) runs
///    as mixture sampling: plain where no cheaper model pays for itself, speculative where one
///    does, the choice remade before every run from the draws ahead and the acceptance
///    observed per pair of models (mixture_sampling with max_gamma);
///  - every other request (greedy decoding, contrastive decoding and logit arithmetic, any
///    transform, log-probabilities) runs as CoS with adaptive lengths (adaptive), which falls
///    back to standard decoding's passes where measured costs say proposals do not pay;
///  - either way, proposals from the context (invocation::context_proposals): free on a
///    per-pass clock, so always asked for there (a text that does not repeat finds no match and
///    costs a few hash lookups per invocation); with measured costs, only as far as the
///    acceptance observed pays for the tokens they make every model feed. Where the text's end
///    has a match (schedule_view::context_match), the policy prices two plans with the same
///    acceptance estimates, the model's own run and the context's run first with the model's
///    after it (invocation::context_first), and takes the one that promises more tokens per
///    unit of cost (when sampling, only where the match is estimated right deep into its run,
///    automatic_options::sampled_context_first_acceptance): text that loops is then copied
///    before a cheap model is asked to guess it.
/// Every choice is exact, and each is never more expensive than standard decoding in
/// expectation (docs/theory.md, "The automatic choice"). Unless costs are measured the policy
/// is deterministic: one seed, models and prompt give one output.
class automatic {
 public:
  explicit automatic(std::size_t model_count, automatic_options options = {})
      : options_(std::move(options)), mixture_(model_count, mixture_settings(options_)), model_count_(model_count) {
    accepted_.assign(options_.max_context_proposals, 0.0);
    observed_.assign(options_.max_context_proposals, 0.0);
    lead_.assign(options_.max_context_proposals, 0.0);
    paid_.assign(model_count, 0);
  }

  [[nodiscard]] const automatic_options& options() const noexcept { return options_; }
  /// The mixture-sampling policy it runs (and through it the adaptive one).
  [[nodiscard]] const mixture_sampling& mixture_policy() const noexcept { return mixture_; }

  [[nodiscard]] bool wants_mixture() const noexcept { return true; }

  void check(std::size_t model_count) const { mixture_.check(model_count); }

  /// Asks the session to show the context's match before each invocation
  /// (context_matching_speculator), unless context proposals are off.
  [[nodiscard]] bool wants_context_match() const noexcept { return options_.max_context_proposals > 0; }

  invocation next(const schedule_view& view) const {
    invocation chosen = mixture_.next(view);
    chosen.context_proposals = context_length();
    const std::size_t match = std::min({view.context_match(), chosen.context_proposals, view.room()});
    // Where the context has a match, weigh putting it first (the model's pass scores it, and
    // any proposals of the model's own go on from its end) against the plan without it. The
    // acceptances are estimated per place in the context's run.
    if (match == 0 || advice_ == batch_advice::score_only || !options_.context_first) return chosen;
    for (std::size_t i = 0; i < match; ++i) lead_[i] = context_acceptance(i);
    if (!view.greedy() && lead_[match - 1] < options_.sampled_context_first_acceptance) return chosen;
    const std::span<const double> lead(lead_.data(), match);
    if (view.mixture()) {
      if (view.pending_count() > 0) return chosen;
      const mixture_sampling::plan without = mixture_.planned(view);
      if (without.chosen.proposals == 0) return chosen;  // a drawn model's pass takes the context first anyway
      if (mixture_context_rate(view, lead) > without.rate) return {view.drawn(0), 0, chosen.context_proposals, true};
      return chosen;
    }
    const adaptive& rounds = mixture_.fallback_policy();
    // Without: the model's run as adaptive plans it. The context's proposals that may follow
    // it are not counted: the match after the model's tokens is not known, and they wait for
    // the model's own next pass, where taken first they are scored by this one.
    const adaptive::round_plan without = rounds.best_round(chosen.model);
    const adaptive::round_plan with = rounds.best_round(chosen.model, lead);
    if (!(with.rate > without.rate)) return chosen;
    return {chosen.model, std::min(with.gamma, view.room() - match), chosen.context_proposals, true};
  }

  /// How many context proposals an invocation asks for now.
  [[nodiscard]] std::size_t context_length() const {
    const std::size_t longest = options_.max_context_proposals;
    if (!options_.measure_pass_costs || longest == 0) return longest;
    // A context proposal makes every model feed one token more; it pays when the chance that it
    // is reached and accepted, times what a token costs standard decoding, exceeds that.
    const adaptive& costs = mixture_.fallback_policy();
    double per_token = 0.0;
    double standard = 0.0;
    for (std::size_t k = 0; k < model_count_; ++k) {
      per_token += std::max(0.0, costs.pass_cost_estimate(k, 2) - costs.pass_cost_estimate(k, 1));
      standard += costs.pass_cost_estimate(k, 1);
    }
    double reached = 1.0;
    double previous = options_.prior_acceptance;
    for (std::size_t i = 0; i < longest; ++i) {
      previous = (accepted_[i] + 4.0 * previous) / (observed_[i] + 4.0);
      reached *= previous;
      if (reached * standard <= per_token) return i;
    }
    return longest;
  }

  /// Acceptance estimate of the context proposal at `chain_index` given the ones before it.
  [[nodiscard]] double context_acceptance(std::size_t chain_index) const {
    double previous = options_.prior_acceptance;
    for (std::size_t i = 0; i <= chain_index && i < accepted_.size(); ++i)
      previous = (accepted_[i] + 4.0 * previous) / (observed_[i] + 4.0);
    return previous;
  }

  void observe_context(std::size_t chain_index, bool accepted) {
    if (chain_index >= accepted_.size()) return;
    accepted_[chain_index] = options_.decay * accepted_[chain_index] + (accepted ? 1.0 : 0.0);
    observed_[chain_index] = options_.decay * observed_[chain_index] + 1.0;
  }
  void observe(std::size_t proposer, std::size_t chain_index, bool accepted) {
    mixture_.observe(proposer, chain_index, accepted);
  }
  void observe_mixture(std::size_t proposer, std::size_t drawn, bool accepted) {
    mixture_.observe_mixture(proposer, drawn, accepted);
  }
  void observe_pass(std::size_t model, std::size_t tokens, double seconds) { mixture_.observe_pass(model, tokens, seconds); }
  void advise(batch_advice advice) noexcept {
    advice_ = advice;
    mixture_.advise(advice);
  }
  [[nodiscard]] bool follows_timings() const noexcept { return mixture_.follows_timings(); }

 private:
  static mixture_options mixture_settings(const automatic_options& options) {
    if (options.max_gamma == 0) throw invalid_configuration("automatic: max_gamma must be >= 1");
    if (std::isnan(options.sampled_context_first_acceptance))
      throw invalid_configuration("automatic: sampled_context_first_acceptance must be a number");
    mixture_options settings;
    settings.max_gamma = options.max_gamma;
    settings.fallback.max_gamma = options.max_gamma;
    settings.fallback.pass_costs = options.pass_costs;
    settings.fallback.measure_pass_costs = options.measure_pass_costs;
    settings.fallback.decay = options.decay;
    settings.fallback.prior_acceptance = options.prior_acceptance;
    return settings;
  }

  /// Under mixture sampling, with nothing pending: the committed tokens per unit of cost of
  /// the drawn model's pass scoring `lead.size()` context proposals, each verified by the
  /// model drawn for its position (whose pass is paid the first time the run reaches a
  /// position drawn for it), the position after a surviving run sampled by its own.
  [[nodiscard]] double mixture_context_rate(const schedule_view& view, std::span<const double> lead) const {
    std::fill(paid_.begin(), paid_.end(), 0);
    const adaptive& costs = mixture_.fallback_policy();
    double alive = 1.0;
    double tokens = 0.0;
    double cost = 0.0;
    for (std::size_t s = 0; s <= lead.size(); ++s) {
      const std::size_t drawn = view.drawn(s);
      if (!paid_[drawn]) {
        cost += alive * costs.pass_cost_estimate(drawn, lead.size() + 1);
        paid_[drawn] = 1;
      }
      tokens += alive;
      if (s < lead.size()) alive *= lead[s];
    }
    return tokens / cost;
  }

  automatic_options options_;
  mixture_sampling mixture_;
  std::size_t model_count_;
  std::vector<double> accepted_;  // decayed acceptances of context proposals, by chain index
  std::vector<double> observed_;  // decayed trials
  batch_advice advice_ = batch_advice::speculate;
  mutable std::vector<double> lead_;           // next()'s scratch: acceptance of each context proposal
  mutable std::vector<unsigned char> paid_;    // mixture_context_rate's scratch: models paid for
};

}  // namespace cospec

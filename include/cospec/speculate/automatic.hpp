// The policy that picks the fastest exact method for each request and keeps picking as it
// learns (docs/engine.md, "automatic"; docs/theory.md, "The automatic choice").
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::min
#include <cstddef>    // std::size_t
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
///  - either way, proposals from the context extend every chain (invocation::
///    context_proposals): free on a per-pass clock, so always asked for there (a text that
///    does not repeat finds no match and costs one hash lookup per invocation); with measured
///    costs, only as far as the acceptance observed pays for the tokens they make every model
///    feed.
/// Every choice is exact, and each is never more expensive than standard decoding in
/// expectation (docs/theory.md, "The automatic choice"). Unless costs are measured the policy
/// is deterministic: one seed, models and prompt give one output.
class automatic {
 public:
  explicit automatic(std::size_t model_count, automatic_options options = {})
      : options_(std::move(options)), mixture_(model_count, mixture_settings(options_)), model_count_(model_count) {
    accepted_.assign(options_.max_context_proposals, 0.0);
    observed_.assign(options_.max_context_proposals, 0.0);
  }

  [[nodiscard]] const automatic_options& options() const noexcept { return options_; }
  /// The mixture-sampling policy it runs (and through it the adaptive one).
  [[nodiscard]] const mixture_sampling& mixture_policy() const noexcept { return mixture_; }

  [[nodiscard]] bool wants_mixture() const noexcept { return true; }

  void check(std::size_t model_count) const { mixture_.check(model_count); }

  invocation next(const schedule_view& view) const {
    invocation chosen = mixture_.next(view);
    chosen.context_proposals = context_length();
    return chosen;
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
  void advise(batch_advice advice) noexcept { mixture_.advise(advice); }
  [[nodiscard]] bool follows_timings() const noexcept { return mixture_.follows_timings(); }

 private:
  static mixture_options mixture_settings(const automatic_options& options) {
    if (options.max_gamma == 0) throw invalid_configuration("automatic: max_gamma must be >= 1");
    mixture_options settings;
    settings.max_gamma = options.max_gamma;
    settings.fallback.max_gamma = options.max_gamma;
    settings.fallback.pass_costs = options.pass_costs;
    settings.fallback.measure_pass_costs = options.measure_pass_costs;
    settings.fallback.decay = options.decay;
    settings.fallback.prior_acceptance = options.prior_acceptance;
    return settings;
  }

  automatic_options options_;
  mixture_sampling mixture_;
  std::size_t model_count_;
  std::vector<double> accepted_;  // decayed acceptances of context proposals, by chain index
  std::vector<double> observed_;  // decayed trials
};

}  // namespace cospec

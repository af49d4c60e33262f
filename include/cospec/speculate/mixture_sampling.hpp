// Mixture sampling: a weighted ensemble sampled by drawing one model per position, and its
// speculative form (docs/algorithm.md, "Mixture sampling"; docs/theory.md, "Mixture sampling").
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::min, std::fill
#include <cstddef>  // std::size_t
#include <string>   // std::to_string
#include <utility>  // std::move
#include <vector>   // std::vector

#include "cospec/errors.hpp"
#include "cospec/speculate/adaptive.hpp"
#include "cospec/speculate/speculator.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Settings of mixture sampling.
struct mixture_options {
  /// Longest run of proposals one model makes ahead of the drawn models' passes. 0 is plain
  /// mixture sampling: only the model drawn for a position runs, once, and its distribution
  /// alone gives the token. From 1 on it is speculative mixture sampling: a cheaper model may
  /// propose over the coming positions, where its own draws are accepted without a test and
  /// every other position is verified against the distribution of the model drawn for it,
  /// which checks every position of the run it was drawn for in one pass.
  std::size_t max_gamma = 0;
  /// The adaptive policy that runs requests whose target is not exactly a mixture (greedy
  /// decoding, a transform, a combiner that is not a mixture): CoS with adaptive lengths. Its
  /// pass costs (given, or measured with measure_pass_costs) also price the speculative plans,
  /// and its decay and prior_acceptance are those of the acceptance estimates per pair of
  /// proposer and drawn model.
  adaptive_options fallback;
};

/// Mixture sampling of a weighted ensemble (the mixture-model view of ensembling, Fu et al.,
/// ICML 2026): sampling r = sum_j w_j softmax(l_j / T) is drawing a model j ~ w and a token
/// from its softmax alone, so only the drawn model has to run at each position, and a model
/// that was not drawn is fed the tokens it missed in its next pass. With n models of equal
/// cost that is one pass per token where standard decoding pays n.
///
/// The session draws the models (from the request's seed, independently of everything else;
/// schedule_view::drawn) and settles each position once its drawn model has scored it; this
/// policy only chooses who runs:
///  - plain (max_gamma = 0): the model drawn for the oldest waiting position;
///  - speculative (max_gamma >= 1): with nothing pending, a model cheaper than the one drawn
///    for the frontier may propose a run instead, chosen from the draws ahead and the
///    acceptance observed per pair of proposer and drawn model to maximise expected tokens
///    per unit of cost (or no run, when none beats the drawn model's own pass); a pending run
///    waits for the model drawn for its oldest token, which verifies every position of the
///    run it was drawn for and, where the run ends on a position another model was drawn
///    for, proposes its bonus token there.
/// Requests that cannot be mixture sampled run under the fallback adaptive policy (CoS), and
/// generation_statistics::mixture says which way a request went. Either way the output has
/// exactly the distribution of standard collaborative decoding.
class mixture_sampling {
 public:
  /// Throws invalid_configuration for settings that can never work (as adaptive's).
  explicit mixture_sampling(std::size_t model_count, mixture_options options = {})
      : options_(std::move(options)), fallback_(model_count, options_.fallback), model_count_(model_count) {
    accepted_.assign(model_count_ * model_count_, 0.0);
    observed_.assign(model_count_ * model_count_, 0.0);
    paid_.assign(model_count_, 0);
  }

  [[nodiscard]] const mixture_options& options() const noexcept { return options_; }
  /// The policy of requests that run as collaborative decoding.
  [[nodiscard]] const adaptive& fallback_policy() const noexcept { return fallback_; }

  /// Always asks for mixture sampling (mixture_speculator); the session decides per request
  /// whether the target allows it.
  [[nodiscard]] bool wants_mixture() const noexcept { return true; }

  void check(std::size_t model_count) const {
    if (model_count != model_count_)
      throw invalid_configuration("mixture_sampling: built for " + std::to_string(model_count_) + " models, used with " +
                                  std::to_string(model_count));
    fallback_.check(model_count);
  }

  invocation next(const schedule_view& view) const {
    if (!view.mixture()) return fallback_.next(view);
    const std::size_t drawn = view.drawn(0);
    const bool speculative = options_.max_gamma > 0 && advice_ == batch_advice::speculate;
    if (view.pending_count() > 0) {
      // The oldest pending token waits for its drawn model (its proposer was not drawn, or it
      // would have been accepted). After verifying, that model holds the row past the run: a
      // bonus proposal there costs nothing. Not where the position is its own (the session
      // samples it directly, and a proposal after that would need another pass), nor where it
      // is cheaper than the model drawn there: then, with nothing left pending, best_plan
      // weighs a whole run of its proposals, whose first is free.
      const std::size_t after = view.drawn(view.pending_count());
      const bool bonus = speculative && after != drawn && !(cost(drawn) < cost(after));
      return {drawn, bonus ? std::size_t{1} : std::size_t{0}};
    }
    if (!speculative) return {drawn, 0};
    return best_plan(view).chosen;
  }

  /// With nothing pending under mixture sampling: the invocation next() chooses and the
  /// committed tokens it promises per unit of cost.
  struct plan {
    invocation chosen;
    double rate;
  };
  [[nodiscard]] plan planned(const schedule_view& view) const {
    const std::size_t drawn = view.drawn(0);
    if (options_.max_gamma == 0 || advice_ != batch_advice::speculate) return {{drawn, 0}, 1.0 / cost(drawn)};
    return best_plan(view);
  }

  /// A one-token pass of `model`, as the fallback policy prices it (given, measured, or 1).
  [[nodiscard]] double cost(std::size_t model) const { return fallback_.pass_cost_estimate(model, 1); }

  /// Acceptance estimate of `proposer`'s proposals against `drawn`'s distribution.
  [[nodiscard]] double acceptance_estimate(std::size_t proposer, std::size_t drawn) const {
    const std::size_t pair = proposer * model_count_ + drawn;
    const double prior = options_.fallback.prior_acceptance;
    const double pooling = options_.fallback.pooling;
    return (accepted_[pair] + pooling * prior) / (observed_[pair] + pooling);
  }

  /// A proposal of `proposer` verified against the distribution of `drawn` (mixture sampling).
  void observe_mixture(std::size_t proposer, std::size_t drawn, bool accepted) {
    const std::size_t pair = proposer * model_count_ + drawn;
    const double decay = options_.fallback.decay;
    accepted_[pair] = decay * accepted_[pair] + (accepted ? 1.0 : 0.0);
    observed_[pair] = decay * observed_[pair] + 1.0;
  }

  /// Outcomes of collaborative decoding (fallback requests).
  void observe(std::size_t proposer, std::size_t chain_index, bool accepted) {
    fallback_.observe(proposer, chain_index, accepted);
  }
  /// Measured pass costs (fallback.measure_pass_costs), for both kinds of request.
  void observe_pass(std::size_t model, std::size_t tokens, double seconds) {
    fallback_.observe_pass(model, tokens, seconds);
  }
  /// A batch decoder's advice: under score_only, no model proposes (plain mixture sampling,
  /// or standard decoding for fallback requests).
  void advise(batch_advice advice) noexcept {
    advice_ = advice;
    fallback_.advise(advice);
  }
  [[nodiscard]] bool follows_timings() const noexcept { return fallback_.follows_timings(); }
  [[nodiscard]] bool wants_confidence() const noexcept { return fallback_.wants_confidence(); }
  [[nodiscard]] bool continue_proposing(const proposal_confidence& confidence) const noexcept {
    return fallback_.continue_proposing(confidence);
  }

 private:
  /// With nothing pending: the drawn model's own pass (one token), or a run of g proposals by
  /// a cheaper model d, whichever promises more tokens per unit of cost. For a run, walking
  /// its positions s = 0 .. g-1 with P the probability that the run is still alive: a position
  /// drawn for d is accepted for sure; one drawn for m costs m's pass the first time the run
  /// reaches such a position (with probability P), yields a token either way (the proposal or
  /// its replacement) and survives with m's acceptance of d's proposals. After a surviving
  /// run, the position past it is sampled for free where one of the verifiers was drawn for it.
  [[nodiscard]] plan best_plan(const schedule_view& view) const {
    const std::size_t drawn = view.drawn(0);
    invocation best{drawn, 0};
    double best_rate = 1.0 / cost(drawn);
    // The lookahead covers max_pending + 2 slots: a run of max_pending proposals and the one after it.
    const std::size_t longest = std::min(options_.max_gamma, view.lookahead() - 2);
    for (std::size_t d = 0; d < model_count_; ++d) {
      const double proposer_cost = cost(d);
      if (d == drawn || !(proposer_cost < cost(drawn))) continue;
      std::fill(paid_.begin(), paid_.end(), 0);
      double alive = 1.0;
      double tokens = 0.0;
      double cost = view.scored(d, 0) ? -proposer_cost : 0.0;  // its first proposal needs no pass then
      for (std::size_t g = 1; g <= longest; ++g) {
        const std::size_t s = g - 1;
        cost += proposer_cost;
        const std::size_t m = view.drawn(s);
        if (m != d) {
          if (!paid_[m]) {
            cost += alive * fallback_.pass_cost_estimate(m, g + 1);
            paid_[m] = 1;
          }
          tokens += alive;
          alive *= acceptance_estimate(d, m);
        } else {
          tokens += alive;
        }
        const std::size_t after = view.drawn(g);
        const double free_token = after != d && paid_[after] ? alive : 0.0;
        const double rate = (tokens + free_token) / cost;
        if (rate > best_rate) {
          best_rate = rate;
          best = {d, g};
        }
      }
    }
    return {best, best_rate};
  }

  mixture_options options_;
  adaptive fallback_;
  std::size_t model_count_;
  std::vector<double> accepted_;  // decayed acceptances, [proposer * n + drawn]
  std::vector<double> observed_;  // decayed trials, [proposer * n + drawn]
  batch_advice advice_ = batch_advice::speculate;
  mutable std::vector<unsigned char> paid_;  // best_plan's scratch: verifiers the run has paid for
};

}  // namespace cospec

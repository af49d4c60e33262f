// The Speculator concept: which model runs next, and how many tokens it proposes
// (docs/algorithm.md, "Alternation" to "Baselines"; docs/engine.md).
#pragma once

#include "cospec/abi.hpp"

#include <concepts>  // std::same_as
#include <cstddef>   // std::size_t
#include <limits>    // std::numeric_limits
#include <span>      // std::span

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// What the decoder tells a speculator before each invocation. Positions are counted from
/// the oldest unverified one: slot s in [0, pending_count()) holds a pending proposal, and
/// slot pending_count() is the frontier, the position after the last proposal.
///
/// Under mixture sampling (mixture()), every position has a model drawn for it from the
/// ensemble's weights, and that model's distribution alone decides its token: a pending
/// token is verified once drawn(slot) has scored it (at once if its proposer was drawn), and
/// the frontier is sampled once drawn(slot) has scored it. Otherwise every model must score a
/// slot first. The draws of the coming positions are known in advance (slots up to
/// lookahead()), are independent of everything else, and never change: a policy may use them
/// to choose who proposes and how far.
class schedule_view {
 public:
  schedule_view(std::size_t model_count, std::size_t pending_count, std::span<const unsigned char> scored,
                std::span<const std::size_t> proposers, std::span<const std::size_t> draws = {},
                std::size_t draws_head = 0, std::size_t generated = 0, std::size_t context_match = 0,
                std::size_t room = std::numeric_limits<std::size_t>::max(), bool greedy = false) noexcept
      : model_count_(model_count),
        pending_count_(pending_count),
        scored_(scored),
        proposers_(proposers),
        draws_(draws),
        draws_head_(draws_head),
        generated_(generated),
        context_match_(context_match),
        room_(room),
        greedy_(greedy) {}

  [[nodiscard]] std::size_t model_count() const noexcept { return model_count_; }
  [[nodiscard]] std::size_t pending_count() const noexcept { return pending_count_; }
  /// Tokens the request has committed so far (the output's length).
  [[nodiscard]] std::size_t generated() const noexcept { return generated_; }
  /// Whether `model` knows its distribution at `slot` (0 <= slot <= pending_count()).
  [[nodiscard]] bool scored(std::size_t model, std::size_t slot) const noexcept {
    return scored_[slot * model_count_ + model] != 0;
  }
  /// The model that proposed the pending token in `slot` (slot < pending_count()), or
  /// model_count() for a proposal from the context (invocation::context_proposals).
  [[nodiscard]] std::size_t proposer(std::size_t slot) const noexcept { return proposers_[slot]; }

  /// How many tokens the context would propose now after the last pending one (what followed
  /// the most recent earlier occurrence of the text's end; docs/algorithm.md, "Proposals from
  /// the context"), at most room(). Looked up only for a speculator that asks
  /// (context_matching_speculator); 0 otherwise, and where the text has no match.
  [[nodiscard]] std::size_t context_match() const noexcept { return context_match_; }
  /// How many more proposals may wait for verification (session_options::max_pending less
  /// pending_count(), and no more than the model's context has room for).
  [[nodiscard]] std::size_t room() const noexcept { return room_; }
  /// Whether the request decodes greedily (every proposal is accepted exactly when it is the
  /// target's argmax, and the output does not depend on the schedule token by token).
  [[nodiscard]] bool greedy() const noexcept { return greedy_; }

  /// Whether the request runs as mixture sampling (docs/algorithm.md, "Mixture sampling").
  [[nodiscard]] bool mixture() const noexcept { return !draws_.empty(); }
  /// How many slots from slot 0 have known draws (0 unless mixture()); more than
  /// pending_count() + 1, so that a policy can plan a run past the frontier.
  [[nodiscard]] std::size_t lookahead() const noexcept { return draws_.size(); }
  /// The model drawn for `slot` (slot < lookahead(); mixture() only).
  [[nodiscard]] std::size_t drawn(std::size_t slot) const noexcept {
    return draws_[(draws_head_ + slot) % draws_.size()];
  }
  /// Whether `slot` still waits for `model`'s distribution before it can be settled: the
  /// model drawn for it under mixture sampling, every model otherwise.
  [[nodiscard]] bool waits_for(std::size_t model, std::size_t slot) const noexcept {
    if (scored(model, slot)) return false;
    return !mixture() || drawn(slot) == model;
  }

 private:
  std::size_t model_count_;
  std::size_t pending_count_;
  std::span<const unsigned char> scored_;
  std::span<const std::size_t> proposers_;
  std::span<const std::size_t> draws_;
  std::size_t draws_head_;
  std::size_t generated_;
  std::size_t context_match_;
  std::size_t room_;
  bool greedy_;
};

/// One invocation (docs/algorithm.md, "Invocations"): `model` feeds every token it has not
/// seen in one forward pass, the decoder verifies what all models have now scored, and,
/// unless a rejection ended the invocation, `model` proposes `proposals` tokens (the first
/// from the logits it just computed, the rest one single-token pass each).
/// `context_proposals` (docs/algorithm.md, "Proposals from the context") extends the chain
/// with up to that many tokens copied from the text itself, which cost no pass: before the
/// model's pass, appended to what is pending, when `context_first` or when the model proposes
/// nothing with nothing pending (its pass scores them, and its own proposals, if any, go on
/// from the end of them); otherwise after the model's own proposals (so that a wrong one
/// costs none of the model's).
struct invocation {
  std::size_t model;
  std::size_t proposals;
  std::size_t context_proposals = 0;
  bool context_first = false;
};

/// Requirement 1: checks that it can schedule `model_count` models; throws
/// invalid_configuration if not. Called once, when a decoder is built.
template <class S>
concept speculator_with_check = requires(const S& s, std::size_t model_count) {
  { s.check(model_count) } -> std::same_as<void>;
};

/// Requirement 2: picks the next invocation.
template <class S>
concept speculator_with_next = requires(S& s, const schedule_view& view) {
  { s.next(view) } -> std::same_as<invocation>;
};

/// A Speculator. A type S is a speculator if
///  1. `s.check(n)` throws invalid_configuration unless it can schedule n models;
///  2. `s.next(view)` returns the next invocation. The chosen model must have something to
///     do: a token it has not fed, or proposals to make (proposals = 0 makes it a scorer
///     only); the chain of pending proposals may not grow past session_options::max_pending.
///     The decoder asks only when the oldest slot (the oldest pending token, or the frontier
///     with nothing pending) still waits for a model (schedule_view::waits_for): it settles
///     the other cases itself, by verifying or by sampling the target directly.
/// Whatever a speculator chooses, the output distribution is that of standard
/// collaborative decoding: the schedule changes cost, never the result.
/// Optional: `s.observe(proposer, chain_index, accepted)` is called for every verified
/// proposal, and `s.reset()` at the start of each generate, for policies that adapt.
template <class S>
concept speculator = std::move_constructible<S> && speculator_with_check<S> && speculator_with_next<S>;

/// Speculators that learn from verification outcomes.
template <class S>
concept observing_speculator = requires(S& s, std::size_t proposer, std::size_t chain_index, bool accepted) {
  { s.observe(proposer, chain_index, accepted) } -> std::same_as<void>;
};

/// Speculators that learn pass costs: called after every forward pass with the tokens fed
/// and the wall time the adapter took.
template <class S>
concept timing_speculator = requires(S& s, std::size_t model, std::size_t tokens, double seconds) {
  { s.observe_pass(model, tokens, seconds) } -> std::same_as<void>;
};

/// What a proposer's own distribution said about the token it just proposed: the
/// probability it gave that token and its largest probability (both at the sampling
/// temperature; under greedy decoding at temperature 1, where the two are equal).
struct proposal_confidence {
  std::size_t proposer;
  std::size_t chain_index;  ///< position of the token in the proposer's run (0: its first)
  float probability;
  float max_probability;
};

/// Speculators that may end a proposer's run early (llama.cpp's `p_min`, HF's
/// `assistant_confidence_threshold`): after each proposal, if `wants_confidence()`, the
/// session calls `continue_proposing(confidence)`, and false ends the run there (the token
/// just proposed stays proposed). Computing the confidence costs a pass over the row under
/// greedy decoding, so a policy that would ignore it says so with `wants_confidence()`.
/// Ending a run never changes the output distribution, only the cost.
template <class S>
concept confidence_speculator = requires(S& s, const S& cs, const proposal_confidence& confidence) {
  { cs.wants_confidence() } -> std::same_as<bool>;
  { s.continue_proposing(confidence) } -> std::same_as<bool>;
};

/// A batch decoder's advice to the speculators of its requests (docs/engine.md, "The batch
/// decides whether to speculate"): whether proposals pay for the batch as a whole right now.
enum class batch_advice {
  speculate,   ///< propose as the policy sees fit
  score_only,  ///< propose nothing: every invocation only scores (standard decoding)
};

/// Speculators that follow a batch decoder's advice: `s.advise(advice)` may come before any
/// invocation; `cs.follows_timings()` says whether the policy's schedule already follows
/// measured time (then the batch may advise from measured pass times without taking away a
/// reproducibility the caller had). Advice changes the schedule, never the output law.
template <class S>
concept advisable_speculator = requires(S& s, const S& cs, batch_advice advice) {
  { s.advise(advice) } -> std::same_as<void>;
  { cs.follows_timings() } -> std::same_as<bool>;
};

/// Speculators that ask for mixture sampling (docs/algorithm.md, "Mixture sampling"):
/// `cs.wants_mixture()` is read at the start of every request. Where it is true and the
/// request's target is exactly a mixture (a combiner_with_mixture_weights that says so,
/// T > 0, and no truncation filter, bias, penalty or logits processor), the session draws a
/// model for every position and schedule_view::mixture() is true; any other request runs as
/// collaborative decoding with the same speculator (view.mixture() false, visible in
/// generation_statistics::mixture), so that no request silently changes law.
template <class S>
concept mixture_speculator = requires(const S& cs) {
  { cs.wants_mixture() } -> std::same_as<bool>;
};

/// Mixture speculators that switch, within a request whose target is the mixture, between
/// mixture sampling and collaborative decoding: the session calls `s.mixture_now(view)` at every
/// point where nothing is pending (with a view that shows no draw), and the answer decides how
/// the coming positions are settled. The answer may depend on anything past (costs, outcomes,
/// tokens), never on a draw of a position not yet committed, which the view withholds: a
/// choice made after seeing a position's draw would change the law of its token.
template <class S>
concept mixture_switching_speculator = requires(S& s, const schedule_view& view) {
  { s.mixture_now(view) } -> std::same_as<bool>;
};

/// Mixture speculators that learn acceptance per pair: under mixture sampling, the session
/// calls `s.observe_mixture(proposer, drawn, accepted)` for every proposal verified against
/// another model's distribution (a proposal of the drawn model itself is accepted without a
/// test and not reported), instead of observe().
template <class S>
concept mixture_observing_speculator = requires(S& s, std::size_t proposer, std::size_t drawn, bool accepted) {
  { s.observe_mixture(proposer, drawn, accepted) } -> std::same_as<void>;
};

/// Speculators that learn how context proposals fare: `s.observe_context(chain_index,
/// accepted)` for every verified proposal from the context (chain_index: its place among the
/// context proposals of one invocation), instead of observe().
template <class S>
concept context_observing_speculator = requires(S& s, std::size_t chain_index, bool accepted) {
  { s.observe_context(chain_index, accepted) } -> std::same_as<void>;
};

/// Speculators that decide with the context's match in view: where `cs.wants_context_match()`,
/// the session looks the text's end up before every invocation and shows how many tokens it
/// would propose (schedule_view::context_match), so that a policy can put a long, likely match
/// before a model's own proposals (invocation::context_first). One lookup per invocation.
template <class S>
concept context_matching_speculator = requires(const S& cs) {
  { cs.wants_context_match() } -> std::same_as<bool>;
};

/// Speculators with per-generation state.
template <class S>
concept resettable_speculator = requires(S& s) {
  { s.reset() } -> std::same_as<void>;
};

}  // namespace cospec

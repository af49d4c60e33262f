// A type-erased speculator: one session or batch decoder type whose requests each choose their
// own policy (docs/engine.md, "Speculators").
#pragma once

#include "cospec/abi.hpp"

#include <concepts>     // std::same_as
#include <cstddef>      // std::size_t
#include <memory>       // std::unique_ptr, std::make_unique
#include <type_traits>  // std::remove_cvref_t
#include <utility>      // std::move

#include "cospec/speculate/speculator.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Holds any speculator (a copy) behind one type and forwards to it, each optional requirement
/// included: where the held policy lacks one, the answer is what the session does without it
/// (no mixture sampling, no confidence, advice ignored, observations dropped). So a batch
/// decoder of any_speculator runs one request under `standard`, the next under `automatic`,
/// each exactly as it would alone. One virtual call per speculator call.
class any_speculator {
 public:
  template <class S>
    requires(!std::same_as<std::remove_cvref_t<S>, any_speculator> && speculator<std::remove_cvref_t<S>> &&
             std::copy_constructible<std::remove_cvref_t<S>>)
  any_speculator(S policy)  // NOLINT(google-explicit-constructor): a policy converts where one is asked for
      : held_(std::make_unique<holder<std::remove_cvref_t<S>>>(std::move(policy))) {}

  any_speculator(const any_speculator& other) : held_(other.held_->clone()) {}
  any_speculator& operator=(const any_speculator& other) {
    if (this != &other) held_ = other.held_->clone();
    return *this;
  }
  any_speculator(any_speculator&&) noexcept = default;
  any_speculator& operator=(any_speculator&&) noexcept = default;

  void check(std::size_t model_count) const { held_->check(model_count); }
  invocation next(const schedule_view& view) { return held_->next(view); }

  void observe(std::size_t proposer, std::size_t chain_index, bool accepted) {
    held_->observe(proposer, chain_index, accepted);
  }
  void observe_mixture(std::size_t proposer, std::size_t drawn, bool accepted) {
    held_->observe_mixture(proposer, drawn, accepted);
  }
  void observe_context(std::size_t chain_index, bool accepted) { held_->observe_context(chain_index, accepted); }
  void observe_pass(std::size_t model, std::size_t tokens, double seconds) { held_->observe_pass(model, tokens, seconds); }
  [[nodiscard]] bool wants_mixture() const { return held_->wants_mixture(); }
  [[nodiscard]] bool wants_context_match() const { return held_->wants_context_match(); }
  /// A held policy that does not switch keeps mixture sampling wherever it was granted.
  bool mixture_now(const schedule_view& view) { return held_->mixture_now(view); }
  void advise(batch_advice advice) { held_->advise(advice); }
  [[nodiscard]] bool follows_timings() const { return held_->follows_timings(); }
  [[nodiscard]] bool wants_confidence() const { return held_->wants_confidence(); }
  [[nodiscard]] bool continue_proposing(const proposal_confidence& confidence) {
    return held_->continue_proposing(confidence);
  }
  void reset() { held_->reset(); }

  /// The held policy, if it is an S (nullptr otherwise).
  template <class S>
  [[nodiscard]] const S* target() const noexcept {
    const auto* typed = dynamic_cast<const holder<S>*>(held_.get());
    return typed == nullptr ? nullptr : &typed->policy;
  }

 private:
  struct base {
    virtual ~base() = default;
    [[nodiscard]] virtual std::unique_ptr<base> clone() const = 0;
    virtual void check(std::size_t) const = 0;
    virtual invocation next(const schedule_view&) = 0;
    virtual void observe(std::size_t, std::size_t, bool) = 0;
    virtual void observe_mixture(std::size_t, std::size_t, bool) = 0;
    virtual void observe_context(std::size_t, bool) = 0;
    virtual void observe_pass(std::size_t, std::size_t, double) = 0;
    [[nodiscard]] virtual bool wants_mixture() const = 0;
    [[nodiscard]] virtual bool wants_context_match() const = 0;
    virtual bool mixture_now(const schedule_view&) = 0;
    virtual void advise(batch_advice) = 0;
    [[nodiscard]] virtual bool follows_timings() const = 0;
    [[nodiscard]] virtual bool wants_confidence() const = 0;
    virtual bool continue_proposing(const proposal_confidence&) = 0;
    virtual void reset() = 0;
  };

  template <class S>
  struct holder final : base {
    explicit holder(S p) : policy(std::move(p)) {}
    [[nodiscard]] std::unique_ptr<base> clone() const override { return std::make_unique<holder>(policy); }
    void check(std::size_t n) const override { policy.check(n); }
    invocation next(const schedule_view& view) override { return policy.next(view); }
    void observe(std::size_t proposer, std::size_t chain_index, bool accepted) override {
      if constexpr (observing_speculator<S>) policy.observe(proposer, chain_index, accepted);
    }
    void observe_mixture(std::size_t proposer, std::size_t drawn, bool accepted) override {
      if constexpr (mixture_observing_speculator<S>) policy.observe_mixture(proposer, drawn, accepted);
    }
    void observe_context(std::size_t chain_index, bool accepted) override {
      if constexpr (context_observing_speculator<S>) policy.observe_context(chain_index, accepted);
    }
    void observe_pass(std::size_t model, std::size_t tokens, double seconds) override {
      if constexpr (timing_speculator<S>) policy.observe_pass(model, tokens, seconds);
    }
    [[nodiscard]] bool wants_mixture() const override {
      if constexpr (mixture_speculator<S>) return policy.wants_mixture();
      else return false;
    }
    [[nodiscard]] bool wants_context_match() const override {
      if constexpr (context_matching_speculator<S>) return policy.wants_context_match();
      else return false;
    }
    bool mixture_now(const schedule_view& view) override {
      if constexpr (mixture_switching_speculator<S>) return policy.mixture_now(view);
      else return true;
    }
    void advise(batch_advice advice) override {
      if constexpr (advisable_speculator<S>) policy.advise(advice);
    }
    [[nodiscard]] bool follows_timings() const override {
      if constexpr (advisable_speculator<S>) return policy.follows_timings();
      else return false;
    }
    [[nodiscard]] bool wants_confidence() const override {
      if constexpr (confidence_speculator<S>) return policy.wants_confidence();
      else return false;
    }
    bool continue_proposing(const proposal_confidence& confidence) override {
      if constexpr (confidence_speculator<S>) return policy.continue_proposing(confidence);
      else return true;
    }
    void reset() override {
      if constexpr (resettable_speculator<S>) policy.reset();
    }
    S policy;
  };

  std::unique_ptr<base> held_;
};

}  // namespace cospec

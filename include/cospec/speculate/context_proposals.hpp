// Any policy with proposals from the context added (docs/algorithm.md, "Proposals from the
// context").
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>  // std::size_t
#include <utility>  // std::move

#include "cospec/speculate/speculator.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Wraps a speculator and asks for up to `length` context proposals in every invocation it
/// chooses (invocation::context_proposals): standard decoding with free proposals for
/// `with_context_proposals(standard{}, 8)`, CoS chains extended by lookups for
/// `with_context_proposals(alternating(...), 8)`, and so on. Everything else is the inner
/// policy's, forwarded (observations, costs, advice, confidence, mixture sampling).
template <speculator Inner>
class with_context_proposals {
 public:
  with_context_proposals(Inner inner, std::size_t length) : inner_(std::move(inner)), length_(length) {}

  [[nodiscard]] const Inner& inner() const noexcept { return inner_; }
  [[nodiscard]] Inner& inner() noexcept { return inner_; }
  [[nodiscard]] std::size_t length() const noexcept { return length_; }

  void check(std::size_t model_count) const { inner_.check(model_count); }
  invocation next(const schedule_view& view) {
    invocation chosen = inner_.next(view);
    chosen.context_proposals = length_;
    return chosen;
  }

  void observe(std::size_t proposer, std::size_t chain_index, bool accepted)
    requires observing_speculator<Inner>
  {
    inner_.observe(proposer, chain_index, accepted);
  }
  void observe_mixture(std::size_t proposer, std::size_t drawn, bool accepted)
    requires mixture_observing_speculator<Inner>
  {
    inner_.observe_mixture(proposer, drawn, accepted);
  }
  void observe_pass(std::size_t model, std::size_t tokens, double seconds)
    requires timing_speculator<Inner>
  {
    inner_.observe_pass(model, tokens, seconds);
  }
  [[nodiscard]] bool wants_mixture() const
    requires mixture_speculator<Inner>
  {
    return inner_.wants_mixture();
  }
  void advise(batch_advice advice)
    requires advisable_speculator<Inner>
  {
    inner_.advise(advice);
  }
  [[nodiscard]] bool follows_timings() const
    requires advisable_speculator<Inner>
  {
    return inner_.follows_timings();
  }
  [[nodiscard]] bool wants_confidence() const
    requires confidence_speculator<Inner>
  {
    return inner_.wants_confidence();
  }
  [[nodiscard]] bool continue_proposing(const proposal_confidence& confidence)
    requires confidence_speculator<Inner>
  {
    return inner_.continue_proposing(confidence);
  }
  void reset()
    requires resettable_speculator<Inner>
  {
    inner_.reset();
  }

 private:
  Inner inner_;
  std::size_t length_;
};

}  // namespace cospec

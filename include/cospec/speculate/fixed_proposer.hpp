// Speculative decoding with a fixed proposer against the combined target: the paper's
// WE-SD / CD-SD baseline (docs/algorithm.md, "Baselines").
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>  // std::size_t
#include <string>   // std::to_string

#include "cospec/errors.hpp"
#include "cospec/speculate/speculator.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// One model (normally the cheapest) always proposes `gamma` tokens; the others only score,
/// and their proposals are never used: no alternation, no bonus tokens from the verifiers.
/// Where every model has scored the frontier, the decoder samples the target there
/// directly, which makes this the strongest form of the baseline.
class fixed_proposer {
 public:
  fixed_proposer(std::size_t proposer, std::size_t gamma) : proposer_(proposer), gamma_(gamma) {
    if (gamma_ == 0) throw invalid_configuration("fixed_proposer: gamma must be >= 1");
  }

  [[nodiscard]] std::size_t proposer() const noexcept { return proposer_; }
  [[nodiscard]] std::size_t gamma() const noexcept { return gamma_; }

  void check(std::size_t model_count) const {
    if (proposer_ >= model_count)
      throw invalid_configuration("fixed_proposer: proposer " + std::to_string(proposer_) + " is not one of the " +
                                  std::to_string(model_count) + " models");
  }

  invocation next(const schedule_view& view) const noexcept {
    if (view.pending_count() == 0) return {proposer_, gamma_};
    for (std::size_t model = 0; model < view.model_count(); ++model)
      if (model != proposer_ && !view.scored(model, 0)) return {model, 0};
    return {proposer_, 0};  // unreachable: a chain every model scored is verified first
  }

 private:
  std::size_t proposer_;
  std::size_t gamma_;
};

}  // namespace cospec

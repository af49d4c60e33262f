// Speculative verification against the combined target (docs/algorithm.md, "Verification").
//
// A token x drawn from a proposal q is accepted with probability min(1, r(x) / q(x)); on
// rejection a replacement is drawn from norm(max(0, r - q)). The emitted token is then
// distributed exactly as r, whatever q is. Greedy: accept iff x == argmax r, else emit it.
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::min, std::copy
#include <cstddef>    // std::size_t
#include <optional>   // std::optional
#include <span>       // std::span
#include <string>     // std::to_string
#include <vector>     // std::vector

#include "cospec/errors.hpp"
#include "cospec/kernels/sample.hpp"
#include "cospec/kernels/transform.hpp"
#include "cospec/random.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// q(x) for a proposal row `proposal` whose entries sum to `proposal_sum` (1 for a normalised
/// one; a session keeps plain softmax proposals unnormalised). Throws usage_error if x is
/// outside the row or q(x) == 0: a token its own proposal distribution could not have produced
/// means the caller mixed up rows.
inline double proposal_probability(token_id x, std::span<const float> proposal, float proposal_sum) {
  const auto index = static_cast<std::size_t>(x);
  if (x < 0 || index >= proposal.size())
    throw usage_error("verifier: token " + std::to_string(x) + " is outside the vocabulary of " +
                      std::to_string(proposal.size()));
  if (!(proposal[index] > 0.0f))
    throw usage_error("verifier: token " + std::to_string(x) +
                      " has probability 0 under the distribution it was proposed from");
  return static_cast<double>(proposal[index]) / static_cast<double>(proposal_sum);
}

/// min(1, r(x) / q(x)) for normalised r and q. Throws usage_error as proposal_probability does.
inline double acceptance_probability(token_id x, std::span<const float> proposal, std::span<const float> target) {
  const double q = proposal_probability(x, proposal, 1.0f);
  return std::min(1.0, static_cast<double>(target[static_cast<std::size_t>(x)]) / q);
}

/// Writes max(0, r - q) to `out` and returns its sum (one pass).
inline float residual_distribution(std::span<const float> proposal, std::span<const float> target,
                                   std::span<float> out) noexcept {
  return kernels::residual(target, proposal, out);
}

/// The outcome of verifying one token: accepted, or rejected with a replacement.
struct verdict {
  bool accepted;
  token_id token;  ///< the proposal if accepted, else the replacement
};

/// The outcome of verifying a chain in order.
struct chain_verdict {
  std::size_t accepted = 0;              ///< how many leading proposals survive
  std::optional<token_id> replacement;  ///< drawn at the first rejection, if there was one
};

/// Verifies proposals with exact speculative sampling. Owns the residual buffer so that the
/// steady state allocates nothing.
class speculative_verifier {
 public:
  /// Verifies token x drawn from `proposal` against `target` (both normalised, length V),
  /// using one uniform from `random` to accept and, on rejection, one more to draw the
  /// replacement by inverse CDF over the unnormalised residual (no normalising pass).
  verdict verify(token_id x, std::span<const float> proposal, std::span<const float> target, random_source& random) {
    return verify(x, proposal, 1.0f, target, random);
  }

  /// The same for a proposal row that sums to `proposal_sum` (unnormalised: q = proposal / sum).
  verdict verify(token_id x, std::span<const float> proposal, float proposal_sum, std::span<const float> target,
                 random_source& random) {
    const double q = proposal_probability(x, proposal, proposal_sum);
    return verify_at(x, static_cast<double>(target[static_cast<std::size_t>(x)]), q, proposal, proposal_sum,
                     [&]() { return target; }, random);
  }

  /// The same with r(x) and q(x) already known (a target evaluated at x alone): the normalised
  /// target row is asked for, through `target_row()`, only on a rejection, for the residual.
  /// Precondition: q_x = proposal[x] / proposal_sum > 0 (proposal_probability).
  template <class TargetRow>
  verdict verify_at(token_id x, double r_x, double q_x, std::span<const float> proposal, float proposal_sum,
                    TargetRow&& target_row, random_source& random) {
    if (random.uniform() < std::min(1.0, r_x / q_x)) return {true, x};
    const std::span<const float> target = target_row();
    if (residual_.size() < target.size()) residual_.resize(target.size());
    const std::span<float> residual(residual_.data(), target.size());
    // max(0, sum * r - proposal) = sum * max(0, r - q): the same residual up to its scale,
    // which inverse CDF sampling does not need.
    const float mass = kernels::residual(target, proposal, residual, proposal_sum);
    const double u = random.uniform();
    // Exact arithmetic cannot reject when r == q; rounding can, with a residual of zero mass.
    // Then r itself is the right law for the replacement.
    const std::size_t index = mass > 0.0f ? kernels::sample_inverse_cdf(residual, u, mass)
                                          : kernels::sample_inverse_cdf(target, u, 1.0);
    return {false, static_cast<token_id>(index)};
  }

  /// Verifies a point-mass proposal: token x proposed with certainty (from the context, not
  /// drawn from a distribution; docs/algorithm.md, "Proposals from the context"). It is
  /// accepted with probability r(x) (`r_x`, the normalised target at x); a rejection draws from r
  /// with x removed and renormalised, which is the residual max(0, r - 1_x). The normalised
  /// target row is asked for only on a rejection. The output has law r, as for any proposal.
  template <class TargetRow>
  verdict verify_point(token_id x, double r_x, TargetRow&& target_row, random_source& random) {
    if (random.uniform() < r_x) return {true, x};
    const std::span<const float> target = target_row();
    if (residual_.size() < target.size()) residual_.resize(target.size());
    const std::span<float> residual(residual_.data(), target.size());
    std::copy(target.begin(), target.end(), residual.begin());
    const auto at = static_cast<std::size_t>(x);
    const double mass = 1.0 - static_cast<double>(target[at]);
    residual[at] = 0.0f;
    const double u = random.uniform();
    // r(x) = 1 up to rounding: a rejection that exact arithmetic could not make; r is the law.
    const std::size_t index = mass > 1e-12 ? kernels::sample_inverse_cdf(residual, u, mass)
                                           : kernels::sample_inverse_cdf(target, u, 1.0);
    return {false, static_cast<token_id>(index)};
  }

  /// Verifies a chain oldest first; `proposal_at(i)` and `target_at(i)` give the normalised
  /// rows of position i, and `token_at(i)` its proposed token. target_at is called only for
  /// positions that are reached, so nothing is combined past the first rejection.
  template <class TokenAt, class ProposalAt, class TargetAt>
  chain_verdict verify_chain(std::size_t length, TokenAt&& token_at, ProposalAt&& proposal_at, TargetAt&& target_at,
                             random_source& random) {
    chain_verdict result;
    for (std::size_t i = 0; i < length; ++i) {
      const verdict v = verify(token_at(i), proposal_at(i), target_at(i), random);
      if (!v.accepted) {
        result.replacement = v.token;
        return result;
      }
      ++result.accepted;
    }
    return result;
  }

 private:
  std::vector<float> residual_;
};

/// Greedy verification: accept iff the proposal is the target's argmax, else emit the argmax.
inline verdict verify_greedy(token_id x, token_id target_argmax) noexcept {
  return x == target_argmax ? verdict{true, x} : verdict{false, target_argmax};
}

}  // namespace cospec

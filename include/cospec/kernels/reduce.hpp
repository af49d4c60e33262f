// Reductions over logit rows: largest entry with its index, log-sum-exp, and the normaliser of a
// softmax (of one row, or of a combination of rows) without writing it.
//
// Numerical contract shared by every kernel (docs/kernels.md):
// - `-inf` is a mask: it contributes nothing to sums and yields exact zeros after exp.
// - A row with a NaN, or with no finite entry, is invalid. The reductions make that cheap to
//   detect: `max_argmax` reports NaN as its value, and `log_sum_exp` returns a non-finite value
//   for a NaN, a `+inf` or an all-`-inf` row. No kernel throws; callers decide what an invalid
//   row means (the combiners turn it into cospec::invalid_logits).
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint32_t
#include <limits>   // std::numeric_limits
#include <span>     // std::span

#include "cospec/kernels/detail/variants.hpp"
#include "cospec/kernels/row_results.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels {

/// Largest entry and the index of its first occurrence, in one pass.
/// Returns {NaN, 0} if the row holds a NaN and {-inf, 0} for an empty or all-`-inf` row.
/// Rows longer than 2^24 * 16 are not supported (block indices are tracked in floats).
inline max_location max_argmax(std::span<const float> row) noexcept {
  return detail::dispatch([&](auto isa) { return max_argmax(isa, row); });
}

/// log(sum_j exp(scale * row[j])) in a single pass with one exp per entry.
/// Each lane keeps a running maximum m and a sum s scaled by exp(-m); a new entry x updates
/// them with e = exp(-|x - m|), which is the factor for whichever of the two is smaller, so
/// the online rescaling costs no second exp (docs/kernels.md, "one-pass log-sum-exp").
/// Precondition: scale > 0. Returns -inf for an all-`-inf` row, NaN or +inf for invalid rows.
inline float log_sum_exp(std::span<const float> row, float scale = 1.0f) noexcept {
  return detail::dispatch([&](auto isa) { return log_sum_exp(isa, row, scale); });
}

/// What `unnormalized_softmax(row, out, scale)` returns ({max, scale, sum of the shifted
/// exps}), bit for bit, without writing a row: the normaliser of a softmax whose values are
/// needed at a few tokens only. Same passes (max, then exp), same validity rule.
inline exp_row_stats exp_sum(std::span<const float> row, float scale = 1.0f) noexcept {
  return detail::dispatch([&](auto isa) { return exp_sum(isa, row, scale); });
}

/// `exp_sum`, bit for bit, and the indices j (ascending) whose shifted exponential
/// exp(scale * (row[j] - max)) is at least `smallest`, found in the same exp pass: at most
/// out.size() of them are written; `count` is set to their number, or to out.size() + 1 when
/// there are more. The entries within log(1 / smallest) / scale of the row's maximum, for a
/// caller that must look at them exactly (the weighted ensemble's greedy token). For an invalid
/// row (stats not `valid()`) `count` and `out` are unspecified. `known_max`, unless NaN, must be
/// the row's largest entry (max_argmax's value, say, from an earlier pass): the max pass is
/// then skipped, with the same results.
inline exp_row_stats exp_sum_collecting(std::span<const float> row, float scale, float smallest,
                                        std::span<std::uint32_t> out, std::size_t& count,
                                        float known_max = std::numeric_limits<float>::quiet_NaN()) noexcept {
  return detail::dispatch([&](auto isa) { return exp_sum_collecting(isa, row, scale, smallest, out, count, known_max); });
}

/// log_sum_exp of the combination z = linear_combination(rows, weights, scale) (transform.hpp:
/// masks and +inf as there), without writing z: one pass that forms z and updates
/// log_sum_exp's running maximum and sum, bit for bit log_sum_exp(z). Not finite when z has a
/// NaN (an invalid input) or overflowed float (+inf); -inf when z is fully masked.
/// Preconditions as for `linear_combination`.
inline float combination_log_sum_exp(std::span<const std::span<const float>> rows, std::span<const float> weights,
                                     float scale = 1.0f) noexcept {
  return detail::dispatch([&](auto isa) { return combination_log_sum_exp(isa, rows, weights, scale); });
}

}  // namespace cospec::kernels

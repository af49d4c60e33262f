// Reductions over one logit row: largest entry with its index, and log-sum-exp.
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

}  // namespace cospec::kernels

// Drawing an index from an unnormalised, non-negative row by inverse CDF.
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>  // std::size_t
#include <span>     // std::span

#include "cospec/kernels/detail/variants.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels {

/// Index i such that C(i-1) <= u * total < C(i), where C is the running sum of `weights`
/// (C(-1) = 0): the inverse CDF at u. Masses are accumulated in double from SIMD partial sums
/// of one block (4 vectors) at a time, then sequentially inside the block that holds the
/// answer; whenever those partial sums are exact (weights that are multiples of a common power
/// of two, such as small integers) the index is exact on both sides of every bucket edge,
/// otherwise it is within float rounding of the edge.
/// `total` is the caller's sum of the row (the residual and softmax kernels return it); if
/// rounding makes u * total reach past the accumulated mass, the last index with positive
/// weight is returned, so a zero-weight index is never drawn.
/// Preconditions: entries finite and >= 0, total > 0, 0 <= u < 1. Returns weights.size() only
/// if no entry is positive.
inline std::size_t sample_inverse_cdf(std::span<const float> weights, double u, double total) noexcept {
  return detail::dispatch([&](auto isa) { return sample_inverse_cdf(isa, weights, u, total); });
}

}  // namespace cospec::kernels

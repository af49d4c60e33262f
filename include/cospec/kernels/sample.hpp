// Drawing an index from an unnormalised, non-negative row by inverse CDF.
#pragma once

#include <cstddef>  // std::size_t
#include <span>     // std::span

#include "cospec/kernels/detail/simd_loop.hpp"

namespace cospec::kernels {

/// Index i such that C(i-1) <= u * total < C(i), where C is the running sum of `weights`
/// (C(-1) = 0): the inverse CDF at u. Masses are accumulated in double from SIMD partial sums
/// of one block (4 batches) at a time, then sequentially inside the block that holds the
/// answer; whenever those partial sums are exact (weights that are multiples of a common power
/// of two, such as small integers) the index is exact on both sides of every bucket edge,
/// otherwise it is within float rounding of the edge.
/// `total` is the caller's sum of the row (the residual and softmax kernels return it); if
/// rounding makes u * total reach past the accumulated mass, the last index with positive
/// weight is returned, so a zero-weight index is never drawn.
/// Preconditions: entries finite and >= 0, total > 0, 0 <= u < 1. Returns weights.size() only
/// if no entry is positive.
inline std::size_t sample_inverse_cdf(std::span<const float> weights, double u, double total) noexcept {
  using detail::float_batch;
  using detail::lanes;
  constexpr std::size_t block = 4 * lanes;
  const double target = u * total;
  const std::size_t size = weights.size();
  const std::size_t body = size - size % block;
  double cumulative = 0.0;
  std::size_t start = 0;
  for (; start < body; start += block) {
    const float* p = weights.data() + start;
    const float_batch partial = (float_batch::load_unaligned(p) + float_batch::load_unaligned(p + lanes)) +
                                (float_batch::load_unaligned(p + 2 * lanes) + float_batch::load_unaligned(p + 3 * lanes));
    const double block_mass = static_cast<double>(xsimd::hadd(partial));
    if (cumulative + block_mass > target) break;
    cumulative += block_mass;
  }
  // Sequential from the chosen block on; it normally returns inside that block, and running on
  // covers a float partial sum that rounded up past the target.
  for (std::size_t i = start; i < size; ++i) {
    cumulative += static_cast<double>(weights[i]);
    if (weights[i] > 0.0f && cumulative > target) return i;
  }
  // Only rounding gets here: fall back to the last positive entry.
  for (std::size_t i = size; i-- > 0;)
    if (weights[i] > 0.0f) return i;
  return size;
}

}  // namespace cospec::kernels

// Internal helpers shared by the SIMD kernels: the batch type and a tail loader.
#pragma once

#include <algorithm>  // std::copy_n, std::fill_n
#include <cstddef>    // std::size_t

#include <xsimd/xsimd.hpp>

namespace cospec::kernels::detail {

/// The SIMD batch of the architecture the translation unit is compiled for
/// (AVX-512 under -march=native on the reference machine; SSE2 by default on x86-64).
using float_batch = xsimd::batch<float>;
inline constexpr std::size_t lanes = float_batch::size;

/// Loads the last `count < lanes` elements of a row into a full batch, padding the unused
/// lanes with `fill`. Kernels pad with their operation's neutral element (-inf for max and
/// log-sum-exp, 0 for sums), so the tail runs through exactly the same arithmetic as the body
/// and no row length needs special scalar code.
inline float_batch load_tail(const float* data, std::size_t count, float fill) noexcept {
  alignas(64) float buffer[lanes];
  std::fill_n(buffer, lanes, fill);
  std::copy_n(data, count, buffer);
  return float_batch::load_aligned(buffer);
}

/// Stores the first `count < lanes` lanes of a batch.
inline void store_tail(float* data, std::size_t count, const float_batch& values) noexcept {
  alignas(64) float buffer[lanes];
  values.store_aligned(buffer);
  std::copy_n(buffer, count, data);
}

}  // namespace cospec::kernels::detail

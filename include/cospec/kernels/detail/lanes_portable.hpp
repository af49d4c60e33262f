// The portable lane operations: xsimd batches of the unit's own architecture (SSE2 on a default
// x86-64 build, NEON on ARM). The kernel bodies (kernel_bodies.hpp) are written against this
// small vocabulary; lanes_avx2.hpp and lanes_avx512.hpp provide the same one with intrinsics.
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>  // std::size_t
#include <cstdint>  // std::int32_t

#include <xsimd/xsimd.hpp>

namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels::detail::portable {

/// Tag naming this variant; kernels are found from it by argument-dependent lookup.
struct isa {};

using vec = xsimd::batch<float>;
using mask = xsimd::batch_bool<float>;
inline constexpr std::size_t lanes = vec::size;

inline vec splat(float value) noexcept { return vec(value); }
inline vec load(const float* data) noexcept { return vec::load_unaligned(data); }
inline void store(float* data, vec values) noexcept { values.store_unaligned(data); }
inline void store_lanes(float* aligned, vec values) noexcept { values.store_aligned(aligned); }
inline vec add(vec a, vec b) noexcept { return a + b; }
inline vec sub(vec a, vec b) noexcept { return a - b; }
inline vec mul(vec a, vec b) noexcept { return a * b; }
inline vec fma(vec a, vec b, vec c) noexcept { return xsimd::fma(a, b, c); }  // a * b + c
inline vec fms(vec a, vec b, vec c) noexcept { return xsimd::fms(a, b, c); }  // a * b - c
/// max(a, b) with a NaN in b propagated (callers put the value that may be NaN second).
inline vec max(vec a, vec b) noexcept { return xsimd::select(a > b, a, b); }
inline vec min(vec a, vec b) noexcept { return xsimd::select(a < b, a, b); }
inline vec abs(vec a) noexcept { return xsimd::abs(a); }
inline mask less(vec a, vec b) noexcept { return a < b; }
inline mask greater(vec a, vec b) noexcept { return a > b; }
inline mask equal(vec a, vec b) noexcept { return a == b; }
inline mask at_least(vec a, vec b) noexcept { return a >= b; }
// xsimd::isnan, not x != x: xsimd 8.1 compiles != to an ordered compare on AVX, for which
// NaN != NaN is false.
inline mask is_nan(vec a) noexcept { return xsimd::isnan(a); }
inline mask no_lanes() noexcept { return vec(0.0f) != vec(0.0f); }
inline mask either(mask a, mask b) noexcept { return a | b; }
inline mask and_not(mask a, mask b) noexcept { return a & !b; }
inline bool any(mask m) noexcept { return xsimd::any(m); }
inline vec select(mask m, vec if_set, vec if_clear) noexcept { return xsimd::select(m, if_set, if_clear); }
/// The sum of the lanes as a tree of halves (lane l with l + lanes / 2, and so on down).
inline float reduce_add(vec a) noexcept {
  alignas(64) float buffer[lanes];
  a.store_aligned(buffer);
  for (std::size_t width = lanes / 2; width > 0; width /= 2)
    for (std::size_t lane = 0; lane < width; ++lane) buffer[lane] += buffer[lane + width];
  return buffer[0];
}
/// Nearest integer (ties to even), as a float.
inline vec round_nearest(vec a) noexcept { return xsimd::nearbyint(a); }
/// 2^n for integral n in [-126, 127], built from its exponent bits.
inline vec exp2_integral(vec n) noexcept {
  using int_vec = xsimd::batch<std::int32_t>;
  const int_vec biased = xsimd::nearbyint_as_int(n) + int_vec(127);
  return xsimd::bitwise_cast<vec>(biased << 23);
}

}  // namespace cospec::kernels::detail::portable

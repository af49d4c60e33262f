// The lane operations of the AVX2 variant (8 floats), with the vocabulary of
// lanes_portable.hpp. Included only by variants.hpp, inside a target region for x86-64-v3.
#pragma once

#include "cospec/abi.hpp"

#include <immintrin.h>

#include <cstddef>  // std::size_t

namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels::detail::avx2 {

/// Tag naming this variant; kernels are found from it by argument-dependent lookup.
struct isa {};

using vec = __m256;
using mask = __m256;  // all-ones lanes where true, as the compare instructions write them
inline constexpr std::size_t lanes = 8;

inline vec splat(float value) noexcept { return _mm256_set1_ps(value); }
// GCC 12 reports these loads and stores as out of bounds when a kernel is inlined where the
// row is a short array (3 floats, say): they sit in the loop over whole vectors, which never
// runs for such a row, but -Warray-bounds and -Wstringop-overflow do not see that the loop
// bound excludes them. The suppression covers these three functions only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
inline vec load(const float* data) noexcept { return _mm256_loadu_ps(data); }
inline void store(float* data, vec values) noexcept { _mm256_storeu_ps(data, values); }
inline void store_lanes(float* aligned, vec values) noexcept { _mm256_store_ps(aligned, values); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
inline vec add(vec a, vec b) noexcept { return _mm256_add_ps(a, b); }
inline vec sub(vec a, vec b) noexcept { return _mm256_sub_ps(a, b); }
inline vec mul(vec a, vec b) noexcept { return _mm256_mul_ps(a, b); }
inline vec fma(vec a, vec b, vec c) noexcept { return _mm256_fmadd_ps(a, b, c); }  // a * b + c
inline vec fms(vec a, vec b, vec c) noexcept { return _mm256_fmsub_ps(a, b, c); }  // a * b - c
// MAXPS and MINPS return their second operand when either is NaN: callers put the value that
// may be NaN second, and it propagates.
inline vec max(vec a, vec b) noexcept { return _mm256_max_ps(a, b); }
inline vec min(vec a, vec b) noexcept { return _mm256_min_ps(a, b); }
inline vec abs(vec a) noexcept { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
inline mask less(vec a, vec b) noexcept { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
inline mask greater(vec a, vec b) noexcept { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
inline mask equal(vec a, vec b) noexcept { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
inline mask at_least(vec a, vec b) noexcept { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }  // a >= b
inline mask is_nan(vec a) noexcept { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
inline mask no_lanes() noexcept { return _mm256_setzero_ps(); }
inline mask either(mask a, mask b) noexcept { return _mm256_or_ps(a, b); }
inline mask and_not(mask a, mask b) noexcept { return _mm256_andnot_ps(b, a); }
inline bool any(mask m) noexcept { return _mm256_movemask_ps(m) != 0; }
inline vec select(mask m, vec if_set, vec if_clear) noexcept { return _mm256_blendv_ps(if_clear, if_set, m); }
/// The sum of the lanes as a tree of halves: (l0+l4 + l2+l6) + (l1+l5 + l3+l7).
inline float reduce_add(vec a) noexcept {
  const __m128 quarter = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 eighth = _mm_add_ps(quarter, _mm_movehl_ps(quarter, quarter));
  return _mm_cvtss_f32(_mm_add_ss(eighth, _mm_shuffle_ps(eighth, eighth, 1)));
}
/// Nearest integer (ties to even), as a float.
inline vec round_nearest(vec a) noexcept { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/// 2^n for integral n in [-126, 127], built from its exponent bits.
inline vec exp2_integral(vec n) noexcept {
  const __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
}

}  // namespace cospec::kernels::detail::avx2

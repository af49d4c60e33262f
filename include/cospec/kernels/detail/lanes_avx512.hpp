// The lane operations of the AVX-512 variant (16 floats), with the vocabulary of
// lanes_portable.hpp. Included only by variants.hpp, inside a target region for x86-64-v4.
#pragma once

#include "cospec/abi.hpp"

#include <immintrin.h>

#include <cstddef>  // std::size_t

namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels::detail::avx512 {

/// Tag naming this variant; kernels are found from it by argument-dependent lookup.
struct isa {};

using vec = __m512;
using mask = __mmask16;  // one bit per lane
inline constexpr std::size_t lanes = 16;

inline vec splat(float value) noexcept { return _mm512_set1_ps(value); }
// GCC 12 reports these loads and stores as out of bounds when a kernel is inlined where the
// row is a short array (3 floats, say): they sit in the loop over whole vectors, which never
// runs for such a row, but -Warray-bounds and -Wstringop-overflow do not see that the loop
// bound excludes them. The suppression covers these three functions only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
inline vec load(const float* data) noexcept { return _mm512_loadu_ps(data); }
inline void store(float* data, vec values) noexcept { _mm512_storeu_ps(data, values); }
inline void store_lanes(float* aligned, vec values) noexcept { _mm512_store_ps(aligned, values); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
inline vec add(vec a, vec b) noexcept { return _mm512_add_ps(a, b); }
inline vec sub(vec a, vec b) noexcept { return _mm512_sub_ps(a, b); }
inline vec mul(vec a, vec b) noexcept { return _mm512_mul_ps(a, b); }
inline vec fma(vec a, vec b, vec c) noexcept { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
inline vec fms(vec a, vec b, vec c) noexcept { return _mm512_fmsub_ps(a, b, c); }  // a * b - c
// VMAXPS and VMINPS return their second operand when either is NaN: callers put the value
// that may be NaN second, and it propagates.
// The masked forms with an all-lanes mask, here and below, compile to the same instructions
// as _mm512_max_ps and friends; those pass _mm512_undefined_ps() as the merge source, for
// which GCC 12 reports a false -Wmaybe-uninitialized once inlined (GCC bug 105593), in every
// unit that compiles this variant.
inline constexpr __mmask16 all_lanes = 0xffff;
inline vec max(vec a, vec b) noexcept { return _mm512_mask_max_ps(a, all_lanes, a, b); }
inline vec min(vec a, vec b) noexcept { return _mm512_mask_min_ps(a, all_lanes, a, b); }
inline vec abs(vec a) noexcept {
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff)));
}
inline mask less(vec a, vec b) noexcept { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
inline mask greater(vec a, vec b) noexcept { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
inline mask equal(vec a, vec b) noexcept { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
inline mask at_least(vec a, vec b) noexcept { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }  // a >= b
inline mask is_nan(vec a) noexcept { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
inline mask no_lanes() noexcept { return 0; }
inline mask either(mask a, mask b) noexcept { return static_cast<mask>(a | b); }
inline mask and_not(mask a, mask b) noexcept { return static_cast<mask>(a & ~b); }
inline bool any(mask m) noexcept { return m != 0; }
inline vec select(mask m, vec if_set, vec if_clear) noexcept { return _mm512_mask_blend_ps(m, if_clear, if_set); }
/// The sum of the lanes as a tree of halves (lane l with l + 8, then l + 4, l + 2, l + 1).
inline float reduce_add(vec a) noexcept {
  // Masked extracts for both halves: GCC 12 implements _mm512_castps512_ps256 and the unmasked
  // extract with an undefined merge source too (see max above).
  const __m512d bits = _mm512_castps_pd(a);
  const __m256 low = _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), 0xf, bits, 0));
  const __m256 high = _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), 0xf, bits, 1));
  const __m256 half = _mm256_add_ps(low, high);
  const __m128 quarter = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
  const __m128 eighth = _mm_add_ps(quarter, _mm_movehl_ps(quarter, quarter));
  return _mm_cvtss_f32(_mm_add_ss(eighth, _mm_shuffle_ps(eighth, eighth, 1)));
}
/// Nearest integer (ties to even), as a float.
inline vec round_nearest(vec a) noexcept {
  return _mm512_mask_roundscale_ps(a, all_lanes, a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/// 2^n for integral n in [-126, 127], built from its exponent bits.
inline vec exp2_integral(vec n) noexcept {
  const __m512i integral = _mm512_mask_cvtps_epi32(_mm512_castps_si512(n), all_lanes, n);
  const __m512i biased = _mm512_add_epi32(integral, _mm512_set1_epi32(127));
  return _mm512_castsi512_ps(_mm512_mask_slli_epi32(biased, all_lanes, biased, 23));
}

}  // namespace cospec::kernels::detail::avx512

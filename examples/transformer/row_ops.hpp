// The vector operations of a forward pass other than the weight products: dot products,
// RMS normalisation, SwiGLU's gate, softmax over attention scores, axpy.
//
// Each works on one row with xsimd in a fixed order (full batches from the start of the row,
// then a scalar tail), so an element's result depends only on its row, never on how many rows
// are processed together or where the row sits in memory. Eigen's own reductions choose their
// order by pointer alignment, which would break the batch invariance batched_matmul.hpp
// promises; Eigen still holds the data and does the element-wise arithmetic.
#pragma once

#include <cmath>    // std::exp, std::sqrt, std::fma
#include <cstddef>  // std::size_t

#include <xsimd/xsimd.hpp>

// xsimd's AVX-512 exp and max call intrinsics that GCC 12 implements with an undefined merge
// source and then reports as -Wmaybe-uninitialized once inlined (GCC bug 105593); the
// suppression covers these row operations only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace cospec::examples::llama::row_ops {

using float_batch = xsimd::batch<float>;
inline constexpr std::size_t lanes = float_batch::size;

/// sum_j a[j] * b[j].
inline float dot(const float* a, const float* b, std::size_t n) noexcept {
  const std::size_t body = n - n % lanes;
  float_batch accumulator(0.0f);
  for (std::size_t j = 0; j < body; j += lanes)
    accumulator = xsimd::fma(float_batch::load_unaligned(a + j), float_batch::load_unaligned(b + j), accumulator);
  float sum = xsimd::hadd(accumulator);
  for (std::size_t j = body; j < n; ++j) sum = std::fma(a[j], b[j], sum);
  return sum;
}

/// out[j] = weight[j] * x[j] / sqrt(mean(x^2) + epsilon) (llama's RMSNorm). out may equal x.
inline void rms_norm(const float* x, const float* weight, float epsilon, float* out, std::size_t n) noexcept {
  const float scale = 1.0f / std::sqrt(dot(x, x, n) / static_cast<float>(n) + epsilon);
  for (std::size_t j = 0; j < n; ++j) out[j] = weight[j] * (scale * x[j]);
}

/// gate[j] = silu(gate[j]) * up[j], silu(g) = g / (1 + exp(-g)): SwiGLU's activation.
inline void swiglu(float* gate, const float* up, std::size_t n) noexcept {
  const std::size_t body = n - n % lanes;
  const float_batch one(1.0f);
  for (std::size_t j = 0; j < body; j += lanes) {
    const float_batch g = float_batch::load_unaligned(gate + j);
    const float_batch silu = g / (one + xsimd::exp(-g));
    (silu * float_batch::load_unaligned(up + j)).store_unaligned(gate + j);
  }
  for (std::size_t j = body; j < n; ++j) gate[j] = gate[j] / (1.0f + std::exp(-gate[j])) * up[j];
}

/// scores[0, n) = softmax(scores[0, n)) in place.
inline void softmax(float* scores, std::size_t n) noexcept {
  float maximum = scores[0];
  for (std::size_t j = 1; j < n; ++j) maximum = scores[j] > maximum ? scores[j] : maximum;
  float sum = 0.0f;
  for (std::size_t j = 0; j < n; ++j) {
    scores[j] = std::exp(scores[j] - maximum);
    sum += scores[j];
  }
  const float inverse = 1.0f / sum;
  for (std::size_t j = 0; j < n; ++j) scores[j] *= inverse;
}

/// out[j] += a * x[j].
inline void axpy(float a, const float* x, float* out, std::size_t n) noexcept {
  const std::size_t body = n - n % lanes;
  const float_batch scale(a);
  for (std::size_t j = 0; j < body; j += lanes)
    xsimd::fma(scale, float_batch::load_unaligned(x + j), float_batch::load_unaligned(out + j)).store_unaligned(out + j);
  for (std::size_t j = body; j < n; ++j) out[j] = std::fma(a, x[j], out[j]);
}

}  // namespace cospec::examples::llama::row_ops

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

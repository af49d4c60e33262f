// Reductions over one logit row: largest entry with its index, and log-sum-exp.
//
// Numerical contract shared by every kernel (docs/kernels.md):
// - `-inf` is a mask: it contributes nothing to sums and yields exact zeros after exp.
// - A row with a NaN, or with no finite entry, is invalid. The reductions make that cheap to
//   detect: `max_argmax` reports NaN as its value, and `log_sum_exp` returns a non-finite value
//   for a NaN, a `+inf` or an all-`-inf` row. No kernel throws; callers decide what an invalid
//   row means (the combiners turn it into cospec::invalid_logits).
#pragma once

#include <cmath>    // std::exp, std::log, std::isnan
#include <cstddef>  // std::size_t
#include <limits>   // std::numeric_limits
#include <span>     // std::span

#include "cospec/kernels/detail/simd_loop.hpp"

namespace cospec::kernels {

/// The largest entry of a row and the index of its first occurrence.
struct max_location {
  float value;
  std::size_t index;
};

/// Largest entry and the index of its first occurrence, in one pass.
/// Returns {NaN, 0} if the row holds a NaN and {-inf, 0} for an empty or all-`-inf` row.
/// Rows longer than 2^24 * lanes are not supported (block indices are tracked in floats).
inline max_location max_argmax(std::span<const float> row) noexcept {
  using detail::float_batch;
  using detail::lanes;
  constexpr float minus_infinity = -std::numeric_limits<float>::infinity();
  const std::size_t body = row.size() - row.size() % lanes;

  float_batch best(minus_infinity);
  float_batch best_block(0.0f);  // the block in which each lane saw its maximum
  float_batch block(0.0f);
  auto nan_seen = float_batch(0.0f) != float_batch(0.0f);
  auto visit = [&](const float_batch& x) {
    // xsimd::isnan, not x != x: xsimd 8.1 compiles != to an ordered compare on AVX, for which
    // NaN != NaN is false.
    nan_seen = nan_seen | xsimd::isnan(x);
    const auto greater = x > best;  // strict: each lane keeps its first occurrence
    best = xsimd::select(greater, x, best);
    best_block = xsimd::select(greater, block, best_block);
    block = block + float_batch(1.0f);
  };
  for (std::size_t i = 0; i < body; i += lanes) visit(float_batch::load_unaligned(row.data() + i));
  if (body < row.size()) visit(detail::load_tail(row.data() + body, row.size() - body, minus_infinity));
  if (xsimd::any(nan_seen)) return {std::numeric_limits<float>::quiet_NaN(), 0};

  alignas(64) float values[lanes];
  alignas(64) float blocks[lanes];
  best.store_aligned(values);
  best_block.store_aligned(blocks);
  max_location result{minus_infinity, 0};
  bool found = false;
  for (std::size_t lane = 0; lane < lanes; ++lane) {
    if (!(values[lane] > minus_infinity)) continue;
    const std::size_t index = static_cast<std::size_t>(blocks[lane]) * lanes + lane;
    if (!found || values[lane] > result.value || (values[lane] == result.value && index < result.index)) {
      result = {values[lane], index};
      found = true;
    }
  }
  return result;
}

/// log(sum_j exp(scale * row[j])) in a single pass with one exp per entry.
/// Each lane keeps a running maximum m and a sum s scaled by exp(-m); a new entry x updates
/// them with e = exp(-|x - m|), which is the factor for whichever of the two is smaller, so
/// the online rescaling costs no second exp (docs/kernels.md, "one-pass log-sum-exp").
/// Precondition: scale > 0. Returns -inf for an all-`-inf` row, NaN or +inf for invalid rows.
inline float log_sum_exp(std::span<const float> row, float scale = 1.0f) noexcept {
  using detail::float_batch;
  using detail::lanes;
  constexpr float minus_infinity = -std::numeric_limits<float>::infinity();
  const std::size_t body = row.size() - row.size() % lanes;
  // Starting from the lowest finite value rather than -inf keeps x - m defined for masked x.
  float_batch running_max(std::numeric_limits<float>::lowest());
  float_batch running_sum(0.0f);
  const float_batch factor(scale);
  const float_batch one(1.0f);
  auto visit = [&](const float_batch& raw) {
    const float_batch x = raw * factor;
    const float_batch difference = x - running_max;
    const float_batch e = xsimd::exp(-xsimd::abs(difference));
    const auto raises = difference > float_batch(0.0f);
    running_sum = xsimd::select(raises, xsimd::fma(running_sum, e, one), running_sum + e);
    running_max = xsimd::select(raises, x, running_max);
  };
  for (std::size_t i = 0; i < body; i += lanes) visit(float_batch::load_unaligned(row.data() + i));
  if (body < row.size()) visit(detail::load_tail(row.data() + body, row.size() - body, minus_infinity));

  alignas(64) float maxima[lanes];
  alignas(64) float sums[lanes];
  running_max.store_aligned(maxima);
  running_sum.store_aligned(sums);
  float overall_max = maxima[0];
  for (std::size_t lane = 1; lane < lanes; ++lane) overall_max = maxima[lane] > overall_max ? maxima[lane] : overall_max;
  double total = 0.0;
  for (std::size_t lane = 0; lane < lanes; ++lane) {
    if (sums[lane] == 0.0f) continue;  // a lane that saw only masks
    total += static_cast<double>(sums[lane]) * std::exp(static_cast<double>(maxima[lane]) - overall_max);
  }
  if (std::isnan(total)) return std::numeric_limits<float>::quiet_NaN();
  if (total == 0.0) return minus_infinity;
  return static_cast<float>(static_cast<double>(overall_max) + std::log(total));
}

}  // namespace cospec::kernels

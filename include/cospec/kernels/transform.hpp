// Row-to-row kernels: softmax, logit arithmetic, mixtures of distributions and the
// speculative-sampling residual. All take contiguous rows of equal length V with no alignment
// requirement and write into caller-owned rows (no allocation).
#pragma once

#include <cmath>    // std::log, std::isfinite
#include <cstddef>  // std::size_t
#include <limits>   // std::numeric_limits
#include <span>     // std::span

#include "cospec/kernels/detail/simd_loop.hpp"

namespace cospec::kernels {

/// Result of `unnormalized_softmax`: the row maximum (before scaling) that was used as the
/// shift, the scale, and the sum of the shifted exponentials.
struct exp_row_stats {
  float max;
  float scale;
  float sum;
  /// log-sum-exp of the scaled row: scale * max + log(sum) (may overflow for rows whose
  /// scaled maximum does; the weights themselves never do).
  [[nodiscard]] float log_sum_exp() const noexcept { return scale * max + std::log(sum); }
  /// False for rows with a NaN, a `+inf` or no finite entry.
  [[nodiscard]] bool valid() const noexcept { return std::isfinite(max) && std::isfinite(sum) && sum > 0.0f; }
};

namespace detail {
inline float row_max(std::span<const float> row) noexcept {
  constexpr float minus_infinity = -std::numeric_limits<float>::infinity();
  const std::size_t body = row.size() - row.size() % lanes;
  float_batch best(minus_infinity);
  for (std::size_t i = 0; i < body; i += lanes) best = xsimd::max(best, float_batch::load_unaligned(row.data() + i));
  if (body < row.size()) best = xsimd::max(best, load_tail(row.data() + body, row.size() - body, minus_infinity));
  alignas(64) float values[lanes];
  best.store_aligned(values);
  float result = values[0];
  for (std::size_t lane = 1; lane < lanes; ++lane) result = values[lane] > result ? values[lane] : result;
  return result;
}
}  // namespace detail

/// Writes out[j] = exp(scale * (row[j] - m)) with m the row maximum, and returns {m, scale, sum}.
/// Shifting before scaling keeps every argument <= 0, so no finite row overflows at any
/// temperature. Two passes (max, then exp); the 1/sum normalisation is left to the caller,
/// who can often fold it into a later weight (a mixture) instead of paying a third pass.
/// May work in place (out == row). Preconditions: out.size() == row.size(); scale > 0.
/// For an invalid row the returned stats are not `valid()` and `out` is unspecified.
inline exp_row_stats unnormalized_softmax(std::span<const float> row, std::span<float> out,
                                          float scale = 1.0f) noexcept {
  using detail::float_batch;
  using detail::lanes;
  const float shift = detail::row_max(row);
  if (!std::isfinite(shift)) return {shift, scale, 0.0f};
  const std::size_t body = row.size() - row.size() % lanes;
  const float_batch factor(scale);
  const float_batch offset(shift);
  float_batch sum(0.0f);
  for (std::size_t i = 0; i < body; i += lanes) {
    const float_batch e = xsimd::exp((float_batch::load_unaligned(row.data() + i) - offset) * factor);
    e.store_unaligned(out.data() + i);
    sum = sum + e;
  }
  if (body < row.size()) {
    const std::size_t tail = row.size() - body;
    const float_batch x = detail::load_tail(row.data() + body, tail, -std::numeric_limits<float>::infinity());
    const float_batch e = xsimd::exp((x - offset) * factor);
    detail::store_tail(out.data() + body, tail, e);
    sum = sum + e;
  }
  return {shift, scale, xsimd::hadd(sum)};
}

/// Multiplies a row by a constant in place.
inline void scale_row(std::span<float> row, float factor) noexcept {
  using detail::float_batch;
  using detail::lanes;
  const std::size_t body = row.size() - row.size() % lanes;
  const float_batch f(factor);
  for (std::size_t i = 0; i < body; i += lanes)
    (float_batch::load_unaligned(row.data() + i) * f).store_unaligned(row.data() + i);
  for (std::size_t i = body; i < row.size(); ++i) row[i] *= factor;
}

/// out = softmax(scale * row), normalised; returns the stats of `unnormalized_softmax`
/// (`valid()` is false for an invalid row, and then `out` is unspecified; `log_sum_exp()` is
/// the log-normaliser). `scale` is the inverse temperature. Masked (`-inf`) entries come out
/// as exact zeros.
inline exp_row_stats softmax(std::span<const float> row, std::span<float> out, float scale = 1.0f) noexcept {
  const exp_row_stats stats = unnormalized_softmax(row, out, scale);
  if (stats.valid()) scale_row(out, 1.0f / stats.sum);
  return stats;
}

/// Logit arithmetic: out[j] = scale * sum_i weights[i] * rows[i][j].
/// A `-inf` entry in any row with a non-zero weight makes out[j] = `-inf` whatever the sign of
/// the weight: a token masked by one model stays masked in the combination (without this rule
/// `l_expert - mu * l_amateur` would turn an amateur's mask into +inf). Rows with weight 0 are
/// not read. A `+inf` entry (an invalid logit) makes out[j] NaN, so that the caller's validity
/// check reports it rather than the combination turning it into a mask or an infinity.
/// Preconditions: rows.size() == weights.size() >= 1, all rows and out of equal size.
inline void linear_combination(std::span<const std::span<const float>> rows, std::span<const float> weights,
                               std::span<float> out, float scale = 1.0f) noexcept {
  using detail::float_batch;
  using detail::lanes;
  const float_batch masked(-std::numeric_limits<float>::infinity());
  auto combine = [&](std::size_t offset, auto&& load) {
    float_batch accumulator(0.0f);
    auto mask = accumulator != accumulator;
    auto overflow = mask;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (weights[i] == 0.0f) continue;
      const float_batch x = load(rows[i].data() + offset);
      mask = mask | (x == masked);
      overflow = overflow | (x == float_batch(std::numeric_limits<float>::infinity()));
      accumulator = xsimd::fma(float_batch(weights[i] * scale), x, accumulator);
    }
    const float_batch combined = xsimd::select(mask, masked, accumulator);
    return xsimd::select(overflow, float_batch(std::numeric_limits<float>::quiet_NaN()), combined);
  };
  // Written out in each kernel rather than shared through a helper taking the lambda: the
  // shared form measured 1.2-1.4x slower (row pointers reloaded every batch).
  const std::size_t size = out.size();
  const std::size_t body = size - size % lanes;
  for (std::size_t j = 0; j < body; j += lanes)
    combine(j, [](const float* p) { return float_batch::load_unaligned(p); }).store_unaligned(out.data() + j);
  if (body < size) {
    const std::size_t tail = size - body;
    detail::store_tail(out.data() + body, tail,
                       combine(body, [tail](const float* p) { return detail::load_tail(p, tail, 0.0f); }));
  }
}

/// out[j] = -inf wherever reference[j] < threshold, unless out[j] is NaN (an error must stay
/// visible). One pass with full-width stores: the plausibility constraint of contrastive
/// decoding.
inline void mask_below(std::span<const float> reference, float threshold, std::span<float> out) noexcept {
  using detail::float_batch;
  using detail::lanes;
  const std::size_t size = out.size();
  const std::size_t body = size - size % lanes;
  const float_batch limit(threshold);
  const float_batch masked(-std::numeric_limits<float>::infinity());
  for (std::size_t j = 0; j < body; j += lanes) {
    const float_batch value = float_batch::load_unaligned(out.data() + j);
    const auto drop = (float_batch::load_unaligned(reference.data() + j) < limit) & !xsimd::isnan(value);
    xsimd::select(drop, masked, value).store_unaligned(out.data() + j);
  }
  for (std::size_t j = body; j < size; ++j)
    if (reference[j] < threshold && !std::isnan(out[j])) out[j] = -std::numeric_limits<float>::infinity();
}

/// Mixture of distributions: out[j] = sum_i weights[i] * rows[i][j]. Rows with weight 0 are
/// not read. Preconditions as for `linear_combination`; weights are not normalised here.
inline void mixture(std::span<const std::span<const float>> rows, std::span<const float> weights,
                    std::span<float> out) noexcept {
  using detail::float_batch;
  using detail::lanes;
  auto combine = [&](std::size_t offset, auto&& load) {
    float_batch accumulator(0.0f);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (weights[i] == 0.0f) continue;
      accumulator = xsimd::fma(float_batch(weights[i]), load(rows[i].data() + offset), accumulator);
    }
    return accumulator;
  };
  // Written out in each kernel rather than shared through a helper taking the lambda: the
  // shared form measured 1.2-1.4x slower (row pointers reloaded every batch).
  const std::size_t size = out.size();
  const std::size_t body = size - size % lanes;
  for (std::size_t j = 0; j < body; j += lanes)
    combine(j, [](const float* p) { return float_batch::load_unaligned(p); }).store_unaligned(out.data() + j);
  if (body < size) {
    const std::size_t tail = size - body;
    detail::store_tail(out.data() + body, tail,
                       combine(body, [tail](const float* p) { return detail::load_tail(p, tail, 0.0f); }));
  }
}

/// Speculative-sampling residual in one pass: out[j] = max(0, target_scale * target[j] - proposal[j]),
/// returning sum_j out[j]. `target_scale` lets a caller pass an unnormalised target with its
/// 1/sum instead of normalising it first. Preconditions: equal sizes, non-negative inputs.
inline float residual(std::span<const float> target, std::span<const float> proposal, std::span<float> out,
                      float target_scale = 1.0f) noexcept {
  using detail::float_batch;
  using detail::lanes;
  const std::size_t size = out.size();
  const std::size_t body = size - size % lanes;
  const float_batch zero(0.0f);
  const float_batch factor(target_scale);
  float_batch sum(0.0f);
  for (std::size_t j = 0; j < body; j += lanes) {
    const float_batch d = xsimd::max(
        xsimd::fms(float_batch::load_unaligned(target.data() + j), factor, float_batch::load_unaligned(proposal.data() + j)),
        zero);
    d.store_unaligned(out.data() + j);
    sum = sum + d;
  }
  if (body < size) {
    const std::size_t tail = size - body;
    const float_batch d = xsimd::max(
        xsimd::fms(detail::load_tail(target.data() + body, tail, 0.0f), factor,
                   detail::load_tail(proposal.data() + body, tail, 0.0f)),
        zero);
    detail::store_tail(out.data() + body, tail, d);
    sum = sum + d;
  }
  return xsimd::hadd(sum);
}

}  // namespace cospec::kernels

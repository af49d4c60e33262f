// Row-to-row kernels: softmax, logit arithmetic, mixtures of distributions and the
// speculative-sampling residual. All take contiguous rows of equal length V with no alignment
// requirement and write into caller-owned rows (no allocation). Each runs the variant chosen
// at run time (instruction_set.hpp); the bodies are in detail/kernel_bodies.hpp.
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>  // std::size_t
#include <span>     // std::span

#include "cospec/kernels/detail/variants.hpp"
#include "cospec/kernels/row_results.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels {

/// Writes out[j] = exp(scale * (row[j] - m)) with m the row maximum, and returns {m, scale, sum}.
/// Shifting before scaling keeps every argument <= 0, so no finite row overflows at any
/// temperature. Two passes (max, then exp); the 1/sum normalisation is left to the caller,
/// who can often fold it into a later weight (a mixture) instead of paying a third pass.
/// May work in place (out == row). Preconditions: out.size() == row.size(); scale > 0.
/// For an invalid row the returned stats are not `valid()` and `out` is unspecified.
inline exp_row_stats unnormalized_softmax(std::span<const float> row, std::span<float> out,
                                          float scale = 1.0f) noexcept {
  return detail::dispatch([&](auto isa) { return unnormalized_softmax(isa, row, out, scale); });
}

/// Multiplies a row by a constant in place (each entry exactly as a scalar float product).
inline void scale_row(std::span<float> row, float factor) noexcept {
  detail::dispatch([&](auto isa) { scale_row(isa, row, factor); });
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
  detail::dispatch([&](auto isa) { linear_combination(isa, rows, weights, out, scale); });
}

/// out[j] = -inf wherever reference[j] < threshold, unless out[j] is NaN (an error must stay
/// visible). One pass with full-width stores: the plausibility constraint of contrastive
/// decoding.
inline void mask_below(std::span<const float> reference, float threshold, std::span<float> out) noexcept {
  detail::dispatch([&](auto isa) { mask_below(isa, reference, threshold, out); });
}

/// Mixture of distributions: out[j] = sum_i weights[i] * rows[i][j]. Rows with weight 0 are
/// not read. Preconditions as for `linear_combination`; weights are not normalised here.
inline void mixture(std::span<const std::span<const float>> rows, std::span<const float> weights,
                    std::span<float> out) noexcept {
  detail::dispatch([&](auto isa) { mixture(isa, rows, weights, out); });
}

/// Speculative-sampling residual in one pass: out[j] = max(0, target_scale * target[j] - proposal[j]),
/// returning sum_j out[j]. `target_scale` lets a caller pass an unnormalised target with its
/// 1/sum instead of normalising it first. Preconditions: equal sizes, non-negative inputs.
inline float residual(std::span<const float> target, std::span<const float> proposal, std::span<float> out,
                      float target_scale = 1.0f) noexcept {
  return detail::dispatch([&](auto isa) { return residual(isa, target, proposal, out, target_scale); });
}

}  // namespace cospec::kernels

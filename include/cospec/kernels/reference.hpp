// Scalar reference implementations of every kernel: plain loops with double accumulators,
// written for clarity, not speed. They are the oracle of the kernel tests and the baseline
// of the kernel benchmarks, and they document what each SIMD kernel computes.
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::sort, std::max
#include <cmath>      // std::exp, std::log, std::isnan
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint32_t
#include <limits>     // std::numeric_limits
#include <numeric>    // std::iota
#include <span>       // std::span
#include <vector>     // std::vector

#include "cospec/kernels/reduce.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels::reference {

inline max_location max_argmax(std::span<const float> row) {
  max_location best{-std::numeric_limits<float>::infinity(), 0};
  for (std::size_t j = 0; j < row.size(); ++j) {
    if (std::isnan(row[j])) return {std::numeric_limits<float>::quiet_NaN(), 0};
    if (row[j] > best.value) best = {row[j], j};
  }
  return best;
}

inline double log_sum_exp(std::span<const float> row, double scale = 1.0) {
  double max = -std::numeric_limits<double>::infinity();
  for (float x : row) max = std::max(max, scale * x);
  if (max == -std::numeric_limits<double>::infinity()) return max;
  double sum = 0.0;
  for (float x : row) sum += std::exp(scale * x - max);
  return max + std::log(sum);
}

inline void softmax(std::span<const float> row, std::span<float> out, double scale = 1.0) {
  const double lse = log_sum_exp(row, scale);
  for (std::size_t j = 0; j < row.size(); ++j) out[j] = static_cast<float>(std::exp(scale * row[j] - lse));
}

inline void linear_combination(std::span<const std::span<const float>> rows, std::span<const float> weights,
                               std::span<float> out, double scale = 1.0) {
  for (std::size_t j = 0; j < out.size(); ++j) {
    double sum = 0.0;
    bool masked = false;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (weights[i] == 0.0f) continue;
      if (rows[i][j] == -std::numeric_limits<float>::infinity()) masked = true;
      else sum += static_cast<double>(weights[i]) * rows[i][j];
    }
    out[j] = masked ? -std::numeric_limits<float>::infinity() : static_cast<float>(scale * sum);
  }
}

inline void mixture(std::span<const std::span<const float>> rows, std::span<const float> weights,
                    std::span<float> out) {
  for (std::size_t j = 0; j < out.size(); ++j) {
    double sum = 0.0;
    for (std::size_t i = 0; i < rows.size(); ++i)
      if (weights[i] != 0.0f) sum += static_cast<double>(weights[i]) * rows[i][j];
    out[j] = static_cast<float>(sum);
  }
}

inline double residual(std::span<const float> target, std::span<const float> proposal, std::span<float> out,
                       double target_scale = 1.0) {
  double sum = 0.0;
  for (std::size_t j = 0; j < out.size(); ++j) {
    const double d = std::max(0.0, target_scale * target[j] - proposal[j]);
    out[j] = static_cast<float>(d);
    sum += d;
  }
  return sum;
}

/// The exact inverse CDF with sequential double accumulation.
inline std::size_t sample_inverse_cdf(std::span<const float> weights, double u, double total) {
  double cumulative = 0.0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    cumulative += weights[i];
    if (weights[i] > 0.0f && cumulative > u * total) return i;
  }
  for (std::size_t i = weights.size(); i-- > 0;)
    if (weights[i] > 0.0f) return i;
  return weights.size();
}

/// Indices in keep order: descending weight, ascending index.
inline std::vector<std::uint32_t> keep_order(std::span<const float> weights) {
  std::vector<std::uint32_t> order(weights.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    return weights[a] > weights[b] || (weights[a] == weights[b] && a < b);
  });
  return order;
}

inline void top_k_filter(std::span<float> weights, std::size_t k) {
  const auto order = keep_order(weights);
  for (std::size_t rank = k; rank < order.size(); ++rank) weights[order[rank]] = 0.0f;
}

inline void top_p_filter(std::span<float> weights, double p) {
  if (p >= 1.0) return;
  double total = 0.0;
  for (float w : weights) total += w;
  const auto order = keep_order(weights);
  double cumulative = 0.0;
  std::size_t rank = 0;
  for (; rank < order.size(); ++rank) {
    cumulative += weights[order[rank]];
    if (cumulative >= p * total) break;
  }
  for (std::size_t r = rank + 1; r < order.size(); ++r) weights[order[r]] = 0.0f;
}

inline void min_p_filter(std::span<float> weights, double min_p) {
  float max = 0.0f;
  for (float w : weights) max = std::max(max, w);
  const float threshold = static_cast<float>(min_p) * max;
  for (float& w : weights)
    if (w < threshold) w = 0.0f;
}

}  // namespace cospec::kernels::reference

// Truncation filters on a distribution: top-k, top-p (nucleus) and min-p.
//
// Each filter works in place on a row of non-negative weights (a distribution, normalised or
// not), sets the excluded entries to exact zeros and returns the sum of what it kept. Order is
// by weight descending, ties broken by the lower index, so the kept set is always well defined.
// top-k and top-p avoid sorting V entries: one pass builds a 2048-bucket histogram over the
// leading bits of the float representation (monotone for non-negative floats), the bucket
// holding the boundary is found from the histogram, and only that bucket's entries are sorted.
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::sort, std::nth_element, std::fill
#include <array>      // std::array
#include <bit>        // std::bit_cast
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint32_t
#include <span>       // std::span
#include <vector>     // std::vector

#include "cospec/kernels/reduce.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels {

/// Scratch memory for `top_k_filter` and `top_p_filter`, reused across calls so that the
/// steady state allocates nothing. One per thread.
class filter_workspace {
 public:
  static constexpr std::size_t bucket_count = 2048;

  /// The bucket of a non-negative float: its 11 leading representation bits (sign, exponent
  /// and 2 mantissa bits), which order non-negative floats.
  static std::size_t bucket_of(float value) noexcept {
    return std::bit_cast<std::uint32_t>(value + 0.0f) >> 21;  // + 0.0f turns -0.0f into +0.0f
  }

 private:
  friend float top_k_filter(std::span<float>, std::size_t, filter_workspace&);
  friend float top_p_filter(std::span<float>, float, filter_workspace&);
  std::array<std::uint32_t, bucket_count> counts_{};
  std::array<double, bucket_count> masses_{};
  std::vector<std::uint32_t> candidates_;
};

namespace detail {
/// Descending weight, then ascending index: the order in which filters keep entries.
struct keep_order {
  std::span<const float> weights;
  bool operator()(std::uint32_t a, std::uint32_t b) const noexcept {
    return weights[a] > weights[b] || (weights[a] == weights[b] && a < b);
  }
};

/// The indices of the entries in bucket `bucket`, in index order.
inline void collect_bucket(std::span<const float> weights, std::size_t bucket, std::vector<std::uint32_t>& indices) {
  indices.clear();
  for (std::size_t j = 0; j < weights.size(); ++j)
    if (filter_workspace::bucket_of(weights[j]) == bucket) indices.push_back(static_cast<std::uint32_t>(j));
}

/// Zeroes every entry that comes after `last_kept` in keep order, returns the kept sum.
/// Everything in a bucket above `boundary_bucket` is kept without comparison.
inline float zero_after(std::span<float> weights, std::size_t boundary_bucket, std::uint32_t last_kept) noexcept {
  const float edge = weights[last_kept];
  double kept = 0.0;
  for (std::size_t j = 0; j < weights.size(); ++j) {
    const float w = weights[j];
    const std::size_t b = filter_workspace::bucket_of(w);
    const bool keep = b > boundary_bucket || (b == boundary_bucket && (w > edge || (w == edge && j <= last_kept)));
    if (keep) kept += w;
    else weights[j] = 0.0f;
  }
  return static_cast<float>(kept);
}
}  // namespace detail

/// Keeps the k largest weights. k == 0 is a caller error (returns 0 and zeroes nothing);
/// k >= size keeps everything. Preconditions: entries finite and >= 0.
inline float top_k_filter(std::span<float> weights, std::size_t k, filter_workspace& workspace) {
  if (k == 0) return 0.0f;
  if (k >= weights.size()) {
    double sum = 0.0;
    for (float w : weights) sum += w;
    return static_cast<float>(sum);
  }
  auto& counts = workspace.counts_;
  counts.fill(0);
  for (float w : weights) ++counts[filter_workspace::bucket_of(w)];
  std::size_t boundary = filter_workspace::bucket_count;
  std::size_t above = 0;  // entries in buckets strictly above the boundary bucket
  while (boundary-- > 0) {
    if (above + counts[boundary] >= k) break;
    above += counts[boundary];
  }
  auto& candidates = workspace.candidates_;
  detail::collect_bucket(weights, boundary, candidates);
  const std::size_t needed = k - above;  // 1 <= needed <= candidates.size()
  const detail::keep_order order{weights};
  std::nth_element(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(needed - 1), candidates.end(), order);
  return detail::zero_after(weights, boundary, candidates[needed - 1]);
}

/// Keeps the shortest run of largest weights whose mass reaches p times the total mass
/// (nucleus sampling). p >= 1 keeps everything. Preconditions: 0 < p, entries finite and
/// >= 0 with a positive sum.
inline float top_p_filter(std::span<float> weights, float p, filter_workspace& workspace) {
  auto& masses = workspace.masses_;
  masses.fill(0.0);
  double total = 0.0;
  for (float w : weights) {
    masses[filter_workspace::bucket_of(w)] += w;
    total += w;
  }
  if (p >= 1.0f) return static_cast<float>(total);
  const double wanted = static_cast<double>(p) * total;
  std::size_t boundary = filter_workspace::bucket_count;
  double above = 0.0;
  while (boundary-- > 1) {  // bucket 0 holds only zeros and the tiniest subnormals
    if (above + masses[boundary] >= wanted) break;
    above += masses[boundary];
  }
  auto& candidates = workspace.candidates_;
  detail::collect_bucket(weights, boundary, candidates);
  const detail::keep_order order{weights};
  std::sort(candidates.begin(), candidates.end(), order);
  std::uint32_t last = candidates.empty() ? 0 : candidates.back();
  double cumulative = above;
  for (std::uint32_t j : candidates) {
    cumulative += weights[j];
    if (cumulative >= wanted) {
      last = j;
      break;
    }
  }
  return detail::zero_after(weights, boundary, last);
}

/// Keeps the weights that are at least min_p times the largest one.
/// Preconditions: 0 <= min_p <= 1, entries finite and >= 0.
inline float min_p_filter(std::span<float> weights, float min_p) noexcept {
  const float threshold = min_p * max_argmax(weights).value;
  double kept = 0.0;
  for (float& w : weights) {
    if (w >= threshold) kept += w;
    else w = 0.0f;
  }
  return static_cast<float>(kept);
}

}  // namespace cospec::kernels

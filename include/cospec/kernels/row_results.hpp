// What the row reductions return: the largest entry with its index, and the statistics of an
// exponentiated row. Shared by every variant of the kernels (docs/kernels.md).
#pragma once

#include "cospec/abi.hpp"

#include <cmath>    // std::log, std::isfinite
#include <cstddef>  // std::size_t

namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels {

/// The largest entry of a row and the index of its first occurrence.
struct max_location {
  float value;
  std::size_t index;
};

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

}  // namespace cospec::kernels

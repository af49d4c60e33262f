// The input of every combiner: one logit row per model at one position, and the checks that
// turn a bad row into an error message that names the model at fault.
#pragma once

#include "cospec/abi.hpp"

#include <cmath>    // std::isnan, std::isinf, std::isfinite
#include <cstddef>  // std::size_t
#include <span>     // std::span
#include <string>   // std::string, std::to_string

#include "cospec/errors.hpp"
#include "cospec/kernels/reduce.hpp"
#include "cospec/kernels/transform.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// n rows of V logits, row i from model i, all at the same position. Non-owning.
using logit_rows = std::span<const std::span<const float>>;

/// Why row `model` cannot define a distribution, or an empty string if it can. Used on the
/// cold path, after a cheap check (a non-finite log-sum-exp or maximum) found a problem.
inline std::string describe_invalid_row(std::size_t model, std::span<const float> row) {
  bool any_unmasked = false;
  for (std::size_t j = 0; j < row.size(); ++j) {
    if (std::isnan(row[j])) return "model " + std::to_string(model) + ": logit of token " + std::to_string(j) + " is NaN";
    if (row[j] == INFINITY) return "model " + std::to_string(model) + ": logit of token " + std::to_string(j) + " is +inf";
    any_unmasked = any_unmasked || row[j] != -INFINITY;
  }
  if (!any_unmasked) return "model " + std::to_string(model) + ": every token is masked (-inf)";
  return {};
}

/// Whether `row` can define a distribution (no NaN or +inf, some token unmasked): one max pass.
/// For rows that no reduction of a combination reads, such as a model's with weight 0: every
/// row a model returns is validated all the same (docs/reliability.md), so that whether a run
/// fails does not depend on which model proposes where.
inline bool row_is_valid(std::span<const float> row) noexcept { return std::isfinite(kernels::max_argmax(row).value); }

/// Throws invalid_logits for the first row that is NaN, +inf or fully masked, if any.
inline void throw_if_a_row_is_invalid(logit_rows rows) {
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::string problem = describe_invalid_row(i, rows[i]);
    if (!problem.empty()) throw invalid_logits(problem);
  }
}

/// Throws invalid_logits for the first row that is NaN, +inf or fully masked; otherwise with
/// `otherwise`, which says what else left no token (the rows were fine one by one).
[[noreturn]] inline void throw_invalid_combination(
    logit_rows rows, const char* otherwise = "the combination of the models' logits masks every token") {
  throw_if_a_row_is_invalid(rows);
  throw invalid_logits(otherwise);
}

/// Throws invalid_logits for model `model`'s row, which a cheap check found invalid.
[[noreturn]] inline void throw_invalid_row(std::size_t model, std::span<const float> row) {
  std::string problem = describe_invalid_row(model, row);
  if (problem.empty()) problem = "model " + std::to_string(model) + ": logits define no distribution";
  throw invalid_logits(problem);
}

/// Turns target logits (already in `out`) into target weights at temperature T > 0, in
/// place, and returns their sum; throws invalid_logits naming the model at fault, or else
/// with `otherwise` (by default: the combination left no token). Shared by the combiners
/// whose target is a softmax.
inline float softmax_weights_in_place(
    logit_rows logits, float temperature, std::span<float> out,
    const char* otherwise = "the combination of the models' logits masks every token") {
  const kernels::exp_row_stats stats = kernels::unnormalized_softmax(out, out, 1.0f / temperature);
  if (!stats.valid()) throw_invalid_combination(logits, otherwise);
  return stats.sum;
}

/// Throws invalid_logits unless every row has length `vocabulary_size` and there are
/// `model_count` rows.
inline void check_row_shapes(logit_rows rows, std::size_t model_count) {
  if (rows.size() != model_count)
    throw invalid_logits("expected logits of " + std::to_string(model_count) + " models, got " +
                         std::to_string(rows.size()));
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (rows[i].size() != rows[0].size() || rows[i].empty())
      throw invalid_logits("model " + std::to_string(i) + ": logit row has length " + std::to_string(rows[i].size()) +
                           ", model 0's has " + std::to_string(rows[0].size()));
}

}  // namespace cospec

// A combiner from a user function that maps the n logit rows to target logits.
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>      // std::size_t
#include <span>         // std::span
#include <type_traits>  // std::is_invocable_v
#include <utility>      // std::move

#include "cospec/combine/combiner.hpp"
#include "cospec/combine/logit_rows.hpp"
#include "cospec/combine/proposal.hpp"
#include "cospec/errors.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Wraps `void function(logit_rows rows, std::span<float> target_logits)`: the target is
/// softmax(target_logits / T), and the greedy token is their argmax. For any combination
/// that the provided combiners do not cover; it must not allocate per call to keep the
/// decoder allocation-free. Every row is validated before the function sees it (one max pass
/// per row), and so is its result.
template <class Function>
  requires std::is_invocable_v<Function&, logit_rows, std::span<float>>
class callable_combiner {
 public:
  callable_combiner(std::size_t model_count, Function function)
      : model_count_(model_count), function_(std::move(function)) {
    if (model_count_ == 0) throw invalid_configuration("callable_combiner: needs at least one model");
  }

  [[nodiscard]] std::size_t model_count() const noexcept { return model_count_; }

  float target_weights(logit_rows logits, float temperature, std::span<float> out) {
    check_rows(logits);
    function_(logits, out);
    // The rows are valid: what is left is the function's own result.
    return softmax_weights_in_place(logits, temperature, out,
                                    "the combination function's target logits define no distribution (NaN, "
                                    "+inf, or every token masked)");
  }

  score_domain greedy_scores(logit_rows logits, std::span<float> out) {
    check_rows(logits);
    function_(logits, out);
    return score_domain::log_weights;
  }

  void proposal_distribution(std::size_t model, std::span<const float> logits, float temperature,
                             std::span<float> out) const {
    softmax_proposal(model, logits, temperature, out);
  }

 private:
  /// Shapes, and every row valid whether or not the function reads it (docs/reliability.md):
  /// one max pass per row.
  void check_rows(logit_rows logits) const {
    check_row_shapes(logits, model_count_);
    for (const std::span<const float> row : logits)
      if (!row_is_valid(row)) throw_invalid_combination(logits);
  }

  std::size_t model_count_;
  Function function_;
};

}  // namespace cospec

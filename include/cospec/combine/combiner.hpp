// The Combiner concept: how n models' logits at one position become the target distribution r.
#pragma once

#include "cospec/abi.hpp"

#include <concepts>  // std::same_as, std::convertible_to, std::move_constructible
#include <cstddef>   // std::size_t
#include <optional>  // std::optional
#include <span>      // std::span

#include "cospec/combine/logit_rows.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// The scale of a row written by `greedy_scores`.
enum class score_domain {
  log_weights,  ///< the target is softmax of the row: argmax, and biases add
  weights,      ///< the target is proportional to the row: argmax, and biases multiply by exp
};

/// Requirement 1: says how many models it combines.
template <class C>
concept combiner_with_model_count = requires(const C& c) {
  { c.model_count() } -> std::convertible_to<std::size_t>;
};

/// Requirement 2: writes the target at temperature T > 0 as non-negative weights and returns
/// their sum (> 0); throws invalid_logits when the rows define no distribution.
template <class C>
concept combiner_with_sampling_target = requires(C& c, logit_rows logits, float temperature, std::span<float> out) {
  { c.target_weights(logits, temperature, out) } -> std::same_as<float>;
};

/// Requirement 3: writes a row whose argmax is the greedy (temperature-1) target's argmax,
/// as cheaply as the combination allows, and says its scale.
template <class C>
concept combiner_with_greedy_scores = requires(C& c, logit_rows logits, std::span<float> out) {
  { c.greedy_scores(logits, out) } -> std::same_as<score_domain>;
};

/// Requirement 4: writes model `model`'s own normalised proposal distribution at T > 0.
template <class C>
concept combiner_with_proposal =
    requires(C& c, std::size_t model, std::span<const float> logits, float temperature, std::span<float> out) {
      { c.proposal_distribution(model, logits, temperature, out) } -> std::same_as<void>;
    };

/// A Combiner (docs/combiners.md). A type C is a combiner if it is movable and
///  1. `c.model_count()` is the number n of models it combines;
///  2. `c.target_weights(rows, T, out)` writes the target r at temperature T > 0 into `out`,
///     unnormalised, and returns the sum of what it wrote;
///  3. `c.greedy_scores(rows, out)` writes a row with the same argmax as the temperature-1
///     target and returns its score_domain;
///  4. `c.proposal_distribution(i, row_i, T, out)` writes model i's normalised proposal
///     distribution (the provided combiners use softmax(row_i / T)).
/// `rows` holds n rows of the same length V >= 1; `out` has length V. Calls must not allocate
/// once the combiner has seen rows of that length, and throw invalid_logits for rows that
/// define no distribution.
template <class C>
concept combiner = std::move_constructible<C> && combiner_with_model_count<C> && combiner_with_sampling_target<C> &&
                   combiner_with_greedy_scores<C> && combiner_with_proposal<C>;

/// Optional: combiners whose target at every temperature T is softmax(z / T) for one row z
/// of combined logits (logit arithmetic: z = sum_i w_i l_i). `c.target_logits(rows, out)`
/// writes z. The target is then built in that logit space when penalties or a logits
/// processor apply (they see z before the temperature, as llama.cpp's samplers see raw
/// logits); other combiners give them the log of their normalised target at T.
template <class C>
concept combiner_with_target_logits = requires(C& c, logit_rows logits, std::span<float> out) {
  { c.target_logits(logits, out) } -> std::same_as<void>;
};

/// Optional: combiners whose proposals are softmax(row_i / T) (softmax_proposal) and that give
/// the sampling target's probability at one token without writing a row.
/// `c.target_probability(rows, T, x, known)` returns r(x), normalised (what target_weights
/// writes at x divided by its sum, up to rounding), or nullopt where it cannot say cheaply (an
/// invalid row, a combination that overflows float, a constraint it does not evaluate at one
/// token): the caller then builds the whole target, which reports or handles the case.
/// `known[i]` is softmax(row_i / T) at x where the caller already has it (the proposal x was
/// drawn from), NaN elsewhere. A session then keeps such proposals unnormalised and builds the
/// target row only on a rejection (docs/combiners.md, "Targets at one token").
template <class C>
concept combiner_with_point_target =
    requires(C& c, logit_rows logits, float temperature, token_id x, std::span<const double> known) {
      { c.target_probability(logits, temperature, x, known) } -> std::same_as<std::optional<double>>;
    };

/// Optional: combiners that find the greedy token (the argmax of the temperature-1 target, the
/// lowest index among ties) without writing a row: `c.greedy_token(rows, known_maxima)`, or
/// nullopt where they cannot say cheaply (as above); greedy_scores then decides.
/// `known_maxima[i]` is row i's largest logit where the caller has it (the argmax it proposed
/// from), NaN elsewhere; the span may be empty.
template <class C>
concept combiner_with_greedy_token = requires(C& c, logit_rows logits, std::span<const float> known_maxima) {
  { c.greedy_token(logits, known_maxima) } -> std::same_as<std::optional<token_id>>;
};

/// Optional: combiners whose sampling target is a mixture of the models' own proposal
/// distributions, r = sum_i w_i softmax(row_i / T) at every T > 0, with the proposals
/// softmax(row_i / T) (the weighted ensemble). `c.mixture_weights()` returns the weights w,
/// normalised to sum 1 (one per model), or an empty span when the combination is not such a
/// mixture (a type-erased combiner holding logit arithmetic, say). Mixture sampling draws a
/// model from w for each position and lets that model's distribution alone decide its token
/// (docs/algorithm.md, "Mixture sampling").
template <class C>
concept combiner_with_mixture_weights = requires(const C& c) {
  { c.mixture_weights() } -> std::convertible_to<std::span<const float>>;
};

/// What a combiner can do, where only the run time knows (a type-erased combiner: any_combiner).
struct combiner_capabilities {
  /// Its target at every T is softmax(target_logits / T) (combiner_with_target_logits).
  bool target_logits = false;
  /// Its proposals are softmax(row_i / T) and target_probability evaluates it at one token
  /// (combiner_with_point_target's promise).
  bool point_target = false;
};

/// Optional: combiners that say at run time which optional requirements they really meet
/// (they provide the functions of several, and honour only some). Without it, the concepts
/// say it at compile time.
template <class C>
concept combiner_with_capabilities = requires(const C& c) {
  { c.capabilities() } -> std::same_as<combiner_capabilities>;
};

/// Whether `c`'s target is softmax of its target logits (at compile time where it can be).
template <class C>
[[nodiscard]] bool has_target_logits(const C& c) noexcept {
  if constexpr (combiner_with_capabilities<C>) return c.capabilities().target_logits;
  else return combiner_with_target_logits<C>;
}

/// Whether `c` keeps combiner_with_point_target's promise.
template <class C>
[[nodiscard]] bool has_point_target(const C& c) noexcept {
  if constexpr (combiner_with_capabilities<C>) return c.capabilities().point_target;
  else return combiner_with_point_target<C>;
}

}  // namespace cospec

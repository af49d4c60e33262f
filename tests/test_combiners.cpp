// The combiners (docs/combiners.md; docs/algorithm.md, "Collaborative decoding") and
// target_evaluator, checked against double-precision references written as plainly as
// possible: no SIMD, no folding of normalisers, every softmax computed the textbook way.
//
// Tolerances. The library works in float: each logit is scaled and shifted with one rounding,
// exponentiated by xsimd::exp (a few ulps), and a row sum of up to 32000 terms is accumulated
// in float lanes. For the logit ranges used here (|l / T| <~ 30) that gives a relative error
// of each probability of a few 1e-6 (the worst seen in these tests is 5e-6, with AVX2 at
// V = 32000), so entries are compared with a relative tolerance of 2e-5: four times that, and
// far below what any wrong formula (a missing normaliser, a wrong weight, a sign) produces. Probabilities below 1e-35
// (float's subnormal range) carry no relative precision and are compared absolutely. Masks are
// not a rounding matter: where the reference is exactly zero the library must be exactly zero.
#include <algorithm>   // std::max_element, std::equal
#include <cmath>       // std::exp, std::log, std::sqrt, std::cos, std::abs, std::isfinite
#include <cstddef>     // std::size_t
#include <cstdint>     // std::uint64_t
#include <functional>  // std::function
#include <limits>      // std::numeric_limits
#include <numbers>     // std::numbers::pi
#include <optional>    // std::optional
#include <span>        // std::span
#include <string>      // std::string
#include <utility>     // std::pair
#include <vector>      // std::vector

#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>
#include <cospec/kernels/reference.hpp>

// Checks both the documented exception type and that the message names the problem.
#define COSPEC_REQUIRE_THROWS_AS_WITH(expression, exception_type, message_matcher) \
  do {                                                                            \
    REQUIRE_THROWS_AS(expression, exception_type);                                \
    REQUIRE_THROWS_WITH(expression, message_matcher);                             \
  } while (false)

namespace {

using Catch::Matchers::Contains;

constexpr float not_a_number = std::numeric_limits<float>::quiet_NaN();
constexpr float infinity = std::numeric_limits<float>::infinity();
constexpr float minus_infinity = -infinity;
constexpr double relative_tolerance = 2e-5;  // see the file comment
constexpr double absolute_floor = 1e-35;     // below float's normal range: no relative precision

constexpr std::size_t vocabulary_sizes[] = {5, 33, 1000, 32000};
constexpr std::size_t model_counts[] = {1, 2, 3};
constexpr float temperatures[] = {0.7f, 1.0f, 1.5f};

/// n logit rows that own their storage; `rows()` gives the non-owning view combiners take.
class model_logits {
 public:
  model_logits() = default;
  explicit model_logits(std::vector<std::vector<float>> rows) : storage_(std::move(rows)) {}

  /// Normal(0, scale) logits drawn with Box-Muller from cospec's portable random source, so the
  /// data are identical with every standard library.
  static model_logits random(std::uint64_t seed, std::size_t models, std::size_t size, double scale = 2.0) {
    cospec::random_source random(seed);
    std::vector<std::vector<float>> rows(models, std::vector<float>(size));
    for (auto& row : rows)
      for (float& x : row) {
        const double radius = std::sqrt(-2.0 * std::log(1.0 - random.uniform()));  // 1 - u is in (0, 1]
        x = static_cast<float>(scale * radius * std::cos(2.0 * std::numbers::pi * random.uniform()));
      }
    return model_logits(std::move(rows));
  }

  /// Masks about one token in ten of every row at random, and token 1 in every row. Token 0 is
  /// never masked, so each row and every combination keeps a finite entry.
  void mask_some(std::uint64_t seed) {
    cospec::random_source random(seed);
    for (auto& row : storage_)
      for (std::size_t j = 1; j < row.size(); ++j)
        if (j == 1 || random.uniform() < 0.1) row[j] = minus_infinity;
  }

  cospec::logit_rows rows() {
    views_.assign(storage_.begin(), storage_.end());
    return views_;
  }
  std::vector<float>& operator[](std::size_t model) { return storage_[model]; }
  [[nodiscard]] std::size_t size() const { return storage_.empty() ? 0 : storage_[0].size(); }

 private:
  std::vector<std::vector<float>> storage_;
  std::vector<std::span<const float>> views_;
};

// ---------------------------------------------------------------------------------------------
// Double-precision references.

/// softmax in double; -inf entries become exact zeros.
std::vector<double> reference_softmax(const std::vector<double>& logits) {
  double max = -std::numeric_limits<double>::infinity();
  for (double x : logits) max = std::max(max, x);
  std::vector<double> out(logits.size());
  double sum = 0.0;
  for (std::size_t j = 0; j < logits.size(); ++j) sum += out[j] = std::exp(logits[j] - max);
  for (double& p : out) p /= sum;
  return out;
}

std::vector<double> scaled(std::span<const float> row, double temperature) {
  std::vector<double> out(row.size());
  for (std::size_t j = 0; j < row.size(); ++j) out[j] = row[j] / temperature;
  return out;
}

/// sum_i lambda_i * softmax(l_i / T) with lambda = weights / sum(weights).
std::vector<double> reference_weighted_ensemble(cospec::logit_rows rows, const std::vector<float>& weights,
                                                double temperature) {
  double total = 0.0;
  for (float w : weights) total += w;
  std::vector<double> out(rows[0].size(), 0.0);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (weights[i] == 0.0f) continue;
    const std::vector<double> p = reference_softmax(scaled(rows[i], temperature));
    for (std::size_t j = 0; j < out.size(); ++j) out[j] += weights[i] / total * p[j];
  }
  return out;
}

/// sum_i w_i * l_i, -inf wherever a model with a non-zero weight masks the token (whatever the
/// sign of its weight), then the plausibility mask if any.
std::vector<double> reference_combined_logits(cospec::logit_rows rows, const std::vector<float>& weights,
                                              std::optional<cospec::plausibility_constraint> constraint = {}) {
  std::vector<double> out(rows[0].size(), 0.0);
  for (std::size_t j = 0; j < out.size(); ++j)
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (weights[i] == 0.0f) continue;
      if (rows[i][j] == minus_infinity) {
        out[j] = -std::numeric_limits<double>::infinity();
        break;
      }
      out[j] += static_cast<double>(weights[i]) * rows[i][j];
    }
  if (constraint && constraint->alpha > 0.0f) {
    // The documented rule, "l_expert < max l_expert + log(alpha)", evaluated as documented in
    // float, so that which tokens sit on the boundary is not a rounding question.
    const std::span<const float> expert = rows[constraint->expert];
    const float threshold = *std::max_element(expert.begin(), expert.end()) + std::log(constraint->alpha);
    for (std::size_t j = 0; j < out.size(); ++j)
      if (expert[j] < threshold) out[j] = -std::numeric_limits<double>::infinity();
  }
  return out;
}

std::vector<double> reference_logit_arithmetic(cospec::logit_rows rows, const std::vector<float>& weights,
                                               double temperature,
                                               std::optional<cospec::plausibility_constraint> constraint = {}) {
  std::vector<double> combined = reference_combined_logits(rows, weights, constraint);
  for (double& x : combined) x /= temperature;
  return reference_softmax(combined);
}

/// The user combination of the callable_combiner tests: the largest logit of any model
/// ("optimistic ensemble"), which no provided combiner computes.
struct max_of_models {
  void operator()(cospec::logit_rows rows, std::span<float> out) const {
    for (std::size_t j = 0; j < out.size(); ++j) {
      out[j] = rows[0][j];
      for (std::size_t i = 1; i < rows.size(); ++i) out[j] = std::max(out[j], rows[i][j]);
    }
  }
};

std::vector<double> reference_max_of_models(cospec::logit_rows rows, double temperature) {
  std::vector<double> combined(rows[0].size(), -std::numeric_limits<double>::infinity());
  for (std::size_t j = 0; j < combined.size(); ++j)
    for (const auto& row : rows) combined[j] = std::max(combined[j], static_cast<double>(row[j]) / temperature);
  return reference_softmax(combined);
}

// ---------------------------------------------------------------------------------------------
// Comparisons.

/// Requires actual[j] / divisor to match expected[j] within the file's tolerance, and exactly
/// zero wherever expected[j] is exactly zero (a mask).
void require_matches_reference(std::span<const float> actual, double divisor, const std::vector<double>& expected) {
  REQUIRE(actual.size() == expected.size());
  std::size_t failures = 0;
  std::size_t first_failure = 0;
  double worst_relative_error = 0.0;
  for (std::size_t j = 0; j < expected.size(); ++j) {
    const double value = actual[j] / divisor;
    bool ok;
    if (expected[j] == 0.0) {
      ok = actual[j] == 0.0f;
    } else {
      const double error = std::abs(value - expected[j]);
      ok = error <= relative_tolerance * expected[j] + absolute_floor;
      if (expected[j] > absolute_floor) worst_relative_error = std::max(worst_relative_error, error / expected[j]);
    }
    if (!ok && failures++ == 0) first_failure = j;
  }
  INFO("first failing token " << first_failure << ": library " << actual[first_failure] / divisor << ", reference "
                              << expected[first_failure] << "; worst relative error " << worst_relative_error);
  REQUIRE(failures == 0);
}

std::size_t argmax(std::span<const double> row) {
  return static_cast<std::size_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

/// The token the library chose is the reference argmax, or ties with it to within rounding
/// (two random logits can lie within float precision of each other; then either is right).
void require_argmax_matches(std::size_t chosen, const std::vector<double>& reference) {
  const std::size_t best = argmax(reference);
  INFO("library chose " << chosen << " (p = " << reference[chosen] << "), reference argmax " << best
                        << " (p = " << reference[best] << ")");
  REQUIRE((chosen == best || reference[chosen] >= reference[best] * (1.0 - relative_tolerance)));
}

std::size_t argmax(std::span<const float> row) {
  return cospec::kernels::reference::max_argmax(row).index;
}

std::vector<float> random_weights(cospec::random_source& random, std::size_t count, double low, double high) {
  std::vector<float> weights(count);
  for (float& w : weights) w = static_cast<float>(low + (high - low) * random.uniform());
  return weights;
}

}  // namespace

// =============================================================================================
// The Combiner concept

namespace {

struct minimal_combiner {  // positive archetype: exactly the documented interface
  [[nodiscard]] std::size_t model_count() const;
  float target_weights(cospec::logit_rows, float, std::span<float>);
  cospec::score_domain greedy_scores(cospec::logit_rows, std::span<float>);
  void proposal_distribution(std::size_t, std::span<const float>, float, std::span<float>) const;
};

struct combiner_without_greedy_scores {
  [[nodiscard]] std::size_t model_count() const;
  float target_weights(cospec::logit_rows, float, std::span<float>);
  void proposal_distribution(std::size_t, std::span<const float>, float, std::span<float>) const;
};

struct combiner_whose_target_weights_returns_void {
  [[nodiscard]] std::size_t model_count() const;
  void target_weights(cospec::logit_rows, float, std::span<float>);
  cospec::score_domain greedy_scores(cospec::logit_rows, std::span<float>);
  void proposal_distribution(std::size_t, std::span<const float>, float, std::span<float>) const;
};

struct combiner_without_model_count {
  float target_weights(cospec::logit_rows, float, std::span<float>);
  cospec::score_domain greedy_scores(cospec::logit_rows, std::span<float>);
  void proposal_distribution(std::size_t, std::span<const float>, float, std::span<float>) const;
};

struct combiner_whose_greedy_scores_returns_bool {
  [[nodiscard]] std::size_t model_count() const;
  float target_weights(cospec::logit_rows, float, std::span<float>);
  bool greedy_scores(cospec::logit_rows, std::span<float>);
  void proposal_distribution(std::size_t, std::span<const float>, float, std::span<float>) const;
};

struct non_movable_combiner : minimal_combiner {
  non_movable_combiner() = default;
  non_movable_combiner(non_movable_combiner&&) = delete;
};

using max_of_models_combiner = cospec::callable_combiner<max_of_models>;

}  // namespace

TEST_CASE("the provided combiners and a minimal archetype satisfy the combiner concept", "[combiners][concept]") {
  STATIC_REQUIRE(cospec::combiner<cospec::weighted_ensemble>);
  STATIC_REQUIRE(cospec::combiner<cospec::logit_arithmetic>);
  STATIC_REQUIRE(cospec::combiner<max_of_models_combiner>);
  STATIC_REQUIRE(cospec::combiner<minimal_combiner>);
}

TEST_CASE("types that miss a requirement are not combiners", "[combiners][concept]") {
  STATIC_REQUIRE_FALSE(cospec::combiner<combiner_without_greedy_scores>);
  STATIC_REQUIRE_FALSE(cospec::combiner_with_greedy_scores<combiner_without_greedy_scores>);
  STATIC_REQUIRE_FALSE(cospec::combiner<combiner_whose_target_weights_returns_void>);
  STATIC_REQUIRE_FALSE(cospec::combiner_with_sampling_target<combiner_whose_target_weights_returns_void>);
  STATIC_REQUIRE_FALSE(cospec::combiner<combiner_without_model_count>);
  STATIC_REQUIRE_FALSE(cospec::combiner<combiner_whose_greedy_scores_returns_bool>);
  STATIC_REQUIRE_FALSE(cospec::combiner<non_movable_combiner>);
}

// =============================================================================================
// Targets against the references

TEST_CASE("weighted_ensemble writes the weighted mixture of the models' softmax(l / T)", "[combiners]") {
  std::uint64_t seed = 100;
  for (std::size_t size : vocabulary_sizes)
    for (std::size_t models : model_counts)
      for (float temperature : temperatures) {
        ++seed;
        CAPTURE(size, models, temperature, seed);
        model_logits logits = model_logits::random(seed, models, size);
        if (seed % 2 == 0) logits.mask_some(seed);
        cospec::random_source random(seed);
        // Unnormalised weights: the combiner must normalise them.
        const std::vector<float> weights = random_weights(random, models, 0.1, 3.0);
        cospec::weighted_ensemble combiner(weights);
        std::vector<float> out(size);
        const float sum = combiner.target_weights(logits.rows(), temperature, out);
        require_matches_reference(out, sum, reference_weighted_ensemble(logits.rows(), weights, temperature));
        double written = 0.0;
        for (float p : out) written += p;
        REQUIRE(written == Approx(sum).epsilon(relative_tolerance));  // "returns the sum of what it wrote"
      }
}

TEST_CASE("weighted_ensemble gives a zero weight's model no say", "[combiners]") {
  model_logits logits = model_logits::random(7, 3, 1000);
  for (float& x : logits[1]) x *= 10.0f;  // would dominate the mixture if it counted
  const std::vector<float> weights{1.0f, 0.0f, 3.0f};
  cospec::weighted_ensemble combiner(weights);
  std::vector<float> out(1000);
  const float sum = combiner.target_weights(logits.rows(), 1.0f, out);
  require_matches_reference(out, sum, reference_weighted_ensemble(logits.rows(), weights, 1.0));
}

TEST_CASE("logit_arithmetic writes softmax(sum_i w_i l_i / T), negative weights included", "[combiners]") {
  std::uint64_t seed = 200;
  for (std::size_t size : vocabulary_sizes)
    for (std::size_t models : model_counts)
      for (float temperature : temperatures) {
        ++seed;
        CAPTURE(size, models, temperature, seed);
        model_logits logits = model_logits::random(seed, models, size);
        if (seed % 2 == 0) logits.mask_some(seed);
        cospec::random_source random(seed);
        const std::vector<float> weights = random_weights(random, models, -1.0, 1.5);
        cospec::logit_arithmetic combiner(weights);
        std::vector<float> out(size);
        const float sum = combiner.target_weights(logits.rows(), temperature, out);
        require_matches_reference(out, sum, reference_logit_arithmetic(logits.rows(), weights, temperature));
      }
}

TEST_CASE("logit_arithmetic computes proxy-tuning (weights 1, 1, -1)", "[combiners]") {
  const std::vector<float> weights{1.0f, 1.0f, -1.0f};
  std::uint64_t seed = 300;
  for (std::size_t size : vocabulary_sizes)
    for (float temperature : temperatures) {
      ++seed;
      CAPTURE(size, temperature);
      model_logits logits = model_logits::random(seed, 3, size);
      logits.mask_some(seed);
      cospec::logit_arithmetic combiner(weights);
      std::vector<float> out(size);
      const float sum = combiner.target_weights(logits.rows(), temperature, out);
      require_matches_reference(out, sum, reference_logit_arithmetic(logits.rows(), weights, temperature));
    }
}

TEST_CASE("contrastive_decoding writes softmax((l_expert - mu l_amateur) / T), with and without plausibility",
          "[combiners]") {
  std::uint64_t seed = 400;
  for (std::size_t size : vocabulary_sizes)
    for (float temperature : temperatures)
      for (std::optional<float> alpha : {std::optional<float>{}, std::optional<float>{0.1f}, std::optional<float>{1.0f},
                                         std::optional<float>{0.0f}}) {
        ++seed;
        CAPTURE(size, temperature, alpha.value_or(-1.0f));
        model_logits logits = model_logits::random(seed, 2, size);
        cospec::logit_arithmetic combiner = cospec::contrastive_decoding(0.1f, alpha);
        std::optional<cospec::plausibility_constraint> constraint;
        if (alpha) constraint = cospec::plausibility_constraint{0, *alpha};
        std::vector<float> out(size);
        const float sum = combiner.target_weights(logits.rows(), temperature, out);
        const std::vector<double> expected =
            reference_logit_arithmetic(logits.rows(), {1.0f, -0.1f}, temperature, constraint);
        require_matches_reference(out, sum, expected);
        if (alpha && *alpha > 0.0f) {
          // Independently of the reference: the implausible tokens are exact zeros.
          const float expert_max = *std::max_element(logits[0].begin(), logits[0].end());
          for (std::size_t j = 0; j < size; ++j)
            if (logits[0][j] < expert_max + std::log(*alpha)) REQUIRE(out[j] == 0.0f);
        }
      }
}

TEST_CASE("contrastive decoding keeps the amateur's masks, the expert's masks and the plausibility mask",
          "[combiners]") {
  // Expert and amateur written out by hand. With mu = 0.1 and alpha = 0.1 (log alpha = -2.303):
  // token 1 is masked by the amateur (negative weight: must stay masked, not become +inf),
  // token 4 by the expert, tokens 2 and 3 are below 2 - 2.303 = -0.303 in the expert, so the
  // plausibility constraint leaves token 0 alone.
  model_logits logits({{2.0f, 1.9f, -0.5f, -1.0f, minus_infinity}, {0.0f, minus_infinity, 0.0f, 0.0f, 0.0f}});
  std::vector<float> out(5);

  cospec::logit_arithmetic with_alpha = cospec::contrastive_decoding(0.1f, 0.1f);
  const float sum = with_alpha.target_weights(logits.rows(), 1.0f, out);
  REQUIRE(out[0] / sum == 1.0f);
  REQUIRE((out[1] == 0.0f && out[2] == 0.0f && out[3] == 0.0f && out[4] == 0.0f));

  cospec::logit_arithmetic without_alpha = cospec::contrastive_decoding(0.1f);
  without_alpha.target_weights(logits.rows(), 1.0f, out);
  REQUIRE(out[1] == 0.0f);
  REQUIRE(out[4] == 0.0f);
  REQUIRE((out[0] > 0.0f && out[2] > 0.0f && out[3] > 0.0f));
  REQUIRE(without_alpha.greedy_scores(logits.rows(), out) == cospec::score_domain::log_weights);
  REQUIRE(out[1] == minus_infinity);
  REQUIRE(out[4] == minus_infinity);
}

TEST_CASE("weighted_ensemble zeroes exactly the tokens every weighted model masks", "[combiners]") {
  for (std::size_t size : vocabulary_sizes) {
    CAPTURE(size);
    model_logits logits = model_logits::random(size, 3, size);
    logits.mask_some(size);  // token 1 masked in all three rows
    cospec::weighted_ensemble combiner({1.0f, 1.0f, 1.0f});
    std::vector<float> out(size);
    combiner.target_weights(logits.rows(), 1.0f, out);
    for (std::size_t j = 0; j < size; ++j) {
      const bool masked_by_all =
          logits[0][j] == minus_infinity && logits[1][j] == minus_infinity && logits[2][j] == minus_infinity;
      CAPTURE(j);
      REQUIRE((out[j] == 0.0f) == masked_by_all);
    }
  }
}

TEST_CASE("callable_combiner writes softmax(f(rows) / T)", "[combiners]") {
  std::uint64_t seed = 500;
  for (std::size_t size : vocabulary_sizes)
    for (std::size_t models : model_counts)
      for (float temperature : temperatures) {
        ++seed;
        CAPTURE(size, models, temperature);
        model_logits logits = model_logits::random(seed, models, size);
        if (seed % 2 == 0) logits.mask_some(seed);
        cospec::callable_combiner combiner(models, max_of_models{});
        std::vector<float> out(size);
        const float sum = combiner.target_weights(logits.rows(), temperature, out);
        require_matches_reference(out, sum, reference_max_of_models(logits.rows(), temperature));
      }
}

TEST_CASE("a single model's target is its plain softmax", "[combiners]") {
  std::uint64_t seed = 600;
  for (std::size_t size : vocabulary_sizes)
    for (float temperature : temperatures) {
      ++seed;
      CAPTURE(size, temperature);
      model_logits logits = model_logits::random(seed, 1, size);
      logits.mask_some(seed);
      const std::vector<double> expected = reference_softmax(scaled(logits[0], temperature));
      std::vector<float> out(size);

      cospec::weighted_ensemble ensemble({5.0f});
      require_matches_reference(out, ensemble.target_weights(logits.rows(), temperature, out), expected);
      cospec::logit_arithmetic arithmetic({1.0f});
      require_matches_reference(out, arithmetic.target_weights(logits.rows(), temperature, out), expected);
      cospec::callable_combiner callable(1, max_of_models{});
      require_matches_reference(out, callable.target_weights(logits.rows(), temperature, out), expected);
      // And the proposal distribution is the same softmax, normalised.
      ensemble.proposal_distribution(0, logits[0], temperature, out);
      require_matches_reference(out, 1.0, expected);
    }
}

TEST_CASE("greedy_scores has the argmax of the temperature-1 target", "[combiners][greedy]") {
  std::uint64_t seed = 700;
  for (std::size_t size : vocabulary_sizes)
    for (std::size_t models : model_counts) {
      ++seed;
      CAPTURE(size, models, seed);
      model_logits logits = model_logits::random(seed, models, size);
      if (seed % 2 == 0) logits.mask_some(seed);
      cospec::random_source random(seed);
      std::vector<float> scores(size);

      const std::vector<float> ensemble_weights = random_weights(random, models, 0.1, 3.0);
      cospec::weighted_ensemble ensemble(ensemble_weights);
      REQUIRE(ensemble.greedy_scores(logits.rows(), scores) == cospec::score_domain::weights);
      require_argmax_matches(argmax(scores), reference_weighted_ensemble(logits.rows(), ensemble_weights, 1.0));

      const std::vector<float> arithmetic_weights = random_weights(random, models, -1.0, 1.5);
      cospec::logit_arithmetic arithmetic(arithmetic_weights);
      REQUIRE(arithmetic.greedy_scores(logits.rows(), scores) == cospec::score_domain::log_weights);
      require_argmax_matches(argmax(scores), reference_logit_arithmetic(logits.rows(), arithmetic_weights, 1.0));

      cospec::callable_combiner callable(models, max_of_models{});
      REQUIRE(callable.greedy_scores(logits.rows(), scores) == cospec::score_domain::log_weights);
      require_argmax_matches(argmax(scores), reference_max_of_models(logits.rows(), 1.0));

      if (models == 2) {
        for (std::optional<float> alpha : {std::optional<float>{}, std::optional<float>{0.1f}}) {
          cospec::logit_arithmetic contrastive = cospec::contrastive_decoding(0.1f, alpha);
          std::optional<cospec::plausibility_constraint> constraint;
          if (alpha) constraint = cospec::plausibility_constraint{0, *alpha};
          REQUIRE(contrastive.greedy_scores(logits.rows(), scores) == cospec::score_domain::log_weights);
          require_argmax_matches(argmax(scores),
                                 reference_logit_arithmetic(logits.rows(), {1.0f, -0.1f}, 1.0, constraint));
        }
      }
    }
}

// =============================================================================================
// Targets at one token and the greedy token without a row (combiner_with_point_target,
// combiner_with_greedy_token)

TEST_CASE("the provided combiners evaluate their target at one token; a callable combiner does not",
          "[combiners][concept]") {
  STATIC_REQUIRE(cospec::combiner_with_point_target<cospec::weighted_ensemble>);
  STATIC_REQUIRE(cospec::combiner_with_point_target<cospec::logit_arithmetic>);
  STATIC_REQUIRE(cospec::combiner_with_greedy_token<cospec::weighted_ensemble>);
  STATIC_REQUIRE_FALSE(cospec::combiner_with_greedy_token<cospec::logit_arithmetic>);  // its greedy row is cheap already
  STATIC_REQUIRE_FALSE(cospec::combiner_with_point_target<max_of_models_combiner>);
  STATIC_REQUIRE_FALSE(cospec::combiner_with_point_target<minimal_combiner>);
}

TEST_CASE("target_probability equals the reference target at every token, with and without known proposals",
          "[combiners][point]") {
  std::uint64_t seed = 1900;
  for (std::size_t size : vocabulary_sizes)
    for (std::size_t models : model_counts)
      for (float temperature : temperatures) {
        ++seed;
        CAPTURE(size, models, temperature, seed);
        model_logits logits = model_logits::random(seed, models, size, 3.0);
        if (seed % 2 == 0) logits.mask_some(seed);
        cospec::random_source random(seed);
        const std::vector<float> ensemble_weights = random_weights(random, models, 0.1, 3.0);
        const std::vector<float> arithmetic_weights = random_weights(random, models, -1.0, 1.5);
        cospec::weighted_ensemble ensemble(ensemble_weights);
        cospec::logit_arithmetic arithmetic(arithmetic_weights);
        const std::vector<double> ensemble_target = reference_weighted_ensemble(logits.rows(), ensemble_weights, temperature);
        const std::vector<double> arithmetic_target =
            reference_logit_arithmetic(logits.rows(), arithmetic_weights, temperature);
        // Model 0's softmax at T, as a session knows it from model 0's proposal.
        const std::vector<double> proposal = reference_softmax(scaled(logits[0], temperature));
        const std::vector<double> unknown(models, std::numeric_limits<double>::quiet_NaN());
        std::size_t failures = 0;
        for (std::size_t j = 0; j < size; j += size > 1000 ? 97 : 1) {
          const auto x = static_cast<cospec::token_id>(j);
          std::vector<double> known = unknown;
          known[0] = proposal[j];
          const auto close = [](std::optional<double> value, double expected) {
            if (!value) return false;
            if (expected == 0.0) return *value == 0.0;
            return std::abs(*value - expected) <= relative_tolerance * expected + absolute_floor;
          };
          if (!close(ensemble.target_probability(logits.rows(), temperature, x, unknown), ensemble_target[j])) ++failures;
          if (!close(ensemble.target_probability(logits.rows(), temperature, x, known), ensemble_target[j])) ++failures;
          if (!close(arithmetic.target_probability(logits.rows(), temperature, x, unknown), arithmetic_target[j]))
            ++failures;
        }
        CHECK(failures == 0);
      }
}

TEST_CASE("a point target uses the known proposal probability it is given", "[combiners][point]") {
  // A wrong known value must change the answer by exactly its weighted difference: the known
  // value is what makes the proposer's own row free, so it has to be the one used.
  model_logits logits = model_logits::random(41, 2, 33);
  cospec::weighted_ensemble ensemble({0.25f, 0.75f});
  const std::vector<double> unknown(2, std::numeric_limits<double>::quiet_NaN());
  const double honest = *ensemble.target_probability(logits.rows(), 1.0f, 5, unknown);
  const double p0 = reference_softmax(scaled(logits[0], 1.0))[5];
  const double with_known = *ensemble.target_probability(logits.rows(), 1.0f, 5, std::vector<double>{p0, unknown[1]});
  const double with_wrong = *ensemble.target_probability(logits.rows(), 1.0f, 5, std::vector<double>{p0 + 0.1, unknown[1]});
  CHECK(std::abs(with_known - honest) <= relative_tolerance * honest);
  CHECK(std::abs((with_wrong - with_known) - 0.025) <= 1e-12);
}

TEST_CASE("target_probability leaves invalid rows, constraints and overflowing combinations to the full target",
          "[combiners][point]") {
  const std::vector<double> unknown(2, std::numeric_limits<double>::quiet_NaN());
  for (float special : {not_a_number, infinity}) {
    model_logits logits = model_logits::random(43, 2, 33);
    logits[1][7] = special;
    CAPTURE(special);
    CHECK_FALSE(cospec::weighted_ensemble::uniform(2).target_probability(logits.rows(), 1.0f, 3, unknown));
    CHECK_FALSE(cospec::weighted_ensemble({1.0f, 0.0f}).target_probability(logits.rows(), 1.0f, 3, unknown));
    CHECK_FALSE(cospec::contrastive_decoding(0.1f).target_probability(logits.rows(), 1.0f, 3, unknown));
    CHECK_FALSE(cospec::logit_arithmetic({1.0f, 0.0f}).target_probability(logits.rows(), 1.0f, 3, unknown));
  }
  model_logits logits = model_logits::random(44, 2, 33);
  CHECK_FALSE(cospec::contrastive_decoding(0.1f, 0.1f).target_probability(logits.rows(), 1.0f, 3, unknown));
  logits[0][4] = logits[1][4] = std::numeric_limits<float>::max();
  CHECK_FALSE(cospec::logit_arithmetic({1.0f, 1.0f}).target_probability(logits.rows(), 1.0f, 3, unknown));
  model_logits masked(std::vector<std::vector<float>>{std::vector<float>(33, minus_infinity), std::vector<float>(33, 0.0f)});
  CHECK_FALSE(cospec::weighted_ensemble::uniform(2).target_probability(masked.rows(), 1.0f, 3, unknown));
  // A token that one weighted model masks has probability 0 under logit arithmetic.
  model_logits partly = model_logits::random(45, 2, 33);
  partly[1][9] = minus_infinity;
  CHECK(cospec::contrastive_decoding(0.1f).target_probability(partly.rows(), 1.0f, 9, unknown) == 0.0);
}

TEST_CASE("weighted_ensemble's greedy_token is the argmax of the exact mixture", "[combiners][greedy]") {
  std::uint64_t seed = 2100;
  for (std::size_t size : vocabulary_sizes)
    for (std::size_t models : model_counts)
      for (double spread : {0.5, 3.0, 12.0}) {  // near-uniform to peaked rows
        ++seed;
        CAPTURE(size, models, spread, seed);
        model_logits logits = model_logits::random(seed, models, size, spread);
        if (seed % 2 == 0) logits.mask_some(seed);
        cospec::random_source random(seed);
        const std::vector<float> weights = random_weights(random, models, 0.05, 3.0);
        cospec::weighted_ensemble ensemble(weights);
        const std::optional<cospec::token_id> token = ensemble.greedy_token(logits.rows());
        const std::vector<double> reference = reference_weighted_ensemble(logits.rows(), weights, 1.0);
        if (!token) {
          // Allowed only where more than 256 tokens lie within log(1 / lambda_i) of a model's maximum.
          bool crowded = false;
          double total = 0.0;
          for (float w : weights) total += w;
          for (std::size_t i = 0; i < models; ++i) {
            const float top = *std::max_element(logits[i].begin(), logits[i].end());
            const auto near = std::count_if(logits[i].begin(), logits[i].end(),
                                            [&](float l) { return l >= top + std::log(weights[i] / total) - 1e-3; });
            crowded = crowded || near > 256;
          }
          CHECK(crowded);
          continue;
        }
        REQUIRE(*token >= 0);
        require_argmax_matches(static_cast<std::size_t>(*token), reference);
        // Maxima the caller knows (a proposer's, from its argmax) change nothing.
        std::vector<float> maxima(models, not_a_number);
        maxima[0] = *std::max_element(logits[0].begin(), logits[0].end());
        CHECK(ensemble.greedy_token(logits.rows(), maxima) == token);
      }
}

TEST_CASE("greedy_token finds a mixture argmax that is no model's own argmax, and breaks ties by the lower index",
          "[combiners][greedy]") {
  // Model 0 prefers token 0, model 1 token 2, both put token 1 just behind: the mixture's
  // argmax is token 1. A search limited to each model's own argmax would miss it.
  model_logits logits(std::vector<std::vector<float>>{{5.0f, 4.9f, 0.0f, -1.0f}, {0.0f, 4.9f, 5.0f, -1.0f}});
  cospec::weighted_ensemble ensemble = cospec::weighted_ensemble::uniform(2);
  const std::vector<double> reference = reference_weighted_ensemble(logits.rows(), {1.0f, 1.0f}, 1.0);
  REQUIRE(argmax(std::span<const double>(reference)) == 1);
  CHECK(ensemble.greedy_token(logits.rows()) == std::optional<cospec::token_id>{1});
  // Exact ties: tokens 1 and 3 score the same; the lower index wins, as in max_argmax.
  model_logits tied(std::vector<std::vector<float>>{{0.0f, 3.0f, 1.0f, 3.0f}, {0.0f, 2.0f, 1.0f, 2.0f}});
  CHECK(ensemble.greedy_token(tied.rows()) == std::optional<cospec::token_id>{1});
  // Invalid rows and rows with too many near-equal tokens are left to greedy_scores.
  model_logits flat(std::vector<std::vector<float>>{std::vector<float>(1000, 1.0f), std::vector<float>(1000, 2.0f)});
  CHECK_FALSE(ensemble.greedy_token(flat.rows()));
  tied[1][2] = not_a_number;
  CHECK_FALSE(ensemble.greedy_token(tied.rows()));
  tied[1][2] = 1.0f;
  tied[0][0] = infinity;
  CHECK_FALSE(cospec::weighted_ensemble({0.0f, 1.0f}).greedy_token(tied.rows()));  // weight 0, validated all the same
}

// =============================================================================================
// target_evaluator: transforms applied to the target

namespace {

/// The documented pipeline on top of a combiner's own (float) target: the processor in logit
/// space, bias, top-k, top-p, min-p with the scalar reference filters, normalised in double.
/// Without a processor it starts from the library's combined row, which isolates the
/// transforms (the combination is tested above) and makes the kept set of every filter an
/// exact, rounding-free question. With one, the processor is given the target's logits as
/// documented, computed here in double: for logit arithmetic its raw combination
/// `raw_logits` (not tempered: the softmax divides by T afterwards), otherwise the log of the
/// combiner's normalised target at T (tempered: nothing divides it).
template <class Combiner>
std::vector<double> reference_transformed_target(Combiner& combiner, cospec::logit_rows rows,
                                                 const cospec::sampling_settings& settings,
                                                 const cospec::logits_processor& processor,
                                                 std::span<const cospec::token_id> prefix,
                                                 const std::optional<std::vector<double>>& raw_logits) {
  std::vector<float> weights(rows[0].size());
  combiner.target_weights(rows, settings.temperature, weights);
  if (processor) {
    const bool tempered = !raw_logits;
    std::vector<double> logits(weights.size());
    if (raw_logits) {
      logits = *raw_logits;
    } else {
      double sum = 0.0;
      for (float w : weights) sum += w;
      for (std::size_t j = 0; j < logits.size(); ++j)
        logits[j] = weights[j] > 0.0f ? std::log(weights[j] / sum) : -std::numeric_limits<double>::infinity();
    }
    std::vector<float> processed(logits.begin(), logits.end());
    processor({prefix, settings.temperature, false, tempered, std::nullopt}, processed);
    std::vector<double> scaled_logits(processed.begin(), processed.end());
    if (!tempered)
      for (double& x : scaled_logits) x /= settings.temperature;
    const std::vector<double> softmax = reference_softmax(scaled_logits);
    weights.assign(softmax.begin(), softmax.end());
  }
  for (const auto& [token, bias] : settings.logit_bias) weights[static_cast<std::size_t>(token)] *= std::exp(bias);
  if (settings.top_k) cospec::kernels::reference::top_k_filter(weights, *settings.top_k);
  if (settings.top_p) cospec::kernels::reference::top_p_filter(weights, *settings.top_p);
  if (settings.min_p) cospec::kernels::reference::min_p_filter(weights, *settings.min_p);
  double sum = 0.0;
  for (float w : weights) sum += w;
  std::vector<double> out(weights.size());
  for (std::size_t j = 0; j < out.size(); ++j) out[j] = weights[j] / sum;
  return out;
}

/// What a processor adds to a logit to multiply that token's weight by `factor` (> 0): log f on
/// a tempered row, T log f on one the softmax divides by T afterwards (greedy rows are at T = 1).
float log_factor(const cospec::processor_context& context, float factor) {
  const float temperature = context.tempered || context.greedy ? 1.0f : context.temperature;
  return temperature * std::log(factor);
}

/// A repetition penalty (each occurrence in the prefix divides the weight by 4) and a
/// grammar-style ban, as a logits processor would apply them.
cospec::logits_processor penalise_prefix_and_ban_token_3() {
  return [](const cospec::processor_context& context, std::span<float> logits) {
    for (cospec::token_id token : context.prefix)
      logits[static_cast<std::size_t>(token) % logits.size()] += log_factor(context, 0.25f);
    logits[3] = minus_infinity;
  };
}

struct transform_case {
  const char* name;
  cospec::sampling_settings settings;
  bool with_processor;
};

std::vector<transform_case> transform_cases() {
  std::vector<transform_case> cases;
  cospec::sampling_settings settings;
  settings.temperature = 0.8f;
  cases.push_back({"no transform", settings, false});
  cospec::sampling_settings s = settings;
  s.top_k = 10;
  cases.push_back({"top-k 10", s, false});
  s = settings;
  s.top_k = 1;
  cases.push_back({"top-k 1", s, false});
  s = settings;
  s.top_p = 0.9f;
  cases.push_back({"top-p 0.9", s, false});
  s = settings;
  s.top_p = 0.3f;
  cases.push_back({"top-p 0.3", s, false});
  s = settings;
  s.min_p = 0.05f;
  cases.push_back({"min-p 0.05", s, false});
  s = settings;
  s.logit_bias = {{2, 3.0f}, {0, -std::numeric_limits<float>::infinity()}, {4, -1.5f}};
  cases.push_back({"logit bias", s, false});
  cases.push_back({"processor", settings, true});
  s.top_k = 25;
  s.top_p = 0.8f;
  s.min_p = 0.02f;
  cases.push_back({"processor, bias, top-k, top-p and min-p", s, true});
  return cases;
}

/// `raw_logits`: for logit arithmetic, the reference combination sum_i w_i l_i the processor
/// must be given; empty for the other combiners.
template <class Combiner>
void check_transforms(Combiner& combiner, model_logits& logits,
                      const std::optional<std::vector<double>>& raw_logits = std::nullopt) {
  const std::vector<cospec::token_id> prefix{5, 9, 9, 17};
  for (const transform_case& test : transform_cases()) {
    CAPTURE(test.name);
    const cospec::logits_processor processor = test.with_processor ? penalise_prefix_and_ban_token_3() : nullptr;
    cospec::validate(test.settings, logits.size());
    cospec::target_evaluator evaluator(combiner, test.settings, processor);
    std::vector<float> out(logits.size());
    evaluator.distribution(logits.rows(), prefix, out);
    const std::vector<double> expected =
        reference_transformed_target(combiner, logits.rows(), test.settings, processor, prefix, raw_logits);
    require_matches_reference(out, 1.0, expected);
    double total = 0.0;
    for (float p : out) total += p;
    REQUIRE(total == Approx(1.0).epsilon(relative_tolerance));
  }
}

}  // namespace

TEST_CASE("target_evaluator applies processor, bias, top-k, top-p and min-p to the target and normalises",
          "[combiners][target]") {
  for (std::size_t size : {std::size_t{33}, std::size_t{1000}, std::size_t{32000}}) {
    CAPTURE(size);
    {
      INFO("weighted ensemble");
      model_logits logits = model_logits::random(size + 800, 3, size);
      cospec::weighted_ensemble combiner({0.5f, 0.3f, 0.2f});
      check_transforms(combiner, logits);
    }
    {
      INFO("contrastive decoding");
      model_logits logits = model_logits::random(size + 801, 2, size);
      cospec::logit_arithmetic combiner = cospec::contrastive_decoding(0.1f, 0.05f);
      check_transforms(combiner, logits,
                       reference_combined_logits(logits.rows(), {1.0f, -0.1f}, cospec::plausibility_constraint{0, 0.05f}));
    }
    {
      INFO("callable");
      model_logits logits = model_logits::random(size + 802, 2, size);
      cospec::callable_combiner combiner(2, max_of_models{});
      check_transforms(combiner, logits);
    }
  }
}

TEST_CASE("a logit bias of -inf on the dominant token leaves the rest of the target, renormalised",
          "[combiners][target]") {
  // The distribution's sum is kept up to date with `sum += biased - w`. Removing a token that
  // holds nearly all the mass makes that a difference of two nearly equal floats: the remaining
  // mass (about 1e-13 here) is lost entirely, and the target is declared empty although 999
  // tokens remain. The exact answer is the softmax of the other tokens.
  model_logits logits = model_logits::random(11, 1, 1000, 1.0);
  logits[0][0] = 40.0f;
  std::vector<double> rest(1000);
  for (std::size_t j = 0; j < rest.size(); ++j) rest[j] = j == 0 ? -std::numeric_limits<double>::infinity() : logits[0][j];
  const std::vector<double> expected = reference_softmax(rest);

  cospec::sampling_settings settings;
  settings.logit_bias = {{0, -std::numeric_limits<float>::infinity()}};
  std::vector<float> out(1000);
  SECTION("weighted ensemble") {
    cospec::weighted_ensemble combiner({1.0f});
    cospec::target_evaluator evaluator(combiner, settings);
    REQUIRE_NOTHROW(evaluator.distribution(logits.rows(), {}, out));
    require_matches_reference(out, 1.0, expected);
  }
  SECTION("logit arithmetic") {
    cospec::logit_arithmetic combiner({1.0f});
    cospec::target_evaluator evaluator(combiner, settings);
    REQUIRE_NOTHROW(evaluator.distribution(logits.rows(), {}, out));
    require_matches_reference(out, 1.0, expected);
  }
}

TEST_CASE("a processor that masks every token makes the target invalid", "[combiners][target]") {
  model_logits logits = model_logits::random(12, 2, 33);
  cospec::weighted_ensemble combiner = cospec::weighted_ensemble::uniform(2);
  cospec::sampling_settings settings;
  auto mask_everything = [](const cospec::processor_context&, std::span<float> logits) {
    for (float& x : logits) x = minus_infinity;
  };
  cospec::target_evaluator evaluator(combiner, settings, mask_everything);
  std::vector<float> out(33);
  COSPEC_REQUIRE_THROWS_AS_WITH(evaluator.distribution(logits.rows(), {}, out), cospec::invalid_logits,
                                Contains("masks every token"));
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  cospec::target_evaluator greedy_evaluator(combiner, greedy, mask_everything);
  COSPEC_REQUIRE_THROWS_AS_WITH(greedy_evaluator.greedy_token(logits.rows(), {}, out), cospec::invalid_logits,
                                Contains("masks every token"));
}

TEST_CASE("a processor that writes NaN or +inf is reported", "[combiners][target]") {
  model_logits logits = model_logits::random(13, 2, 33);
  cospec::weighted_ensemble combiner = cospec::weighted_ensemble::uniform(2);
  cospec::sampling_settings settings;
  for (float bad : {not_a_number, infinity}) {
    CAPTURE(bad);
    cospec::target_evaluator evaluator(combiner, settings, [bad](const cospec::processor_context&, std::span<float> x) {
      x[7] = bad;
    });
    std::vector<float> out(33);
    COSPEC_REQUIRE_THROWS_AS_WITH(evaluator.distribution(logits.rows(), {}, out), cospec::invalid_logits,
                                  Contains("logits processor") && Contains("token 7") &&
                                      Contains(std::isnan(bad) ? "NaN" : "+inf"));
  }
}

namespace {

/// The greedy token of the reference target at T = 1 after processor and bias, and what the
/// processor must have been given: the target in logit space.
struct greedy_expectation {
  std::vector<double> weights_before_processor;  // normalised
  std::vector<double> final_weights;             // proportional to the processed, biased target
};

/// `raw_logits`: for logit arithmetic, the reference combination the processor is given (not
/// tempered); otherwise it is given log(target), tempered.
greedy_expectation reference_greedy(std::vector<double> target, const cospec::sampling_settings& settings,
                                    const cospec::logits_processor& processor,
                                    std::span<const cospec::token_id> prefix,
                                    const std::optional<std::vector<double>>& raw_logits = std::nullopt) {
  greedy_expectation result;
  double sum = 0.0;
  for (double w : target) sum += w;
  result.weights_before_processor = target;
  for (double& w : result.weights_before_processor) w /= sum;
  std::vector<float> processed(target.size());
  for (std::size_t j = 0; j < target.size(); ++j)
    processed[j] = raw_logits ? static_cast<float>((*raw_logits)[j]) : static_cast<float>(std::log(target[j] / sum));
  if (processor) processor({prefix, 0.0f, true, !raw_logits, std::nullopt}, processed);
  std::vector<double> log_weights(processed.begin(), processed.end());
  for (const auto& [token, bias] : settings.logit_bias) log_weights[static_cast<std::size_t>(token)] += bias;
  result.final_weights = reference_softmax(log_weights);
  return result;
}

/// What a processor was given, recorded at its call.
struct processor_call {
  std::vector<double> logits;
  std::vector<cospec::token_id> prefix;
  float temperature = -1.0f;
  bool greedy = false;
  bool tempered = false;
  std::optional<std::size_t> proposer;
};

/// `raw_logits` as for reference_greedy; `tempered`: whether the greedy row the library gives
/// the processor is documented as tempered (unchecked when empty).
template <class Combiner>
void check_greedy_token(Combiner& combiner, model_logits& logits, const std::vector<double>& reference_target,
                        const std::optional<std::vector<double>>& raw_logits = std::nullopt,
                        std::optional<bool> tempered = std::nullopt) {
  const std::vector<cospec::token_id> prefix{5, 9};
  const auto best = static_cast<cospec::token_id>(argmax(reference_target));
  cospec::sampling_settings settings;
  settings.temperature = 0.0f;
  std::vector<float> scratch(logits.size());

  {
    INFO("bias");
    // Ban the reference argmax and boost token 2 strongly enough to win.
    settings.logit_bias = {{best, -std::numeric_limits<float>::infinity()}, {2, 30.0f}};
    cospec::target_evaluator evaluator(combiner, settings);
    const greedy_expectation expected = reference_greedy(reference_target, settings, nullptr, prefix);
    require_argmax_matches(static_cast<std::size_t>(evaluator.greedy_token(logits.rows(), prefix, scratch)),
                           expected.final_weights);
    settings.logit_bias = {{best, -std::numeric_limits<float>::infinity()}};
    cospec::target_evaluator second(combiner, settings);
    const greedy_expectation second_expected = reference_greedy(reference_target, settings, nullptr, prefix);
    const auto chosen = static_cast<std::size_t>(second.greedy_token(logits.rows(), prefix, scratch));
    REQUIRE(chosen != static_cast<std::size_t>(best));
    require_argmax_matches(chosen, second_expected.final_weights);
  }
  {
    INFO("processor");
    // The processor bans the argmax and halves the runner-up's weight; it must receive the
    // temperature-1 target in logit space (softmax of what it sees is that target), before the
    // bias, whatever the combiner's score domain.
    processor_call seen;
    const cospec::logits_processor processor = [&seen, best](const cospec::processor_context& context,
                                                             std::span<float> row) {
      seen = {std::vector<double>(row.begin(), row.end()),
              std::vector<cospec::token_id>(context.prefix.begin(), context.prefix.end()),
              context.temperature,
              context.greedy,
              context.tempered,
              context.proposer};
      row[static_cast<std::size_t>(best)] = minus_infinity;
      row[argmax(std::span<const float>(row))] += log_factor(context, 0.5f);
    };
    settings.logit_bias = {{1, 0.5f}};
    cospec::target_evaluator evaluator(combiner, settings, processor);
    const auto chosen = static_cast<std::size_t>(evaluator.greedy_token(logits.rows(), prefix, scratch));
    const processor_call seen_by_library = seen;  // the reference below calls the processor too
    const greedy_expectation expected = reference_greedy(reference_target, settings, processor, prefix, raw_logits);
    require_argmax_matches(chosen, expected.final_weights);
    REQUIRE(seen_by_library.logits.size() == logits.size());
    REQUIRE(seen_by_library.prefix == prefix);
    REQUIRE(seen_by_library.greedy);
    REQUIRE(seen_by_library.temperature == 0.0f);
    REQUIRE_FALSE(seen_by_library.proposer);
    if (tempered) REQUIRE(seen_by_library.tempered == *tempered);
    for (double x : seen_by_library.logits) REQUIRE((std::isfinite(x) || x == -std::numeric_limits<double>::infinity()));
    const std::vector<double> softmax = reference_softmax(seen_by_library.logits);
    require_matches_reference(std::vector<float>(softmax.begin(), softmax.end()), 1.0, expected.weights_before_processor);
    if (raw_logits) {
      // The raw combination itself, not merely something with the same softmax.
      for (std::size_t j = 0; j < raw_logits->size(); ++j)
        REQUIRE(seen_by_library.logits[j] == Approx((*raw_logits)[j]).epsilon(relative_tolerance).margin(1e-4));
    } else if (seen_by_library.tempered) {
      // A tempered row is the log of the normalised target: exp of it sums to 1.
      std::vector<float> exponentials(seen_by_library.logits.size());
      for (std::size_t j = 0; j < exponentials.size(); ++j)
        exponentials[j] = static_cast<float>(std::exp(seen_by_library.logits[j]));
      require_matches_reference(exponentials, 1.0, expected.weights_before_processor);
    }
  }
}

}  // namespace

TEST_CASE("greedy_token applies processor and bias to the temperature-1 target", "[combiners][target][greedy]") {
  for (std::size_t size : {std::size_t{33}, std::size_t{1000}, std::size_t{32000}}) {
    CAPTURE(size);
    {
      INFO("weighted ensemble (weights domain)");
      model_logits logits = model_logits::random(size + 1, 2, size);
      cospec::weighted_ensemble combiner({0.6f, 0.4f});
      check_greedy_token(combiner, logits, reference_weighted_ensemble(logits.rows(), {0.6f, 0.4f}, 1.0), std::nullopt,
                         true);
    }
    {
      INFO("contrastive decoding (log domain)");
      model_logits logits = model_logits::random(size + 2, 2, size);
      cospec::logit_arithmetic combiner = cospec::contrastive_decoding(0.1f);
      check_greedy_token(combiner, logits, reference_logit_arithmetic(logits.rows(), {1.0f, -0.1f}, 1.0),
                         reference_combined_logits(logits.rows(), {1.0f, -0.1f}), false);
    }
    {
      INFO("callable (log domain)");
      model_logits logits = model_logits::random(size + 3, 3, size);
      cospec::callable_combiner combiner(3, max_of_models{});
      check_greedy_token(combiner, logits, reference_max_of_models(logits.rows(), 1.0));
    }
  }
}

// =============================================================================================
// Bad input

namespace {

/// Model `model` of `logits` spoilt by `value` at token 3 (NaN, +inf), or fully masked.
model_logits spoilt(std::size_t models, std::size_t model, std::optional<float> value) {
  model_logits logits = model_logits::random(21, models, 40);
  if (value) logits[model][3] = *value;
  else
    for (float& x : logits[model]) x = minus_infinity;
  return logits;
}

struct spoil {
  const char* what;
  std::optional<float> value;  // written at token 3; none: the whole row is masked
  const char* problem;         // what the message must say
};

const spoil spoils[] = {{"NaN", not_a_number, "NaN"},
                        {"+inf", infinity, "+inf"},
                        {"all -inf", std::nullopt, "every token is masked"}};

/// Every entry point that reads rows rejects a spoilt row of model `model`, naming the model and
/// the problem. One section per entry point, so that each failure is reported on its own.
template <class Combiner>
void check_rejects_spoilt_row(Combiner& combiner, std::size_t model, const spoil& s) {
  CAPTURE(s.what, model);
  // Catch's combined matchers refer to their parts, so they are built inline, never stored.
  const std::string model_name = "model " + std::to_string(model);
  model_logits logits = spoilt(combiner.model_count(), model, s.value);
  std::vector<float> out(logits.size());
  SECTION("target_weights") {
    COSPEC_REQUIRE_THROWS_AS_WITH(combiner.target_weights(logits.rows(), 1.0f, out), cospec::invalid_logits,
                                  Contains(model_name) && Contains(s.problem));
  }
  SECTION("target_evaluator::distribution") {
    cospec::sampling_settings sampling;
    cospec::target_evaluator evaluator(combiner, sampling);
    COSPEC_REQUIRE_THROWS_AS_WITH(evaluator.distribution(logits.rows(), {}, out), cospec::invalid_logits,
                                  Contains(model_name) && Contains(s.problem));
  }
  SECTION("target_evaluator::greedy_token") {
    cospec::sampling_settings greedy;
    greedy.temperature = 0.0f;
    cospec::target_evaluator evaluator(combiner, greedy);
    COSPEC_REQUIRE_THROWS_AS_WITH(evaluator.greedy_token(logits.rows(), {}, out), cospec::invalid_logits,
                                  Contains(model_name) && Contains(s.problem));
  }
  SECTION("proposal_distribution") {
    COSPEC_REQUIRE_THROWS_AS_WITH(combiner.proposal_distribution(model, logits[model], 1.0f, out),
                                  cospec::invalid_logits, Contains(model_name) && Contains(s.problem));
  }
}

template <class Combiner>
void check_rejects_bad_shapes(Combiner& combiner) {
  const std::size_t models = combiner.model_count();
  std::vector<float> out(40);
  SECTION("rows of different lengths") {
    model_logits logits = model_logits::random(22, models, 40);
    logits[models - 1].resize(39);
    COSPEC_REQUIRE_THROWS_AS_WITH(combiner.target_weights(logits.rows(), 1.0f, out), cospec::invalid_logits,
                                  Contains("model " + std::to_string(models - 1)) && Contains("length 39"));
    REQUIRE_THROWS_AS(combiner.greedy_scores(logits.rows(), out), cospec::invalid_logits);
  }
  SECTION("one row too many") {
    model_logits logits = model_logits::random(23, models + 1, 40);
    COSPEC_REQUIRE_THROWS_AS_WITH(
        combiner.target_weights(logits.rows(), 1.0f, out), cospec::invalid_logits,
        Contains("expected logits of " + std::to_string(models) + " models, got " + std::to_string(models + 1)));
    REQUIRE_THROWS_AS(combiner.greedy_scores(logits.rows(), out), cospec::invalid_logits);
  }
  SECTION("one row too few") {
    model_logits logits = model_logits::random(24, models - 1, 40);
    COSPEC_REQUIRE_THROWS_AS_WITH(
        combiner.target_weights(logits.rows(), 1.0f, out), cospec::invalid_logits,
        Contains("expected logits of " + std::to_string(models) + " models, got " + std::to_string(models - 1)));
  }
}

}  // namespace

// GENERATE runs every (model, spoil) pair, and the sections every entry point, on their own.

TEST_CASE("weighted_ensemble rejects NaN, +inf and fully masked rows naming the model", "[combiners][errors]") {
  const auto model = static_cast<std::size_t>(GENERATE(0, 1, 2));
  const spoil& s = spoils[GENERATE(0, 1, 2)];
  cospec::weighted_ensemble combiner = cospec::weighted_ensemble::uniform(3);
  check_rejects_spoilt_row(combiner, model, s);
}

TEST_CASE("contrastive decoding rejects NaN, +inf and fully masked rows naming the model", "[combiners][errors]") {
  const auto model = static_cast<std::size_t>(GENERATE(0, 1));
  const spoil& s = spoils[GENERATE(0, 1, 2)];
  cospec::logit_arithmetic combiner = cospec::contrastive_decoding(0.1f);
  check_rejects_spoilt_row(combiner, model, s);
}

TEST_CASE("contrastive decoding with plausibility rejects NaN, +inf and fully masked rows naming the model",
          "[combiners][errors]") {
  const auto model = static_cast<std::size_t>(GENERATE(0, 1));
  const spoil& s = spoils[GENERATE(0, 1, 2)];
  cospec::logit_arithmetic combiner = cospec::contrastive_decoding(0.1f, 0.1f);
  check_rejects_spoilt_row(combiner, model, s);
}

TEST_CASE("proxy-tuning rejects NaN, +inf and fully masked rows naming the model", "[combiners][errors]") {
  const auto model = static_cast<std::size_t>(GENERATE(0, 1, 2));
  const spoil& s = spoils[GENERATE(0, 1, 2)];
  cospec::logit_arithmetic combiner({1.0f, 1.0f, -1.0f});
  check_rejects_spoilt_row(combiner, model, s);
}

TEST_CASE("combiners reject rows of the wrong count or of different lengths", "[combiners][errors]") {
  SECTION("weighted ensemble") {
    cospec::weighted_ensemble combiner = cospec::weighted_ensemble::uniform(3);
    check_rejects_bad_shapes(combiner);
  }
  SECTION("logit arithmetic") {
    cospec::logit_arithmetic combiner({1.0f, 1.0f, -1.0f});
    check_rejects_bad_shapes(combiner);
  }
  SECTION("callable") {
    cospec::callable_combiner combiner(3, max_of_models{});
    check_rejects_bad_shapes(combiner);
  }
}

TEST_CASE("finite logits near float max give a distribution at any temperature", "[combiners]") {
  // 3e38 / 0.5 overflows float; the kernels shift by the maximum before scaling, so every
  // exponent is <= 0 and the huge logit simply takes (almost) all the mass.
  model_logits logits({{3e38f, 0.0f, 1.0f}});
  std::vector<float> out(3);
  cospec::weighted_ensemble ensemble({1.0f});
  REQUIRE(ensemble.target_weights(logits.rows(), 0.5f, out) == 1.0f);
  CHECK(out[0] == 1.0f);
  CHECK(out[1] == 0.0f);
  CHECK(out[2] == 0.0f);
  ensemble.proposal_distribution(0, logits[0], 0.5f, out);
  CHECK(out[0] == 1.0f);
  CHECK(out[1] == 0.0f);
}

TEST_CASE("weighted_ensemble rejects negative, NaN, infinite and all-zero weights", "[combiners][errors]") {
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::weighted_ensemble({1.0f, -0.5f}), cospec::invalid_configuration,
                                Contains("weight of model 1") && Contains(">= 0"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::weighted_ensemble({std::numeric_limits<float>::quiet_NaN(), 1.0f}),
                                cospec::invalid_configuration, Contains("weight of model 0") && Contains("finite"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::weighted_ensemble({1.0f, std::numeric_limits<float>::infinity()}),
                                cospec::invalid_configuration, Contains("weight of model 1"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::weighted_ensemble({0.0f, 0.0f}), cospec::invalid_configuration,
                                Contains("all zero"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::weighted_ensemble(std::vector<float>{}), cospec::invalid_configuration,
                                Contains("at least one"));
}

TEST_CASE("logit_arithmetic rejects NaN, infinite and all-zero weights", "[combiners][errors]") {
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::logit_arithmetic({1.0f, std::numeric_limits<float>::quiet_NaN()}),
                                cospec::invalid_configuration, Contains("weight of model 1") && Contains("finite"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::logit_arithmetic({-std::numeric_limits<float>::infinity()}),
                                cospec::invalid_configuration, Contains("weight of model 0"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::logit_arithmetic({0.0f, 0.0f}), cospec::invalid_configuration,
                                Contains("all zero"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::callable_combiner(0, max_of_models{}), cospec::invalid_configuration,
                                Contains("at least one model"));
}

TEST_CASE("contrastive_decoding and plausibility_constraint reject impossible settings", "[combiners][errors]") {
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::contrastive_decoding(-0.1f), cospec::invalid_configuration,
                                Contains("mu must be finite and >= 0"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::contrastive_decoding(std::numeric_limits<float>::quiet_NaN()),
                                cospec::invalid_configuration, Contains("mu"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::contrastive_decoding(0.1f, -0.01f), cospec::invalid_configuration,
                                Contains("alpha must be in [0, 1]"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::contrastive_decoding(0.1f, 1.5f), cospec::invalid_configuration,
                                Contains("alpha must be in [0, 1]"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::contrastive_decoding(0.1f, std::numeric_limits<float>::quiet_NaN()),
                                cospec::invalid_configuration, Contains("alpha"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::logit_arithmetic({1.0f, -0.1f}, cospec::plausibility_constraint{2, 0.1f}),
                                cospec::invalid_configuration,
                                Contains("plausibility expert 2") && Contains("2 models"));
  REQUIRE_NOTHROW(cospec::contrastive_decoding(0.0f, 0.0f));
  REQUIRE_NOTHROW(cospec::contrastive_decoding(0.1f, 1.0f));
}

TEST_CASE("validate rejects sampling settings that can never work", "[combiners][errors][sampling]") {
  const auto with = [](auto change) {
    cospec::sampling_settings settings;
    change(settings);
    return settings;
  };
  using settings_t = cospec::sampling_settings;
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.temperature = -0.5f; })),
                                cospec::invalid_configuration, Contains("temperature"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.temperature = not_a_number; })),
                                cospec::invalid_configuration, Contains("temperature"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.temperature = infinity; })),
                                cospec::invalid_configuration, Contains("temperature"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.top_p = 0.0f; })),
                                cospec::invalid_configuration, Contains("top_p"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.top_p = 1.5f; })),
                                cospec::invalid_configuration, Contains("top_p"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.top_k = 0; })),
                                cospec::invalid_configuration, Contains("top_k"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.min_p = 2.0f; })),
                                cospec::invalid_configuration, Contains("min_p"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.min_p = -0.1f; })),
                                cospec::invalid_configuration, Contains("min_p"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.logit_bias = {{4, not_a_number}}; })),
                                cospec::invalid_configuration, Contains("logit_bias of token 4"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.logit_bias = {{4, infinity}}; })),
                                cospec::invalid_configuration, Contains("logit_bias of token 4"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.logit_bias = {{100, 1.0f}}; }), 100),
                                cospec::invalid_configuration,
                                Contains("logit_bias names token 100") && Contains("vocabulary of 100"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::validate(with([](settings_t& s) { s.logit_bias = {{-1, 1.0f}}; }), 100),
                                cospec::invalid_configuration, Contains("logit_bias names token -1"));
  // The documented valid edges.
  REQUIRE_NOTHROW(cospec::validate(with([](settings_t& s) {
    s.temperature = 0.0f;
    s.top_p = 1.0f;
    s.top_k = 1;
    s.min_p = 0.0f;
    s.logit_bias = {{99, -infinity}};
  }), 100));
  REQUIRE_NOTHROW(cospec::validate(with([](settings_t& s) { s.min_p = 1.0f; }), 100));
}

// =============================================================================================
// Defects an independent checker found (issue 16, part 4): logit bias entries that add up,
// combinations that overflow a float, processors that write invalid values in greedy
// decoding (then negative weights; now NaN or +inf logits), and invalid rows of a model with
// weight 0.

namespace {

/// Negative logits (in [-9, -1]): a greedy decision among them goes wrong if a token's score
/// is replaced by 0, as adding +1e30 and then -1e30 to it in float does.
model_logits negative_logits(std::uint64_t seed, std::size_t models, std::size_t size) {
  model_logits logits = model_logits::random(seed, models, size, 1.0);
  for (std::size_t i = 0; i < models; ++i)
    for (float& x : logits[i]) x = -1.0f - std::min(8.0f, std::abs(x) * 2.0f);
  return logits;
}

template <class Combiner>
std::vector<float> target_of(Combiner combiner, const cospec::sampling_settings& settings, model_logits& logits,
                             const cospec::logits_processor& processor = {}) {
  cospec::target_evaluator evaluator(combiner, settings, processor);
  std::vector<float> out(logits.size());
  evaluator.distribution(logits.rows(), {}, out);
  return out;
}

template <class Combiner>
std::size_t greedy_of(Combiner combiner, cospec::sampling_settings settings, model_logits& logits,
                      const cospec::logits_processor& processor = {}) {
  settings.temperature = 0.0f;
  cospec::target_evaluator evaluator(combiner, settings, processor);
  std::vector<float> scratch(logits.size());
  return static_cast<std::size_t>(evaluator.greedy_token(logits.rows(), {}, scratch));
}

/// `target` with each listed token's probability multiplied by exp(bias), renormalised.
std::vector<double> reference_biased(std::vector<double> target, const std::vector<std::pair<std::size_t, double>>& biases) {
  for (const auto& [token, bias] : biases) target[token] *= std::exp(bias);  // exp(-inf) = 0
  double sum = 0.0;
  for (double p : target) sum += p;
  for (double& p : target) p /= sum;
  return target;
}

}  // namespace

TEST_CASE("logit_bias entries for one token add up before they apply, in either order, however large each is",
          "[combiners][target][bias]") {
  // {t: +100, t: -inf} bans t and {t: +100, t: -100} leaves it unbiased. Applied one entry at a
  // time, exp(+100) overflows float first: inf * 0 = NaN, or inf, and an invalid_logits; in the
  // log domain (logit arithmetic, greedy) x + 1e30 - 1e30 is 0 in float, not x.
  constexpr std::size_t size = 33;
  constexpr std::size_t token = 5;
  model_logits logits = negative_logits(31, 2, size);
  const std::vector<float> ensemble_weights{0.6f, 0.4f};
  const std::vector<float> arithmetic_weights{1.0f, 0.5f};
  const std::vector<double> ensemble_reference = reference_weighted_ensemble(logits.rows(), ensemble_weights, 1.0);
  const std::vector<double> arithmetic_reference = reference_logit_arithmetic(logits.rows(), arithmetic_weights, 1.0);
  struct entries {
    float first, second;
    double total;
  };
  const entries cases[] = {{100.0f, minus_infinity, -std::numeric_limits<double>::infinity()},
                           {100.0f, -100.0f, 0.0},
                           {1e30f, -1e30f, 0.0},
                           {3e38f, -3e38f, 0.0},
                           {90.0f, -88.5f, 1.5},
                           {-100.0f, 101.0f, 1.0}};
  for (const entries& c : cases) {
    CAPTURE(c.first, c.second);
    std::vector<std::vector<float>> orders;  // the targets of both orders, to compare
    for (bool reversed : {false, true}) {
      CAPTURE(reversed);
      cospec::sampling_settings settings;
      const auto t = static_cast<cospec::token_id>(token);
      // An entry for another token in between: merging must keep each token's own entries.
      settings.logit_bias = {{t, reversed ? c.second : c.first}, {2, 0.5f}, {t, reversed ? c.first : c.second}};
      cospec::validate(settings, size);
      const std::vector<std::pair<std::size_t, double>> biases{{token, c.total}, {2, 0.5}};
      const std::vector<double> ensemble_expected = reference_biased(ensemble_reference, biases);
      const std::vector<double> arithmetic_expected = reference_biased(arithmetic_reference, biases);
      {
        INFO("weighted ensemble, sampling");
        const std::vector<float> target = target_of(cospec::weighted_ensemble(ensemble_weights), settings, logits);
        require_matches_reference(target, 1.0, ensemble_expected);
        orders.push_back(target);
      }
      {
        INFO("logit arithmetic, sampling");
        const std::vector<float> target = target_of(cospec::logit_arithmetic(arithmetic_weights), settings, logits);
        require_matches_reference(target, 1.0, arithmetic_expected);
        orders.push_back(target);
      }
      {
        INFO("weighted ensemble, greedy");
        require_argmax_matches(greedy_of(cospec::weighted_ensemble(ensemble_weights), settings, logits), ensemble_expected);
      }
      {
        INFO("logit arithmetic, greedy");
        require_argmax_matches(greedy_of(cospec::logit_arithmetic(arithmetic_weights), settings, logits),
                               arithmetic_expected);
      }
    }
    CHECK(orders[0] == orders[2]);  // bit-identical whatever the order of the entries
    CHECK(orders[1] == orders[3]);
  }
}

TEST_CASE("a logit bias that pushes every token far below float's range leaves the target as it was",
          "[combiners][target][bias]") {
  // The same bias on every token changes nothing. exp(-200) underflows float: multiplied in one
  // by one, every weight became 0 and the target was reported empty.
  constexpr std::size_t size = 33;
  model_logits logits = negative_logits(32, 2, size);
  for (float bias : {-200.0f, -1e30f}) {
    CAPTURE(bias);
    cospec::sampling_settings settings;
    for (std::size_t j = 0; j < size; ++j) settings.logit_bias.emplace_back(static_cast<cospec::token_id>(j), bias);
    settings.logit_bias.emplace_back(7, 1.0f);  // and token 7 one nat above the rest
    const std::vector<std::pair<std::size_t, double>> relative{{7, 1.0}};
    const std::vector<double> ensemble_expected =
        reference_biased(reference_weighted_ensemble(logits.rows(), {0.6f, 0.4f}, 1.0), relative);
    const std::vector<double> arithmetic_expected =
        reference_biased(reference_logit_arithmetic(logits.rows(), {1.0f, 0.5f}, 1.0), relative);
    require_matches_reference(target_of(cospec::weighted_ensemble({0.6f, 0.4f}), settings, logits), 1.0,
                              ensemble_expected);
    require_matches_reference(target_of(cospec::logit_arithmetic({1.0f, 0.5f}), settings, logits), 1.0,
                              arithmetic_expected);
    require_argmax_matches(greedy_of(cospec::weighted_ensemble({0.6f, 0.4f}), settings, logits), ensemble_expected);
    require_argmax_matches(greedy_of(cospec::logit_arithmetic({1.0f, 0.5f}), settings, logits), arithmetic_expected);
  }
}

namespace {

/// softmax(sum_i w_i l_i / T) enumerated in double after shifting each row by its first finite
/// entry, which changes no softmax and keeps every sum of near-float-max logits finite and
/// exact. -inf wherever a model with a non-zero weight masks the token.
std::vector<double> reference_shifted_logit_arithmetic(cospec::logit_rows rows, const std::vector<float>& weights,
                                                       double temperature) {
  std::vector<double> combined(rows[0].size(), 0.0);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (weights[i] == 0.0f) continue;
    double shift = 0.0;
    for (float x : rows[i])
      if (std::isfinite(x)) {
        shift = x;
        break;
      }
    for (std::size_t j = 0; j < combined.size(); ++j)
      combined[j] = rows[i][j] == minus_infinity ? -std::numeric_limits<double>::infinity()
                                                 : combined[j] + static_cast<double>(weights[i]) * (rows[i][j] - shift);
  }
  for (double& x : combined) x /= temperature;
  return reference_softmax(combined);
}

}  // namespace

TEST_CASE("logit arithmetic over finite logits whose combination overflows a float gives the exact target",
          "[combiners][target][overflow]") {
  // 3e38 + 3e38 is +inf in float, and -3e38 - 3e38 is -inf: the combination of valid rows was
  // reported as masking every token. The target is softmax of the real-valued combination.
  constexpr std::size_t size = 37;
  model_logits small = model_logits::random(41, 1, size);
  small[0][1] = minus_infinity;
  const std::vector<float> big(size, 3e38f);
  const std::vector<float> minus_big(size, -3e38f);
  std::vector<float> big_with_dip = big;
  big_with_dip[4] = 2e38f;  // 1e38 below the rest: probability 0, and its combinations may not overflow
  struct overflow_case {
    const char* name;
    std::vector<std::vector<float>> rows;
    std::vector<float> weights;
  };
  const overflow_case cases[] = {
      {"3e38 + 3e38 + small logits", {big, big, small[0]}, {1.0f, 1.0f, 1.0f}},
      {"-3e38 - 3e38 + small logits", {minus_big, minus_big, small[0]}, {1.0f, 1.0f, 1.0f}},
      {"twice 3e38 minus small logits", {big, small[0]}, {2.0f, -1.0f}},
      {"contrastive: expert near float max, amateur near its negative", {big_with_dip, minus_big}, {1.0f, -0.2f}},
      {"part of the row overflows, part does not", {big_with_dip, big_with_dip}, {1.0f, 0.2f}},
  };
  for (const overflow_case& c : cases)
    for (float temperature : {1.0f, 0.7f}) {
      CAPTURE(c.name, temperature);
      model_logits logits(c.rows);
      const std::vector<double> expected = reference_shifted_logit_arithmetic(logits.rows(), c.weights, temperature);
      cospec::sampling_settings settings;
      settings.temperature = temperature;
      require_matches_reference(target_of(cospec::logit_arithmetic(c.weights), settings, logits), 1.0, expected);
      // A logit bias applies to the exact target, in sampling and in greedy decoding.
      const std::vector<std::pair<std::size_t, double>> bias{{3, 2.0}, {0, -std::numeric_limits<double>::infinity()}};
      settings.logit_bias = {{3, 2.0f}, {0, minus_infinity}};
      require_matches_reference(target_of(cospec::logit_arithmetic(c.weights), settings, logits), 1.0,
                                reference_biased(expected, bias));
      const std::vector<double> greedy_target = reference_shifted_logit_arithmetic(logits.rows(), c.weights, 1.0);
      require_argmax_matches(greedy_of(cospec::logit_arithmetic(c.weights), settings, logits),
                             reference_biased(greedy_target, bias));
      settings.logit_bias.clear();
      require_argmax_matches(greedy_of(cospec::logit_arithmetic(c.weights), settings, logits), greedy_target);
      // A processor is given the exact target in logit space (not an overflowed combination).
      const auto halve_token_0 = [](const cospec::processor_context& context, std::span<float> row) {
        row[0] += log_factor(context, 0.5f);
      };
      require_argmax_matches(greedy_of(cospec::logit_arithmetic(c.weights), settings, logits, halve_token_0),
                             reference_biased(greedy_target, {{0, std::log(0.5)}}));
    }
  // The plausibility constraint reads the expert's own row: tokens 1e38 below its maximum go.
  model_logits contrastive({big_with_dip, minus_big});
  const std::vector<double> expected = reference_shifted_logit_arithmetic(contrastive.rows(), {1.0f, -0.2f}, 1.0);
  REQUIRE(expected[4] == 0.0);
  require_matches_reference(target_of(cospec::contrastive_decoding(0.2f, 0.1f), cospec::sampling_settings{}, contrastive),
                            1.0, expected);
}

TEST_CASE("a processor that writes NaN or +inf is reported in greedy decoding as in sampling",
          "[combiners][target][greedy]") {
  // The processor works on logits: NaN and +inf are the values it cannot write (a weight could
  // not be negative; -inf, a weight of 0, is a mask).
  model_logits logits = model_logits::random(14, 2, 33);
  for (float bad : {not_a_number, infinity}) {
    CAPTURE(bad);
    const auto bad_at_7 = [bad](const cospec::processor_context&, std::span<float> row) { row[7] = bad; };
    const std::string value = std::isnan(bad) ? "NaN" : "+inf";
    {
      INFO("weighted ensemble (weights domain)");
      COSPEC_REQUIRE_THROWS_AS_WITH(greedy_of(cospec::weighted_ensemble::uniform(2), {}, logits, bad_at_7),
                                    cospec::invalid_logits,
                                    Contains("logits processor") && Contains("token 7") && Contains(value));
      COSPEC_REQUIRE_THROWS_AS_WITH(target_of(cospec::weighted_ensemble::uniform(2), {}, logits, bad_at_7),
                                    cospec::invalid_logits,
                                    Contains("logits processor") && Contains("token 7") && Contains(value));
    }
    {
      INFO("contrastive decoding (log domain)");
      COSPEC_REQUIRE_THROWS_AS_WITH(greedy_of(cospec::contrastive_decoding(0.1f), {}, logits, bad_at_7),
                                    cospec::invalid_logits,
                                    Contains("logits processor") && Contains("token 7") && Contains(value));
      COSPEC_REQUIRE_THROWS_AS_WITH(target_of(cospec::contrastive_decoding(0.1f), {}, logits, bad_at_7),
                                    cospec::invalid_logits,
                                    Contains("logits processor") && Contains("token 7") && Contains(value));
    }
  }
}

TEST_CASE("a processor's -inf masks the token in greedy decoding as in sampling", "[combiners][target][greedy]") {
  // Once the error case, now a ban: the greedy token is the argmax of the others, and the
  // target gives the token probability 0 and is the rest renormalised.
  model_logits logits = model_logits::random(14, 2, 33);
  const std::vector<double> ensemble = reference_weighted_ensemble(logits.rows(), {0.5f, 0.5f}, 1.0);
  const std::vector<double> contrastive = reference_logit_arithmetic(logits.rows(), {1.0f, -0.1f}, 1.0);
  for (const std::size_t token : {std::size_t{7}, argmax(ensemble), argmax(contrastive)}) {
    CAPTURE(token);
    const auto ban = [token](const cospec::processor_context&, std::span<float> row) { row[token] = minus_infinity; };
    const std::vector<std::pair<std::size_t, double>> banned{{token, -std::numeric_limits<double>::infinity()}};
    {
      INFO("weighted ensemble (weights domain)");
      require_argmax_matches(greedy_of(cospec::weighted_ensemble::uniform(2), {}, logits, ban),
                             reference_biased(ensemble, banned));
      require_matches_reference(target_of(cospec::weighted_ensemble::uniform(2), {}, logits, ban), 1.0,
                                reference_biased(ensemble, banned));
    }
    {
      INFO("contrastive decoding (log domain)");
      require_argmax_matches(greedy_of(cospec::contrastive_decoding(0.1f), {}, logits, ban),
                             reference_biased(contrastive, banned));
      require_matches_reference(target_of(cospec::contrastive_decoding(0.1f), {}, logits, ban), 1.0,
                                reference_biased(contrastive, banned));
    }
  }
}

namespace {

/// A user combination that reads only model 1's row.
struct second_model_only {
  void operator()(cospec::logit_rows rows, std::span<float> out) const {
    std::copy(rows[1].begin(), rows[1].end(), out.begin());
  }
};

}  // namespace

// Rule (docs/reliability.md): every row a model returns for a position the combiner sees is
// validated, whatever the model's weight, so that whether a run fails does not depend on which
// model happens to propose there.

TEST_CASE("weighted_ensemble rejects invalid rows of a model with weight 0", "[combiners][errors]") {
  const spoil& s = spoils[GENERATE(0, 1, 2)];
  cospec::weighted_ensemble combiner({0.0f, 1.0f, 1.0f});
  check_rejects_spoilt_row(combiner, 0, s);
}

TEST_CASE("logit arithmetic rejects invalid rows of a model with weight 0", "[combiners][errors]") {
  const spoil& s = spoils[GENERATE(0, 1, 2)];
  cospec::logit_arithmetic combiner({1.0f, 0.0f, -0.5f});
  check_rejects_spoilt_row(combiner, 1, s);
}

TEST_CASE("callable_combiner rejects invalid rows its function does not read", "[combiners][errors]") {
  const spoil& s = spoils[GENERATE(0, 1, 2)];
  cospec::callable_combiner combiner(2, second_model_only{});
  check_rejects_spoilt_row(combiner, 0, s);
}

TEST_CASE("a callable combiner whose function writes NaN or +inf is reported as such, sampling and greedy",
          "[combiners][errors]") {
  // Its rows are valid; the greedy path, whose cheap scores define no target, asks the
  // combiner's temperature-1 target, which must say what is wrong rather than "masks every token".
  model_logits logits = model_logits::random(15, 2, 33);
  for (float bad : {not_a_number, infinity}) {
    CAPTURE(bad);
    cospec::callable_combiner combiner(2, [bad](cospec::logit_rows rows, std::span<float> out) {
      max_of_models{}(rows, out);
      out[4] = bad;
    });
    COSPEC_REQUIRE_THROWS_AS_WITH(target_of(combiner, cospec::sampling_settings{}, logits), cospec::invalid_logits,
                                  Contains("combination function") && Contains("NaN, +inf"));
    COSPEC_REQUIRE_THROWS_AS_WITH(greedy_of(combiner, cospec::sampling_settings{}, logits), cospec::invalid_logits,
                                  Contains("combination function") && Contains("NaN, +inf"));
  }
}

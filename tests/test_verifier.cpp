// The speculative verifier (docs/algorithm.md, "Verification" and "Exactness"): exactness
// computed from the verifier's own parts on small vocabularies, a seeded frequency test with a
// stated bound that a deliberately broken verifier fails, one-hot targets with a single right
// answer, and the contracts of verify, verify_chain and verify_greedy.
#include <algorithm>  // std::equal, std::fill
#include <cmath>      // std::abs, std::exp, std::log, std::nextafter
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <limits>     // std::numeric_limits
#include <optional>   // std::optional
#include <span>       // std::span
#include <string>     // std::string
#include <utility>    // std::pair
#include <vector>     // std::vector

#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

// Checks both the documented exception type and that the message names the problem.
#define COSPEC_REQUIRE_THROWS_AS_WITH(expression, exception_type, message_matcher) \
  do {                                                                            \
    REQUIRE_THROWS_AS(expression, exception_type);                                \
    REQUIRE_THROWS_WITH(expression, message_matcher);                             \
  } while (false)

namespace {

using Catch::Matchers::Contains;

/// A float distribution from non-negative weights, normalised in double and rounded once: it
/// sums to 1 within a few float ulps, as every distribution the library produces does.
std::vector<float> normalised(const std::vector<double>& weights) {
  double sum = 0.0;
  for (double w : weights) sum += w;
  std::vector<float> out(weights.size());
  for (std::size_t j = 0; j < out.size(); ++j) out[j] = static_cast<float>(weights[j] / sum);
  return out;
}

std::vector<double> random_weights(cospec::random_source& random, std::size_t size) {
  std::vector<double> weights(size);
  for (double& w : weights) w = random.uniform();
  return weights;
}

/// Random weights with roughly a third of the entries zero, never all of them.
std::vector<double> random_weights_with_zeros(cospec::random_source& random, std::size_t size) {
  std::vector<double> weights = random_weights(random, size);
  for (double& w : weights)
    if (random.uniform() < 0.35) w = 0.0;
  weights[static_cast<std::size_t>(random.next() % size)] = 0.5;
  return weights;
}

std::vector<double> one_hot(std::size_t size, std::size_t token) {
  std::vector<double> weights(size, 0.0);
  weights[token] = 1.0;
  return weights;
}

struct distribution_pair {
  std::string kind;
  std::vector<float> target;    // r
  std::vector<float> proposal;  // q
};

/// (r, q) pairs on V = 2..8 covering the shapes that break careless verifiers.
std::vector<distribution_pair> small_vocabulary_pairs() {
  std::vector<distribution_pair> pairs;
  cospec::random_source random(2024);
  for (std::size_t size = 2; size <= 8; ++size)
    for (int repeat = 0; repeat < 20; ++repeat) {
      const std::size_t k = static_cast<std::size_t>(random.next() % size);
      pairs.push_back({"random", normalised(random_weights(random, size)), normalised(random_weights(random, size))});
      std::vector<double> even(size, 0.0);
      std::vector<double> odd(size, 0.0);
      for (std::size_t j = 0; j < size; ++j) (j % 2 == 0 ? even : odd)[j] = 0.1 + random.uniform();
      pairs.push_back({"disjoint supports", normalised(even), normalised(odd)});
      pairs.push_back({"one-hot proposal", normalised(random_weights(random, size)), normalised(one_hot(size, k))});
      pairs.push_back({"one-hot target", normalised(one_hot(size, k)), normalised(random_weights(random, size))});
      pairs.push_back({"one-hot target and proposal on different tokens", normalised(one_hot(size, k)),
                       normalised(one_hot(size, (k + 1) % size))});
      pairs.push_back({"target with zeros", normalised(random_weights_with_zeros(random, size)),
                       normalised(random_weights(random, size))});
      pairs.push_back({"both with zeros", normalised(random_weights_with_zeros(random, size)),
                       normalised(random_weights_with_zeros(random, size))});
      const std::vector<float> same = normalised(random_weights(random, size));
      pairs.push_back({"equal", same, same});
    }
  return pairs;
}

/// The probability that speculative_verifier::verify emits y, from the verifier's own functions:
/// P(y) = q(y) a(y) + (sum_x q(x) (1 - a(x))) * residual(y) / residual_sum.
std::vector<double> emission_probabilities(std::span<const float> proposal, std::span<const float> target) {
  const std::size_t size = target.size();
  std::vector<float> residual(size);
  const double residual_sum = cospec::residual_distribution(proposal, target, residual);
  double rejection = 0.0;
  std::vector<double> emitted(size, 0.0);
  for (std::size_t x = 0; x < size; ++x) {
    if (proposal[x] == 0.0f) continue;  // never proposed (and acceptance_probability would refuse it)
    const double accept = cospec::acceptance_probability(static_cast<cospec::token_id>(x), proposal, target);
    REQUIRE((accept >= 0.0 && accept <= 1.0));
    emitted[x] += proposal[x] * accept;
    rejection += proposal[x] * (1.0 - accept);
  }
  if (residual_sum == 0.0) {
    // Only r == q gets here (the pairs are normalised): then nothing is ever rejected, and the
    // residual must not be divided by.
    REQUIRE(rejection == 0.0);
    return emitted;
  }
  for (std::size_t y = 0; y < size; ++y) emitted[y] += rejection * residual[y] / residual_sum;
  return emitted;
}

// ---------------------------------------------------------------------------------------------
// Sampling harness and chi-square test.

/// How often each token is emitted when x ~ q is proposed and verified `samples` times.
template <class Verify>
std::vector<std::size_t> emitted_counts(Verify&& verify, std::span<const float> proposal,
                                        std::span<const float> target, std::uint64_t seed, std::size_t samples) {
  cospec::random_source random(seed);
  double proposal_total = 0.0;
  for (float p : proposal) proposal_total += p;
  std::vector<std::size_t> counts(target.size(), 0);
  for (std::size_t s = 0; s < samples; ++s) {
    const auto x = static_cast<cospec::token_id>(
        cospec::kernels::sample_inverse_cdf(proposal, random.uniform(), proposal_total));
    const cospec::verdict v = verify(x, proposal, target, random);
    ++counts[static_cast<std::size_t>(v.token)];
  }
  return counts;
}

struct chi_square_result {
  double statistic;
  std::size_t degrees_of_freedom;
};

/// Pearson's statistic of `counts` against `target`. A count on a token of probability zero is
/// impossible under the hypothesis, so it makes the statistic infinite.
chi_square_result chi_square(const std::vector<std::size_t>& counts, std::span<const float> target) {
  double total = 0.0;
  for (std::size_t c : counts) total += static_cast<double>(c);
  chi_square_result result{0.0, 0};
  std::size_t categories = 0;
  for (std::size_t y = 0; y < counts.size(); ++y) {
    const double expected = total * target[y];
    if (target[y] == 0.0f) {
      if (counts[y] != 0) result.statistic = std::numeric_limits<double>::infinity();
      continue;
    }
    ++categories;
    const double difference = static_cast<double>(counts[y]) - expected;
    result.statistic += difference * difference / expected;
  }
  result.degrees_of_freedom = categories - 1;
  return result;
}

/// Upper 1e-6 quantiles of the chi-square distribution, chi2.isf(1e-6, df), computed with
/// mpmath from the regularised upper incomplete gamma function Q(df/2, x/2) = 1e-6. A correct
/// verifier fails the test with probability 1e-6 per run (and the seeds are fixed).
double chi_square_critical_value(std::size_t degrees_of_freedom) {
  switch (degrees_of_freedom) {
    case 1: return 23.92812698;
    case 2: return 27.63102112;
    case 3: return 30.66484971;
    case 4: return 33.37684158;
    case 5: return 35.88818688;
    case 6: return 38.25833638;
    case 7: return 40.52183123;
    case 110: return 195.3874019;
    default: FAIL("no critical value tabulated for df = " << degrees_of_freedom); return 0.0;
  }
}

cospec::verdict library_verify(cospec::token_id x, std::span<const float> proposal, std::span<const float> target,
                               cospec::random_source& random) {
  static thread_local cospec::speculative_verifier verifier;
  return verifier.verify(x, proposal, target, random);
}

/// Deliberately wrong: the replacement is drawn from |r - q| instead of max(0, r - q), so tokens
/// the proposal over-weights are emitted too often.
cospec::verdict verify_with_absolute_residual(cospec::token_id x, std::span<const float> proposal,
                                              std::span<const float> target, cospec::random_source& random) {
  if (random.uniform() < cospec::acceptance_probability(x, proposal, target)) return {true, x};
  std::vector<float> residual(target.size());
  double total = 0.0;
  for (std::size_t j = 0; j < residual.size(); ++j) total += residual[j] = std::abs(target[j] - proposal[j]);
  return {false, static_cast<cospec::token_id>(cospec::kernels::sample_inverse_cdf(residual, random.uniform(), total))};
}

/// Deliberately wrong: the replacement is drawn from r itself, the "obvious" resampling.
cospec::verdict verify_with_target_as_replacement(cospec::token_id x, std::span<const float> proposal,
                                                  std::span<const float> target, cospec::random_source& random) {
  if (random.uniform() < cospec::acceptance_probability(x, proposal, target)) return {true, x};
  double total = 0.0;
  for (float r : target) total += r;
  return {false, static_cast<cospec::token_id>(cospec::kernels::sample_inverse_cdf(target, random.uniform(), total))};
}

/// Pairs for the frequency test: hand-picked ones with large rejection rates, one with target
/// zeros and a proposal mass on tokens the target never emits, and a V = 111 softmax pair (a
/// vocabulary that is not a multiple of any SIMD width, so tails are exercised).
std::vector<distribution_pair> frequency_test_pairs() {
  std::vector<distribution_pair> pairs;
  pairs.push_back({"V = 5, proposal favours the unlikely tokens", normalised({0.05, 0.1, 0.15, 0.2, 0.5}),
                   normalised({0.3, 0.3, 0.2, 0.1, 0.1})});
  pairs.push_back({"V = 6, target zeros, partly disjoint", normalised({0.4, 0.3, 0.2, 0.1, 0.0, 0.0}),
                   normalised({0.0, 0.1, 0.1, 0.1, 0.3, 0.4})});
  cospec::random_source random(77);
  pairs.push_back({"V = 8, random", normalised(random_weights(random, 8)), normalised(random_weights(random, 8))});
  std::vector<double> target_logits(111);
  std::vector<double> proposal_logits(111);
  for (std::size_t j = 0; j < 111; ++j) {
    target_logits[j] = 2.0 * random.uniform();
    proposal_logits[j] = target_logits[j] + 1.5 * (random.uniform() - 0.5);
  }
  auto softmax = [](const std::vector<double>& logits) {
    std::vector<double> weights(logits.size());
    for (std::size_t j = 0; j < logits.size(); ++j) weights[j] = std::exp(logits[j]);
    return normalised(weights);
  };
  pairs.push_back({"V = 111, softmax of nearby logits", softmax(target_logits), softmax(proposal_logits)});
  return pairs;
}

}  // namespace

// =============================================================================================
// (a) Exactness from the verifier's own parts

TEST_CASE("the emitted token is distributed exactly as the target, computed from the verifier's parts",
          "[verifier][exact]") {
  for (const distribution_pair& pair : small_vocabulary_pairs()) {
    CAPTURE(pair.kind, pair.target, pair.proposal);
    const std::vector<double> emitted = emission_probabilities(pair.proposal, pair.target);
    for (std::size_t y = 0; y < pair.target.size(); ++y) {
      CAPTURE(y, emitted[y]);
      // The rows are normalised in float (a few 1e-8 from summing to 1), and the verifier's
      // arithmetic is double except the float residual: 1e-6 leaves an order of magnitude.
      REQUIRE(std::abs(emitted[y] - pair.target[y]) <= 1e-6);
    }
  }
}

TEST_CASE("acceptance is min(1, r / q) and the residual is max(0, r - q)", "[verifier][exact]") {
  const std::vector<float> target{0.5f, 0.25f, 0.25f, 0.0f};
  const std::vector<float> proposal{0.25f, 0.5f, 0.0f, 0.25f};
  REQUIRE(cospec::acceptance_probability(0, proposal, target) == 1.0);
  REQUIRE(cospec::acceptance_probability(1, proposal, target) == 0.5);
  REQUIRE(cospec::acceptance_probability(3, proposal, target) == 0.0);
  std::vector<float> residual(4);
  REQUIRE(cospec::residual_distribution(proposal, target, residual) == 0.5f);
  REQUIRE(residual == std::vector<float>{0.25f, 0.0f, 0.25f, 0.0f});
}

TEST_CASE("a weighted ensemble accepts a proposal of model i with probability at least lambda_i",
          "[verifier][exact]") {
  // docs/algorithm.md, "Verification": r >= lambda_i q_i, so min(1, r / q_i) >= lambda_i.
  cospec::random_source random(5);
  for (std::size_t size : {std::size_t{7}, std::size_t{1000}}) {
    std::vector<std::vector<float>> rows(2, std::vector<float>(size));
    for (auto& row : rows)
      for (float& x : row) x = static_cast<float>(6.0 * random.uniform());
    const std::vector<std::span<const float>> views(rows.begin(), rows.end());
    cospec::weighted_ensemble combiner({0.7f, 0.3f});
    cospec::sampling_settings settings;
    cospec::target_evaluator evaluator(combiner, settings);
    std::vector<float> target(size);
    evaluator.distribution(views, {}, target);
    for (std::size_t model = 0; model < 2; ++model) {
      std::vector<float> proposal(size);
      combiner.proposal_distribution(model, rows[model], 1.0f, proposal);
      for (std::size_t x = 0; x < size; ++x)
        REQUIRE(cospec::acceptance_probability(static_cast<cospec::token_id>(x), proposal, target) >=
                combiner.weights()[model] * (1.0 - 1e-5));  // float rounding of r and q
    }
  }
}

// =============================================================================================
// (b) q = r accepts everything

TEST_CASE("a proposal drawn from the target itself is always accepted", "[verifier]") {
  cospec::speculative_verifier verifier;
  cospec::random_source random(9);
  for (const distribution_pair& pair : small_vocabulary_pairs()) {
    if (pair.kind != "equal") continue;
    for (int trial = 0; trial < 1000; ++trial) {
      const auto x = static_cast<cospec::token_id>(
          cospec::kernels::sample_inverse_cdf(pair.proposal, random.uniform(), 1.0));
      const cospec::verdict v = verifier.verify(x, pair.proposal, pair.target, random);
      REQUIRE(v.accepted);
      REQUIRE(v.token == x);
    }
  }
}

namespace {

/// A single-model combiner's target and its proposal distribution are bit-identical, so every
/// proposal is accepted: speculation with n = 1 is plain sampling.
template <class Combiner>
void check_single_model_target_equals_proposal(Combiner& combiner) {
  cospec::random_source random(31);
  cospec::speculative_verifier verifier;
  for (std::size_t size : {std::size_t{5}, std::size_t{33}, std::size_t{32000}})
    for (float temperature : {0.7f, 1.0f, 1.3f}) {
      CAPTURE(size, temperature);
      std::vector<float> logits(size);
      for (float& x : logits) x = static_cast<float>(8.0 * random.uniform() - 4.0);
      logits[size / 2] = -std::numeric_limits<float>::infinity();
      const std::span<const float> row(logits);
      const cospec::logit_rows rows(&row, 1);
      cospec::sampling_settings settings;
      settings.temperature = temperature;
      cospec::target_evaluator evaluator(combiner, settings);
      std::vector<float> target(size);
      std::vector<float> proposal(size);
      evaluator.distribution(rows, {}, target);
      combiner.proposal_distribution(0, logits, temperature, proposal);
      REQUIRE(std::equal(target.begin(), target.end(), proposal.begin()));
      double total = 0.0;
      for (float p : proposal) total += p;
      for (int trial = 0; trial < 2000; ++trial) {
        const auto x =
            static_cast<cospec::token_id>(cospec::kernels::sample_inverse_cdf(proposal, random.uniform(), total));
        const cospec::verdict v = verifier.verify(x, proposal, target, random);
        REQUIRE(v.accepted);
        REQUIRE(v.token == x);
      }
    }
}

}  // namespace

TEST_CASE("a single-model weighted ensemble's target equals its proposal bit for bit and accepts everything",
          "[verifier]") {
  cospec::weighted_ensemble combiner({1.0f});
  check_single_model_target_equals_proposal(combiner);
}

TEST_CASE("logit_arithmetic({1})'s target equals its proposal bit for bit and accepts everything", "[verifier]") {
  cospec::logit_arithmetic combiner({1.0f});
  check_single_model_target_equals_proposal(combiner);
}

// =============================================================================================
// (c) Frequencies

TEST_CASE("10^6 verified proposals pass a chi-square test against the target; broken verifiers fail it",
          "[verifier][statistical]") {
  constexpr std::size_t samples = 1'000'000;
  std::uint64_t seed = 1000;
  for (const distribution_pair& pair : frequency_test_pairs()) {
    ++seed;
    CAPTURE(pair.kind);
    const chi_square_result correct =
        chi_square(emitted_counts(library_verify, pair.proposal, pair.target, seed, samples), pair.target);
    const double critical = chi_square_critical_value(correct.degrees_of_freedom);
    CAPTURE(correct.statistic, correct.degrees_of_freedom, critical);
    REQUIRE(correct.statistic < critical);

    const chi_square_result absolute = chi_square(
        emitted_counts(verify_with_absolute_residual, pair.proposal, pair.target, seed, samples), pair.target);
    CAPTURE(absolute.statistic);
    REQUIRE(absolute.statistic > critical);

    const chi_square_result resampled = chi_square(
        emitted_counts(verify_with_target_as_replacement, pair.proposal, pair.target, seed, samples), pair.target);
    CAPTURE(resampled.statistic);
    REQUIRE(resampled.statistic > critical);
  }
}

TEST_CASE("a one-hot target emits its token whatever is proposed", "[verifier][statistical]") {
  // One exact answer for a random kernel: every proposal other than k must be rejected (r = 0)
  // and replaced by k, the only token with residual mass.
  cospec::speculative_verifier verifier;
  cospec::random_source random(3);
  for (std::size_t size : {std::size_t{2}, std::size_t{8}, std::size_t{111}, std::size_t{32000}})
    for (std::size_t k : {std::size_t{0}, size - 1, size / 2}) {
      CAPTURE(size, k);
      const std::vector<float> target = normalised(one_hot(size, k));
      const std::vector<float> proposal = normalised(random_weights(random, size));
      for (int trial = 0; trial < 2000; ++trial) {
        const auto x =
            static_cast<cospec::token_id>(cospec::kernels::sample_inverse_cdf(proposal, random.uniform(), 1.0));
        const cospec::verdict v = verifier.verify(x, proposal, target, random);
        REQUIRE(v.token == static_cast<cospec::token_id>(k));
        REQUIRE(v.accepted == (x == static_cast<cospec::token_id>(k)));
      }
    }
}

// =============================================================================================
// (d) Contracts

TEST_CASE("verifying a token its proposal could not have produced is a usage_error", "[verifier][errors]") {
  cospec::speculative_verifier verifier;
  cospec::random_source random(1);
  const std::vector<float> target{0.25f, 0.25f, 0.5f};
  const std::vector<float> proposal{0.5f, 0.0f, 0.5f};
  COSPEC_REQUIRE_THROWS_AS_WITH(verifier.verify(1, proposal, target, random), cospec::usage_error,
                                Contains("token 1") && Contains("probability 0"));
  COSPEC_REQUIRE_THROWS_AS_WITH(cospec::acceptance_probability(1, proposal, target), cospec::usage_error,
                                Contains("probability 0"));
  COSPEC_REQUIRE_THROWS_AS_WITH(verifier.verify(3, proposal, target, random), cospec::usage_error,
                                Contains("token 3") && Contains("outside the vocabulary of 3"));
  COSPEC_REQUIRE_THROWS_AS_WITH(verifier.verify(-1, proposal, target, random), cospec::usage_error,
                                Contains("token -1") && Contains("outside the vocabulary"));
}

TEST_CASE("a rejection with a residual of zero mass draws from the target without dividing by zero",
          "[verifier][errors]") {
  // r = q except one ulp less on token 0: a rounding artefact, r <= q everywhere, so
  // max(0, r - q) is all zeros, yet token 0 is rejected with probability ~1.2e-7. Find a random
  // state whose first uniform falls in that sliver (about 10^7 draws), then verify from it.
  const std::vector<float> proposal{0.51f, 0.29f, 0.2f};
  std::vector<float> target = proposal;
  target[0] = std::nextafter(target[0], 0.0f);
  std::vector<float> residual(3, 1.0f);
  REQUIRE(cospec::residual_distribution(proposal, target, residual) == 0.0f);
  REQUIRE(residual == std::vector<float>{0.0f, 0.0f, 0.0f});

  const double accept = cospec::acceptance_probability(0, proposal, target);
  REQUIRE(accept < 1.0);
  cospec::random_source probe(0);
  std::optional<cospec::random_source> rejecting;
  for (int draw = 0; draw < 400'000'000 && !rejecting; ++draw) {
    const cospec::random_source before = probe;
    if (!(probe.uniform() < accept)) rejecting = before;
  }
  REQUIRE(rejecting.has_value());
  cospec::speculative_verifier verifier;
  const cospec::verdict v = verifier.verify(0, proposal, target, *rejecting);
  REQUIRE_FALSE(v.accepted);
  REQUIRE((v.token >= 0 && v.token < 3));
  REQUIRE(target[static_cast<std::size_t>(v.token)] > 0.0f);
}

TEST_CASE("r == q gives a residual of exactly zero mass", "[verifier]") {
  const std::vector<float> row = normalised({0.1, 0.2, 0.3, 0.4});
  std::vector<float> residual(4, 1.0f);
  REQUIRE(cospec::residual_distribution(row, row, residual) == 0.0f);
  REQUIRE(residual == std::vector<float>(4, 0.0f));
}

TEST_CASE("verify_chain stops at the first rejection and never combines past it", "[verifier][chain]") {
  // Positions 0 and 1: r = q, accepted for sure. Position 2: r gives the proposal probability
  // zero, rejected for sure, replaced by a token of the residual. Positions 3 and 4 are never
  // reached, so their targets must never be asked for.
  const std::vector<float> proposal{0.25f, 0.25f, 0.25f, 0.25f};
  const std::vector<float> rejecting_target{0.0f, 0.5f, 0.5f, 0.0f};
  const std::vector<cospec::token_id> tokens{1, 2, 0, 3, 1};
  cospec::speculative_verifier verifier;
  cospec::random_source random(17);

  SECTION("a rejection in the middle") {
    std::size_t target_calls = 0;
    std::size_t furthest = 0;
    const cospec::chain_verdict result = verifier.verify_chain(
        tokens.size(), [&](std::size_t i) { return tokens[i]; },
        [&](std::size_t) { return std::span<const float>(proposal); },
        [&](std::size_t i) {
          ++target_calls;
          furthest = std::max(furthest, i);
          return std::span<const float>(i == 2 ? rejecting_target : proposal);
        },
        random);
    REQUIRE(result.accepted == 2);
    REQUIRE(result.replacement.has_value());
    REQUIRE((*result.replacement == 1 || *result.replacement == 2));
    REQUIRE(target_calls == 3);
    REQUIRE(furthest == 2);
  }
  SECTION("a rejection at the first position") {
    std::size_t target_calls = 0;
    const cospec::chain_verdict result = verifier.verify_chain(
        tokens.size(), [&](std::size_t) { return cospec::token_id{0}; },
        [&](std::size_t) { return std::span<const float>(proposal); },
        [&](std::size_t) {
          ++target_calls;
          return std::span<const float>(rejecting_target);
        },
        random);
    REQUIRE(result.accepted == 0);
    REQUIRE(result.replacement.has_value());
    REQUIRE(target_calls == 1);
  }
  SECTION("all accepted") {
    std::size_t target_calls = 0;
    const cospec::chain_verdict result = verifier.verify_chain(
        tokens.size(), [&](std::size_t i) { return tokens[i]; },
        [&](std::size_t) { return std::span<const float>(proposal); },
        [&](std::size_t) {
          ++target_calls;
          return std::span<const float>(proposal);
        },
        random);
    REQUIRE(result.accepted == tokens.size());
    REQUIRE_FALSE(result.replacement.has_value());
    REQUIRE(target_calls == tokens.size());
  }
  SECTION("an empty chain") {
    std::size_t calls = 0;
    const cospec::chain_verdict result = verifier.verify_chain(
        0,
        [&](std::size_t) {
          ++calls;
          return cospec::token_id{0};
        },
        [&](std::size_t) {
          ++calls;
          return std::span<const float>(proposal);
        },
        [&](std::size_t) {
          ++calls;
          return std::span<const float>(proposal);
        },
        random);
    REQUIRE(result.accepted == 0);
    REQUIRE_FALSE(result.replacement.has_value());
    REQUIRE(calls == 0);
  }
}

TEST_CASE("verify_greedy accepts the argmax and otherwise emits it", "[verifier][greedy]") {
  const cospec::verdict accepted = cospec::verify_greedy(4, 4);
  REQUIRE(accepted.accepted);
  REQUIRE(accepted.token == 4);
  const cospec::verdict rejected = cospec::verify_greedy(3, 4);
  REQUIRE_FALSE(rejected.accepted);
  REQUIRE(rejected.token == 4);
  const cospec::verdict first = cospec::verify_greedy(0, 0);
  REQUIRE((first.accepted && first.token == 0));
}

// =============================================================================================
// (e) Determinism

TEST_CASE("the same seed gives the same verdicts", "[verifier][determinism]") {
  const std::vector<distribution_pair> pairs = frequency_test_pairs();
  auto run = [&](std::uint64_t seed) {
    cospec::speculative_verifier verifier;
    cospec::random_source random(seed);
    std::vector<std::pair<bool, cospec::token_id>> outcomes;
    for (int trial = 0; trial < 2000; ++trial)
      for (const distribution_pair& pair : pairs) {
        const auto x =
            static_cast<cospec::token_id>(cospec::kernels::sample_inverse_cdf(pair.proposal, random.uniform(), 1.0));
        const cospec::verdict v = verifier.verify(x, pair.proposal, pair.target, random);
        outcomes.emplace_back(v.accepted, v.token);
      }
    return outcomes;
  };
  REQUIRE(run(42) == run(42));
  REQUIRE(run(42) != run(43));  // and the seed matters
}

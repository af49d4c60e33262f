// The engine's exactness (docs/algorithm.md, "Exactness"): the distribution of sequences that
// alternating and fixed-proposer speculation emit equals standard collaborative decoding's,
// computed exactly by enumeration on a tiny vocabulary.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <cmath>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "models/synthetic_model.hpp"
#include "support/reference_decoding.hpp"

namespace {

using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;
using cospec::testing::reference_combination;
using cospec::testing::reference_sampling;

constexpr std::size_t vocabulary = 5;
constexpr std::size_t length = 3;          // 125 possible continuations
constexpr std::size_t trials = 20000;      // mean expected count per cell 160
constexpr double significance_z = 4.753;   // standard-normal quantile of 1 - 1e-6

std::vector<synthetic_model_config> model_set(std::size_t n) {
  std::vector<synthetic_model_config> configs;
  for (std::size_t i = 0; i < n; ++i)
    configs.push_back({.vocabulary_size = vocabulary, .window = 2, .shared_seed = 11, .own_seed = 100 + i,
                       .agreement = 0.6, .sharpness = 1.5});
  return configs;
}

/// Empirical frequencies of `trials` seeded generations of `length` tokens.
template <class Combiner, class Speculator>
std::map<std::vector<cospec::token_id>, std::size_t> frequencies(const std::vector<synthetic_model_config>& configs,
                                                                 Combiner combiner, Speculator speculator,
                                                                 const cospec::sampling_settings& settings,
                                                                 const std::vector<cospec::token_id>& prompt) {
  std::vector<synthetic_model> models;
  for (const auto& config : configs) models.emplace_back(config);
  std::vector<synthetic_model*> pointers;
  for (auto& model : models) pointers.push_back(&model);
  cospec::decoder decoder(pointers, std::move(combiner), std::move(speculator), settings);
  std::map<std::vector<cospec::token_id>, std::size_t> counts;
  cospec::generation_limits limits;
  limits.max_new_tokens = length;
  for (std::size_t trial = 0; trial < trials; ++trial) {
    limits.seed = 1000003 * trial + 17;
    ++counts[decoder.generate(prompt, limits).tokens];
  }
  return counts;
}

cospec::sampling_settings to_settings(const reference_sampling& sampling) {
  cospec::sampling_settings settings;
  settings.temperature = static_cast<float>(sampling.temperature);
  settings.top_k = sampling.top_k;
  if (sampling.top_p) settings.top_p = static_cast<float>(*sampling.top_p);
  return settings;
}

template <class Combiner, class Speculator>
void check_exact(const std::string& name, std::size_t n, const reference_combination& combination, Combiner combiner,
                 Speculator speculator, const reference_sampling& sampling) {
  const auto configs = model_set(n);
  const std::vector<cospec::token_id> prompt{1, 3};
  const auto expected = cospec::testing::sequence_probabilities(configs, combination, sampling, prompt, length);
  const auto observed = frequencies(configs, std::move(combiner), std::move(speculator), to_settings(sampling), prompt);
  const auto test = cospec::testing::chi_square(expected, observed, trials);
  const double critical = cospec::testing::chi_square_critical(test.degrees_of_freedom, significance_z);
  INFO(name << ": chi-square " << test.statistic << " on " << test.degrees_of_freedom << " df, critical value "
            << critical << " at significance 1e-6");
  CHECK(test.unexpected == 0);
  CHECK(test.degrees_of_freedom >= 5);  // enough cells for the test to mean something
  CHECK(test.statistic < critical);
}

reference_combination ensemble(std::size_t n) {
  return {reference_combination::kind::weighted_ensemble, std::vector<double>(n, 1.0), std::nullopt};
}

/// The weighted ensemble, counting the target rows it writes. `broken` makes its target at one
/// token return the proposer's own probability there (so every proposal is accepted): a wrong
/// point target that the enumeration must catch.
struct counting_ensemble {
  cospec::weighted_ensemble inner;
  std::size_t* rows_written;
  bool broken = false;

  [[nodiscard]] std::size_t model_count() const { return inner.model_count(); }
  float target_weights(cospec::logit_rows logits, float temperature, std::span<float> out) {
    ++*rows_written;
    return inner.target_weights(logits, temperature, out);
  }
  cospec::score_domain greedy_scores(cospec::logit_rows logits, std::span<float> out) {
    return inner.greedy_scores(logits, out);
  }
  void proposal_distribution(std::size_t model, std::span<const float> logits, float temperature,
                             std::span<float> out) const {
    inner.proposal_distribution(model, logits, temperature, out);
  }
  std::optional<double> target_probability(cospec::logit_rows logits, float temperature, cospec::token_id x,
                                           std::span<const double> known) {
    if (broken)
      for (double k : known)
        if (!std::isnan(k)) return k;
    return inner.target_probability(logits, temperature, x, known);
  }
};
static_assert(cospec::combiner_with_point_target<counting_ensemble>);

}  // namespace

TEST_CASE("alternating speculation samples exactly the weighted ensemble's sequence distribution",
          "[decoder][exactness]") {
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  check_exact("WE n=2 gammas (1,1)", 2, ensemble(2), cospec::weighted_ensemble::uniform(2), cospec::alternating({1, 1}), plain);
  check_exact("WE n=2 gammas (3,1)", 2, ensemble(2), cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}), plain);
  check_exact("WE n=2 gammas (5,1)", 2, ensemble(2), cospec::weighted_ensemble::uniform(2), cospec::alternating({5, 1}), plain);
  check_exact("WE n=3 gammas (4,2,1)", 3, ensemble(3), cospec::weighted_ensemble::uniform(3), cospec::alternating({4, 2, 1}), plain);
  check_exact("WE n=4 gammas (2,2,2,1)", 4, ensemble(4), cospec::weighted_ensemble::uniform(4),
              cospec::alternating({2, 2, 2, 1}), plain);
  const reference_combination skewed{reference_combination::kind::weighted_ensemble, {0.2, 0.8}, std::nullopt};
  check_exact("WE n=2 weights (0.2,0.8) gammas (3,1)", 2, skewed, cospec::weighted_ensemble({0.2f, 0.8f}),
              cospec::alternating({3, 1}), plain);
}

TEST_CASE("alternating speculation samples exactly the contrastive and logit-arithmetic distributions",
          "[decoder][exactness]") {
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  const reference_combination contrastive{reference_combination::kind::logit_arithmetic, {1.0, -0.1}, std::nullopt};
  check_exact("CD mu=0.1 gammas (3,1)", 2, contrastive, cospec::contrastive_decoding(0.1f), cospec::alternating({3, 1}), plain);
  check_exact("CD mu=0.1 gammas (1,1)", 2, contrastive, cospec::contrastive_decoding(0.1f), cospec::alternating({1, 1}), plain);
  const reference_combination plausible{reference_combination::kind::logit_arithmetic, {1.0, -0.5}, 0.3};
  check_exact("CD mu=0.5 alpha=0.3 gammas (3,1)", 2, plausible, cospec::contrastive_decoding(0.5f, 0.3f),
              cospec::alternating({3, 1}), plain);
  const reference_combination experts{reference_combination::kind::logit_arithmetic, {0.5, 0.3, 0.2}, std::nullopt};
  check_exact("product of experts n=3 gammas (2,2,1)", 3, experts, cospec::logit_arithmetic({0.5f, 0.3f, 0.2f}),
              cospec::alternating({2, 2, 1}), plain);
}

TEST_CASE("speculation stays exact under temperature, top-k and top-p", "[decoder][exactness]") {
  check_exact("WE n=2 gammas (3,1) top-k 3", 2, ensemble(2), cospec::weighted_ensemble::uniform(2),
              cospec::alternating({3, 1}), reference_sampling{1.0, 3, std::nullopt});
  check_exact("WE n=3 gammas (4,2,1) top-p 0.8", 3, ensemble(3), cospec::weighted_ensemble::uniform(3),
              cospec::alternating({4, 2, 1}), reference_sampling{1.0, std::nullopt, 0.8});
  const reference_combination contrastive{reference_combination::kind::logit_arithmetic, {1.0, -0.1}, std::nullopt};
  check_exact("CD gammas (5,1) T=0.7 top-k 4 top-p 0.9", 2, contrastive, cospec::contrastive_decoding(0.1f),
              cospec::alternating({5, 1}), reference_sampling{0.7, 4, 0.9});
}

TEST_CASE("fixed-proposer speculation samples exactly the target distribution", "[decoder][exactness]") {
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  check_exact("SD WE n=2 gamma 3", 2, ensemble(2), cospec::weighted_ensemble::uniform(2), cospec::fixed_proposer(0, 3), plain);
  const reference_combination contrastive{reference_combination::kind::logit_arithmetic, {1.0, -0.1}, std::nullopt};
  check_exact("SD CD gamma 4 proposer 1", 2, contrastive, cospec::contrastive_decoding(0.1f), cospec::fixed_proposer(1, 4), plain);
  check_exact("SD WE n=3 gamma 2 top-p 0.8", 3, ensemble(3), cospec::weighted_ensemble::uniform(3),
              cospec::fixed_proposer(0, 2), reference_sampling{1.0, std::nullopt, 0.8});
}

TEST_CASE("adaptive speculation samples exactly the target distribution", "[decoder][exactness][adaptive]") {
  // The adaptive policy learns from every run of the same decoder, so its schedule changes
  // across the trials: exactness must not depend on it.
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  cospec::adaptive_options cheap_first;
  cheap_first.pass_costs = {1.0, 8.0};
  check_exact("adaptive WE n=2", 2, ensemble(2), cospec::weighted_ensemble::uniform(2), cospec::adaptive(2, cheap_first),
              plain);
  const reference_combination contrastive{reference_combination::kind::logit_arithmetic, {1.0, -0.1}, std::nullopt};
  cospec::adaptive_options measured;
  measured.measure_pass_costs = true;
  check_exact("adaptive CD, timings measured", 2, contrastive, cospec::contrastive_decoding(0.1f),
              cospec::adaptive(2, measured), plain);
  check_exact("adaptive CD, equal costs", 2, contrastive, cospec::contrastive_decoding(0.1f), cospec::adaptive(2), plain);
  cospec::adaptive_options three;
  three.pass_costs = {1.0, 3.0, 9.0};
  check_exact("adaptive WE n=3 top-p 0.8", 3, ensemble(3), cospec::weighted_ensemble::uniform(3), cospec::adaptive(3, three),
              reference_sampling{1.0, std::nullopt, 0.8});
}

TEST_CASE("standard decoding samples the reference distribution", "[decoder][exactness]") {
  check_exact("standard WE n=2", 2, ensemble(2), cospec::weighted_ensemble::uniform(2), cospec::standard{},
              reference_sampling{1.0, std::nullopt, std::nullopt});
}

TEST_CASE("the enumeration test rejects a distribution that is not the target", "[decoder][exactness][teeth]") {
  // The same frequencies, tested against the ensemble with other weights: the test must fail,
  // or it could not tell a wrong decoder from a right one.
  const auto configs = model_set(2);
  const std::vector<cospec::token_id> prompt{1, 3};
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  const reference_combination wrong{reference_combination::kind::weighted_ensemble, {0.65, 0.35}, std::nullopt};
  const auto expected = cospec::testing::sequence_probabilities(configs, wrong, plain, prompt, length);
  const auto observed = frequencies(configs, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}),
                                    to_settings(plain), prompt);
  const auto test = cospec::testing::chi_square(expected, observed, trials);
  CHECK(test.statistic > cospec::testing::chi_square_critical(test.degrees_of_freedom, significance_z));
}

TEST_CASE("plain sampling writes a target row only for direct samples and rejections, and stays exact",
          "[decoder][exactness][point]") {
  // Verification at the proposed token alone (docs/engine.md, "What a token costs"): the
  // combiner's target_weights runs only where the whole row is needed.
  const auto configs = model_set(2);
  std::vector<synthetic_model> models;
  for (const auto& config : configs) models.emplace_back(config);
  std::vector<synthetic_model*> pointers{&models[0], &models[1]};
  std::size_t rows_written = 0;
  cospec::decoder decoder(pointers, counting_ensemble{cospec::weighted_ensemble::uniform(2), &rows_written},
                          cospec::alternating({3, 1}), cospec::sampling_settings{});
  std::size_t needed = 0;
  std::size_t proposals_verified = 0;
  cospec::generation_limits limits;
  limits.max_new_tokens = 12;
  const std::vector<cospec::token_id> prompt{1, 3};
  for (std::uint64_t trial = 0; trial < 200; ++trial) {
    limits.seed = trial;
    const cospec::generation_result result = decoder.generate(prompt, limits);
    needed += result.statistics.direct_samples + result.statistics.rejections;
    for (const auto& proposer : result.statistics.proposers) proposals_verified += proposer.proposed;
  }
  CHECK(rows_written == needed);
  CHECK(proposals_verified > 2 * needed);  // most verifications wrote no row
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  std::size_t ignored = 0;
  check_exact("WE n=2 gammas (3,1), counted", 2, ensemble(2), counting_ensemble{cospec::weighted_ensemble::uniform(2), &ignored},
              cospec::alternating({3, 1}), plain);
}

TEST_CASE("the enumeration test rejects a wrong target at one token", "[decoder][exactness][teeth][point]") {
  const auto configs = model_set(2);
  const std::vector<cospec::token_id> prompt{1, 3};
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  const auto expected = cospec::testing::sequence_probabilities(configs, ensemble(2), plain, prompt, length);
  std::size_t ignored = 0;
  const auto observed = frequencies(configs, counting_ensemble{cospec::weighted_ensemble::uniform(2), &ignored, true},
                                    cospec::alternating({3, 1}), to_settings(plain), prompt);
  const auto test = cospec::testing::chi_square(expected, observed, trials);
  CHECK(test.statistic > cospec::testing::chi_square_critical(test.degrees_of_freedom, significance_z));
}

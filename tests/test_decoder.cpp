// The engine's behaviour: greedy token identity across methods, the adapter protocol,
// statistics and costs, stop conditions, failures and recovery.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/synthetic_model.hpp"
#include "support/checking_adapter.hpp"
#include "support/reference_decoding.hpp"
#include "support/model_sets.hpp"

namespace {

using cospec::testing::pointers;
using Catch::Matchers::Contains;

using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;
using cospec::testing::checking_adapter;

static_assert(cospec::model_adapter<synthetic_model>);
static_assert(cospec::model_adapter<checking_adapter>);
static_assert(cospec::model_adapter<cospec::any_model>);
static_assert(cospec::speculator<cospec::standard>);
static_assert(cospec::speculator<cospec::fixed_proposer>);
static_assert(cospec::speculator<cospec::alternating>);

// Negative archetypes: each lacks one requirement.
struct adapter_without_truncate {
  std::size_t vocabulary_size() const { return 1; }
  std::size_t context_length() const { return 0; }
  void feed(std::span<const token_id>, cospec::logit_outputs) {}
};
struct adapter_with_wrong_feed {
  std::size_t vocabulary_size() const { return 1; }
  std::size_t context_length() const { return 0; }
  void feed(std::span<const token_id>, std::span<float>) {}
  void truncate(std::size_t) {}
};
struct speculator_without_check {
  cospec::invocation next(const cospec::schedule_view&) { return {0, 0}; }
};
static_assert(!cospec::model_adapter<adapter_without_truncate>);
static_assert(!cospec::model_adapter<adapter_with_wrong_feed>);
static_assert(!cospec::speculator<speculator_without_check>);

template <class Model, class Combiner, class Speculator>
std::vector<token_id> run(std::vector<Model*> models, Combiner combiner, Speculator speculator,
                          cospec::sampling_settings settings, const std::vector<token_id>& prompt, std::size_t tokens,
                          cospec::generation_statistics* statistics = nullptr) {
  cospec::decoder decoder(std::move(models), std::move(combiner), std::move(speculator), std::move(settings));
  cospec::generation_limits limits;
  limits.max_new_tokens = tokens;
  auto result = decoder.generate(prompt, limits);
  if (statistics) *statistics = result.statistics;
  return result.tokens;
}

/// A random model set, combiner and speculator; every method must give Standard's tokens.
struct greedy_case {
  std::vector<synthetic_model_config> configs;
  std::vector<token_id> prompt;
};

greedy_case random_case(std::mt19937_64& random) {
  std::uniform_int_distribution<std::size_t> vocab(5, 40), count(2, 4), window(1, 3);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  greedy_case c;
  const std::size_t n = count(random), v = vocab(random), w = window(random);
  const std::uint64_t shared = random();
  for (std::size_t i = 0; i < n; ++i)
    c.configs.push_back({v, w, shared, random(), unit(random), 0.5 + 3.0 * unit(random)});
  std::uniform_int_distribution<token_id> token(0, static_cast<token_id>(v - 1));
  for (std::size_t i = 0, len = 1 + random() % 4; i < len; ++i) c.prompt.push_back(token(random));
  return c;
}

template <class Combiner>
void check_greedy_identity(std::mt19937_64& random, const greedy_case& c, const Combiner& combiner) {
  const std::size_t n = c.configs.size();
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  constexpr std::size_t tokens = 40;
  auto make = [&] {
    std::vector<synthetic_model> models;
    for (const auto& config : c.configs) models.emplace_back(config);
    return models;
  };
  auto m0 = make();
  const auto expected = run(pointers(m0), combiner, cospec::standard{}, greedy, c.prompt, tokens);
  REQUIRE(expected.size() == tokens);
  std::uniform_int_distribution<std::size_t> gamma(1, 5);
  std::vector<std::size_t> gammas;
  for (std::size_t i = 0; i < n; ++i) gammas.push_back(gamma(random));
  auto m1 = make();
  const auto alternating = run(pointers(m1), combiner, cospec::alternating(gammas), greedy, c.prompt, tokens);
  auto m2 = make();
  const auto fixed = run(pointers(m2), combiner, cospec::fixed_proposer(random() % n, gamma(random)), greedy, c.prompt, tokens);
  CHECK(alternating == expected);
  CHECK(fixed == expected);
}

}  // namespace

TEST_CASE("greedy alternating and fixed-proposer output is token-identical to standard decoding",
          "[decoder][greedy]") {
  std::mt19937_64 random(20250201);
  std::uniform_real_distribution<float> weight(-1.0f, 1.0f), positive(0.05f, 1.0f);
  for (int trial = 0; trial < 300; ++trial) {
    const auto c = random_case(random);
    const std::size_t n = c.configs.size();
    INFO("trial " << trial << ", " << n << " models, vocabulary " << c.configs[0].vocabulary_size);
    switch (trial % 4) {
      case 0: {
        std::vector<float> weights;
        for (std::size_t i = 0; i < n; ++i) weights.push_back(positive(random));
        check_greedy_identity(random, c, cospec::weighted_ensemble(weights));
        break;
      }
      case 1: {
        std::vector<float> weights{1.0f};
        for (std::size_t i = 1; i < n; ++i) weights.push_back(weight(random));
        check_greedy_identity(random, c, cospec::logit_arithmetic(weights));
        break;
      }
      case 2: {
        std::vector<float> weights{1.0f, -0.1f};
        weights.resize(n, 0.25f);
        check_greedy_identity(random, c, cospec::logit_arithmetic(weights, cospec::plausibility_constraint{0, 0.1f}));
        break;
      }
      default: {
        auto maximum = [](cospec::logit_rows rows, std::span<float> out) {
          for (std::size_t j = 0; j < out.size(); ++j) {
            out[j] = rows[0][j];
            for (const auto& row : rows) out[j] = std::max(out[j], row[j]);
          }
        };
        check_greedy_identity(random, c, cospec::callable_combiner(n, maximum));
      }
    }
  }
}

TEST_CASE("greedy standard decoding follows the argmax of the reference target", "[decoder][greedy]") {
  std::mt19937_64 random(7);
  int compared = 0;
  for (int trial = 0; trial < 40; ++trial) {
    auto c = random_case(random);
    std::vector<synthetic_model> models;
    for (const auto& config : c.configs) models.emplace_back(config);
    cospec::sampling_settings greedy;
    greedy.temperature = 0.0f;
    const auto tokens = run(pointers(models), cospec::weighted_ensemble::uniform(c.configs.size()), cospec::alternating(
                                std::vector<std::size_t>(c.configs.size(), 2)), greedy, c.prompt, 12);
    const cospec::testing::reference_combination we{cospec::testing::reference_combination::kind::weighted_ensemble,
                                                    std::vector<double>(c.configs.size(), 1.0), std::nullopt};
    std::vector<token_id> context = c.prompt;
    for (token_id token : tokens) {
      auto target = cospec::testing::reference_target(c.configs, we, {1.0, std::nullopt, std::nullopt}, context);
      std::vector<double> sorted = target;
      std::sort(sorted.rbegin(), sorted.rend());
      if (sorted[0] - sorted[1] < 1e-4) break;  // a near tie float and double may break differently
      CHECK(token == static_cast<token_id>(std::max_element(target.begin(), target.end()) - target.begin()));
      context.push_back(token);
      ++compared;
    }
  }
  CHECK(compared > 200);
}

TEST_CASE("every adapter call keeps the protocol and no model keeps an uncommitted token", "[decoder][protocol]") {
  for (std::uint64_t seed = 0; seed < 30; ++seed) {
    std::vector<checking_adapter> adapters;
    for (std::uint64_t i = 0; i < 3; ++i) adapters.emplace_back(synthetic_model_config{8, 2, 5, 50 + i, 0.5, 2.0});
    std::vector<checking_adapter*> models;
    for (auto& a : adapters) models.push_back(&a);
    cospec::sampling_settings settings;
    settings.seed = seed;
    cospec::decoder decoder(models, cospec::weighted_ensemble::uniform(3), cospec::alternating({4, 2, 1}), settings);
    const std::vector<token_id> prompt{1, 2, 3};
    cospec::generation_limits limits;
    limits.max_new_tokens = 25;
    const auto result = decoder.generate(prompt, limits);
    std::vector<token_id> text = prompt;
    text.insert(text.end(), result.tokens.begin(), result.tokens.end());
    for (auto& a : adapters) {
      INFO("seed " << seed);
      CHECK(a.violations.empty());
      CHECK(a.context_is_prefix_of(text));
      for (const auto& context : a.after_truncate)
        CHECK(std::equal(context.begin(), context.end(), text.begin()));
    }
  }
}

TEST_CASE("each model processes the prompt once, as one batch, at its first invocation", "[decoder][protocol]") {
  std::vector<checking_adapter> adapters;
  for (std::uint64_t i = 0; i < 2; ++i) adapters.emplace_back(synthetic_model_config{8, 2, 5, 50 + i, 0.5, 2.0});
  std::vector<checking_adapter*> models{&adapters[0], &adapters[1]};
  cospec::decoder decoder(models, cospec::weighted_ensemble::uniform(2), cospec::standard{});
  const std::vector<token_id> prompt{1, 2, 3, 4, 5, 6, 7};
  cospec::generation_limits limits;
  limits.max_new_tokens = 10;
  const auto result = decoder.generate(prompt, limits);
  for (std::size_t k = 0; k < 2; ++k) {
    const auto& m = result.statistics.models[k];
    // Standard: the prompt in one pass, then one token per pass; the last token is never fed.
    CHECK(m.forward_passes == 10);
    CHECK(m.tokens_fed == prompt.size() + 9);
    CHECK(m.logit_rows == 10);
  }
  CHECK(result.statistics.forward_passes() == 20);
  CHECK(result.statistics.direct_samples == 10);
}

TEST_CASE("a second generate reuses the shared prefix and gives the same tokens as a fresh decoder",
          "[decoder][protocol]") {
  auto configs = std::vector<synthetic_model_config>{{12, 2, 3, 4, 0.7, 2.0}, {12, 2, 3, 5, 0.7, 2.0}};
  std::vector<checking_adapter> reused{checking_adapter(configs[0]), checking_adapter(configs[1])};
  std::vector<checking_adapter*> models{&reused[0], &reused[1]};
  cospec::decoder decoder(models, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}));
  cospec::generation_limits limits;
  limits.max_new_tokens = 15;
  limits.seed = 99;
  auto first = decoder.generate(std::vector<token_id>{1, 2, 3}, limits);
  std::vector<token_id> follow_up{1, 2, 3};
  follow_up.insert(follow_up.end(), first.tokens.begin(), first.tokens.end());
  follow_up.push_back(4);
  const auto second = decoder.generate(follow_up, limits);
  std::vector<checking_adapter> fresh{checking_adapter(configs[0]), checking_adapter(configs[1])};
  std::vector<checking_adapter*> fresh_models{&fresh[0], &fresh[1]};
  cospec::decoder fresh_decoder(fresh_models, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}));
  const auto expected = fresh_decoder.generate(follow_up, limits);
  CHECK(second.tokens == expected.tokens);
  CHECK(second.statistics.models[0].tokens_fed < expected.statistics.models[0].tokens_fed);
  for (auto& a : reused) CHECK(a.violations.empty());
}

TEST_CASE("stop tokens, stop sequences and the streaming callback end generation", "[decoder][limits]") {
  std::vector<synthetic_model> models{synthetic_model({6, 2, 1, 2, 0.5, 1.0}), synthetic_model({6, 2, 1, 3, 0.5, 1.0})};
  cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}));
  const std::vector<token_id> prompt{0};
  cospec::generation_limits limits;
  limits.max_new_tokens = 50;
  limits.seed = 3;
  const auto reference = decoder.generate(prompt, limits);
  REQUIRE(reference.tokens.size() == 50);
  CHECK(reference.reason == cospec::finish_reason::max_new_tokens);

  SECTION("a stop token ends generation after it is emitted") {
    const token_id stop = reference.tokens[7];
    const auto first = static_cast<std::size_t>(std::find(reference.tokens.begin(), reference.tokens.end(), stop) -
                                                reference.tokens.begin());
    limits.stop_tokens = {stop};
    const auto result = decoder.generate(prompt, limits);
    CHECK(result.reason == cospec::finish_reason::stop_token);
    CHECK(result.tokens == std::vector<token_id>(reference.tokens.begin(), reference.tokens.begin() + first + 1));
  }
  SECTION("a stop sequence ends generation once the output ends with it") {
    limits.stop_sequences = {{reference.tokens[10], reference.tokens[11], reference.tokens[12]}};
    const auto result = decoder.generate(prompt, limits);
    CHECK(result.reason == cospec::finish_reason::stop_sequence);
    REQUIRE(result.tokens.size() >= 3);
    CHECK(result.tokens.size() <= 13);
    CHECK(std::equal(limits.stop_sequences[0].begin(), limits.stop_sequences[0].end(), result.tokens.end() - 3));
  }
  SECTION("the callback sees every token in order and can stop") {
    std::vector<token_id> streamed;
    limits.on_token = [&](token_id token) {
      streamed.push_back(token);
      return streamed.size() < 20;
    };
    const auto result = decoder.generate(prompt, limits);
    CHECK(result.reason == cospec::finish_reason::stopped_by_callback);
    CHECK(streamed == result.tokens);
    CHECK(result.tokens == std::vector<token_id>(reference.tokens.begin(), reference.tokens.begin() + 20));
  }
  SECTION("zero new tokens returns at once") {
    limits.max_new_tokens = 0;
    CHECK(decoder.generate(prompt, limits).tokens.empty());
  }
}

TEST_CASE("the same seed gives the same tokens", "[decoder][limits]") {
  std::vector<synthetic_model> models{synthetic_model({30, 2, 1, 2, 0.5, 1.0}), synthetic_model({30, 2, 1, 3, 0.5, 1.0})};
  cospec::sampling_settings settings;
  settings.seed = 1234;
  cospec::decoder decoder(pointers(models), cospec::contrastive_decoding(0.1f), cospec::alternating({4, 1}), settings);
  cospec::generation_limits limits;
  limits.max_new_tokens = 40;
  const auto a = decoder.generate(std::vector<token_id>{5}, limits);
  const auto b = decoder.generate(std::vector<token_id>{5}, limits);
  limits.seed = 1235;
  const auto c = decoder.generate(std::vector<token_id>{5}, limits);
  CHECK(a.tokens == b.tokens);
  CHECK(a.tokens != c.tokens);
}

TEST_CASE("statistics count proposals, acceptances and adapter time", "[decoder][statistics]") {
  std::vector<synthetic_model> models{synthetic_model({20, 2, 1, 2, 0.9, 2.0}), synthetic_model({20, 2, 1, 3, 0.9, 2.0})};
  cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({4, 1}));
  cospec::generation_limits limits;
  limits.max_new_tokens = 200;
  const auto result = decoder.generate(std::vector<token_id>{1}, limits);
  const auto& s = result.statistics;
  CHECK(s.tokens == 200);
  std::size_t accepted = 0;
  for (const auto& p : s.proposers) {
    std::size_t by_position = 0;
    for (std::size_t a : p.accepted_at) by_position += a;
    CHECK(by_position == p.accepted);
    CHECK(p.accepted <= p.proposed);
    accepted += p.accepted;
  }
  // Every token is an accepted proposal, a replacement after a rejection, or a direct sample.
  CHECK(accepted + s.rejections + s.direct_samples == s.tokens);
  CHECK(s.proposers[0].proposed_at.size() <= 4);
  CHECK(s.proposers[1].proposed_at.size() == 1);
  CHECK(s.proposers[0].acceptance_rate() > 0.5);  // WE with weights 1/2 accepts with probability >= 1/2
  CHECK(s.seconds_in_adapters <= s.seconds_total);
  CHECK(s.tokens_per_invocation() > 1.0);
}

TEST_CASE("under the cost clock alternating beats fixed-proposer beats standard when models agree",
          "[decoder][cost]") {
  const std::vector<synthetic_model_config> configs{{50, 2, 1, 2, 0.9, 3.0}, {50, 2, 1, 3, 0.9, 3.0}};
  cospec::decoder_options options;
  options.pass_costs = {{1.0, 0.0}, {8.0, 0.0}};  // a 1:8 pair, as the paper's CD pair
  auto cost_per_token = [&](auto speculator) {
    std::vector<synthetic_model> models{synthetic_model(configs[0]), synthetic_model(configs[1])};
    cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), std::move(speculator),
                            cospec::sampling_settings{}, options);
    cospec::generation_limits limits;
    limits.max_new_tokens = 400;
    const auto result = decoder.generate(std::vector<token_id>{1}, limits);
    return result.statistics.virtual_time / static_cast<double>(result.tokens.size());
  };
  const double standard = cost_per_token(cospec::standard{});
  const double fixed = cost_per_token(cospec::fixed_proposer(0, 3));
  const double alternating = cost_per_token(cospec::alternating({3, 1}));
  INFO("virtual time per token: standard " << standard << ", fixed proposer " << fixed << ", alternating "
                                           << alternating);
  CHECK(standard == Approx(9.0));  // both models, every token
  CHECK(fixed < standard);
  CHECK(alternating < fixed);
}

TEST_CASE("models whose vocabularies differ by padding decode over the shared ids", "[decoder][configuration]") {
  std::vector<synthetic_model> models{synthetic_model({40, 2, 1, 2, 0.5, 1.0}), synthetic_model({44, 2, 1, 3, 0.5, 1.0})};
  cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 1}));
  CHECK(decoder.vocabulary_size() == 40);
  cospec::generation_limits limits;
  limits.max_new_tokens = 100;
  const auto result = decoder.generate(std::vector<token_id>{1}, limits);
  for (token_id t : result.tokens) CHECK(t < 40);
  cospec::decoder_options strict;
  strict.vocabulary_padding = 2;
  CHECK_THROWS_AS(cospec::decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 1}),
                                  cospec::sampling_settings{}, strict),
                  cospec::invalid_configuration);
}

TEST_CASE("configurations that cannot work are rejected at construction", "[decoder][configuration]") {
  std::vector<synthetic_model> models{synthetic_model({10, 2, 1, 2, 0.5, 1.0}), synthetic_model({10, 2, 1, 3, 0.5, 1.0})};
  CHECK_THROWS_WITH(cospec::decoder(pointers(models), cospec::weighted_ensemble::uniform(3), cospec::standard{}),
                    Contains("combines 3 models"));
  CHECK_THROWS_WITH(cospec::decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2})),
                    Contains("1 gammas for 2 models"));
  CHECK_THROWS_WITH(cospec::decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::fixed_proposer(2, 3)),
                    Contains("proposer 2"));
  CHECK_THROWS_AS(cospec::alternating({2, 1}, {}, 1.5f), cospec::invalid_configuration);
  CHECK_THROWS_AS(cospec::fixed_proposer(0, 0), cospec::invalid_configuration);
  cospec::sampling_settings bad;
  bad.top_p = 0.0f;
  CHECK_THROWS_WITH(cospec::decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::standard{}, bad),
                    Contains("top_p"));
  cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::standard{});
  CHECK_THROWS_WITH(decoder.generate(std::vector<token_id>{}), Contains("prompt is empty"));
  CHECK_THROWS_WITH(decoder.generate(std::vector<token_id>{10}), Contains("outside the vocabulary"));
}

TEST_CASE("the logits processor sees each position's own prefix, speculated positions included",
          "[decoder][processor]") {
  // A processor that bans every token already in the prefix: output depends on the right
  // history at every position, so any prefix mix-up breaks greedy identity with standard.
  auto ban_repeats = [](const cospec::processor_context& context, std::span<float> logits) {
    for (token_id t : context.prefix) logits[static_cast<std::size_t>(t)] = -std::numeric_limits<float>::infinity();
  };
  const std::vector<synthetic_model_config> configs{{60, 2, 1, 2, 0.8, 2.0}, {60, 2, 1, 3, 0.8, 2.0}};
  cospec::decoder_options options;
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  greedy.processor = ban_repeats;
  auto generate = [&](auto speculator, cospec::sampling_settings settings) {
    std::vector<synthetic_model> models{synthetic_model(configs[0]), synthetic_model(configs[1])};
    cospec::decoder decoder(pointers(models), cospec::contrastive_decoding(0.1f), std::move(speculator), settings, options);
    cospec::generation_limits limits;
    limits.max_new_tokens = 40;
    return decoder.generate(std::vector<token_id>{1, 2}, limits).tokens;
  };
  const auto expected = generate(cospec::standard{}, greedy);
  CHECK(generate(cospec::alternating({4, 1}), greedy) == expected);
  CHECK(generate(cospec::fixed_proposer(1, 3), greedy) == expected);
  std::vector<token_id> text{1, 2};
  text.insert(text.end(), expected.begin(), expected.end());
  std::sort(text.begin(), text.end());
  CHECK(std::adjacent_find(text.begin(), text.end()) == text.end());  // no repeats at all
  cospec::sampling_settings sampling;
  sampling.seed = 8;
  sampling.processor = ban_repeats;
  auto sampled = generate(cospec::alternating({4, 1}), sampling);
  sampled.insert(sampled.end(), {1, 2});
  std::sort(sampled.begin(), sampled.end());
  CHECK(std::adjacent_find(sampled.begin(), sampled.end()) == sampled.end());
}

TEST_CASE("type-erased models decode exactly as concrete ones", "[decoder][any_model]") {
  const std::vector<synthetic_model_config> configs{{25, 2, 1, 2, 0.6, 2.0}, {25, 2, 1, 3, 0.6, 2.0}};
  std::vector<synthetic_model> concrete{synthetic_model(configs[0]), synthetic_model(configs[1])};
  cospec::sampling_settings settings;
  settings.seed = 77;
  const auto expected =
      run(pointers(concrete), cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}), settings, {1, 2}, 30);
  checking_adapter checked(configs[1]);
  std::vector<cospec::any_model> erased;
  erased.emplace_back(synthetic_model(configs[0]));         // owned
  erased.emplace_back(cospec::ref(checked));                // referred to
  std::vector<cospec::any_model*> models{&erased[0], &erased[1]};
  CHECK(run(models, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}), settings, {1, 2}, 30) == expected);
  CHECK(checked.violations.empty());
}

TEST_CASE("an adapter that throws mid-generation propagates and leaves the decoder exact", "[decoder][failure]") {
  const std::vector<synthetic_model_config> configs{{16, 2, 1, 2, 0.7, 2.0}, {16, 2, 1, 3, 0.7, 2.0}};
  auto expected_tokens = [&](const std::vector<token_id>& prompt, const cospec::generation_limits& limits) {
    std::vector<synthetic_model> fresh{synthetic_model(configs[0]), synthetic_model(configs[1])};
    cospec::decoder decoder(pointers(fresh), cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}));
    return decoder.generate(prompt, limits).tokens;
  };
  for (int failing_call = 2; failing_call < 12; ++failing_call) {
    for (bool fail_truncate : {false, true}) {
      std::vector<checking_adapter> adapters{checking_adapter(configs[0]), checking_adapter(configs[1])};
      std::vector<checking_adapter*> models{&adapters[0], &adapters[1]};
      cospec::decoder decoder(models, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}));
      if (fail_truncate) adapters[0].fail_truncate_at = static_cast<std::size_t>(failing_call / 3 + 1);
      else adapters[1].fail_feed_at = static_cast<std::size_t>(failing_call);
      const std::vector<token_id> prompt{3, 1, 4};
      std::vector<token_id> committed = prompt;
      cospec::generation_limits limits;
      limits.max_new_tokens = 60;
      limits.seed = 5;
      limits.on_token = [&](token_id t) {
        committed.push_back(t);
        return true;
      };
      bool threw = false;
      try {
        decoder.generate(prompt, limits);
      } catch (const cospec::backend_failure& failure) {
        threw = true;
        CHECK_THROWS_WITH(std::rethrow_if_nested(failure), Contains("injected"));
      }
      INFO("failing call " << failing_call << (fail_truncate ? " (truncate)" : " (feed)"));
      if (!threw) continue;  // the run ended before the failing call
      for (auto& a : adapters) CHECK(a.context_is_prefix_of(committed));
      adapters[0].fail_truncate_at = adapters[1].fail_feed_at = 0;
      limits.on_token = nullptr;
      const std::vector<token_id> again{2, 7};
      CHECK(decoder.generate(again, limits).tokens == expected_tokens(again, limits));
      for (auto& a : adapters) CHECK(a.violations.empty());
    }
  }
}

TEST_CASE("invalid logits from a model raise invalid_logits naming model and position", "[decoder][failure]") {
  struct nan_after_model : synthetic_model {
    using synthetic_model::synthetic_model;
    std::size_t poison_from = 1000;
    void feed(std::span<const token_id> tokens, cospec::logit_outputs rows) {
      synthetic_model::feed(tokens, rows);
      if (context_length() >= poison_from && !rows.empty()) rows.back()[3] = NAN;
    }
  };
  std::vector<nan_after_model> models{nan_after_model({10, 2, 1, 2, 0.5, 1.0}), nan_after_model({10, 2, 1, 3, 0.5, 1.0})};
  models[1].poison_from = 8;
  std::vector<nan_after_model*> pointers_{&models[0], &models[1]};
  cospec::decoder decoder(pointers_, cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 1}));
  cospec::generation_limits limits;
  limits.max_new_tokens = 20;
  std::size_t committed = 2;
  limits.on_token = [&](token_id) { return ++committed > 0; };
  CHECK_THROWS_WITH(decoder.generate(std::vector<token_id>{1, 2}, limits),
                    Contains("model 1") && Contains("NaN") && Contains("position"));
  for (auto& m : models) CHECK(m.context_length() <= committed);
  models[1].poison_from = 1000;
  CHECK(decoder.generate(std::vector<token_id>{1, 2}, limits).tokens.size() == 20);
}

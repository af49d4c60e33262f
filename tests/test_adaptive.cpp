// The adaptive speculator: exact like every schedule, and under the cost clock at least as
// fast as the best fixed proposal length, never meaningfully slower than standard decoding,
// and faster than every fixed length when the workload's predictability changes.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <chrono>
#include <limits>
#include <random>
#include <vector>

#include "models/simulated_latency.hpp"
#include "models/synthetic_model.hpp"

namespace {

using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;

static_assert(cospec::speculator<cospec::adaptive>);
static_assert(cospec::observing_speculator<cospec::adaptive>);
static_assert(cospec::timing_speculator<cospec::adaptive>);

/// Virtual time per token of one long run under the cost clock.
template <class Combiner, class Speculator>
double cost_per_token(const std::vector<synthetic_model_config>& configs, const Combiner& combiner,
                      Speculator speculator, const std::vector<cospec::pass_cost>& costs, std::size_t tokens) {
  std::vector<synthetic_model> models;
  for (const auto& c : configs) models.emplace_back(c);
  std::vector<synthetic_model*> pointers;
  for (auto& m : models) pointers.push_back(&m);
  cospec::decoder_options options;
  options.pass_costs = costs;
  cospec::sampling_settings sampling;
  sampling.seed = 3;
  cospec::decoder decoder(pointers, combiner, std::move(speculator), sampling, options);
  cospec::generation_limits limits;
  limits.max_new_tokens = tokens;
  const auto result = decoder.generate(std::vector<token_id>{1}, limits);
  return result.statistics.virtual_time / static_cast<double>(result.tokens.size());
}

struct comparison {
  double standard;
  double best_fixed;
  std::size_t best_gamma;
  double adaptive;
};

/// Standard, every fixed gamma of the cheap model (the expensive one proposes 1), adaptive.
template <class Combiner>
comparison compare(const std::vector<synthetic_model_config>& configs, const Combiner& combiner, std::size_t cheap,
                   double ratio, std::size_t tokens) {
  std::vector<cospec::pass_cost> costs(2, {ratio, 0.0});
  costs[cheap] = {1.0, 0.0};
  comparison result{};
  result.standard = cost_per_token(configs, combiner, cospec::standard{}, costs, tokens);
  result.best_fixed = std::numeric_limits<double>::infinity();
  for (std::size_t gamma : {1, 2, 3, 4, 6, 8}) {
    std::vector<std::size_t> gammas(2, 1);
    gammas[cheap] = gamma;
    const double cost = cost_per_token(configs, combiner, cospec::alternating(gammas), costs, tokens);
    if (cost < result.best_fixed) {
      result.best_fixed = cost;
      result.best_gamma = gamma;
    }
  }
  cospec::adaptive_options options;
  options.pass_costs = {costs[0].per_pass, costs[1].per_pass};
  result.adaptive = cost_per_token(configs, combiner, cospec::adaptive(2, options), costs, tokens);
  return result;
}

std::vector<synthetic_model_config> pair(double agreement, std::size_t segment_length = 0, double hard = 0.0) {
  return {{200, 2, 1, 2, agreement, 3.0, segment_length, hard}, {200, 2, 1, 3, agreement, 3.0, segment_length, hard}};
}

}  // namespace

TEST_CASE("adaptive rejects settings that cannot work", "[adaptive][configuration]") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(cospec::adaptive(0), Contains("at least one model"));
  auto with = [](auto change) {
    cospec::adaptive_options options;
    change(options);
    return options;
  };
  CHECK_THROWS_WITH(cospec::adaptive(2, with([](auto& o) { o.max_gamma = 0; })), Contains("max_gamma"));
  CHECK_THROWS_WITH(cospec::adaptive(2, with([](auto& o) { o.decay = 1.0; })), Contains("decay"));
  CHECK_THROWS_WITH(cospec::adaptive(2, with([](auto& o) { o.prior_acceptance = 1.0; })), Contains("prior_acceptance"));
  CHECK_THROWS_WITH(cospec::adaptive(2, with([](auto& o) { o.pooling = -1.0; })), Contains("pooling"));
  CHECK_THROWS_WITH(cospec::adaptive(2, with([](auto& o) { o.pass_costs = {1.0}; })),
                    Contains("1 pass costs for 2 models"));
  CHECK_THROWS_WITH(cospec::adaptive(2, with([](auto& o) { o.pass_costs = {1.0, -2.0}; })), Contains("> 0"));
  CHECK_THROWS_WITH(cospec::adaptive(2, with([](auto& o) {
                      o.pass_costs = {1.0, 2.0};
                      o.measure_pass_costs = true;
                    })),
                    Contains("given or measured, not both"));
  std::vector<synthetic_model> models{synthetic_model(pair(0.5)[0]), synthetic_model(pair(0.5)[1])};
  std::vector<synthetic_model*> pointers{&models[0], &models[1]};
  CHECK_THROWS_WITH(cospec::decoder(pointers, cospec::weighted_ensemble::uniform(2), cospec::adaptive(3)),
                    Contains("built for 3 models"));
}

TEST_CASE("adaptive lengthens proposals that are accepted and shortens those that are not", "[adaptive]") {
  cospec::adaptive_options options;
  options.pass_costs = {1.0, 8.0};
  cospec::adaptive policy(2, options);
  const std::size_t initial = policy.best_gamma(0);
  for (int i = 0; i < 200; ++i)
    for (std::size_t j = 0; j < 8; ++j) policy.observe(0, j, true);
  CHECK(policy.best_gamma(0) == 8);
  CHECK(policy.best_gamma(0) > initial);
  for (int i = 0; i < 200; ++i) policy.observe(0, 0, false);
  CHECK(policy.best_gamma(0) == 1);
  CHECK(policy.acceptance_estimate(0, 0) < 0.1);  // pooled with 4 pseudo-trials at the prior
}

TEST_CASE("adaptive learns pass costs from the adapters' timings when asked to", "[adaptive]") {
  using slow_model = cospec::examples::simulated_latency<synthetic_model>;
  const auto configs = pair(0.95);
  // The slow model is model 0, which the default's equal costs would let propose first.
  std::vector<slow_model> models{slow_model(synthetic_model(configs[0]), std::chrono::microseconds(2000)),
                                 slow_model(synthetic_model(configs[1]), std::chrono::microseconds(0))};
  std::vector<slow_model*> pointers{&models[0], &models[1]};
  cospec::adaptive_options measured;
  measured.measure_pass_costs = true;
  cospec::decoder decoder(pointers, cospec::weighted_ensemble::uniform(2), cospec::adaptive(2, measured));
  cospec::generation_limits limits;
  limits.max_new_tokens = 200;
  const auto result = decoder.generate(std::vector<token_id>{1}, limits);
  // The fast model is found to be the cheap one: it proposes long runs, the slow one only its
  // bonus tokens, so the slow model runs far less often than once per token.
  CHECK(result.statistics.proposers[1].proposed_at.size() > 2);
  CHECK(result.statistics.models[0].forward_passes < result.tokens.size() / 2);
}

TEST_CASE("by default adaptive keeps the promise that one seed, models and prompt give one output",
          "[adaptive][reproducible]") {
  // docs/engine.md, "Limits and results". Pass costs measured from wall-clock timings chose the
  // schedule, and the schedule which proposals are drawn: 2000 fresh decoders with one seed gave
  // 21 different outputs. By default the policy's costs are deterministic. Here the adapters'
  // speeds differ between runs on purpose (model 0 slow in some, model 1 in others), as a
  // loaded machine makes them differ; the tokens must not.
  using slow_model = cospec::examples::simulated_latency<synthetic_model>;
  const auto configs = pair(0.6);
  auto run = [&](std::chrono::microseconds first, std::chrono::microseconds second,
                 cospec::adaptive_options options = {}) {
    std::vector<slow_model> models{slow_model(synthetic_model(configs[0]), first),
                                   slow_model(synthetic_model(configs[1]), second)};
    std::vector<slow_model*> pointers{&models[0], &models[1]};
    cospec::sampling_settings sampling;
    sampling.seed = 7;
    cospec::decoder decoder(pointers, cospec::weighted_ensemble::uniform(2), cospec::adaptive(2, options), sampling);
    cospec::generation_limits limits;
    limits.max_new_tokens = 48;
    return decoder.generate(std::vector<token_id>{1}, limits).tokens;
  };
  using std::chrono::microseconds;
  const std::vector<token_id> expected = run(microseconds(0), microseconds(0));
  std::size_t different = 0;
  for (int i = 0; i < 300; ++i) different += run(microseconds(0), microseconds(0)) != expected;
  for (int i = 0; i < 6; ++i) {
    different += run(microseconds(400), microseconds(0)) != expected;
    different += run(microseconds(0), microseconds(400)) != expected;
  }
  CHECK(different == 0);
  // The opt-in pays the documented price: the speeds choose who proposes, hence the tokens.
  cospec::adaptive_options measured;
  measured.measure_pass_costs = true;
  CHECK(run(microseconds(400), microseconds(0), measured) != run(microseconds(0), microseconds(400), measured));
}

TEST_CASE("adaptive fits measured pass costs as a per-pass plus a per-token part", "[adaptive]") {
  // Timings of an engine whose pass costs 10 + 2 t (model 0) and 40 + 12 t (model 1) for t
  // tokens, with the pass sizes a CoS schedule produces.
  auto feed = [](cospec::adaptive& policy, double per_token) {
    for (int round = 0; round < 60; ++round)
      for (std::size_t t : {1, 2, 3, 5}) {
        policy.observe_pass(0, t, 10.0 + 2.0 * static_cast<double>(t));
        policy.observe_pass(1, t, 40.0 + per_token * static_cast<double>(t));
      }
  };
  cospec::adaptive_options measured;
  measured.measure_pass_costs = true;
  cospec::adaptive steep(2, measured);
  feed(steep, 12.0);
  CHECK(steep.pass_cost_estimate(0, 1) == Approx(12.0).epsilon(1e-9));
  CHECK(steep.pass_cost_estimate(0, 4) == Approx(18.0).epsilon(1e-9));
  CHECK(steep.pass_cost_estimate(1, 9) == Approx(148.0).epsilon(1e-9));
  // Not measurable yet, or never negative: the slope stays in [0, mean cost per token].
  cospec::adaptive fresh(2, measured);
  CHECK(fresh.pass_cost_estimate(1, 5) == 1.0);
  cospec::adaptive shrinking(2, measured);
  for (int i = 0; i < 50; ++i)
    for (std::size_t t : {1, 4}) shrinking.observe_pass(0, t, 20.0 - static_cast<double>(t));
  CHECK(shrinking.pass_cost_estimate(0, 1) == shrinking.pass_cost_estimate(0, 4));

  // With the same acceptance, a verifier whose passes grow with their tokens gets shorter
  // proposals than one whose passes do not.
  cospec::adaptive flat(2, measured);
  feed(flat, 0.0);
  for (auto* policy : {&steep, &flat})
    for (int i = 0; i < 200; ++i)
      for (std::size_t j = 0; j < 8; ++j) policy->observe(0, j, i % 4 != 0);
  CHECK(steep.best_gamma(0) < flat.best_gamma(0));
  // Given costs are per pass and ignore timings; so do the default's equal costs.
  cospec::adaptive_options given;
  given.pass_costs = {1.0, 3.0};
  cospec::adaptive fixed(2, given);
  fixed.observe_pass(1, 4, 100.0);
  CHECK(fixed.pass_cost_estimate(1, 4) == 3.0);
  cospec::adaptive by_default(2);
  feed(by_default, 12.0);
  CHECK(by_default.pass_cost_estimate(0, 1) == 1.0);
  CHECK(by_default.pass_cost_estimate(1, 9) == 1.0);
}

TEST_CASE("adaptive only scores when measured costs make every proposal a loss, and proposes again when they pay",
          "[adaptive]") {
  cospec::adaptive_options measured;
  measured.measure_pass_costs = true;
  cospec::adaptive policy(2, measured);
  for (int i = 0; i < 200; ++i)
    for (std::size_t j = 0; j < 8; ++j) policy.observe(0, j, i % 3 != 0);  // acceptance 2/3
  // Passes whose cost is all per token (a compute-bound batch): one proposal makes the
  // verifier feed two tokens for an expected 1.67, so standard decoding's round is cheaper.
  const auto observe = [&](double per_pass, double per_token) {
    for (int round = 0; round < 80; ++round)
      for (std::size_t t : {1, 2, 3})
        for (std::size_t k = 0; k < 2; ++k)
          policy.observe_pass(k, t, per_pass + per_token * static_cast<double>(t));
  };
  observe(0.0, 5.0);
  CHECK(policy.best_gamma(0) == 0);
  CHECK(policy.best_gamma(1) == 0);
  // The same engine alone, where a pass's fixed cost dominates: proposals pay again.
  observe(20.0, 1.0);
  CHECK(policy.best_gamma(0) >= 1);
  // Given costs are per pass: never 0, whatever the acceptance.
  cospec::adaptive_options given;
  given.pass_costs = {1.0, 3.0};
  cospec::adaptive fixed(2, given);
  for (int i = 0; i < 200; ++i) fixed.observe(0, 0, false);
  CHECK(fixed.best_gamma(0) == 1);
}

TEST_CASE("advised by a batch, adaptive leaves whether to speculate to the batch", "[adaptive][gate]") {
  // Costs that make every proposal a loss for one request (as above): alone, the policy only
  // scores; advised to speculate, it proposes at least one token (the batch decides whether
  // speculation pays, which a request alone cannot see); advised to score only, it scores.
  cospec::adaptive_options measured;
  measured.measure_pass_costs = true;
  cospec::adaptive policy(2, measured);
  for (int i = 0; i < 200; ++i)
    for (std::size_t j = 0; j < 8; ++j) policy.observe(0, j, i % 3 != 0);
  for (int round = 0; round < 80; ++round)
    for (std::size_t t : {1, 2, 3})
      for (std::size_t k = 0; k < 2; ++k) policy.observe_pass(k, t, 5.0 * static_cast<double>(t));
  REQUIRE(policy.best_gamma(0) == 0);
  // Nothing scored yet at the frontier: the next invocation is the first model's.
  const std::vector<unsigned char> scored{0, 0};
  const std::vector<std::size_t> proposers;
  const cospec::schedule_view view(2, 0, scored, proposers);
  CHECK(policy.next(view).proposals == 0);
  policy.advise(cospec::batch_advice::speculate);
  CHECK(policy.next(view).proposals == 1);
  policy.advise(cospec::batch_advice::score_only);
  CHECK(policy.next(view).proposals == 0);
  // Where proposals pay, the advice to speculate leaves the policy's own length.
  for (int round = 0; round < 80; ++round)
    for (std::size_t t : {1, 2, 3})
      for (std::size_t k = 0; k < 2; ++k) policy.observe_pass(k, t, 20.0 + static_cast<double>(t));
  policy.advise(cospec::batch_advice::speculate);
  CHECK(policy.next(view).proposals == policy.best_gamma(policy.next(view).model));
  CHECK(policy.next(view).proposals >= 1);
}

TEST_CASE("adaptive greedy output is token-identical to standard decoding", "[adaptive][greedy]") {
  std::mt19937_64 random(11);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  for (int trial = 0; trial < 60; ++trial) {
    const std::size_t n = 2 + static_cast<std::size_t>(trial % 3);
    std::vector<synthetic_model_config> configs;
    const std::uint64_t shared = random();
    for (std::size_t i = 0; i < n; ++i) configs.push_back({30, 2, shared, random(), unit(random), 1.0 + 3.0 * unit(random)});
    auto run = [&](auto speculator) {
      std::vector<synthetic_model> models;
      for (const auto& c : configs) models.emplace_back(c);
      std::vector<synthetic_model*> pointers;
      for (auto& m : models) pointers.push_back(&m);
      cospec::decoder decoder(pointers, cospec::weighted_ensemble::uniform(n), std::move(speculator), greedy);
      cospec::generation_limits limits;
      limits.max_new_tokens = 60;
      return decoder.generate(std::vector<token_id>{2, 3}, limits).tokens;
    };
    std::vector<double> costs;
    for (std::size_t i = 0; i < n; ++i) costs.push_back(1.0 + 4.0 * unit(random));
    cospec::adaptive_options options;
    options.pass_costs = costs;
    CHECK(run(cospec::adaptive(n, options)) == run(cospec::standard{}));
  }
}

TEST_CASE("adaptive is within 3% of the best fixed proposal length on steady workloads", "[adaptive][cost]") {
  // One long run per schedule (4000 tokens): the measured cost per token carries about 1%
  // sampling noise, so the bound is 3% of the best fixed length as the issue states.
  struct row {
    double agreement;
    double ratio;
  };
  for (const row r : {row{0.0, 8.0}, row{0.6, 8.0}, row{0.95, 8.0}, row{0.6, 100.0}}) {
    const auto c = compare(pair(r.agreement), cospec::weighted_ensemble::uniform(2), 0, r.ratio, 4000);
    INFO("agreement " << r.agreement << ", cost 1:" << r.ratio << ": standard " << c.standard << ", best fixed gamma "
                      << c.best_gamma << " " << c.best_fixed << ", adaptive " << c.adaptive);
    CHECK(c.adaptive <= c.best_fixed * 1.03);
  }
}

TEST_CASE("adaptive never costs more than standard decoding at the lowest agreement", "[adaptive][cost]") {
  // Contrastive decoding with an amateur that shares nothing with the expert: the lowest
  // acceptance the sweep reaches. Allowed: 0.97x standard's speed (cost at most standard / 0.97).
  const auto configs = pair(0.0);
  for (double ratio : {1.0, 8.0, 100.0}) {
    const std::vector<cospec::pass_cost> costs{{ratio, 0.0}, {1.0, 0.0}};
    cospec::adaptive_options options;
    options.pass_costs = {ratio, 1.0};
    const double standard = cost_per_token(configs, cospec::contrastive_decoding(0.1f), cospec::standard{}, costs, 3000);
    const double adaptive =
        cost_per_token(configs, cospec::contrastive_decoding(0.1f), cospec::adaptive(2, options), costs, 3000);
    INFO("cost 1:" << ratio << ": standard " << standard << ", adaptive " << adaptive);
    CHECK(adaptive <= standard / 0.97);
  }
}

TEST_CASE("adaptive beats every fixed proposal length when predictability changes", "[adaptive][cost]") {
  // Segments of 200 positions alternate between models that agree almost always and models
  // that share nothing: a fixed length is too long for one and too short for the other.
  const auto configs = pair(0.98, 200, 0.0);
  const auto ensemble = compare(configs, cospec::weighted_ensemble::uniform(2), 0, 8.0, 6000);
  INFO("WE 1:8: standard " << ensemble.standard << ", best fixed gamma " << ensemble.best_gamma << " "
                           << ensemble.best_fixed << ", adaptive " << ensemble.adaptive);
  CHECK(ensemble.adaptive < ensemble.best_fixed);
  const auto contrastive = compare(configs, cospec::contrastive_decoding(0.1f), 1, 8.0, 6000);
  INFO("CD 1:8: standard " << contrastive.standard << ", best fixed gamma " << contrastive.best_gamma << " "
                           << contrastive.best_fixed << ", adaptive " << contrastive.adaptive);
  CHECK(contrastive.adaptive < contrastive.best_fixed);
}

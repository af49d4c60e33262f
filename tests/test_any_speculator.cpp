// any_speculator (docs/engine.md, "Speculators"): a batch decoder whose requests each bring their
// own policy. A request decodes token for token as the same policy's own batch decoder decodes
// it (seeded sampling, so every random draw and every path choice must be the same), greedy
// requests give standard decoding's tokens whatever their policy, a policy that does not fit the
// models is refused at submit() without effect, and a type erasure that drops one of the
// optional hooks is caught by the token comparison (a broken variant).
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <cstddef>   // std::size_t
#include <cstdint>   // std::uint64_t
#include <map>       // std::map
#include <optional>  // std::optional
#include <string>    // std::string
#include <utility>   // std::move
#include <vector>    // std::vector

#include "support/checking_batch_adapter.hpp"
#include "support/model_sets.hpp"

namespace {

using cospec::token_id;
using cospec::testing::checking_batch_adapter;

static_assert(cospec::speculator<cospec::any_speculator>);
static_assert(cospec::mixture_speculator<cospec::any_speculator>);
static_assert(cospec::mixture_switching_speculator<cospec::any_speculator>);
static_assert(cospec::advisable_speculator<cospec::any_speculator>);
static_assert(cospec::confidence_speculator<cospec::any_speculator>);
static_assert(cospec::context_observing_speculator<cospec::any_speculator>);

constexpr std::size_t vocabulary = 12;
constexpr std::size_t tokens_per_request = 24;
constexpr std::size_t requests_per_policy = 6;

std::vector<cospec::examples::synthetic_model_config> model_configs() {
  std::vector<cospec::examples::synthetic_model_config> configs;
  for (std::size_t i = 0; i < 2; ++i)
    configs.push_back({.vocabulary_size = vocabulary, .window = 2, .shared_seed = 5, .own_seed = 40 + i,
                       .agreement = 0.7, .sharpness = 1.5});
  return configs;
}

/// Speculative mixture sampling with model 0 the cheap one.
cospec::mixture_sampling speculative_mixture() {
  cospec::mixture_options options;
  options.max_gamma = 4;
  options.fallback.pass_costs = {1.0, 6.0};
  return cospec::mixture_sampling(2, options);
}

struct request_plan {
  std::vector<token_id> prompt;
  std::uint64_t seed = 0;
};

request_plan plan_of(std::size_t r) {
  return {{static_cast<token_id>(r % vocabulary), static_cast<token_id>((3 * r + 1) % vocabulary)}, 7919 * r + 3};
}

struct decoded {
  std::vector<token_id> tokens;
  bool mixture = false;
};

/// Decodes the plans (several at once, three sequences per model) with `default_policy`; where
/// `own` has a policy for a request, the request decodes with that one.
template <class Speculator>
std::vector<decoded> decode(Speculator default_policy, const std::vector<request_plan>& plans, float temperature,
                            const std::vector<std::optional<Speculator>>& own = {}) {
  std::vector<checking_batch_adapter> models;
  for (const auto& config : model_configs()) models.emplace_back(config, 3);
  cospec::batch_decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble({0.5f, 0.5f}),
                                std::move(default_policy));
  std::vector<decoded> out(plans.size());
  std::map<cospec::request_id, std::size_t> index_of;
  for (std::size_t r = 0; r < plans.size(); ++r) {
    cospec::sampling_settings settings;
    settings.temperature = temperature;
    cospec::generation_limits limits;
    limits.max_new_tokens = tokens_per_request;
    limits.seed = plans[r].seed;
    const std::optional<Speculator> policy = r < own.size() ? own[r] : std::nullopt;
    index_of[decoder.submit(plans[r].prompt, settings, limits, std::nullopt, policy)] = r;
  }
  const auto collect = [&] {
    for (auto& done : decoder.take_finished()) {
      REQUIRE_FALSE(done.failed());
      out[index_of.at(done.id)] = {done.result.tokens, done.result.statistics.mixture};
    }
  };
  while (decoder.step()) collect();
  collect();
  for (const auto& model : models) CHECK(model.violations.empty());
  return out;
}

/// The policies a server offers, by name, each as its own type would be built.
template <class Visit>
void for_each_policy(Visit&& visit) {
  visit("standard", cospec::standard{});
  visit("cos", cospec::alternating({2, 2}));
  visit("adaptive", cospec::adaptive(2));
  visit("mixture", cospec::mixture_sampling(2));
  visit("mixture+spec", speculative_mixture());
  visit("automatic", cospec::automatic(2));
  visit("cos+ctx", cospec::with_context_proposals(cospec::alternating({2, 2}), 8));
}

/// A wrapper that forwards only what every speculator has: with it the session never learns
/// that the policy wants mixture sampling, so the request takes collaborative decoding instead.
template <class Inner>
struct forgetful {
  Inner inner;
  void check(std::size_t model_count) const { inner.check(model_count); }
  cospec::invocation next(const cospec::schedule_view& view) { return inner.next(view); }
};

}  // namespace

TEST_CASE("a request's own policy decodes token for token as that policy's own batch decoder", "[any_speculator]") {
  // All the policies' requests in one batch decoder, interleaved; then each policy alone.
  std::vector<request_plan> plans;
  std::vector<std::optional<cospec::any_speculator>> own;
  std::vector<std::string> names;
  for (std::size_t r = 0; r < requests_per_policy; ++r)
    for_each_policy([&](const char* name, auto policy) {
      plans.push_back(plan_of(plans.size()));
      own.emplace_back(cospec::any_speculator(std::move(policy)));
      names.emplace_back(name);
    });
  const std::vector<decoded> together = decode(cospec::any_speculator(cospec::standard{}), plans, 1.0f, own);
  std::size_t compared = 0, mixture_requests = 0;
  for_each_policy([&](const char* name, auto policy) {
    std::vector<request_plan> mine;
    std::vector<std::size_t> where;
    for (std::size_t r = 0; r < plans.size(); ++r)
      if (names[r] == name) {
        mine.push_back(plans[r]);
        where.push_back(r);
      }
    const std::vector<decoded> alone = decode(policy, mine, 1.0f);
    for (std::size_t i = 0; i < mine.size(); ++i) {
      INFO(name << " request " << where[i]);
      CHECK(together[where[i]].tokens == alone[i].tokens);
      CHECK(together[where[i]].mixture == alone[i].mixture);
      mixture_requests += alone[i].mixture ? 1 : 0;
      ++compared;
    }
  });
  CHECK(compared == plans.size());
  CHECK(mixture_requests >= 3 * requests_per_policy);  // mixture, mixture+spec and automatic took that path
}

TEST_CASE("greedy requests give standard decoding's tokens whatever their own policy", "[any_speculator]") {
  std::vector<request_plan> plans;
  std::vector<std::size_t> prompt_of;
  std::vector<std::optional<cospec::any_speculator>> own;
  for (std::size_t p = 0; p < 2; ++p)
    for_each_policy([&](const char*, auto policy) {
      plans.push_back(plan_of(p));  // the same two prompts under every policy
      prompt_of.push_back(p);
      own.emplace_back(cospec::any_speculator(std::move(policy)));
    });
  const std::vector<decoded> mixed = decode(cospec::any_speculator(cospec::automatic(2)), plans, 0.0f, own);
  const std::vector<decoded> standard = decode(cospec::standard{}, {plan_of(0), plan_of(1)}, 0.0f);
  for (std::size_t r = 0; r < plans.size(); ++r) {
    INFO("request " << r);
    CHECK(mixed[r].tokens == standard[prompt_of[r]].tokens);
    CHECK(mixed[r].tokens.size() == tokens_per_request);
  }
}

TEST_CASE("a request's policy that does not fit the models is refused at submit, without effect", "[any_speculator]") {
  std::vector<checking_batch_adapter> models;
  for (const auto& config : model_configs()) models.emplace_back(config, 2);
  cospec::batch_decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble({0.5f, 0.5f}),
                                cospec::any_speculator(cospec::standard{}));
  cospec::generation_limits limits;
  limits.max_new_tokens = 4;
  const std::vector<token_id> prompt{1, 2};
  CHECK_THROWS_AS(decoder.submit(prompt, {}, limits, std::nullopt, cospec::any_speculator(cospec::alternating({2, 2, 2}))),
                  cospec::invalid_configuration);
  CHECK(decoder.queued() == 0);
  CHECK(decoder.running() == 0);
  const cospec::request_id id = decoder.submit(prompt, {}, limits, std::nullopt, cospec::any_speculator(cospec::adaptive(2)));
  while (decoder.step()) {
  }
  const auto finished = decoder.take_finished();
  REQUIRE(finished.size() == 1);
  CHECK(finished[0].id == id);
  CHECK_FALSE(finished[0].failed());
  CHECK(finished[0].result.tokens.size() == 4);
}

TEST_CASE("broken variant: an erasure that drops the mixture hook changes the tokens, and the comparison sees it",
          "[any_speculator]") {
  std::vector<request_plan> plans;
  for (std::size_t r = 0; r < requests_per_policy; ++r) plans.push_back(plan_of(r));
  const std::vector<decoded> faithful = decode(cospec::any_speculator(speculative_mixture()), plans, 1.0f);
  const std::vector<decoded> dropped =
      decode(cospec::any_speculator(forgetful<cospec::mixture_sampling>{speculative_mixture()}), plans, 1.0f);
  std::size_t differing = 0;
  for (std::size_t r = 0; r < plans.size(); ++r) {
    CHECK(faithful[r].mixture);
    CHECK_FALSE(dropped[r].mixture);
    differing += faithful[r].tokens != dropped[r].tokens ? 1 : 0;
  }
  CHECK(differing >= requests_per_policy / 2);
}

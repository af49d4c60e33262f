// The batched adapter concept (include/cospec/adapters/batched_model_adapter.hpp) and the
// batch decoder (include/cospec/decoder/batch_decoder.hpp): archetypes of the concept; every
// request of a random mix, joining mid-run and queueing for sequences, gives the tokens of
// decoding it alone with the same seed; enumeration exactness of three concurrent requests of
// different settings, lengths and stop conditions, with a backend that crosses two requests'
// rows shown to fail; injected failures at every adapter call; the sequence pool, the queue
// bound, cancellation, the step policy and the cost clock.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <algorithm>  // std::equal, std::min, std::max
#include <chrono>     // std::chrono::microseconds
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <exception>  // std::exception_ptr, std::rethrow_exception
#include <limits>     // std::numeric_limits
#include <map>        // std::map
#include <optional>   // std::nullopt
#include <random>     // std::mt19937_64
#include <span>       // std::span
#include <string>     // std::string
#include <stdexcept>  // std::runtime_error
#include <thread>     // std::this_thread::sleep_for
#include <type_traits>  // std::is_copy_constructible_v
#include <vector>     // std::vector

#include "models/synthetic_model.hpp"
#include "support/checking_adapter.hpp"
#include "support/checking_batch_adapter.hpp"
#include "support/reference_decoding.hpp"
#include "support/model_sets.hpp"

namespace {

using cospec::testing::pointers;

using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;
using cospec::testing::batch_bug;
using cospec::testing::checking_batch_adapter;

// ---- the concept's archetypes -------------------------------------------------------------

struct batched_archetype {
  std::size_t vocabulary_size() const { return 4; }
  std::size_t max_sequences() const { return 2; }
  cospec::sequence_id create_sequence() { return 0; }
  void release_sequence(cospec::sequence_id) noexcept {}
  std::size_t context_length(cospec::sequence_id) const { return 0; }
  void truncate(cospec::sequence_id, std::size_t) {}
  void feed(std::span<const cospec::sequence_feed>) {}
};
struct without_release {
  std::size_t vocabulary_size() const { return 4; }
  std::size_t max_sequences() const { return 2; }
  cospec::sequence_id create_sequence() { return 0; }
  std::size_t context_length(cospec::sequence_id) const { return 0; }
  void truncate(cospec::sequence_id, std::size_t) {}
  void feed(std::span<const cospec::sequence_feed>) {}
};
struct with_single_sequence_truncate {
  std::size_t vocabulary_size() const { return 4; }
  std::size_t max_sequences() const { return 2; }
  cospec::sequence_id create_sequence() { return 0; }
  void release_sequence(cospec::sequence_id) noexcept {}
  std::size_t context_length(cospec::sequence_id) const { return 0; }
  void truncate(std::size_t) {}
  void feed(std::span<const cospec::sequence_feed>) {}
};
struct with_single_sequence_feed {
  std::size_t vocabulary_size() const { return 4; }
  std::size_t max_sequences() const { return 2; }
  cospec::sequence_id create_sequence() { return 0; }
  void release_sequence(cospec::sequence_id) noexcept {}
  std::size_t context_length(cospec::sequence_id) const { return 0; }
  void truncate(cospec::sequence_id, std::size_t) {}
  void feed(std::span<const token_id>, cospec::logit_outputs) {}
};

static_assert(cospec::batched_model_adapter<batched_archetype>);
static_assert(!cospec::batched_adapter_with_context_limit<batched_archetype>);
static_assert(!cospec::batched_model_adapter<without_release>);
static_assert(!cospec::batched_model_adapter<with_single_sequence_truncate>);
static_assert(!cospec::batched_model_adapter<with_single_sequence_feed>);
static_assert(!cospec::batched_model_adapter<synthetic_model>);  // a single-sequence adapter is not batched...
static_assert(cospec::batched_model_adapter<cospec::batch_of_one<synthetic_model>>);  // ...until wrapped
static_assert(!cospec::batched_adapter_with_context_limit<cospec::batch_of_one<synthetic_model>>);
static_assert(cospec::batched_adapter_with_context_limit<cospec::batch_of_one<cospec::testing::checking_adapter>>);
static_assert(cospec::batched_model_adapter<checking_batch_adapter>);
static_assert(cospec::batched_adapter_with_context_limit<checking_batch_adapter>);
static_assert(!cospec::model_adapter<checking_batch_adapter>);

// ---- models and requests ------------------------------------------------------------------

std::vector<checking_batch_adapter> batch_models(const std::vector<synthetic_model_config>& configs,
                                                 std::size_t sequences) {
  std::vector<checking_batch_adapter> models;
  for (const auto& config : configs) models.emplace_back(config, sequences);
  return models;
}

struct request_spec {
  std::vector<token_id> prompt;
  cospec::sampling_settings settings;
  cospec::generation_limits limits;
};

/// The request decoded alone, by decoder::generate on fresh single-sequence models.
template <class Combiner, class Speculator>
cospec::generation_result alone(const std::vector<synthetic_model_config>& configs, const Combiner& combiner,
                                const Speculator& speculator, const request_spec& request) {
  std::vector<synthetic_model> models;
  for (const auto& config : configs) models.emplace_back(config);
  cospec::decoder decoder(pointers(models), combiner, speculator);
  return decoder.generate(request.prompt, request.settings, request.limits);
}

std::string error_text(const std::exception_ptr& error) {
  if (!error) return "none";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  }
}

template <class Error>
bool is_error(const std::exception_ptr& error) {
  if (!error) return false;
  try {
    std::rethrow_exception(error);
  } catch (const Error&) {
    return true;
  } catch (...) {
    return false;
  }
}

bool starts_with(const std::vector<token_id>& text, const std::vector<token_id>& prefix) {
  return prefix.size() <= text.size() && std::equal(prefix.begin(), prefix.end(), text.begin());
}

std::vector<token_id> joined(std::vector<token_id> prefix, const std::vector<token_id>& tail) {
  prefix.insert(prefix.end(), tail.begin(), tail.end());
  return prefix;
}

/// The protocol of every model: no violations, every sequence released, and every context a
/// sequence held right after a truncate is a prefix of the text its request committed (the
/// request is the one whose prompt begins the sequence's first feed; the prompts of a test
/// begin with distinct tokens).
void check_protocol(const std::vector<checking_batch_adapter>& models, const std::vector<request_spec>& requests,
                    const std::map<cospec::request_id, std::vector<token_id>>& texts,
                    const std::map<cospec::request_id, std::size_t>& spec_of) {
  for (std::size_t k = 0; k < models.size(); ++k) {
    INFO("model " << k);
    for (const auto& v : models[k].violations) FAIL_CHECK(v);
    CHECK(models[k].alive == 0);
    for (const auto& life : models[k].lifetimes) {
      if (life.first_feed.empty()) continue;  // created, never fed (its request failed first)
      const std::vector<token_id>* text = nullptr;
      for (const auto& [id, committed] : texts)
        if (starts_with(life.first_feed, requests[spec_of.at(id)].prompt)) text = &committed;
      REQUIRE(text != nullptr);
      for (const auto& context : life.after_truncate) CHECK(starts_with(*text, context));
    }
  }
}

/// Random synthetic model sets over one vocabulary.
std::vector<synthetic_model_config> random_models(std::mt19937_64& rng, std::size_t n) {
  const std::size_t vocabulary = 8 + rng() % 22;  // more than the requests of a mix
  const std::size_t window = 1 + rng() % 3;
  const std::uint64_t shared = rng();
  std::vector<synthetic_model_config> configs;
  for (std::size_t k = 0; k < n; ++k)
    configs.push_back({.vocabulary_size = vocabulary, .window = window, .shared_seed = shared, .own_seed = rng(),
                       .agreement = 0.3 + 0.6 * static_cast<double>(rng() % 100) / 100.0,
                       .sharpness = 1.0 + static_cast<double>(rng() % 30) / 10.0});
  return configs;
}

/// Distinct random requests: greedy or sampled settings, lengths, stop tokens, seeds.
std::vector<request_spec> random_requests(std::mt19937_64& rng, std::size_t count, std::size_t vocabulary) {
  std::vector<request_spec> requests;
  for (std::size_t r = 0; r < count; ++r) {
    request_spec spec;
    // A leading token per request tells the prompts apart (check_protocol matches by it).
    spec.prompt.push_back(static_cast<token_id>(r % vocabulary));
    const std::size_t extra = rng() % 6;
    for (std::size_t i = 0; i < extra; ++i) spec.prompt.push_back(static_cast<token_id>(rng() % vocabulary));
    spec.prompt.push_back(static_cast<token_id>(r / vocabulary));
    if (rng() % 2 == 0) {
      spec.settings.temperature = 0.0f;
    } else {
      spec.settings.temperature = 0.5f + static_cast<float>(rng() % 100) / 100.0f;
      if (rng() % 3 == 0) spec.settings.top_k = 1 + rng() % vocabulary;
    }
    spec.limits.max_new_tokens = 1 + rng() % 30;
    if (rng() % 3 == 0) spec.limits.stop_tokens.push_back(static_cast<token_id>(rng() % vocabulary));
    spec.limits.seed = rng();
    requests.push_back(spec);
  }
  return requests;
}

/// Runs `requests` through one batch decoder: the first half submitted at once, the rest one
/// per step (joining mid-run). Returns each request's result, by its index.
template <class Combiner, class Speculator>
std::vector<cospec::finished_request> run_batch(std::vector<checking_batch_adapter>& models, const Combiner& combiner,
                                                const Speculator& speculator, const std::vector<request_spec>& requests,
                                                cospec::batch_options options = {}) {
  cospec::batch_decoder decoder(pointers(models), combiner, speculator, cospec::sampling_settings{}, options);
  std::map<cospec::request_id, std::size_t> index;
  std::size_t submitted = 0;
  for (; submitted < (requests.size() + 1) / 2; ++submitted)
    index[decoder.submit(requests[submitted].prompt, requests[submitted].settings, requests[submitted].limits)] = submitted;
  std::vector<cospec::finished_request> results(requests.size());
  while (true) {
    const bool ran = decoder.step();
    if (submitted < requests.size()) {
      index[decoder.submit(requests[submitted].prompt, requests[submitted].settings, requests[submitted].limits)] = submitted;
      ++submitted;
    } else if (!ran) {
      break;
    }
    CHECK(decoder.running() <= models[0].max_sequences());
    for (auto& done : decoder.take_finished()) results[index.at(done.id)] = std::move(done);
  }
  for (auto& done : decoder.take_finished()) results[index.at(done.id)] = std::move(done);
  return results;
}

template <class Combiner, class Speculator>
void check_mix_equals_alone(std::mt19937_64& rng, const std::vector<synthetic_model_config>& configs,
                            const Combiner& combiner, const Speculator& speculator, const std::string& name) {
  const std::size_t count = 1 + rng() % 8;
  const std::size_t pool = 1 + rng() % (count + 1);
  const auto requests = random_requests(rng, count, configs[0].vocabulary_size);
  auto models = batch_models(configs, pool);
  const auto results = run_batch(models, combiner, speculator, requests);
  std::map<cospec::request_id, std::vector<token_id>> texts;
  std::map<cospec::request_id, std::size_t> spec_of;
  for (std::size_t r = 0; r < count; ++r) {
    INFO(name << ", " << count << " requests over " << pool << " sequences, request " << r
              << (requests[r].settings.greedy() ? " (greedy)" : " (sampled)"));
    const auto expected = alone(configs, combiner, speculator, requests[r]);
    CHECK_FALSE(results[r].failed());
    CHECK(results[r].result.tokens == expected.tokens);
    CHECK(results[r].result.reason == expected.reason);
    CHECK(results[r].result.statistics.rejections == expected.statistics.rejections);
    texts[results[r].id] = joined(requests[r].prompt, results[r].result.tokens);
    spec_of[results[r].id] = r;
  }
  check_protocol(models, requests, texts, spec_of);
}

}  // namespace

TEST_CASE("every request of a random mix gives the tokens of decoding it alone with the same seed",
          "[batch][greedy]") {
  std::mt19937_64 rng(8128);
  for (std::size_t trial = 0; trial < 240; ++trial) {
    const std::size_t n = 2 + rng() % 2;
    const auto configs = random_models(rng, n);
    std::vector<std::size_t> gammas;
    for (std::size_t k = 0; k < n; ++k) gammas.push_back(rng() % 4);
    gammas[rng() % n] = 1 + rng() % 3;  // somebody proposes
    const std::string name = "trial " + std::to_string(trial);
    switch (trial % 4) {
      case 0:
        check_mix_equals_alone(rng, configs, cospec::weighted_ensemble::uniform(n), cospec::alternating(gammas), name);
        break;
      case 1: {
        std::vector<float> weights(n, -0.3f);
        weights[0] = 1.0f;
        check_mix_equals_alone(rng, configs, cospec::logit_arithmetic(weights), cospec::alternating(gammas, {}, 0.3f),
                               name);
        break;
      }
      case 2:
        check_mix_equals_alone(rng, configs, cospec::weighted_ensemble::uniform(n), cospec::adaptive(n), name);
        break;
      default:
        check_mix_equals_alone(rng, configs, cospec::weighted_ensemble::uniform(n), cospec::standard(), name);
        break;
    }
  }
}

// ===== enumeration exactness ===============================================================

namespace {

// Outputs of at most 3 tokens over vocabulary 5: at most 125 cells, mean expected count >= 160.
constexpr std::size_t trials = 20000;      // per request kind
constexpr double significance_z = 4.753;   // standard-normal quantile of 1 - 1e-6

using sequence_counts = std::map<std::vector<token_id>, std::size_t>;

bool consistent(const std::string& name, const std::map<std::vector<token_id>, double>& expected,
                const sequence_counts& observed) {
  const auto test = cospec::testing::chi_square(expected, observed, trials);
  const double critical = cospec::testing::chi_square_critical(test.degrees_of_freedom, significance_z);
  INFO(name << ": chi-square " << test.statistic << " on " << test.degrees_of_freedom << " df, critical value "
            << critical << " at significance 1e-6, " << test.unexpected << " impossible outputs");
  CHECK(test.degrees_of_freedom >= 5);
  return test.unexpected == 0 && test.statistic < critical;
}

}  // namespace

TEST_CASE("three kinds of concurrent requests, joining and leaving mid-run, each sample exactly their own target",
          "[batch][exactness]") {
  std::vector<synthetic_model_config> configs;
  for (std::size_t k = 0; k < 2; ++k)
    configs.push_back({.vocabulary_size = 5, .window = 3, .shared_seed = 11, .own_seed = 100 + k, .agreement = 0.6,
                       .sharpness = 1.5});
  const cospec::testing::reference_combination ensemble{
      cospec::testing::reference_combination::kind::weighted_ensemble, {1.0, 1.0}, std::nullopt};
  struct kind {
    std::vector<token_id> prompt;
    cospec::testing::reference_sampling sampling;
    std::size_t length;
    std::optional<token_id> stop;
  };
  const std::vector<kind> kinds{
      {{1, 3}, {1.0, std::nullopt, std::nullopt}, 3, std::nullopt},
      {{4}, {0.8, 4, std::nullopt}, 2, std::nullopt},
      {{2, 2, 0}, {1.25, std::nullopt, 0.9}, 3, token_id{0}},
  };
  std::vector<std::map<std::vector<token_id>, double>> expected;
  for (const kind& k : kinds)
    expected.push_back(cospec::testing::sequence_probabilities(configs, ensemble, k.sampling, k.prompt, k.length, k.stop));

  for (const batch_bug bug : {batch_bug::none, batch_bug::rows_crossed}) {
    // Three sequences for four requests in flight: one always queues.
    auto models = batch_models(configs, 3);
    for (auto& model : models) model.bug = bug;
    cospec::batch_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 2}));
    std::vector<sequence_counts> counts(kinds.size());
    std::map<cospec::request_id, std::size_t> kind_of;
    std::size_t submitted = 0;
    const auto submit = [&] {
      const std::size_t which = submitted % kinds.size();
      const kind& k = kinds[which];
      cospec::sampling_settings settings;
      settings.temperature = static_cast<float>(k.sampling.temperature);
      settings.top_k = k.sampling.top_k;
      if (k.sampling.top_p) settings.top_p = static_cast<float>(*k.sampling.top_p);
      cospec::generation_limits limits;
      limits.max_new_tokens = k.length;
      if (k.stop) limits.stop_tokens.push_back(*k.stop);
      limits.seed = 1000003 * submitted + 17;
      kind_of[decoder.submit(k.prompt, settings, limits)] = which;
      ++submitted;
    };
    for (std::size_t i = 0; i < 4; ++i) submit();
    while (decoder.step()) {
      for (auto& done : decoder.take_finished()) {
        REQUIRE_FALSE(done.failed());
        ++counts[kind_of.at(done.id)][done.result.tokens];
        if (submitted < trials * kinds.size()) submit();
      }
    }
    for (auto& done : decoder.take_finished()) ++counts[kind_of.at(done.id)][done.result.tokens];
    CHECK(models[0].largest_batch >= 3);
    for (std::size_t which = 0; which < kinds.size(); ++which) {
      const std::string name = "request kind " + std::to_string(which);
      if (bug == batch_bug::none) {
        CHECK(consistent(name, expected[which], counts[which]));
      } else {
        CHECK_FALSE(consistent(name + " with crossed rows (broken)", expected[which], counts[which]));
      }
    }
  }
}

// ===== failures ============================================================================

namespace {

/// Greedy, distinct requests over two models, for the failure tests.
std::vector<request_spec> greedy_requests(std::size_t count) {
  std::vector<request_spec> requests;
  for (std::size_t r = 0; r < count; ++r) {
    request_spec spec;
    spec.prompt = {static_cast<token_id>(r), static_cast<token_id>(3 + r % 5), 7};
    spec.settings.temperature = 0.0f;
    spec.limits.max_new_tokens = 12 + 3 * r;
    requests.push_back(spec);
  }
  return requests;
}

std::vector<synthetic_model_config> failure_models() {
  return {{16, 2, 5, 6, 0.7, 2.0}, {16, 2, 5, 7, 0.7, 2.0}};
}

enum class injected { feed, overflow, truncate, create };

/// Injects one failure at the `at`-th call of kind `what` on model `model`; returns whether a
/// failure happened. Checks: requests that failed carry the right error and a prefix of their
/// alone output, the others their whole alone output, the protocol held, and the decoder then
/// serves new requests exactly.
bool check_injected(injected what, std::size_t model, std::size_t at) {
  const auto configs = failure_models();
  const auto requests = greedy_requests(4);
  const auto combiner = cospec::weighted_ensemble::uniform(2);
  const auto speculator = cospec::alternating({3, 2});
  auto models = batch_models(configs, 4);
  auto& target = models[model];
  switch (what) {
    case injected::feed: target.fail_feed_at = at; break;
    case injected::overflow: target.overflow_feed_at = at; break;
    case injected::truncate: target.fail_truncate_at = at; break;
    case injected::create: target.fail_create_at = at; break;
  }
  cospec::batch_decoder decoder(pointers(models), combiner, speculator);
  std::map<cospec::request_id, std::size_t> spec_of;
  for (std::size_t r = 0; r < requests.size(); ++r)
    spec_of[decoder.submit(requests[r].prompt, requests[r].settings, requests[r].limits)] = r;
  std::size_t failed = 0;
  std::map<cospec::request_id, std::vector<token_id>> texts;
  const auto finished = decoder.run();
  REQUIRE(finished.size() == requests.size());
  for (const auto& done : finished) {
    const std::size_t r = spec_of.at(done.id);
    const auto expected = alone(configs, combiner, speculator, requests[r]);
    INFO("request " << r << ": " << error_text(done.error));
    texts[done.id] = joined(requests[r].prompt, done.result.tokens);
    if (done.failed()) {
      ++failed;
      if (what == injected::overflow) CHECK(is_error<cospec::context_overflow>(done.error));
      else CHECK(is_error<cospec::backend_failure>(done.error));
      CHECK(starts_with(expected.tokens, done.result.tokens));
    } else {
      CHECK(done.result.tokens == expected.tokens);
    }
  }
  // Exactly the requests the failing call touched: the pass's sequences, or the one request
  // whose truncate or create failed.
  CHECK(failed == target.failed_entries);
  check_protocol(models, requests, texts, spec_of);
  // The next requests are exact again (the backend has recovered).
  for (auto& m : models) m.fail_feed_at = m.overflow_feed_at = m.fail_truncate_at = m.fail_create_at = 0;
  const auto again = greedy_requests(2);
  for (const auto& spec : again) decoder.submit(spec.prompt, spec.settings, spec.limits);
  const auto later = decoder.run();
  REQUIRE(later.size() == 2);
  for (std::size_t r = 0; r < 2; ++r) {
    CHECK_FALSE(later[r].failed());
    CHECK(later[r].result.tokens == alone(configs, combiner, speculator, again[r]).tokens);
  }
  return failed > 0;
}

}  // namespace

TEST_CASE("a failure at any adapter call ends exactly the requests it touched, and the rest go on exactly",
          "[batch][failure]") {
  for (const injected what : {injected::feed, injected::overflow, injected::truncate, injected::create}) {
    for (std::size_t model = 0; model < 2; ++model) {
      std::size_t failures = 0;
      // Past the last call of a kind, nothing fails: the loop ends there.
      for (std::size_t at = 1; at < 200; ++at) {
        INFO("failure kind " << static_cast<int>(what) << " on model " << model << " at call " << at);
        if (!check_injected(what, model, at)) break;
        ++failures;
      }
      CHECK(failures >= 1);
    }
  }
}

TEST_CASE("a request that would outgrow its sequence's context limit ends with context_overflow; the others finish",
          "[batch][failure]") {
  const auto configs = failure_models();
  auto models = batch_models(configs, 3);
  for (auto& model : models) model.limit = 12;
  cospec::batch_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 2}));
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  cospec::generation_limits short_limits, long_limits;
  short_limits.max_new_tokens = 4;
  long_limits.max_new_tokens = 40;
  const auto a = decoder.submit(std::vector<token_id>{1, 2, 3}, greedy, short_limits);
  const auto b = decoder.submit(std::vector<token_id>{4, 5, 6}, greedy, long_limits);
  const auto c = decoder.submit(std::vector<token_id>{7, 8, 9}, greedy, short_limits);
  const auto finished = decoder.run();
  REQUIRE(finished.size() == 3);
  for (const auto& done : finished) {
    INFO("request " << done.id << ": " << error_text(done.error));
    if (done.id == b) {
      CHECK(is_error<cospec::context_overflow>(done.error));
      CHECK(done.result.tokens.size() <= 9);
    } else {
      CHECK((done.id == a || done.id == c));
      CHECK_FALSE(done.failed());
      CHECK(done.result.tokens.size() == 4);
    }
  }
  for (const auto& model : models) {
    for (const auto& v : model.violations) FAIL_CHECK(v);
    CHECK(model.alive == 0);
  }
}

TEST_CASE("requests queue for a sequence, the queue has a bound, and memory stays bounded as requests keep coming",
          "[batch][pool]") {
  const auto configs = failure_models();
  auto models = batch_models(configs, 3);
  cospec::batch_options options;
  options.max_waiting = 5;
  cospec::batch_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 1}),
                                cospec::sampling_settings{}, options);
  cospec::generation_limits limits;
  limits.max_new_tokens = 6;
  const std::vector<token_id> prompt{1, 2};
  for (std::size_t i = 0; i < 5; ++i) decoder.submit(prompt, limits);
  CHECK_THROWS_AS(decoder.submit(prompt, limits), cospec::capacity_exceeded);
  CHECK(decoder.queued() == 5);
  // A stream of 600 requests, topped up to the bound after every step.
  std::size_t finished = 0, submitted = 5;
  while (decoder.step()) {
    CHECK(decoder.running() <= 3);
    CHECK(decoder.queued() <= 5);
    for (const auto& done : decoder.take_finished()) {
      CHECK_FALSE(done.failed());
      CHECK(done.result.tokens.size() == 6);
      ++finished;
    }
    while (submitted < 600 && decoder.queued() < 5) {
      limits.seed = submitted;
      decoder.submit(prompt, limits);
      ++submitted;
    }
  }
  CHECK(finished + decoder.take_finished().size() == 600);
  for (const auto& model : models) {
    CHECK(model.peak_alive <= 3);
    CHECK(model.alive == 0);
    CHECK(model.largest_batch == 3);
    for (const auto& v : model.violations) FAIL_CHECK(v);
  }
}

TEST_CASE("a backend whose pool runs dry, or whose release throws, gives clear errors and never a crash",
          "[batch][pool]") {
  const auto configs = failure_models();
  cospec::generation_limits limits;
  limits.max_new_tokens = 5;
  const std::vector<token_id> prompt{1, 2};
  SECTION("create_sequence throws: that request fails with backend_failure, the others finish") {
    auto models = batch_models(configs, 3);
    models[1].fail_create_at = 2;
    cospec::batch_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 1}));
    for (std::size_t i = 0; i < 3; ++i) decoder.submit(prompt, limits);
    std::size_t failed = 0;
    const auto finished = decoder.run();
    REQUIRE(finished.size() == 3);
    for (const auto& done : finished) {
      if (done.failed()) {
        ++failed;
        CHECK(is_error<cospec::backend_failure>(done.error));
        CHECK_THAT(error_text(done.error), Catch::Matchers::Contains("creating a sequence"));
        CHECK(done.result.reason == cospec::finish_reason::cancelled);
      } else {
        CHECK(done.result.tokens.size() == 5);
      }
    }
    CHECK(failed == 1);
    for (const auto& model : models) CHECK(model.alive == 0);
  }
  SECTION("a release that throws loses that sequence; with none left, queued requests fail clearly") {
    auto models = batch_models(configs, 1);
    models[0].fail_release_at = 1;
    cospec::batch_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 1}));
    for (std::size_t i = 0; i < 3; ++i) decoder.submit(prompt, limits);
    const auto done = decoder.run();
    REQUIRE(done.size() == 3);
    CHECK_FALSE(done[0].failed());
    for (std::size_t i = 1; i < 3; ++i) {
      CHECK(is_error<cospec::backend_failure>(done[i].error));
      CHECK_THAT(error_text(done[i].error), Catch::Matchers::Contains("no free sequence"));
    }
    CHECK(decoder.statistics().sequences_lost == 1);
    CHECK_FALSE(decoder.step());
  }
}

TEST_CASE("cancel ends a queued or running request, also from another request's token callback", "[batch][cancel]") {
  const auto configs = failure_models();
  const auto combiner = cospec::weighted_ensemble::uniform(2);
  const auto speculator = cospec::alternating({2, 2});
  auto models = batch_models(configs, 2);
  cospec::batch_decoder decoder(pointers(models), combiner, speculator);
  const auto requests = greedy_requests(4);
  cospec::request_id victim = 0;
  std::size_t seen = 0;
  request_spec killer = requests[0];
  killer.limits.on_token = [&](token_id) {
    if (++seen == 3) CHECK(decoder.cancel(victim));
    return true;
  };
  const auto a = decoder.submit(killer.prompt, killer.settings, killer.limits);
  victim = decoder.submit(requests[1].prompt, requests[1].settings, requests[1].limits);
  const auto queued = decoder.submit(requests[2].prompt, requests[2].settings, requests[2].limits);
  CHECK(decoder.cancel(queued));
  CHECK_FALSE(decoder.cancel(queued));
  CHECK_FALSE(decoder.cancel(999));
  const auto finished = decoder.run();
  REQUIRE(finished.size() == 3);
  for (const auto& done : finished) {
    CHECK_FALSE(done.failed());
    if (done.id == a) {
      CHECK(done.result.tokens == alone(configs, combiner, speculator, requests[0]).tokens);
    } else if (done.id == victim) {
      CHECK(done.result.reason == cospec::finish_reason::cancelled);
      CHECK(starts_with(alone(configs, combiner, speculator, requests[1]).tokens, done.result.tokens));
      CHECK(done.result.tokens.size() < requests[1].limits.max_new_tokens);
    } else {
      CHECK(done.id == queued);
      CHECK(done.result.reason == cospec::finish_reason::cancelled);
      CHECK(done.result.tokens.empty());
    }
  }
  for (const auto& model : models) CHECK(model.alive == 0);
}

TEST_CASE("a token callback that steps the decoder ends its own request with usage_error", "[batch][usage]") {
  auto models = batch_models(failure_models(), 2);
  cospec::batch_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 2}));
  cospec::generation_limits limits;
  limits.on_token = [&](token_id) { return decoder.step(); };
  decoder.submit(std::vector<token_id>{1, 2}, limits);
  const auto done = decoder.run();
  REQUIRE(done.size() == 1);
  CHECK(is_error<cospec::usage_error>(done[0].error));
  CHECK(done[0].result.tokens.size() == 1);
}

TEST_CASE("the default step policy takes the fullest pass and serves a request that waited too long",
          "[batch][policy]") {
  const cospec::fullest_pass policy{4};
  const std::vector<cospec::waiting_pass_group> groups{{2, 2, 1}, {5, 5, 0}, {5, 9, 3}};
  CHECK(policy(groups) == 1);  // the most requests; ties to the lower index
  const std::vector<cospec::waiting_pass_group> starving{{2, 2, 1}, {5, 5, 0}, {1, 1, 4}, {1, 1, 6}};
  CHECK(policy(starving) == 3);  // waited past patience: the longest wait first
  const std::vector<cospec::waiting_pass_group> empty_first{{0, 0, 9}, {1, 1, 0}};
  CHECK(policy(empty_first) == 1);

  auto models = batch_models(failure_models(), 2);
  cospec::batch_options options;
  options.choose_step = [](std::span<const cospec::waiting_pass_group> g) { return g.size(); };
  cospec::batch_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 2}),
                                cospec::sampling_settings{}, options);
  decoder.submit(std::vector<token_id>{1, 2});
  CHECK_THROWS_AS(decoder.step(), cospec::usage_error);
}

TEST_CASE("on the cost clock a batch is never worse than its requests one after another", "[batch][cost]") {
  const auto configs = failure_models();
  const auto combiner = cospec::weighted_ensemble::uniform(2);
  const auto speculator = cospec::alternating({3, 1});
  cospec::batch_options options;
  options.pass_costs = {{1.0, 0.05}, {3.0, 0.2}};
  for (const std::size_t count : {std::size_t{1}, std::size_t{6}}) {
    auto models = batch_models(configs, 6);
    cospec::batch_decoder decoder(pointers(models), combiner, speculator, cospec::sampling_settings{}, options);
    const auto requests = greedy_requests(count);
    for (const auto& spec : requests) decoder.submit(spec.prompt, spec.settings, spec.limits);
    double one_after_another = 0.0;
    for (const auto& done : decoder.run()) one_after_another += done.result.statistics.virtual_time;
    const double batched = decoder.statistics().virtual_time;
    INFO(count << " requests: batched " << batched << ", one after another " << one_after_another);
    if (count == 1) CHECK(batched == Approx(one_after_another).epsilon(1e-12));
    else CHECK(batched < 0.6 * one_after_another);
  }
}

namespace {

/// A batched adapter whose passes take a known time: 4 ms plus 1 ms per token.
class timed_batch : public checking_batch_adapter {
 public:
  using checking_batch_adapter::checking_batch_adapter;
  void feed(std::span<const cospec::sequence_feed> batch) {
    std::size_t tokens = 0;
    for (const auto& entry : batch) tokens += entry.tokens.size();
    std::this_thread::sleep_for(std::chrono::microseconds(4000 + 1000 * tokens));
    checking_batch_adapter::feed(batch);
  }
};

}  // namespace

TEST_CASE("a request is charged its share of a shared pass: part of the fixed cost and its own tokens",
          "[batch][cost]") {
  const auto configs = failure_models();
  std::vector<timed_batch> models;
  for (const auto& config : configs) models.emplace_back(config, 4);
  cospec::batch_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 1}));
  const auto requests = greedy_requests(4);
  for (const auto& spec : requests) decoder.submit(spec.prompt, spec.settings, spec.limits);
  const auto done = decoder.run();
  double charged = 0.0;
  for (const auto& d : done) charged += d.result.statistics.seconds_in_adapters;
  const auto& stats = decoder.statistics();
  // Every second of the passes is charged to somebody, once (creating sequences is the
  // batch's own time).
  double feeding = 0.0;
  for (const auto& m : stats.models) feeding += m.adapter_seconds;
  REQUIRE(done.size() == 4);
  CHECK(charged == Approx(feeding).epsilon(1e-9));
  CHECK(charged <= stats.seconds_in_adapters * (1.0 + 1e-9));
}

TEST_CASE("batch_of_one serves a single-sequence model one request at a time, with the tokens of decoding alone",
          "[batch][wrapper]") {
  const auto configs = failure_models();
  const auto combiner = cospec::weighted_ensemble::uniform(2);
  const auto speculator = cospec::alternating({2, 2});
  std::vector<synthetic_model> models;
  for (const auto& config : configs) models.emplace_back(config);
  std::vector<cospec::batch_of_one<synthetic_model>> wrapped;
  for (auto& model : models) wrapped.emplace_back(model);
  cospec::batch_decoder decoder(pointers(wrapped), combiner, speculator);
  const auto requests = greedy_requests(3);
  std::map<cospec::request_id, std::size_t> spec_of;
  for (std::size_t r = 0; r < requests.size(); ++r)
    spec_of[decoder.submit(requests[r].prompt, requests[r].settings, requests[r].limits)] = r;
  std::size_t most_running = 0;
  while (decoder.step()) most_running = std::max(most_running, decoder.running());
  const auto done = decoder.take_finished();
  REQUIRE(done.size() == 3);
  CHECK(most_running == 1);
  for (const auto& d : done)
    CHECK(d.result.tokens == alone(configs, combiner, speculator, requests[spec_of.at(d.id)]).tokens);
  // Its one sequence: a second create is refused, a released one cannot be used, and a new
  // one starts from an empty context whatever the model held.
  cospec::batch_of_one<synthetic_model> one(models[0]);
  const cospec::sequence_id s = one.create_sequence();
  CHECK_THROWS_AS(one.create_sequence(), cospec::usage_error);
  CHECK_THROWS_AS(one.truncate(s + 1, 0), cospec::usage_error);
  models[0].feed(std::vector<token_id>{1, 2, 3}, {});
  one.release_sequence(s);
  CHECK_THROWS_AS(one.context_length(s), cospec::usage_error);
  CHECK(one.create_sequence() == s);
  CHECK(one.context_length(s) == 0);
  static_assert(!std::is_copy_constructible_v<cospec::batch_of_one<synthetic_model>>);
}

TEST_CASE("a request cancelled outside a step whose release throws does not strand the queued ones",
          "[batch][cancel][pool]") {
  auto models = batch_models(failure_models(), 1);
  models[0].fail_release_at = 1;
  cospec::batch_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({2, 1}));
  cospec::generation_limits limits;
  limits.max_new_tokens = 30;
  const auto running = decoder.submit(std::vector<token_id>{1, 2}, limits);
  const auto queued = decoder.submit(std::vector<token_id>{3, 4}, limits);
  REQUIRE(decoder.step());
  CHECK(decoder.cancel(running));  // its release throws: model 0 has no sequence left
  CHECK(decoder.running() == 0);
  const auto done = decoder.run();
  CHECK(decoder.queued() == 0);
  REQUIRE(done.size() == 2);
  CHECK(done[0].id == running);
  CHECK(done[0].result.reason == cospec::finish_reason::cancelled);
  CHECK(done[1].id == queued);
  CHECK(is_error<cospec::backend_failure>(done[1].error));
  CHECK_FALSE(decoder.step());
}

TEST_CASE("a step policy that throws loses no request, and the decoder goes on exactly", "[batch][policy]") {
  const auto configs = failure_models();
  const auto combiner = cospec::weighted_ensemble::uniform(2);
  const auto speculator = cospec::alternating({2, 2});
  auto models = batch_models(configs, 3);
  cospec::batch_options options;
  std::size_t calls = 0;
  options.choose_step = [&](std::span<const cospec::waiting_pass_group> groups) -> std::size_t {
    if (++calls % 5 == 0) throw std::runtime_error("policy failure");
    return cospec::fullest_pass{}(groups);
  };
  cospec::batch_decoder decoder(pointers(models), combiner, speculator, cospec::sampling_settings{}, options);
  const auto requests = greedy_requests(3);
  std::map<cospec::request_id, std::size_t> spec_of;
  for (std::size_t r = 0; r < requests.size(); ++r)
    spec_of[decoder.submit(requests[r].prompt, requests[r].settings, requests[r].limits)] = r;
  std::size_t thrown = 0;
  std::vector<cospec::finished_request> finished;
  while (true) {
    try {
      if (!decoder.step()) break;
    } catch (const std::runtime_error&) {
      ++thrown;
    }
    for (auto& d : decoder.take_finished()) finished.push_back(std::move(d));
  }
  CHECK(thrown >= 2);
  REQUIRE(finished.size() == 3);
  for (const auto& d : finished) {
    CHECK_FALSE(d.failed());
    CHECK(d.result.tokens == alone(configs, combiner, speculator, requests[spec_of.at(d.id)]).tokens);
  }
}

// ---- the speculation gate (docs/engine.md, "The batch decides whether to speculate") -------

TEST_CASE("the speculation gate keeps the cheaper advice and probes the other ever more rarely", "[batch][gate]") {
  // Epochs of 4 steps; the cheaper advice costs 1 per committed token, the other 1.5. The worse
  // advice runs in epoch 0 or 1 (each advice is tried once), then as probes at epochs 10, 27
  // and 60: 8, 16 and 32 epochs after the probe before, each probe having confirmed the choice.
  for (const bool speculation_pays : {false, true}) {
    cospec::speculation_gate gate({.epoch_steps = 4, .probe_every = 8, .decay = 0.5});
    std::vector<std::size_t> worse_epochs;
    for (std::size_t epoch = 0; epoch < 80; ++epoch) {
      const bool cheap = (gate.advice() == cospec::batch_advice::speculate) == speculation_pays;
      if (!cheap) worse_epochs.push_back(epoch);
      for (std::size_t step = 0; step < 4; ++step) gate.observe_step(cheap ? 2.0 : 3.0, 2);
    }
    INFO("speculation pays: " << speculation_pays);
    const std::vector<std::size_t> expected{speculation_pays ? std::size_t{1} : std::size_t{0}, 10, 27, 60};
    CHECK(worse_epochs == expected);
    CHECK(gate.cost_per_token(cospec::batch_advice::speculate) == Approx(speculation_pays ? 1.0 : 1.5));
    CHECK(gate.cost_per_token(cospec::batch_advice::score_only) == Approx(speculation_pays ? 1.5 : 1.0));
  }
}

TEST_CASE("the speculation gate follows a batch whose cheaper advice changes", "[batch][gate]") {
  // Scoring only is cheaper for 30 epochs, then speculating: the probe at epoch 60 (32 epochs
  // after the one at 27) finds it, and the gate speculates from then on, but for probes of
  // scoring only, 8 epochs apart again once the choice was overturned.
  cospec::speculation_gate gate({.epoch_steps = 4, .probe_every = 8, .decay = 0.5});
  std::vector<cospec::batch_advice> advice;
  for (std::size_t epoch = 0; epoch < 80; ++epoch) {
    advice.push_back(gate.advice());
    const bool speculating = gate.advice() == cospec::batch_advice::speculate;
    const bool cheap = speculating == (epoch >= 30);
    for (std::size_t step = 0; step < 4; ++step) gate.observe_step(cheap ? 2.0 : 3.0, 2);
  }
  CHECK(advice[29] == cospec::batch_advice::score_only);
  CHECK(advice[59] == cospec::batch_advice::score_only);
  CHECK(advice[60] == cospec::batch_advice::speculate);  // the probe
  std::size_t speculating = 0;
  for (std::size_t epoch = 61; epoch < 80; ++epoch) speculating += advice[epoch] == cospec::batch_advice::speculate;
  CHECK(speculating >= 17);
  CHECK(advice[61] == cospec::batch_advice::speculate);
}

TEST_CASE("the speculation gate weighs speculation against the prediction of the steps it ran in",
          "[batch][gate]") {
  // Speculation measures 1.5 per token while scoring only is predicted at `during` per token;
  // afterwards the batch changes (requests end, or join) and the prediction becomes `after`.
  // The decision follows 1.5 / during, the relative cost, not 1.5 against `after`: compared
  // with the new prediction, a measurement taken at another batch size would reverse it.
  struct batch_change {
    double during;
    double after;
    cospec::batch_advice expected;
  };
  for (const batch_change change : {batch_change{1.4, 2.0, cospec::batch_advice::score_only},
                                    batch_change{1.6, 1.0, cospec::batch_advice::speculate}}) {
    cospec::speculation_gate gate({.epoch_steps = 4, .probe_every = 8, .decay = 0.5});
    for (std::size_t step = 0; step < 4; ++step) gate.observe_step(3.0, 2, change.during);
    INFO("predicted during speculation " << change.during << ", after " << change.after);
    CHECK(gate.speculation_relative_cost() == Approx(1.5 / change.during));
    CHECK(gate.advice() == change.expected);
    // Six more epochs (a probe of speculation would come at epoch 8): the advice holds
    // although speculation's 1.5 per token now compares the other way with the prediction.
    for (std::size_t epoch = 1; epoch < 7; ++epoch) {
      const bool speculating = gate.advice() == cospec::batch_advice::speculate;
      for (std::size_t step = 0; step < 4; ++step)
        gate.observe_step(speculating ? 3.0 * change.after / change.during : 2.0 * change.after, 2, change.after);
      CHECK(gate.advice() == change.expected);
    }
  }
}

namespace {

/// A test policy that takes advice: model 0 proposes `gamma` tokens, model 1 verifies
/// (fixed_proposer), and under score_only it schedules as standard decoding does. It says its
/// schedule follows timings, which is what lets a batch decoder gate it.
struct advisable_proposer {
  cospec::fixed_proposer inner{0, 3};
  cospec::batch_advice advice = cospec::batch_advice::speculate;
  bool timings = true;

  void check(std::size_t n) const { inner.check(n); }
  cospec::invocation next(const cospec::schedule_view& view) {
    if (advice == cospec::batch_advice::score_only) return cospec::standard{}.next(view);
    return inner.next(view);
  }
  void advise(cospec::batch_advice a) noexcept { advice = a; }
  [[nodiscard]] bool follows_timings() const noexcept { return timings; }
};
static_assert(cospec::advisable_speculator<advisable_proposer>);
static_assert(cospec::advisable_speculator<cospec::adaptive>);
static_assert(!cospec::advisable_speculator<cospec::alternating>);

struct gated_run {
  double virtual_time = 0.0;
  std::size_t steps = 0;
  std::size_t steps_score_only = 0;
  std::map<cospec::request_id, std::vector<token_id>> tokens;
};

template <class Speculator>
gated_run run_batch(const std::vector<synthetic_model_config>& configs, std::size_t count, Speculator speculator,
                    std::vector<cospec::pass_cost> costs, bool gate) {
  auto models = batch_models(configs, count);
  cospec::batch_options options;
  options.pass_costs = std::move(costs);
  options.gate_speculation = gate;
  options.gate.epoch_steps = 8;
  cospec::batch_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), std::move(speculator),
                                cospec::sampling_settings{}, options);
  const auto requests = greedy_requests(count);
  for (const auto& spec : requests) {
    request_spec longer = spec;
    longer.limits.max_new_tokens = 160;
    decoder.submit(longer.prompt, longer.settings, longer.limits);
  }
  gated_run run;
  for (auto& done : decoder.run()) {
    REQUIRE_FALSE(done.failed());
    run.tokens[done.id] = done.result.tokens;
  }
  run.virtual_time = decoder.statistics().virtual_time;
  run.steps = decoder.statistics().steps;
  run.steps_score_only = decoder.statistics().steps_score_only;
  return run;
}

/// Standard decoding, advisable_proposer ungated and gated, on `count` requests priced by `costs`.
struct gate_comparison {
  gated_run standard;
  gated_run ungated;
  gated_run gated;

  [[nodiscard]] std::string describe() const {
    return "virtual time: standard " + std::to_string(standard.virtual_time) + ", ungated " +
           std::to_string(ungated.virtual_time) + ", gated " + std::to_string(gated.virtual_time) + "; gated steps " +
           std::to_string(gated.steps) + ", score-only " + std::to_string(gated.steps_score_only);
  }
};

gate_comparison compare_gate(std::size_t count, const std::vector<cospec::pass_cost>& costs) {
  const auto configs = failure_models();
  return {run_batch(configs, count, cospec::standard{}, costs, true),
          run_batch(configs, count, advisable_proposer{}, costs, false),
          run_batch(configs, count, advisable_proposer{}, costs, true)};
}

}  // namespace

TEST_CASE("where every token of a pass costs more than proposals save, the gate has the batch only score",
          "[batch][gate]") {
  // The cost clock prices a pass at 0.1 + 1 per token on both models: compute-bound, so
  // speculation's extra tokens per pass cost more than the passes it saves.
  const gate_comparison runs = compare_gate(12, {{0.1, 1.0}, {0.1, 1.0}});
  INFO(runs.describe());
  const auto& [standard, ungated, gated] = runs;
  CHECK(ungated.virtual_time > 1.2 * standard.virtual_time);  // speculation is a loss here
  CHECK(gated.virtual_time < 1.1 * standard.virtual_time);
  CHECK(gated.steps_score_only > gated.steps / 2);
  CHECK(ungated.steps_score_only == 0);
  // Greedy: every request's tokens are the same whatever the schedule.
  CHECK(gated.tokens == standard.tokens);
  CHECK(ungated.tokens == standard.tokens);
}

TEST_CASE("where the fixed cost of a pass dominates, the gate lets the batch speculate", "[batch][gate]") {
  const gate_comparison runs = compare_gate(2, {{1.0, 0.01}, {10.0, 0.01}});
  INFO(runs.describe());
  const auto& [standard, ungated, gated] = runs;
  CHECK(ungated.virtual_time < 0.8 * standard.virtual_time);  // speculation pays here
  // The price of knowing: the first try of scoring only and the probes, about 1 epoch in 10.
  CHECK(gated.virtual_time < 1.15 * ungated.virtual_time);
  CHECK(gated.steps_score_only < gated.steps / 5);
  CHECK(gated.tokens == standard.tokens);
}

TEST_CASE("the speculation gate charges proposals to the tokens they bring", "[batch][gate]") {
  // Runs of 3 proposals on 8 requests, where the fixed cost of a pass dominates: speculation
  // costs 0.7 of standard decoding. An 8-step epoch holds about two rounds, so charging each
  // pass to its own step would charge an epoch for the proposals of a round whose tokens come
  // in the next: the first epoch measured 2.2 times scoring only's cost that way, and the
  // batch scored only for 291 of 315 steps (0.97 of standard decoding's cost).
  const gate_comparison runs = compare_gate(8, {{3.0, 0.1}, {9.0, 0.1}});
  INFO(runs.describe());
  const auto& [standard, ungated, gated] = runs;
  CHECK(ungated.virtual_time < 0.8 * standard.virtual_time);
  CHECK(gated.virtual_time < 1.05 * ungated.virtual_time);
  CHECK(gated.steps_score_only < gated.steps / 10);
  CHECK(gated.tokens == standard.tokens);
}

namespace {

/// Standard decoding under either advice, saying it follows timings: the gate measures
/// standard decoding as "speculation", whose cost is known exactly.
struct advisable_standard {
  void check(std::size_t) const {}
  cospec::invocation next(const cospec::schedule_view& view) const { return cospec::standard{}.next(view); }
  void advise(cospec::batch_advice) noexcept {}
  [[nodiscard]] bool follows_timings() const noexcept { return true; }
};

}  // namespace

TEST_CASE("the speculation gate prices decoding from each request's first token on", "[batch][gate]") {
  // Three requests in lockstep, passes priced a_k + b_k * tokens. The first epoch (8 steps):
  // both models read the prompts (the second pass commits every request's first token), then
  // three rounds of one token per request on each model. Prompts and first tokens are not
  // decoding: what the gate measures is the 3 rounds' cost over their 9 tokens, which is
  // exactly what it predicts for scoring only, sum_k (a_k + 3 b_k) / 3. Counting the first
  // tokens too (for passes the gate did not price) would give 3/4 of it.
  const auto configs = failure_models();
  const std::vector<cospec::pass_cost> costs{{2.0, 0.5}, {5.0, 0.25}};
  auto models = batch_models(configs, 3);
  cospec::batch_options options;
  options.pass_costs = costs;
  options.gate.epoch_steps = 8;
  cospec::batch_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), advisable_standard{},
                                cospec::sampling_settings{}, options);
  for (const auto& spec : greedy_requests(3)) {
    request_spec longer = spec;
    longer.limits.max_new_tokens = 40;
    decoder.submit(longer.prompt, longer.settings, longer.limits);
  }
  for (int step = 0; step < 8; ++step) REQUIRE(decoder.step());
  const double predicted = (2.0 + 3 * 0.5 + 5.0 + 3 * 0.25) / 3.0;
  CHECK(decoder.gate().cost_per_token(cospec::batch_advice::speculate) == Approx(predicted));
  CHECK(decoder.gate().speculation_relative_cost() == Approx(1.0));
  // The schedule the comment describes: the prompt passes over 3 tokens per request, then
  // three one-token rounds.
  CHECK(decoder.statistics().virtual_time ==
        Approx(2.0 + 0.5 * 9 + 5.0 + 0.25 * 9 + 3 * (2.0 + 0.5 * 3) + 3 * (5.0 + 0.25 * 3)));
}

TEST_CASE("the gate leaves alone a policy whose schedule does not follow timings", "[batch][gate]") {
  // Gating would make a request's schedule, and so its sampled tokens, depend on the batch.
  const auto configs = failure_models();
  const std::vector<cospec::pass_cost> costs{{0.1, 1.0}, {0.1, 1.0}};
  advisable_proposer deterministic;
  deterministic.timings = false;
  CHECK(run_batch(configs, 12, deterministic, costs, true).steps_score_only == 0);
  CHECK(run_batch(configs, 12, cospec::adaptive(2), costs, true).steps_score_only == 0);
}

TEST_CASE("told what scoring only costs, the speculation gate never tries it and probes speculation ever more rarely",
          "[batch][gate]") {
  // Speculation measures 1.5 per token, scoring only is predicted at 1.0: after the first epoch
  // the gate scores only, and tries speculation again at epochs 8, 25 and 58 (8, 16, 32 epochs
  // after the probe before). With a prediction above speculation's cost it keeps speculating
  // and never scores only.
  for (const double predicted : {1.0, 2.0}) {
    cospec::speculation_gate gate({.epoch_steps = 4, .probe_every = 8, .decay = 0.5});
    std::vector<std::size_t> speculating;
    for (std::size_t epoch = 0; epoch < 80; ++epoch) {
      if (gate.advice() == cospec::batch_advice::speculate) speculating.push_back(epoch);
      for (std::size_t step = 0; step < 4; ++step) gate.observe_step(3.0, 2, predicted);
    }
    INFO("predicted cost of scoring only: " << predicted);
    if (predicted < 1.5) CHECK(speculating == std::vector<std::size_t>{0, 8, 25, 58});
    else CHECK(speculating.size() == 80);
    // Scoring only was never measured where it never ran; where it ran, its steps were recorded.
    if (predicted < 1.5) CHECK(gate.cost_per_token(cospec::batch_advice::score_only) == Approx(1.5));
    else CHECK(gate.cost_per_token(cospec::batch_advice::score_only) == std::numeric_limits<double>::infinity());
  }
}

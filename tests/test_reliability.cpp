// Reliability (docs/reliability.md): settings that can never work are rejected at
// construction, before any model is called; backends that throw, overflow their context or are
// slow, callbacks and processors that throw, and invalid logits at any position are reported
// with the model, position and value at fault. After every failure no model's cache holds a
// token that was never committed, and the next generate is exact: it gives what a fresh
// decoder gives for the same prompt and seed.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/synthetic_model.hpp"
#include "support/checking_adapter.hpp"
#include "support/model_sets.hpp"

namespace {

using cospec::testing::pointers;

using Catch::Matchers::Contains;
using cospec::token_id;
using cospec::examples::synthetic_model_config;
using cospec::testing::checking_adapter;
using cospec::testing::poison_kind;
using cospec::testing::row_poison;

constexpr std::size_t vocabulary = 16;
constexpr std::size_t new_tokens = 24;
const std::vector<token_id> prompt{3, 1, 4};

/// `window`: how many previous tokens the logits depend on. The default covers every text of
/// these tests, so that a cache holding a wrong token anywhere changes the logits.
synthetic_model_config config(std::uint64_t own_seed, std::size_t window = 64) {
  return {.vocabulary_size = vocabulary, .window = window, .shared_seed = 1, .own_seed = own_seed, .agreement = 0.7,
          .sharpness = 2.0};
}

std::vector<checking_adapter> fresh_adapters(std::size_t n, std::size_t window = 64) {
  std::vector<checking_adapter> adapters;
  for (std::size_t k = 0; k < n; ++k) adapters.emplace_back(config(2 + k, window));
  return adapters;
}

// ---- the speculation methods every failure is injected into ---------------------------------

enum class method { alternating, fixed_proposer, standard };
constexpr method methods[] = {method::alternating, method::fixed_proposer, method::standard};

const char* name(method m) {
  switch (m) {
    case method::alternating: return "alternating";
    case method::fixed_proposer: return "fixed_proposer";
    default: return "standard";
  }
}

/// Calls `f` with the speculator of `m` for three models.
template <class Function>
decltype(auto) with_speculator(method m, Function&& f) {
  switch (m) {
    case method::alternating: return f(cospec::alternating({3, 1, 2}));
    case method::fixed_proposer: return f(cospec::fixed_proposer(2, 3));
    default: return f(cospec::standard{});
  }
}

/// A logits processor that halves token 0's weight and throws at its n-th call while armed.
/// Copies share the counter, so a test can disarm the copy the decoder holds.
struct throwing_processor {
  struct state {
    std::size_t calls = 0;
    std::size_t throw_at = 0;
  };
  std::shared_ptr<state> shared = std::make_shared<state>();

  void operator()(const cospec::processor_context& context, std::span<float> logits) const {
    if (++shared->calls == shared->throw_at) throw std::runtime_error("injected processor failure");
    // Halves token 0's weight: log(1/2) in the target's own scale.
    logits[0] += (context.tempered || context.greedy ? 1.0f : context.temperature) * std::log(0.5f);
  }
};

/// One hostile run: what goes wrong, and what the error must say.
struct hostility {
  std::string label;
  std::function<void(std::vector<checking_adapter>&)> arm;  ///< makes adapters misbehave
  std::size_t processor_throws_at = 0;                      ///< the processor's n-th call throws
  std::size_t callback_throws_at = 0;                       ///< on_token throws at the n-th token
};

/// What happened in a hostile run.
struct hostile_outcome {
  bool threw = false;
  std::exception_ptr error;
  // Without an error: how it ended, the tokens it generated, and (greedy identity) what the
  // same decoder gives the prompt after every adapter behaves again.
  cospec::finish_reason reason = cospec::finish_reason::max_new_tokens;
  std::size_t tokens = 0;
  std::vector<token_id> committed;
  std::vector<token_id> unlimited;
};

/// Runs a decoder of three checking adapters with `settings` under `h`. If generate throws,
/// checks that no adapter holds a token that was never committed (the prompt and the
/// tokens on_token saw), then lets every adapter behave again and checks that the decoder's
/// next two generates, one with the same prompt and one continuing the committed text, give
/// the tokens a fresh decoder gives. Returns whether and what it threw.
template <class Combiner>
hostile_outcome run_hostile(method m, const Combiner& combiner, const cospec::sampling_settings& settings,
                            const hostility& h) {
  return with_speculator(m, [&](auto speculator) {
    hostile_outcome outcome;
    throwing_processor processor;
    processor.shared->throw_at = h.processor_throws_at;
    cospec::sampling_settings processed = settings;
    processed.processor = processor;
    auto adapters = fresh_adapters(3);
    cospec::decoder decoder(pointers(adapters), combiner, speculator, processed);
    if (h.arm) h.arm(adapters);

    std::vector<token_id> committed = prompt;
    cospec::generation_limits limits;
    limits.max_new_tokens = new_tokens;
    limits.seed = 11;
    limits.on_token = [&](token_id token) {
      committed.push_back(token);
      if (committed.size() - prompt.size() == h.callback_throws_at) throw std::runtime_error("injected callback failure");
      return true;
    };
    try {
      const cospec::generation_result result = decoder.generate(prompt, limits);
      outcome.reason = result.reason;
      outcome.tokens = result.tokens.size();
    } catch (...) {
      outcome.threw = true;
      outcome.error = std::current_exception();
    }
    if (!outcome.threw) {
      for (auto& a : adapters) CHECK(a.violations.empty());
      outcome.committed.assign(committed.begin() + static_cast<std::ptrdiff_t>(prompt.size()), committed.end());
      for (auto& a : adapters) a.behave();
      processor.shared->throw_at = 0;
      limits.on_token = nullptr;
      auto clean = fresh_adapters(3);
      cospec::decoder reference(pointers(clean), combiner, speculator, processed);
      outcome.unlimited = reference.generate(prompt, limits).tokens;
      return outcome;
    }

    for (std::size_t k = 0; k < adapters.size(); ++k) {
      INFO("model " << k << " holds " << adapters[k].context().size() << " tokens, " << committed.size()
                    << " are committed");
      CHECK(adapters[k].context_is_prefix_of(committed));
    }
    for (auto& a : adapters) a.behave();
    processor.shared->throw_at = 0;
    limits.on_token = nullptr;

    auto fresh_tokens = [&](const std::vector<token_id>& text) {
      auto clean = fresh_adapters(3);
      cospec::decoder reference(pointers(clean), combiner, speculator, processed);
      return reference.generate(text, limits).tokens;
    };
    CHECK(decoder.generate(prompt, limits).tokens == fresh_tokens(prompt));
    std::vector<token_id> continued = committed;
    continued.push_back(5);
    CHECK(decoder.generate(continued, limits).tokens == fresh_tokens(continued));
    for (auto& a : adapters) CHECK(a.violations.empty());
    return outcome;
  });
}

cospec::sampling_settings sampling_mode(bool greedy) {
  cospec::sampling_settings settings;
  settings.temperature = greedy ? 0.0f : 0.9f;
  settings.top_k = greedy ? std::nullopt : std::optional<std::size_t>(12);
  settings.seed = 3;
  return settings;
}

/// The message of an exception and of every exception nested in it, joined.
std::string messages(std::exception_ptr error) {
  std::string text;
  std::function<void(const std::exception&)> walk = [&](const std::exception& e) {
    text += e.what();
    text += " | ";
    try {
      std::rethrow_if_nested(e);
    } catch (const std::exception& inner) {
      walk(inner);
    } catch (...) {
    }
  };
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    walk(e);
  } catch (...) {
    text = "not a std::exception";
  }
  return text;
}

template <class Expected>
bool is(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const Expected&) {
    return true;
  } catch (...) {
    return false;
  }
}

/// Runs `make_hostility(call)` for call = 1, 2, ... until a run no longer throws (the failure
/// comes after the run's last call), in every method, greedy and sampling; `check` looks at
/// each error. Returns how many runs threw.
template <class Make, class Check>
std::size_t sweep(Make&& make_hostility, Check&& check, std::size_t max_call = 80) {
  std::size_t failures = 0;
  for (method m : methods)
    for (bool greedy : {false, true})
      for (std::size_t call = 1; call <= max_call; ++call) {
        const hostility h = make_hostility(call);
        INFO(h.label << " at call " << call << ", " << name(m) << (greedy ? ", greedy" : ", sampling"));
        const hostile_outcome outcome = run_hostile(m, cospec::weighted_ensemble::uniform(3), sampling_mode(greedy), h);
        if (!outcome.threw) break;
        ++failures;
        INFO(messages(outcome.error));
        check(outcome.error, call);
      }
  return failures;
}

}  // namespace

// ---- construction ----------------------------------------------------------------------------

TEST_CASE("every setting that can never work is rejected at construction, naming it and its value, before any "
          "model is called",
          "[reliability][configuration]") {
  auto adapters = fresh_adapters(3);
  const auto models = pointers(adapters);
  const auto ensemble = cospec::weighted_ensemble::uniform(3);
  const cospec::alternating speculator({3, 1, 2});
  auto build = [&](auto&&... arguments) { cospec::decoder decoder(arguments...); };
  auto with = [](auto change) {
    cospec::sampling_settings settings;
    change(settings);
    return settings;
  };
  using settings_t = cospec::sampling_settings;
  constexpr float nan = std::numeric_limits<float>::quiet_NaN();
  constexpr float infinity = std::numeric_limits<float>::infinity();
  auto rejects = [&](auto&& construct, const auto& matcher) {
    CHECK_THROWS_MATCHES(construct(), cospec::invalid_configuration, Catch::Matchers::Predicate<std::exception>(
                                                                         [&](const std::exception& e) {
                                                                           return matcher.match(e.what());
                                                                         },
                                                                         "message matches"));
  };
  auto sampling_rejects = [&](cospec::sampling_settings settings, const auto& matcher) {
    INFO("temperature " << settings.temperature);
    rejects([&] { build(models, ensemble, speculator, settings); }, matcher);
  };

  SECTION("sampling settings") {
    sampling_rejects(with([](settings_t& s) { s.temperature = -1.0f; }), Contains("temperature") && Contains("-1"));
    sampling_rejects(with([&](settings_t& s) { s.temperature = nan; }), Contains("temperature") && Contains("nan"));
    sampling_rejects(with([&](settings_t& s) { s.temperature = infinity; }), Contains("temperature") && Contains("inf"));
    sampling_rejects(with([](settings_t& s) { s.temperature = 1e-45f; }),
                     Contains("temperature") && Contains("1.4") && Contains("e-45"));
    sampling_rejects(with([](settings_t& s) { s.top_k = 0; }), Contains("top_k"));
    sampling_rejects(with([](settings_t& s) { s.top_p = 0.0f; }), Contains("top_p") && Contains("got 0"));
    sampling_rejects(with([](settings_t& s) { s.top_p = 1.5f; }), Contains("top_p") && Contains("1.5"));
    sampling_rejects(with([&](settings_t& s) { s.top_p = nan; }), Contains("top_p") && Contains("nan"));
    sampling_rejects(with([](settings_t& s) { s.min_p = -0.25f; }), Contains("min_p") && Contains("-0.25"));
    sampling_rejects(with([](settings_t& s) { s.min_p = 1.5f; }), Contains("min_p") && Contains("1.5"));
    sampling_rejects(with([&](settings_t& s) { s.min_p = nan; }), Contains("min_p") && Contains("nan"));
    sampling_rejects(with([](settings_t& s) { s.logit_bias = {{16, 1.0f}}; }),
                     Contains("logit_bias names token 16") && Contains("vocabulary of 16"));
    sampling_rejects(with([](settings_t& s) { s.logit_bias = {{-1, 1.0f}}; }), Contains("logit_bias names token -1"));
    sampling_rejects(with([&](settings_t& s) { s.logit_bias = {{3, nan}}; }),
                     Contains("logit_bias of token 3") && Contains("nan"));
    sampling_rejects(with([&](settings_t& s) { s.logit_bias = {{3, infinity}}; }),
                     Contains("logit_bias of token 3") && Contains("inf"));
  }
  SECTION("combiner weights") {
    rejects([] { cospec::weighted_ensemble({1.0f, -0.5f, 1.0f}); }, Contains("weight of model 1") && Contains("-0.5"));
    rejects([&] { cospec::weighted_ensemble({1.0f, 1.0f, nan}); }, Contains("weight of model 2") && Contains("nan"));
    rejects([&] { cospec::weighted_ensemble({infinity, 1.0f, 1.0f}); }, Contains("weight of model 0") && Contains("inf"));
    rejects([] { cospec::weighted_ensemble({0.0f, 0.0f, 0.0f}); }, Contains("all zero"));
    rejects([] { cospec::weighted_ensemble(std::vector<float>{}); }, Contains("at least one"));
    rejects([&] { cospec::logit_arithmetic({1.0f, nan, 1.0f}); }, Contains("weight of model 1") && Contains("nan"));
    rejects([&] { cospec::logit_arithmetic({1.0f, 1.0f, -infinity}); },
            Contains("weight of model 2") && Contains("inf"));
    rejects([] { cospec::logit_arithmetic({0.0f, 0.0f}); }, Contains("all zero"));
    rejects([] { cospec::logit_arithmetic({1.0f, -0.1f}, cospec::plausibility_constraint{3, 0.1f}); },
            Contains("plausibility expert 3"));
    rejects([] { cospec::contrastive_decoding(0.1f, 1.5f); }, Contains("alpha") && Contains("1.5"));
    rejects([] { cospec::contrastive_decoding(-0.5f); }, Contains("mu") && Contains("-0.5"));
    rejects([] { cospec::callable_combiner(0, [](cospec::logit_rows, std::span<float>) {}); },
            Contains("at least one model"));
  }
  SECTION("models, vocabularies and combiner") {
    rejects([&] { build(std::vector<checking_adapter*>{}, cospec::weighted_ensemble::uniform(1), cospec::standard{}); },
            Contains("at least one model"));
    rejects([&] { build(std::vector<checking_adapter*>{models[0], nullptr, models[2]}, ensemble, speculator); },
            Contains("model 1 is null"));
    rejects([&] { build(models, cospec::weighted_ensemble::uniform(2), speculator); },
            Contains("combines 2 models") && Contains("3 were given"));
    std::vector<checking_adapter> odd;
    odd.emplace_back(config(2));
    odd.emplace_back(synthetic_model_config{.vocabulary_size = 0});
    odd.emplace_back(synthetic_model_config{.vocabulary_size = 300});
    rejects([&] { build(pointers(odd), ensemble, speculator); }, Contains("model 1 has an empty vocabulary"));
    std::vector<checking_adapter*> mismatched{models[0], models[1], &odd[2]};
    rejects([&] { build(mismatched, ensemble, speculator); },
            Contains("model 0 has a vocabulary of 16 tokens") && Contains("model 2 one of 300") &&
                Contains("vocabulary_padding (256)"));
    for (auto& a : odd) CHECK(a.feeds + a.truncates == 0);
  }
  SECTION("speculators") {
    rejects([] { cospec::alternating({3, 0, 2}, {}, -0.5f); }, Contains("p_min") && Contains("-0.5"));
    rejects(
        [] {
          cospec::adaptive_options options;
          options.p_min = 2.0f;
          cospec::adaptive(2, options);
        },
        Contains("p_min") && Contains("2"));
    rejects([&] { build(models, ensemble, cospec::alternating({3, 1})); }, Contains("2 gammas for 3 models"));
    rejects([&] { build(models, ensemble, cospec::alternating({1, 1, 1}, {0, 0, 1})); }, Contains("cost order"));
    rejects([] { cospec::fixed_proposer(0, 0); }, Contains("gamma"));
    rejects([&] { build(models, ensemble, cospec::fixed_proposer(3, 2)); }, Contains("proposer 3"));
  }
  SECTION("decoder options") {
    cospec::decoder_options options;
    options.pass_costs = {{1.0, 0.0}, {2.0, 0.0}};
    rejects([&] { build(models, ensemble, speculator, cospec::sampling_settings{}, options); },
            Contains("2 pass costs for 3 models"));
    options.pass_costs = {{1.0, 0.0}, {std::numeric_limits<double>::quiet_NaN(), 0.0}, {1.0, -2.0}};
    rejects([&] { build(models, ensemble, speculator, cospec::sampling_settings{}, options); },
            Contains("pass cost of model 1") && Contains("nan"));
    options.pass_costs[1] = {1.0, 0.0};
    rejects([&] { build(models, ensemble, speculator, cospec::sampling_settings{}, options); },
            Contains("pass cost of model 2") && Contains("-2"));
  }
  SECTION("prompts, at generate") {
    cospec::decoder decoder(models, ensemble, speculator);
    rejects([&] { decoder.generate(std::vector<token_id>{}); }, Contains("prompt is empty"));
    rejects([&] { decoder.generate(std::vector<token_id>{1, 16}); },
            Contains("prompt token 1 is 16") && Contains("vocabulary of 16"));
    rejects([&] { decoder.generate(std::vector<token_id>{-3}); }, Contains("prompt token 0 is -3"));
  }
  for (auto& a : adapters) {
    CHECK(a.feeds == 0);
    CHECK(a.truncates == 0);
  }
}

// ---- backends that misbehave -------------------------------------------------------------------

TEST_CASE("a feed that throws at any call is a backend_failure naming the model and position, and the decoder "
          "stays exact",
          "[reliability][backend]") {
  for (std::size_t model = 0; model < 3; ++model) {
    const std::size_t failures = sweep(
        [&](std::size_t call) {
          return hostility{.label = "feed of model " + std::to_string(model) + " throws",
                           .arm = [=](auto& adapters) { adapters[model].fail_feed_at = call; }};
        },
        [&](std::exception_ptr error, std::size_t) {
          CHECK(is<cospec::backend_failure>(error));
          const std::string text = messages(error);
          CHECK_THAT(text, Contains("model " + std::to_string(model) + ": feeding") && Contains("at position") &&
                               Contains("injected feed failure"));
        });
    CHECK(failures > 20);
  }
}

TEST_CASE("a truncate that throws at any call is a backend_failure, and the decoder stays exact",
          "[reliability][backend]") {
  for (std::size_t model = 0; model < 3; ++model) {
    const std::size_t failures = sweep(
        [&](std::size_t call) {
          return hostility{.label = "truncate of model " + std::to_string(model) + " throws",
                           .arm = [=](auto& adapters) { adapters[model].fail_truncate_at = call; }};
        },
        [&](std::exception_ptr error, std::size_t) {
          CHECK(is<cospec::backend_failure>(error));
          CHECK_THAT(messages(error), Contains("model " + std::to_string(model) + ": truncating to") &&
                                          Contains("injected truncate failure"));
        });
    CHECK(failures > 3);
  }
}

TEST_CASE("a model whose truncate keeps failing is reported again at the next generate, and recovers once it works",
          "[reliability][backend]") {
  for (method m : methods) {
    INFO(name(m));
    with_speculator(m, [&](auto speculator) {
      auto adapters = fresh_adapters(3);
      cospec::decoder decoder(pointers(adapters), cospec::weighted_ensemble::uniform(3), speculator);
      cospec::generation_limits limits;
      limits.max_new_tokens = new_tokens;
      limits.seed = 4;
      const auto expected = decoder.generate(prompt, limits).tokens;
      adapters[1].fail_truncate_at = adapters[1].truncates + 1;
      adapters[1].truncate_keeps_failing = true;
      const std::vector<token_id> other{2, 7, 1};  // shares nothing: every model must roll back
      CHECK_THROWS_AS(decoder.generate(other, limits), cospec::backend_failure);
      CHECK_THROWS_WITH(decoder.generate(other, limits), Contains("model 1: truncating to"));
      CHECK(adapters[0].context_is_prefix_of(other));
      CHECK(adapters[2].context_is_prefix_of(other));
      adapters[1].behave();
      CHECK(decoder.generate(prompt, limits).tokens == expected);
      for (auto& a : adapters) CHECK(a.violations.empty());
    });
  }
}

TEST_CASE("a truncate that fails while the prompt changes leaves no model believed to hold the new prompt",
          "[reliability][backend]") {
  // The models hold the first run's text; the second prompt shares only its first token and is
  // longer than that text. When model 0's truncate throws during the switch, models 1 and 2
  // must still be known to hold the old text, not the new prompt's first tokens.
  for (method m : methods) {
    INFO(name(m));
    with_speculator(m, [&](auto speculator) {
      auto adapters = fresh_adapters(3);
      cospec::decoder decoder(pointers(adapters), cospec::weighted_ensemble::uniform(3), speculator);
      cospec::generation_limits limits;
      limits.max_new_tokens = 6;
      limits.seed = 9;
      decoder.generate(prompt, limits);
      std::vector<token_id> longer{prompt[0]};
      for (token_id t = 0; t < 14; ++t) longer.push_back(t);
      adapters[0].fail_truncate_at = adapters[0].truncates + 1;
      CHECK_THROWS_AS(decoder.generate(longer, limits), cospec::backend_failure);
      for (auto& a : adapters) CHECK(a.context_is_prefix_of(longer));
      limits.max_new_tokens = new_tokens;
      auto clean = fresh_adapters(3);
      cospec::decoder reference(pointers(clean), cospec::weighted_ensemble::uniform(3), speculator);
      CHECK(decoder.generate(longer, limits).tokens == reference.generate(longer, limits).tokens);
    });
  }
}

TEST_CASE("an adapter's context_limit ends generation where the next token would not fit, keeping every token; a "
          "prompt that does not fit is a context_overflow naming the sizes",
          "[reliability][backend][context]") {
  std::size_t ended = 0;
  for (std::size_t model = 0; model < 3; ++model)
    for (std::size_t limit = 1; limit <= prompt.size() + new_tokens + 4; ++limit)
      for (method m : methods)
        for (bool greedy : {false, true}) {
          INFO("model " << model << " holds " << limit << " tokens, " << name(m) << (greedy ? ", greedy" : ""));
          const hostility h{.label = "context limit", .arm = [=](auto& adapters) { adapters[model].limit = limit; }};
          const hostile_outcome outcome = run_hostile(m, cospec::weighted_ensemble::uniform(3), sampling_mode(greedy), h);
          if (limit < prompt.size()) {
            REQUIRE(outcome.threw);
            CHECK(is<cospec::context_overflow>(outcome.error));
            CHECK_THAT(messages(outcome.error), Contains("prompt holds " + std::to_string(prompt.size()) + " tokens") &&
                                                    Contains("context limit of " + std::to_string(limit)));
            continue;
          }
          REQUIRE_FALSE(outcome.threw);
          // The models may be fed `limit` tokens, which gives the token after them.
          const std::size_t room = limit + 1 - prompt.size();
          CHECK(outcome.tokens == std::min(room, new_tokens));
          if (room < new_tokens) {
            CHECK(outcome.reason == cospec::finish_reason::context_limit);
            ++ended;
          }
          if (greedy) CHECK(std::equal(outcome.committed.begin(), outcome.committed.end(), outcome.unlimited.begin()));
        }
  CHECK(ended > 100);
}

TEST_CASE("an adapter that throws context_overflow from feed keeps its type, nested, and the decoder stays exact",
          "[reliability][backend][context]") {
  const std::size_t failures = sweep(
      [](std::size_t call) {
        return hostility{.label = "feed of model 1 overflows",
                         .arm = [=](auto& adapters) { adapters[1].overflow_feed_at = call; }};
      },
      [](std::exception_ptr error, std::size_t) {
        CHECK(is<cospec::context_overflow>(error));
        CHECK_THAT(messages(error), Contains("model 1: feeding") && Contains("overflowed its context") &&
                                        Contains("KV cache is full"));
        try {
          std::rethrow_exception(error);
        } catch (const cospec::context_overflow& overflow) {
          CHECK_THROWS_AS(std::rethrow_if_nested(overflow), cospec::context_overflow);  // the adapter's own
        }
      });
  CHECK(failures > 20);
}

TEST_CASE("a slow backend changes the time, not the tokens", "[reliability][backend]") {
  for (method m : methods)
    for (bool greedy : {false, true}) {
      INFO(name(m) << (greedy ? ", greedy" : ""));
      with_speculator(m, [&](auto speculator) {
        cospec::generation_limits limits;
        limits.max_new_tokens = 12;
        auto fast = fresh_adapters(3);
        auto slow = fresh_adapters(3);
        for (auto& a : slow) a.delay = std::chrono::microseconds(300);
        cospec::decoder fast_decoder(pointers(fast), cospec::weighted_ensemble::uniform(3), speculator, sampling_mode(greedy));
        cospec::decoder slow_decoder(pointers(slow), cospec::weighted_ensemble::uniform(3), speculator, sampling_mode(greedy));
        const auto expected = fast_decoder.generate(prompt, limits);
        const auto result = slow_decoder.generate(prompt, limits);
        CHECK(result.tokens == expected.tokens);
        for (std::size_t k = 0; k < 3; ++k) {
          CHECK(result.statistics.models[k].forward_passes == expected.statistics.models[k].forward_passes);
          CHECK(result.statistics.models[k].adapter_seconds >=
                0.9 * 300e-6 * static_cast<double>(result.statistics.models[k].forward_passes));
        }
        CHECK(result.statistics.seconds_in_adapters <= result.statistics.seconds_total);
      });
    }
}

// ---- the caller's own code throws -------------------------------------------------------------

TEST_CASE("an on_token callback that throws propagates unchanged, and the decoder stays exact",
          "[reliability][callback]") {
  const std::size_t failures = sweep(
      [](std::size_t call) {
        return hostility{.label = "on_token throws", .arm = {}, .callback_throws_at = call};
      },
      [](std::exception_ptr error, std::size_t) {
        CHECK_FALSE(is<cospec::error>(error));
        CHECK(messages(error) == "injected callback failure | ");
      },
      new_tokens + 1);
  CHECK(failures == 6 * new_tokens);
}

TEST_CASE("a logits processor that throws propagates unchanged, and the decoder stays exact",
          "[reliability][callback]") {
  const std::size_t failures = sweep(
      [](std::size_t call) {
        return hostility{.label = "the processor throws", .arm = {}, .processor_throws_at = call};
      },
      [](std::exception_ptr error, std::size_t) {
        CHECK_FALSE(is<cospec::error>(error));
        CHECK(messages(error) == "injected processor failure | ");
      });
  CHECK(failures >= 6 * new_tokens);
}

// ---- invalid logits --------------------------------------------------------------------------

TEST_CASE("invalid logits at any position are reported naming the model, the position and the value, and the "
          "decoder stays exact",
          "[reliability][logits]") {
  struct spoil {
    poison_kind kind;
    const char* says;
  };
  const spoil spoils[] = {{poison_kind::nan, "logit of token 5 is NaN"},
                          {poison_kind::plus_infinity, "logit of token 5 is +inf"},
                          {poison_kind::all_masked, "every token is masked (-inf)"}};
  std::size_t reported = 0;
  for (bool arithmetic : {false, true})
    for (const spoil& s : spoils)
      for (std::size_t model = 0; model < 3; ++model)
        for (std::size_t position = prompt.size(); position < prompt.size() + new_tokens; ++position)
          for (method m : methods)
            for (bool greedy : {false, true}) {
              INFO((arithmetic ? "logit arithmetic, " : "weighted ensemble, ")
                   << s.says << ", model " << model << ", position " << position << ", " << name(m)
                   << (greedy ? ", greedy" : ", sampling"));
              const hostility h{.label = "poisoned row", .arm = [&](auto& adapters) {
                                  adapters[model].poison = row_poison{position, s.kind, 5};
                                }};
              const hostile_outcome outcome =
                  arithmetic ? run_hostile(m, cospec::logit_arithmetic({1.0f, -0.1f, 0.5f}), sampling_mode(greedy), h)
                             : run_hostile(m, cospec::weighted_ensemble::uniform(3), sampling_mode(greedy), h);
              // Every position before prompt + new_tokens needs every model's row there.
              REQUIRE(outcome.threw);
              ++reported;
              INFO(messages(outcome.error));
              CHECK(is<cospec::invalid_logits>(outcome.error));
              CHECK_THAT(messages(outcome.error), Contains("position " + std::to_string(position) + ", model " +
                                                           std::to_string(model) + ": " + s.says));
            }
  CHECK(reported == 2 * 3 * 3 * new_tokens * 3 * 2);
}

TEST_CASE("invalid logits of a model with weight 0 are reported whether it proposes or only scores",
          "[reliability][logits]") {
  // docs/reliability.md: every row a model returns is validated, whatever its weight. Before,
  // a NaN in the rows of a model with weight 0 passed unnoticed under standard decoding (no
  // reduction read the row) but was an error where that model proposed from it: whether a run
  // failed depended on the schedule.
  for (bool arithmetic : {false, true})
    for (std::size_t position = prompt.size(); position < prompt.size() + new_tokens; ++position)
      for (method m : methods)
        for (bool greedy : {false, true}) {
          INFO((arithmetic ? "logit arithmetic" : "weighted ensemble") << ", position " << position << ", " << name(m)
                                                                        << (greedy ? ", greedy" : ", sampling"));
          // Model 0 has weight 0; the fixed proposer is model 2 and alternating starts with model 0.
          auto adapters = fresh_adapters(3);
          adapters[0].poison = row_poison{position, poison_kind::nan, 5};
          cospec::generation_limits limits;
          limits.max_new_tokens = new_tokens;
          const std::string expected = "position " + std::to_string(position) + ", model 0: logit of token 5 is NaN";
          with_speculator(m, [&](auto speculator) {
            auto run = [&](auto combiner) {
              cospec::decoder decoder(pointers(adapters), combiner, speculator, sampling_mode(greedy));
              CHECK_THROWS_MATCHES(decoder.generate(prompt, limits), cospec::invalid_logits,
                                   Catch::Matchers::Message(expected));
            };
            if (arithmetic) run(cospec::logit_arithmetic({0.0f, 1.0f, -0.1f}));
            else run(cospec::weighted_ensemble({0.0f, 1.0f, 1.0f}));
          });
        }
}

TEST_CASE("logits that define no target after the sampling transforms are reported with the position",
          "[reliability][logits]") {
  // Every model's row is fine; a logit bias of -inf on every token leaves nothing.
  cospec::sampling_settings settings;
  for (token_id t = 0; t < static_cast<token_id>(vocabulary); ++t)
    settings.logit_bias.emplace_back(t, -std::numeric_limits<float>::infinity());
  for (bool greedy : {false, true}) {
    settings.temperature = greedy ? 0.0f : 1.0f;
    auto adapters = fresh_adapters(3);
    cospec::decoder decoder(pointers(adapters), cospec::weighted_ensemble::uniform(3), cospec::alternating({3, 1, 2}),
                            settings);
    CHECK_THROWS_MATCHES(decoder.generate(prompt), cospec::invalid_logits,
                         Catch::Matchers::Message(greedy ? "position 3, the greedy target masks every token (after bias)"
                                                         : "position 3, the target masks every token (after penalties, "
                                                           "processor, bias and filters)"));
    for (auto& a : adapters) CHECK(a.context_is_prefix_of(prompt));
  }
}

// ---- extreme but valid settings ---------------------------------------------------------------

namespace {

/// Two related logit rows over `vocabulary` tokens.
struct two_rows {
  std::vector<float> first, second;
  std::vector<std::span<const float>> rows;
  two_rows() : first(vocabulary), second(vocabulary) {
    for (std::size_t j = 0; j < vocabulary; ++j) {
      first[j] = static_cast<float>(j % 5) - 2.0f;
      second[j] = static_cast<float>(j % 3) - 1.0f;
    }
    rows = {first, second};
  }
  [[nodiscard]] cospec::logit_rows view() const { return rows; }
};

template <class Combiner>
std::vector<float> target_of(Combiner combiner, const cospec::sampling_settings& settings, const two_rows& logits,
                             cospec::logits_processor processor = {}) {
  cospec::target_evaluator evaluator(combiner, settings, std::move(processor));
  std::vector<float> target(vocabulary);
  evaluator.distribution(logits.view(), {}, target);
  return target;
}

template <class Combiner>
token_id greedy_of(Combiner combiner, const cospec::sampling_settings& settings, const two_rows& logits) {
  cospec::target_evaluator evaluator(combiner, settings);
  std::vector<float> scratch(vocabulary);
  return evaluator.greedy_token(logits.view(), {}, scratch);
}

}  // namespace

TEST_CASE("a logit bias of +100 or more forces its token instead of overflowing, and never unmasks a token",
          "[reliability][logits]") {
  const two_rows logits;
  cospec::sampling_settings settings;
  for (float bias : {100.0f, 1000.0f, 3e38f}) {
    INFO("bias " << bias);
    settings.logit_bias = {{5, bias}};
    for (const auto& target : {target_of(cospec::weighted_ensemble::uniform(2), settings, logits),
                               target_of(cospec::logit_arithmetic({1.0f, 0.5f}), settings, logits)}) {
      CHECK(target[5] == Approx(1.0f));
      for (std::size_t j = 0; j < vocabulary; ++j)
        if (j != 5) CHECK(target[j] < 1e-30f);
    }
    settings.temperature = 0.0f;
    CHECK(greedy_of(cospec::weighted_ensemble::uniform(2), settings, logits) == 5);
    CHECK(greedy_of(cospec::logit_arithmetic({1.0f, 0.5f}), settings, logits) == 5);
    settings.temperature = 1.0f;
  }
  // Two forced tokens keep their ratio: exp(bias difference) times their ratio without bias.
  settings.logit_bias = {{5, 100.0f}, {7, 99.0f}};
  const auto unbiased = target_of(cospec::weighted_ensemble::uniform(2), cospec::sampling_settings{}, logits);
  const auto forced = target_of(cospec::weighted_ensemble::uniform(2), settings, logits);
  CHECK(forced[5] / forced[7] == Approx(std::exp(1.0) * unbiased[5] / unbiased[7]).epsilon(1e-5));
  CHECK(forced[5] + forced[7] == Approx(1.0f));
  // A token every model masks stays masked however large its bias.
  two_rows masked;
  masked.first[5] = masked.second[5] = -std::numeric_limits<float>::infinity();
  settings.logit_bias = {{5, 1000.0f}};
  const auto target = target_of(cospec::weighted_ensemble::uniform(2), settings, masked);
  CHECK(target[5] == 0.0f);
  CHECK(target == target_of(cospec::weighted_ensemble::uniform(2), cospec::sampling_settings{}, masked));
  settings.temperature = 0.0f;
  CHECK(greedy_of(cospec::weighted_ensemble::uniform(2), settings, masked) != 5);
}

TEST_CASE("a processor that shifts every logit far down leaves the target as it was",
          "[reliability][logits]") {
  // When the processor saw weights, multiplying them all by 1e-43 pushed the target into the
  // subnormals; in logit space the same intent is a shift, which the softmax undoes.
  const two_rows logits;
  for (const bool arithmetic : {false, true}) {
    INFO((arithmetic ? "logit arithmetic" : "weighted ensemble"));
    const auto target = [&](cospec::logits_processor processor) {
      return arithmetic ? target_of(cospec::logit_arithmetic({1.0f, 0.5f}), cospec::sampling_settings{}, logits,
                                    std::move(processor))
                        : target_of(cospec::weighted_ensemble::uniform(2), cospec::sampling_settings{}, logits,
                                    std::move(processor));
    };
    const auto plain = target([](const cospec::processor_context&, std::span<float>) {});
    for (float shift : {-87.0f, -94.0f, -99.0f, -1e30f}) {
      INFO("shift " << shift);
      const auto shifted = target([shift](const cospec::processor_context&, std::span<float> row) {
        for (float& l : row) l += shift;
      });
      double total = 0.0;
      for (std::size_t j = 0; j < vocabulary; ++j) {
        CHECK(std::isfinite(shifted[j]));
        total += shifted[j];
      }
      CHECK(total == Approx(1.0).epsilon(1e-5));
      if (shift > -1e6f)
        for (std::size_t j = 0; j < vocabulary; ++j) CHECK(shifted[j] == Approx(plain[j]).epsilon(1e-4).margin(1e-7));
    }
  }
}

// A living decoder serving request after request (docs/engine.md, "State", "Models shared
// with other code", "Moving a decoder"): per-call settings that keep what each model holds,
// models changed behind the decoder's back, moves, the bound on the pending chain, and greedy
// identity with standard decoding for the new policies (scorer-only models, p_min, a
// randomised user-written speculator).
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <cstddef>      // std::size_t
#include <cstdint>      // std::uint64_t
#include <limits>       // std::numeric_limits
#include <optional>     // std::optional
#include <random>       // std::mt19937_64, std::uniform_*_distribution
#include <span>         // std::span
#include <string>       // std::string, std::to_string
#include <type_traits>  // std::is_nothrow_move_constructible_v, std::is_copy_constructible_v
#include <utility>      // std::move
#include <vector>       // std::vector

#if defined(__GLIBC__)
#include <malloc.h>  // mallinfo2: heap in use, for the memory bound of the pending chain
#endif

#include "models/synthetic_model.hpp"
#include "support/random_speculator.hpp"
#include "support/model_sets.hpp"

namespace {

using cospec::testing::models_of;
using cospec::testing::pointers;

using Catch::Matchers::Contains;
using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;
using cospec::testing::random_speculator;

/// A synthetic model that logs every call it receives, in order: where each feed starts, how
/// many tokens and rows it has, and each truncate. Its context is kept for content checks.
class logging_model {
 public:
  struct call {
    bool is_feed;
    std::size_t position;  ///< feed: the context length before it; truncate: the new length
    std::size_t tokens = 0;
    std::size_t rows = 0;
  };

  explicit logging_model(synthetic_model_config config) : model_(config) {}
  [[nodiscard]] std::size_t vocabulary_size() const { return model_.vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const { return context_.size(); }
  void feed(std::span<const token_id> tokens, cospec::logit_outputs rows) {
    calls.push_back({true, context_.size(), tokens.size(), rows.size()});
    tokens_fed += tokens.size();
    model_.feed(tokens, rows);
    context_.insert(context_.end(), tokens.begin(), tokens.end());
  }
  void truncate(std::size_t length) {
    calls.push_back({false, length});
    model_.truncate(length);
    context_.resize(length);
  }
  [[nodiscard]] const std::vector<token_id>& context() const noexcept { return context_; }
  [[nodiscard]] std::size_t truncates() const {
    std::size_t count = 0;
    for (const call& c : calls) count += c.is_feed ? 0 : 1;
    return count;
  }

  std::vector<call> calls;
  std::size_t tokens_fed = 0;

 private:
  synthetic_model model_;
  std::vector<token_id> context_;
};
static_assert(cospec::model_adapter<logging_model>);

cospec::generation_limits limits_for(std::size_t tokens, std::uint64_t seed) {
  cospec::generation_limits limits;
  limits.max_new_tokens = tokens;
  limits.seed = seed;
  return limits;
}

std::vector<token_id> joined(std::vector<token_id> prefix, const std::vector<token_id>& tail) {
  prefix.insert(prefix.end(), tail.begin(), tail.end());
  return prefix;
}

cospec::sampling_settings sampled(float temperature, std::uint64_t seed = 0) {
  cospec::sampling_settings settings;
  settings.temperature = temperature;
  settings.seed = seed;
  return settings;
}

cospec::sampling_settings greedy() { return sampled(0.0f); }

/// One turn of a chat: the user's new tokens, this turn's settings, and how many tokens to
/// generate. Every turn's settings differ from the others' (one is greedy).
struct chat_turn {
  std::vector<token_id> user;
  cospec::sampling_settings settings;
  std::size_t tokens;
};

std::vector<chat_turn> five_turns() {
  std::vector<chat_turn> turns;
  turns.push_back({{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}, sampled(1.0f, 1), 8});
  auto second = sampled(0.7f, 2);
  second.top_k = 10;
  turns.push_back({{20, 21}, second, 10});
  turns.push_back({{22}, greedy(), 6});
  auto fourth = sampled(1.3f, 4);
  fourth.top_p = 0.9f;
  turns.push_back({{23, 24, 25}, fourth, 12});
  auto fifth = sampled(0.5f, 5);
  fifth.min_p = 0.1f;
  fifth.logit_bias = {{3, -1.0f}};
  turns.push_back({{26, 2}, fifth, 9});
  return turns;
}

// Logits that depend on the last 8 tokens: a model that held a wrong token anywhere near the
// end of the history would predict other tokens than a fresh one.
const std::vector<synthetic_model_config> chat_models{{32, 8, 1, 2, 0.7, 2.0}, {32, 8, 1, 3, 0.7, 2.0}};

}  // namespace

// ===== per-request settings keep what each model holds ======================================

TEST_CASE("a five-turn chat with other settings every turn feeds standard decoding's models only the new tokens",
          "[decoder][requests]") {
  // Standard decoding feeds each model every token but the last one committed (docs/engine.md):
  // after a turn of N tokens over prompt P a model holds |P| + N - 1 tokens. The next turn's
  // prompt is that history plus the user's u tokens, so each model's first pass feeds the last
  // committed token and the u new ones, and the turn's other N - 1 passes one token each:
  // u + N tokens in N passes, whatever the temperature, and nothing is ever rolled back.
  auto models = models_of<logging_model>(chat_models);
  cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::standard{});
  std::vector<token_id> history;
  std::size_t turn_index = 0;
  for (const chat_turn& turn : five_turns()) {
    INFO("turn " << turn_index + 1);
    const auto prompt = joined(history, turn.user);
    std::vector<std::size_t> calls_before;
    for (const auto& model : models) calls_before.push_back(model.calls.size());
    const auto result = decoder.generate(prompt, turn.settings, limits_for(turn.tokens, 100 + turn_index));
    REQUIRE(result.tokens.size() == turn.tokens);
    for (std::size_t k = 0; k < models.size(); ++k) {
      const auto& m = result.statistics.models[k];
      CHECK(m.forward_passes == turn.tokens);
      CHECK(m.resynchronisations == 0);
      const logging_model::call& first = models[k].calls[calls_before[k]];
      CHECK(first.is_feed);
      if (turn_index == 0) {
        CHECK(m.tokens_fed == prompt.size() + turn.tokens - 1);
        CHECK(first.position == 0);
      } else {
        CHECK(m.tokens_fed == turn.user.size() + turn.tokens);
        CHECK(m.tokens_fed < history.size());  // the shared history is not fed again
        CHECK(first.position == history.size() - 1);
        CHECK(first.tokens == turn.user.size() + 1);
      }
    }
    // The same turn on a fresh decoder: the same tokens (reuse changes the cost, not the text).
    auto fresh_models = models_of(chat_models);
    cospec::decoder fresh(pointers(fresh_models), cospec::weighted_ensemble::uniform(2), cospec::standard{});
    CHECK(fresh.generate(prompt, turn.settings, limits_for(turn.tokens, 100 + turn_index)).tokens == result.tokens);
    history = joined(prompt, result.tokens);
    ++turn_index;
  }
  for (const auto& model : models) {
    CHECK(model.truncates() == 0);
    CHECK(model.context() == std::vector<token_id>(history.begin(), history.end() - 1));
  }
}

TEST_CASE("a five-turn chat with other settings every turn, speculating, feeds each model only what it lacks",
          "[decoder][requests]") {
  // Every committed token but the last was scored by every model, so after a turn each model
  // holds the history but at most its last token: L_k in {|H| - 1, |H|}. The next turn's first
  // pass of model k must start there (no truncate, nothing fed again). Model 0, first in cost
  // order, feeds the |P| - L_0 tokens it lacks and proposes 3; model 1's first pass feeds the
  // |P| - L_1 it lacks and those 3 proposals (no rejection can end model 0's run before model 1
  // has scored it). The rest of the turn is the same speculation a fresh decoder does on the
  // same prompt, seed and settings, whose models start from nothing: it feeds exactly L_k
  // tokens more.
  auto models = models_of<logging_model>(chat_models);
  cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}));
  std::vector<token_id> history;
  std::size_t turn_index = 0;
  for (const chat_turn& turn : five_turns()) {
    INFO("turn " << turn_index + 1);
    const auto prompt = joined(history, turn.user);
    std::vector<std::size_t> calls_before, held_before, fed_before;
    for (const auto& model : models) {
      calls_before.push_back(model.calls.size());
      held_before.push_back(model.context_length());
      fed_before.push_back(model.tokens_fed);
    }
    const auto limits = limits_for(turn.tokens, 200 + turn_index);
    const auto result = decoder.generate(prompt, turn.settings, limits);
    auto fresh_models = models_of(chat_models);
    cospec::decoder fresh(pointers(fresh_models), cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}));
    const auto expected = fresh.generate(prompt, turn.settings, limits);
    CHECK(result.tokens == expected.tokens);
    for (std::size_t k = 0; k < models.size(); ++k) {
      INFO("model " << k << " held " << held_before[k] << " of a history of " << history.size());
      const auto& m = result.statistics.models[k];
      CHECK(m.resynchronisations == 0);
      CHECK(m.tokens_fed == models[k].tokens_fed - fed_before[k]);  // the statistics count what the adapter saw
      CHECK(m.tokens_fed + held_before[k] == expected.statistics.models[k].tokens_fed);
      CHECK(m.forward_passes == expected.statistics.models[k].forward_passes);
      const logging_model::call& first = models[k].calls[calls_before[k]];
      CHECK(first.is_feed);
      const std::size_t proposed_before = k == 0 ? 0 : 3;
      CHECK(first.position == held_before[k]);
      CHECK(first.tokens == prompt.size() - held_before[k] + proposed_before);
      if (turn_index > 0) {
        CHECK(held_before[k] + 1 >= history.size());
        CHECK(held_before[k] <= history.size());
        CHECK(first.tokens <= turn.user.size() + 1 + proposed_before);
      }
    }
    history = joined(prompt, result.tokens);
    ++turn_index;
  }
}

// ===== models changed behind the decoder's back ============================================

TEST_CASE("a model that a second decoder used in between is resynchronised, and the next output stays exact",
          "[decoder][requests][shared]") {
  // A window of 6 tokens: a model reused with another decoder's text would predict otherwise.
  const std::vector<synthetic_model_config> configs{{24, 6, 1, 2, 0.7, 2.0}, {24, 6, 1, 3, 0.7, 2.0},
                                                    {24, 6, 1, 4, 0.7, 2.0}};
  logging_model shared(configs[0]);
  logging_model own_a(configs[1]);
  logging_model own_b(configs[2]);
  cospec::decoder a(std::vector<logging_model*>{&shared, &own_a}, cospec::weighted_ensemble::uniform(2),
                    cospec::alternating({3, 1}));
  const std::vector<token_id> prompt{1, 2, 3};
  const auto first = a.generate(prompt, limits_for(20, 1));
  const std::size_t a_left = shared.context_length();
  cospec::decoder b(std::vector<logging_model*>{&shared, &own_b}, cospec::weighted_ensemble::uniform(2),
                    cospec::alternating({2, 1}));
  b.generate(std::vector<token_id>{9, 8, 7, 6, 5, 4, 3}, limits_for(25, 2));
  REQUIRE(shared.context_length() != a_left);  // what the check can see

  const auto follow_up = joined(joined(prompt, first.tokens), {5});
  const std::size_t calls_before = shared.calls.size();
  const auto second = a.generate(follow_up, limits_for(20, 3));
  std::vector<synthetic_model> fresh_models = models_of(std::vector<synthetic_model_config>{configs[0], configs[1]});
  cospec::decoder fresh(pointers(fresh_models), cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}));
  const auto expected = fresh.generate(follow_up, limits_for(20, 3));
  CHECK(second.tokens == expected.tokens);
  CHECK(second.statistics.models[0].resynchronisations == 1);
  CHECK(second.statistics.models[1].resynchronisations == 0);
  // The shared model is fed the whole text again, from 0; the other keeps its prefix.
  CHECK(second.statistics.models[0].tokens_fed == expected.statistics.models[0].tokens_fed);
  CHECK(second.statistics.models[1].tokens_fed < expected.statistics.models[1].tokens_fed);
  REQUIRE(shared.calls.size() > calls_before + 1);
  CHECK_FALSE(shared.calls[calls_before].is_feed);
  CHECK(shared.calls[calls_before].position == 0);
  CHECK(shared.calls[calls_before + 1].position == 0);
  CHECK(shared.calls[calls_before + 1].tokens == follow_up.size());

  // Nothing happened in between: no resynchronisation.
  const auto third = a.generate(joined(joined(follow_up, second.tokens), {6}), limits_for(10, 4));
  CHECK(third.statistics.models[0].resynchronisations == 0);
  CHECK(third.statistics.models[1].resynchronisations == 0);
  // And the second decoder, whose model the first one used since, finds it changed too.
  const auto b_again = b.generate(std::vector<token_id>{9, 8, 7}, limits_for(10, 5));
  CHECK(b_again.statistics.models[0].resynchronisations == 1);
  CHECK(b_again.statistics.models[1].resynchronisations == 0);
}

TEST_CASE("under model_change_policy::report a changed model is a backend_failure before any adapter call, and "
          "truncating it to 0 lets the decoder go on exactly",
          "[decoder][requests][shared]") {
  // A window of 6 tokens: a model reused with another decoder's text would predict otherwise.
  const std::vector<synthetic_model_config> configs{{24, 6, 1, 2, 0.7, 2.0}, {24, 6, 1, 3, 0.7, 2.0},
                                                    {24, 6, 1, 4, 0.7, 2.0}};
  logging_model shared(configs[0]);
  logging_model own_a(configs[1]);
  logging_model own_b(configs[2]);
  cospec::decoder_options report;
  report.changed_models = cospec::model_change_policy::report;
  cospec::decoder a(std::vector<logging_model*>{&shared, &own_a}, cospec::weighted_ensemble::uniform(2),
                    cospec::alternating({3, 1}), cospec::sampling_settings{}, report);
  const std::vector<token_id> prompt{1, 2, 3};
  const auto first = a.generate(prompt, limits_for(20, 1));
  const std::size_t a_left = shared.context_length();
  cospec::decoder b(std::vector<logging_model*>{&shared, &own_b}, cospec::weighted_ensemble::uniform(2),
                    cospec::alternating({2, 1}));
  b.generate(std::vector<token_id>{9, 8, 7, 6, 5, 4, 3}, limits_for(25, 2));
  const std::size_t b_left = shared.context_length();
  REQUIRE(b_left != a_left);

  const auto follow_up = joined(joined(prompt, first.tokens), {5});
  const auto shared_calls = shared.calls.size();
  const auto own_calls = own_a.calls.size();
  const auto shared_context = shared.context();
  const auto own_context = own_a.context();
  const std::string message = "model 0 holds " + std::to_string(b_left) + " tokens, but the decoder left " +
                              std::to_string(a_left);
  for (int attempt = 0; attempt < 2; ++attempt) {  // the next call compares again
    INFO("attempt " << attempt);
    CHECK_THROWS_AS(a.generate(follow_up, limits_for(20, 3)), cospec::backend_failure);
    CHECK_THROWS_WITH(a.generate(follow_up, limits_for(20, 3)), Contains(message) && Contains("something else"));
    // No adapter was called: the models are as they were.
    CHECK(shared.calls.size() == shared_calls);
    CHECK(own_a.calls.size() == own_calls);
    CHECK(shared.context() == shared_context);
    CHECK(own_a.context() == own_context);
  }
  // The caller takes the report's advice: what the model holds is nobody's text any more, so
  // it empties it. A model that holds nothing holds nothing wrong: the decoder feeds it the
  // text from the start and the output is exact.
  shared.truncate(0);
  std::vector<synthetic_model> fresh_models = models_of(std::vector<synthetic_model_config>{configs[0], configs[1]});
  cospec::decoder fresh(pointers(fresh_models), cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}));
  const auto expected = fresh.generate(follow_up, limits_for(20, 3));
  std::optional<cospec::generation_result> recovered;
  CHECK_NOTHROW(recovered = a.generate(follow_up, limits_for(20, 3)));
  if (recovered) {
    CHECK(recovered->tokens == expected.tokens);
    CHECK(recovered->statistics.models[0].tokens_fed == expected.statistics.models[0].tokens_fed);
    CHECK(recovered->statistics.models[1].tokens_fed < expected.statistics.models[1].tokens_fed);
  }
}

// ===== moves ==============================================================================

namespace {

using chat_decoder = cospec::decoder<synthetic_model, cospec::weighted_ensemble, cospec::adaptive>;
static_assert(std::is_nothrow_move_constructible_v<chat_decoder>);
static_assert(std::is_nothrow_move_assignable_v<chat_decoder>);
static_assert(!std::is_copy_constructible_v<chat_decoder>);
static_assert(!std::is_copy_assignable_v<chat_decoder>);

const std::vector<synthetic_model_config> move_models{{24, 6, 1, 2, 0.8, 2.0}, {24, 6, 1, 3, 0.8, 2.0}};
const std::vector<token_id> move_prompt{4, 5, 6};

/// A factory: builds a decoder, serves a first request, and returns it (a named local, so
/// returning it needs the move constructor).
chat_decoder warm_decoder(std::vector<synthetic_model>& models) {
  cospec::adaptive_options costs;
  costs.pass_costs = {1.0, 3.0};
  chat_decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::adaptive(2, costs),
                       sampled(0.9f, 21));
  decoder.generate(move_prompt, limits_for(30, 1));
  return decoder;
}

}  // namespace

TEST_CASE("a decoder moves out of a factory and through a container, and keeps what its models hold",
          "[decoder][requests][move]") {
  // The twin is never moved; the moved decoders must decode as it does, and feed as little.
  auto twin_models = models_of(move_models);
  chat_decoder twin = warm_decoder(twin_models);
  const auto twin_history = twin.generate(move_prompt, limits_for(30, 1)).tokens;
  const auto follow_up = joined(joined(move_prompt, twin_history), {7, 8});
  const auto expected = twin.generate(follow_up, limits_for(30, 2));

  auto models_a = models_of(move_models);
  auto models_b = models_of(move_models);
  std::vector<chat_decoder> pool;
  pool.push_back(warm_decoder(models_a));
  pool.push_back(warm_decoder(models_b));  // the vector reallocates: pool[0] moves again
  pool.reserve(pool.capacity() + 1);       // and once more, both of them
  for (std::size_t i = 0; i < pool.size(); ++i) {
    INFO("decoder " << i);
    CHECK(pool[i].generate(move_prompt, limits_for(30, 1)).tokens == twin_history);
    const auto result = pool[i].generate(follow_up, limits_for(30, 2));
    CHECK(result.tokens == expected.tokens);
    for (std::size_t k = 0; k < 2; ++k) CHECK(result.statistics.models[k].tokens_fed == expected.statistics.models[k].tokens_fed);
  }
  // Move assignment over a decoder with other models: the target refers to the source's models.
  auto other_models = models_of(move_models);
  chat_decoder target = warm_decoder(other_models);
  target = std::move(pool[1]);
  pool.pop_back();  // the moved-from decoder is only destroyed
  const auto after = target.generate(joined(joined(follow_up, expected.tokens), {9}), limits_for(20, 3));
  const auto twin_after = twin.generate(joined(joined(follow_up, expected.tokens), {9}), limits_for(20, 3));
  CHECK(after.tokens == twin_after.tokens);
  CHECK(after.statistics.models[0].tokens_fed == twin_after.statistics.models[0].tokens_fed);
}

// ===== a policy that never hands over =======================================================

namespace {

/// Proposes forever with model 0 while `*hogging`, and is alternating({3, 1}) otherwise: a
/// policy with a bug that the caller can switch off, to see the decoder recover.
struct hog_then_alternate {
  const bool* hogging;
  cospec::alternating fair{{3, 1}};
  void check(std::size_t model_count) const { fair.check(model_count); }
  cospec::invocation next(const cospec::schedule_view& view) const {
    if (*hogging) return {0, std::numeric_limits<std::size_t>::max()};
    return fair.next(view);
  }
};
static_assert(cospec::speculator<hog_then_alternate>);

/// Bytes of heap in use (small blocks and mmapped ones), where glibc says; 0 elsewhere.
std::size_t heap_in_use() {
#if defined(__GLIBC__)
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
#else
  return 0;
#endif
}

}  // namespace

TEST_CASE("a policy that never hands over gets a usage_error at max_pending, memory stays bounded, and the decoder "
          "stays usable",
          "[decoder][requests][pending]") {
  // Vocabulary 32768: a logit row is 128 KiB, so a chain that grew without bound would show.
  const std::vector<synthetic_model_config> configs{{32768, 2, 1, 2, 0.7, 2.0}, {32768, 2, 1, 3, 0.7, 2.0}};
  constexpr std::size_t max_pending = 8;
  constexpr std::size_t row_bytes = 32768 * sizeof(float);
  auto models = models_of<logging_model>(configs);
  bool hogging = true;
  cospec::decoder_options options;
  options.max_pending = max_pending;
  cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), hog_then_alternate{&hogging},
                          sampled(1.0f), options);
  const std::vector<token_id> prompt{1, 2, 3};
  // Warm up once with the fair policy, so that the measurement below sees only the chain.
  hogging = false;
  decoder.generate(prompt, limits_for(4, 1));
  hogging = true;
  const std::size_t heap_before = heap_in_use();
  const std::size_t fed_before = models[0].tokens_fed;
  const std::size_t verifier_fed_before = models[1].tokens_fed;
  CHECK_THROWS_AS(decoder.generate(prompt, limits_for(1000, 2)), cospec::usage_error);
  CHECK_THROWS_WITH(decoder.generate(prompt, limits_for(1000, 2)), Contains("max_pending = 8"));
  const std::size_t heap_after = heap_in_use();
  // Each proposal after the first costs model 0 a one-token pass, and the chain stops at
  // max_pending proposals: at most the prompt's last token and max_pending proposals per call.
  CHECK(models[0].tokens_fed - fed_before <= 2 * (1 + max_pending));
  CHECK(models[1].tokens_fed == verifier_fed_before);  // the verifier was never asked
  for (auto& model : models) CHECK(model.context_length() <= prompt.size());  // nothing uncommitted kept
  // docs: a pending slot holds a logit row per model and a proposal row, so the session's
  // memory is at most (max_pending + 1) * (sum of the vocabulary sizes + V) floats.
  if (heap_before != 0) {
    INFO("heap grew by " << heap_after - heap_before << " bytes; the documented bound is "
                         << (max_pending + 1) * 3 * row_bytes);
    CHECK(heap_after <= heap_before + (max_pending + 1) * 3 * row_bytes);
  }
  // Usable afterwards: the fair policy decodes exactly what a fresh decoder does.
  hogging = false;
  const auto result = decoder.generate(prompt, limits_for(12, 3));
  auto fresh_models = models_of(configs);
  cospec::decoder fresh(pointers(fresh_models), cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}),
                        sampled(1.0f));
  CHECK(result.tokens == fresh.generate(prompt, limits_for(12, 3)).tokens);
  // The default bound applies too.
  auto default_models = models_of(std::vector<synthetic_model_config>{{16, 2, 1, 2, 0.7, 2.0}, {16, 2, 1, 3, 0.7, 2.0}});
  bool always = true;
  cospec::decoder with_default(pointers(default_models), cospec::weighted_ensemble::uniform(2), hog_then_alternate{&always});
  CHECK_THROWS_WITH(with_default.generate(prompt, limits_for(1000, 2)), Contains("max_pending = 64"));
}

// ===== greedy identity with standard decoding for the new policies =========================

namespace {

struct greedy_case {
  std::vector<synthetic_model_config> configs;
  std::vector<token_id> prompt;
};

greedy_case random_case(std::mt19937_64& random) {
  std::uniform_int_distribution<std::size_t> vocabulary(5, 40), count(2, 3), window(1, 3);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  greedy_case c;
  const std::size_t n = count(random), v = vocabulary(random), w = window(random);
  const std::uint64_t shared = random();
  for (std::size_t i = 0; i < n; ++i) c.configs.push_back({v, w, shared, random(), unit(random), 0.5 + 3.0 * unit(random)});
  std::uniform_int_distribution<token_id> token(0, static_cast<token_id>(v - 1));
  for (std::size_t i = 0, len = 1 + random() % 4; i < len; ++i) c.prompt.push_back(token(random));
  return c;
}

template <class Combiner, class Speculator>
cospec::generation_result run_greedy(const greedy_case& c, const Combiner& combiner, Speculator speculator,
                                     std::size_t tokens = 40) {
  auto models = models_of(c.configs);
  cospec::decoder decoder(pointers(models), combiner, std::move(speculator), greedy());
  return decoder.generate(c.prompt, limits_for(tokens, 0));
}

template <class Combiner>
void check_new_policies(std::mt19937_64& random, const greedy_case& c, const Combiner& combiner,
                        std::size_t& proposals_seen) {
  const std::size_t n = c.configs.size();
  const auto expected = run_greedy(c, combiner, cospec::standard{}).tokens;
  REQUIRE(expected.size() == 40);
  std::uniform_int_distribution<std::size_t> gamma(1, 5), any_gamma(0, 5);
  // A scorer-only model: one gamma is 0, the others anything (all 0 is standard decoding).
  std::vector<std::size_t> scorer_only;
  for (std::size_t i = 0; i < n; ++i) scorer_only.push_back(any_gamma(random));
  const std::size_t scorer = random() % n;
  scorer_only[scorer] = 0;
  const auto with_scorer = run_greedy(c, combiner, cospec::alternating(scorer_only));
  CHECK(with_scorer.tokens == expected);
  CHECK(with_scorer.statistics.proposers[scorer].proposed == 0);
  for (float p_min : {0.3f, 0.7f}) {
    std::vector<std::size_t> gammas;
    for (std::size_t i = 0; i < n; ++i) gammas.push_back(gamma(random));
    INFO("p_min " << p_min);
    CHECK(run_greedy(c, combiner, cospec::alternating(gammas, {}, p_min)).tokens == expected);
  }
  cospec::adaptive_options unsure;
  unsure.p_min = 0.5f;
  CHECK(run_greedy(c, combiner, cospec::adaptive(n, unsure)).tokens == expected);
  auto models = models_of(c.configs);
  cospec::decoder randomised(pointers(models), combiner, random_speculator(random()), greedy());
  CHECK(randomised.generate(c.prompt, limits_for(40, 0)).tokens == expected);
  const auto& policy = randomised.speculator_policy();
  CHECK(policy.below_maximum == 0);  // a greedy proposer's probability is its largest
  CHECK(policy.impossible_confidences == 0);
  proposals_seen += policy.confidences;
}

}  // namespace

TEST_CASE("greedy output with scorer-only models, p_min and a randomised speculator is token-identical to "
          "standard decoding",
          "[decoder][requests][greedy]") {
  std::mt19937_64 random(20250317);
  std::uniform_real_distribution<float> positive(0.05f, 1.0f), mu(0.05f, 0.5f);
  std::size_t proposals_seen = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const auto c = random_case(random);
    const std::size_t n = c.configs.size();
    INFO("trial " << trial << ", " << n << " models, vocabulary " << c.configs[0].vocabulary_size);
    if (trial % 2 == 0) {
      std::vector<float> weights;
      for (std::size_t i = 0; i < n; ++i) weights.push_back(positive(random));
      check_new_policies(random, c, cospec::weighted_ensemble(weights), proposals_seen);
    } else if (n == 2) {
      const bool constrained = trial % 4 == 1;
      check_new_policies(random, c,
                         constrained ? cospec::contrastive_decoding(mu(random), 0.1f) : cospec::contrastive_decoding(mu(random)),
                         proposals_seen);
    } else {
      // Contrastive decoding against two amateurs.
      check_new_policies(random, c, cospec::logit_arithmetic({1.0f, -mu(random), -mu(random)}), proposals_seen);
    }
  }
  CHECK(proposals_seen > 10000);
}

// ===== what the new policy options do =======================================================

TEST_CASE("alternating with every gamma 0 is standard decoding, token for token, sampled too", "[decoder][requests]") {
  const std::vector<synthetic_model_config> configs{{20, 2, 1, 2, 0.6, 2.0}, {20, 2, 1, 3, 0.6, 2.0},
                                                    {20, 2, 1, 4, 0.6, 2.0}};
  auto run = [&](auto speculator) {
    auto models = models_of(configs);
    cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(3), std::move(speculator),
                            sampled(0.9f));
    return decoder.generate(std::vector<token_id>{1, 2}, limits_for(50, 8));
  };
  const auto standard = run(cospec::standard{});
  const auto zeros = run(cospec::alternating({0, 0, 0}));
  CHECK(zeros.tokens == standard.tokens);
  CHECK(zeros.statistics.direct_samples == 50);
  for (std::size_t k = 0; k < 3; ++k) {
    CHECK(zeros.statistics.proposers[k].proposed == 0);
    CHECK(zeros.statistics.models[k].forward_passes == 50);
  }
}

TEST_CASE("p_min ends unsure runs early: fewer proposals at long positions, and p_min 1 stops after one",
          "[decoder][requests][p_min]") {
  const std::vector<synthetic_model_config> configs{{50, 2, 1, 2, 0.6, 3.0}, {50, 2, 1, 3, 0.6, 3.0}};
  auto statistics = [&](float p_min, const cospec::sampling_settings& settings) {
    auto models = models_of(configs);
    cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({4, 1}, {}, p_min),
                            settings);
    return decoder.generate(std::vector<token_id>{1}, limits_for(400, 6)).statistics;
  };
  for (const auto& settings : {sampled(1.0f), greedy()}) {
    INFO((settings.greedy() ? "greedy" : "sampled"));
    const auto without = statistics(0.0f, settings);
    const auto unsure = statistics(0.5f, settings);
    const auto certain = statistics(1.0f, settings);
    const auto& all = without.proposers[0].proposed_at;
    const auto& cut = unsure.proposers[0].proposed_at;
    REQUIRE(all.size() == 4);
    const std::size_t long_without = all[2] + all[3];
    const std::size_t long_with = cut.size() == 4 ? cut[2] + cut[3] : cut.size() == 3 ? cut[2] : 0;
    INFO("proposals at positions 2 and 3: " << long_without << " without p_min, " << long_with << " with p_min 0.5");
    CHECK(long_with * 4 < long_without * 3);  // at least a quarter fewer
    // A float probability reaches 1 only for a one-hot distribution: every run ends after one.
    CHECK(certain.proposers[0].proposed_at.size() == 1);
    CHECK(certain.proposers[1].proposed_at.size() == 1);
  }
}

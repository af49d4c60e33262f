// What a server asks of cospec (docs/engine.md, "Text, stop strings and streaming",
// "Log-probabilities and scoring"; docs/combiners.md, "Many recipes in one scheduler"):
// log-probabilities and scores against a double-precision reference, stop strings and the
// streamed text, min_tokens, stop tokens left out, per-request recipes in one batch decoder,
// queueing on a shared sequence pool, and a clear error for every misuse of a hand-driven
// session, after which the next request is exact.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <algorithm>  // std::max_element, std::sort, std::equal, std::min
#include <cmath>      // std::log, std::abs, std::isinf
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <limits>     // std::numeric_limits
#include <map>        // std::map
#include <numeric>    // std::iota
#include <optional>   // std::optional
#include <span>       // std::span
#include <string>     // std::string
#include <string_view>  // std::string_view
#include <utility>    // std::move, std::pair
#include <vector>     // std::vector

#include "models/synthetic_model.hpp"
#include "support/checking_batch_adapter.hpp"
#include "support/model_sets.hpp"
#include "support/reference_decoding.hpp"

namespace {

using Catch::Matchers::Contains;
using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;
using cospec::testing::reference_combination;
using cospec::testing::reference_sampling;
using sequence_counts = std::map<std::vector<token_id>, std::size_t>;

constexpr double significance_z = 4.753;  // standard-normal quantile of 1 - 1e-6

std::vector<synthetic_model_config> model_set(std::size_t n, std::size_t vocabulary = 7) {
  std::vector<synthetic_model_config> configs;
  for (std::size_t i = 0; i < n; ++i)
    configs.push_back({.vocabulary_size = vocabulary, .window = 2, .shared_seed = 11, .own_seed = 100 + i,
                       .agreement = 0.6, .sharpness = 1.5});
  return configs;
}

std::vector<token_id> joined(std::vector<token_id> a, std::span<const token_id> b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ===== log-probabilities =================================================================

/// The reference distribution a log-probability is taken under, at `context`.
std::vector<double> reference_basis(const std::vector<synthetic_model_config>& configs, const reference_combination& c,
                                    const reference_sampling& request, bool greedy, cospec::logprob_basis basis,
                                    const std::vector<token_id>& context) {
  if (basis == cospec::logprob_basis::model)
    return cospec::testing::reference_target(configs, c, reference_sampling{1.0, std::nullopt, std::nullopt}, context);
  // Sampled: the request's target; under greedy decoding at T = 1 with the bias, no filters.
  reference_sampling sampled = request;
  if (greedy) sampled = reference_sampling{1.0, std::nullopt, std::nullopt, request.bias};
  return cospec::testing::reference_target(configs, c, sampled, context);
}

/// Output tokens whose log-probability, greedy flag or top alternatives differ from the
/// reference's by more than float rounding (2e-4 in log space).
std::size_t logprob_mismatches(const std::vector<synthetic_model_config>& configs, const reference_combination& c,
                               const reference_sampling& request, bool greedy, const cospec::logprob_options& options,
                               const std::vector<token_id>& prompt, const cospec::generation_result& result) {
  std::size_t mismatches = 0;
  REQUIRE(result.logprobs.size() == result.tokens.size());
  REQUIRE(result.greedy.size() == result.tokens.size());
  REQUIRE(result.top_count == options.top);
  std::vector<token_id> context = prompt;
  for (std::size_t i = 0; i < result.tokens.size(); ++i) {
    const auto p = reference_basis(configs, c, request, greedy, options.basis, context);
    const auto x = static_cast<std::size_t>(result.tokens[i]);
    const double expected = std::log(p[x]);
    bool wrong = std::abs(static_cast<double>(result.logprobs[i]) - expected) > 2e-4;
    const auto best = static_cast<std::size_t>(std::max_element(p.begin(), p.end()) - p.begin());
    wrong = wrong || (result.greedy[i] != 0) != (best == x);
    std::vector<std::size_t> order(p.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return p[a] > p[b]; });
    const auto top = result.top_logprobs(i);
    for (std::size_t r = 0; r < top.size(); ++r)
      wrong = wrong || static_cast<std::size_t>(top[r].token) != order[r] ||
              std::abs(static_cast<double>(top[r].logprob) - std::log(p[order[r]])) > 2e-4;
    if (wrong) ++mismatches;
    context.push_back(result.tokens[i]);
  }
  return mismatches;
}

cospec::sampling_settings to_settings(const reference_sampling& r, bool greedy) {
  cospec::sampling_settings settings;
  settings.temperature = greedy ? 0.0f : static_cast<float>(r.temperature);
  settings.top_k = r.top_k;
  if (r.top_p) settings.top_p = static_cast<float>(*r.top_p);
  for (const auto& [token, bias] : r.bias) settings.logit_bias.emplace_back(token, static_cast<float>(bias));
  return settings;
}

/// Runs `runs` seeded generations with log-probabilities on and counts the mismatches.
template <class Combiner, class Speculator>
std::size_t check_logprobs(const std::vector<synthetic_model_config>& configs, const reference_combination& reference,
                           Combiner combiner, Speculator speculator, const reference_sampling& request, bool greedy,
                           cospec::logprob_basis basis, std::size_t runs = 6) {
  auto models = cospec::testing::models_of(configs);
  cospec::decoder decoder(cospec::testing::pointers(models), std::move(combiner), std::move(speculator),
                          to_settings(request, greedy));
  cospec::generation_limits limits;
  limits.max_new_tokens = 10;
  limits.logprobs = {true, 3, basis};
  const std::vector<token_id> prompt{1, 3};
  std::size_t mismatches = 0;
  for (std::size_t run = 0; run < runs; ++run) {
    limits.seed = 31 * run + 7;
    const auto result = decoder.generate(prompt, limits);
    CHECK_FALSE(result.statistics.mixture);  // log-probabilities need every model's row
    mismatches += logprob_mismatches(configs, reference, request, greedy, limits.logprobs, prompt, result);
  }
  return mismatches;
}

/// A weighted ensemble whose target at temperature 1 is model 0's own distribution: a report
/// of the proposal's law instead of the target's, the mistake the tests must catch.
struct proposal_as_target {
  cospec::weighted_ensemble inner;
  [[nodiscard]] std::size_t model_count() const { return inner.model_count(); }
  float target_weights(cospec::logit_rows logits, float temperature, std::span<float> out) {
    if (temperature == 1.0f) {
      cospec::softmax_proposal(0, logits[0], 1.0f, out);
      return 1.0f;
    }
    return inner.target_weights(logits, temperature, out);
  }
  cospec::score_domain greedy_scores(cospec::logit_rows logits, std::span<float> out) {
    return inner.greedy_scores(logits, out);
  }
  void proposal_distribution(std::size_t model, std::span<const float> logits, float temperature,
                             std::span<float> out) const {
    inner.proposal_distribution(model, logits, temperature, out);
  }
};

}  // namespace

TEST_CASE("log-probabilities equal the double-precision reference for every combiner, greedy and sampled, with "
          "truncation and bias, under every policy",
          "[serving][logprobs]") {
  const auto two = model_set(2);
  const auto three = model_set(3);
  const reference_combination we{reference_combination::kind::weighted_ensemble, {1.0, 1.0}, std::nullopt};
  const reference_combination cd{reference_combination::kind::logit_arithmetic, {1.0, -0.1}, std::nullopt};
  const reference_combination la{reference_combination::kind::logit_arithmetic, {0.5, 0.3, 0.2}, std::nullopt};
  const std::vector<reference_sampling> requests{
      {1.0, std::nullopt, std::nullopt},
      {0.8, 4, std::nullopt},
      {1.2, std::nullopt, 0.9, {{2, -1.0}, {4, 0.5}}},
  };
  for (const auto basis : {cospec::logprob_basis::model, cospec::logprob_basis::sampled})
    for (const bool greedy : {false, true})
      for (std::size_t r = 0; r < requests.size(); ++r) {
        INFO("basis " << (basis == cospec::logprob_basis::model ? "model" : "sampled") << ", "
                      << (greedy ? "greedy" : "sampling") << ", request " << r);
        const auto& request = requests[r];
        CHECK(check_logprobs(two, we, cospec::weighted_ensemble::uniform(2), cospec::standard{}, request, greedy, basis) == 0);
        CHECK(check_logprobs(two, we, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}), request, greedy,
                             basis) == 0);
        CHECK(check_logprobs(two, we, cospec::weighted_ensemble::uniform(2), cospec::mixture_sampling(2), request, greedy,
                             basis) == 0);
        CHECK(check_logprobs(two, cd, cospec::contrastive_decoding(0.1f), cospec::adaptive(2), request, greedy, basis) == 0);
        CHECK(check_logprobs(three, la, cospec::logit_arithmetic({0.5f, 0.3f, 0.2f}), cospec::alternating({2, 2, 1}),
                             request, greedy, basis) == 0);
      }
}

TEST_CASE("the log-probability check rejects the proposal's law reported instead of the target's",
          "[serving][logprobs][teeth]") {
  const auto two = model_set(2);
  const reference_combination we{reference_combination::kind::weighted_ensemble, {1.0, 1.0}, std::nullopt};
  CHECK(check_logprobs(two, we, proposal_as_target{cospec::weighted_ensemble::uniform(2)}, cospec::alternating({3, 1}),
                       {1.0, std::nullopt, std::nullopt}, false, cospec::logprob_basis::model) > 10);
}

TEST_CASE("token events carry the index, the position and the log-probability", "[serving][logprobs][events]") {
  const auto configs = model_set(2);
  auto models = cospec::testing::models_of(configs);
  cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble::uniform(2),
                          cospec::alternating({2, 1}));
  std::vector<cospec::token_event> events;
  std::vector<float> logprobs;
  std::vector<std::size_t> tops;
  cospec::generation_limits limits;
  limits.max_new_tokens = 9;
  limits.logprobs = {true, 2, cospec::logprob_basis::model};
  limits.on_token = [&](const cospec::token_event& event) {
    events.push_back(event);
    logprobs.push_back(event.logprob.value_or(1.0f));
    tops.push_back(event.top_logprobs.size());
    return true;
  };
  const std::vector<token_id> prompt{4, 1, 0};
  const auto result = decoder.generate(prompt, limits);
  REQUIRE(events.size() == 9);
  for (std::size_t i = 0; i < events.size(); ++i) {
    CHECK(events[i].index == i);
    CHECK(events[i].position == prompt.size() + i);
    CHECK(events[i].token == result.tokens[i]);
    CHECK(logprobs[i] == result.logprobs[i]);
    CHECK(tops[i] == 2);
  }
  // A callback written for a token id still works: the event converts to it.
  std::vector<token_id> seen;
  limits.on_token = [&](token_id t) {
    seen.push_back(t);
    return true;
  };
  CHECK(decoder.generate(prompt, limits).tokens == seen);
}

// ===== scoring ============================================================================

TEST_CASE("scoring gives the reference's log-probabilities and greedy flags, and the ones reported while generating",
          "[serving][scoring]") {
  const auto configs = model_set(2);
  const reference_combination cd{reference_combination::kind::logit_arithmetic, {1.0, -0.1}, std::nullopt};
  const std::vector<token_id> context{2, 5, 1};
  const std::vector<token_id> continuation{0, 3, 3, 6, 1, 2, 4, 4, 0, 5, 1};
  const auto check = [&](const cospec::generation_result& result, const std::string& name) {
    INFO(name);
    CHECK(result.reason == cospec::finish_reason::scored);
    CHECK(result.tokens == continuation);
    CHECK(logprob_mismatches(configs, cd, {1.0, std::nullopt, std::nullopt}, false,
                             {true, 3, cospec::logprob_basis::model}, context, result) == 0);
  };
  // The decoder, in one chunk and (max_pending 3) in four.
  for (const std::size_t max_pending : {std::size_t{64}, std::size_t{3}}) {
    auto models = cospec::testing::models_of(configs);
    cospec::decoder_options options;
    options.max_pending = max_pending;
    cospec::decoder decoder(cospec::testing::pointers(models), cospec::contrastive_decoding(0.1f),
                            cospec::alternating({3, 1}), cospec::sampling_settings{}, options);
    const auto scored = decoder.score(context, continuation, {3, {}});
    check(scored, "decoder, max_pending " + std::to_string(max_pending));
    const std::size_t chunks = (continuation.size() + max_pending - 1) / max_pending;
    for (std::size_t k = 0; k < 2; ++k) CHECK(scored.statistics.models[k].forward_passes == chunks);
    for (const auto& model : models) CHECK(model.context_length() == context.size() + continuation.size());
  }
  // Scoring what was generated gives back what was reported while generating it.
  {
    auto models = cospec::testing::models_of(configs);
    cospec::decoder decoder(cospec::testing::pointers(models), cospec::contrastive_decoding(0.1f),
                            cospec::alternating({3, 1}));
    cospec::generation_limits limits;
    limits.max_new_tokens = 12;
    limits.seed = 5;
    limits.logprobs = {true, 0, cospec::logprob_basis::model};
    const auto generated = decoder.generate(context, limits);
    const auto scored = decoder.score(context, generated.tokens);
    REQUIRE(scored.logprobs.size() == generated.logprobs.size());
    for (std::size_t i = 0; i < scored.logprobs.size(); ++i) {
      CHECK(std::abs(scored.logprobs[i] - generated.logprobs[i]) < 1e-6f);
      CHECK(scored.greedy[i] == generated.greedy[i]);
    }
  }
  // A session driven by hand, reporting context lengths.
  {
    auto models = cospec::testing::models_of(configs);
    cospec::session session(cospec::contrastive_decoding(0.1f), cospec::alternating({3, 1}),
                            cospec::testing::vocabulary_sizes(models));
    session.start_scoring(context, continuation, {3, {}});
    while (const cospec::model_pass* pass = session.next_pass()) {
      synthetic_model& model = models[pass->model];
      if (model.context_length() > pass->keep) model.truncate(pass->keep);
      model.feed(pass->tokens, pass->rows);
      session.pass_done(cospec::pass_report{model.context_length(), 0.0});
    }
    check(session.take_result(), "session by hand");
  }
}

TEST_CASE("a batch decoder shares passes between scoring and generating requests, and scores exactly",
          "[serving][scoring][batch]") {
  const auto configs = model_set(2);
  const reference_combination we{reference_combination::kind::weighted_ensemble, {0.3, 0.7}, std::nullopt};
  std::vector<cospec::testing::checking_batch_adapter> models;
  for (const auto& config : configs) models.emplace_back(config, 4);
  cospec::batch_decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble({0.3f, 0.7f}),
                                cospec::alternating({2, 1}));
  std::map<cospec::request_id, std::pair<std::vector<token_id>, std::vector<token_id>>> scoring;
  std::vector<cospec::request_id> generating;
  for (std::size_t r = 0; r < 6; ++r) {
    const std::vector<token_id> context{static_cast<token_id>(r % 7), 3, static_cast<token_id>((r * 5) % 7)};
    if (r % 2 == 0) {
      const std::vector<token_id> continuation{1, static_cast<token_id>(r % 7), 2, 6, 0};
      scoring[decoder.submit_scoring(context, continuation, {2, {}})] = {context, continuation};
    } else {
      cospec::generation_limits limits;
      limits.max_new_tokens = 8;
      limits.seed = r;
      generating.push_back(decoder.submit(context, cospec::sampling_settings{}, limits));
    }
  }
  const auto finished = decoder.run();
  REQUIRE(finished.size() == 6);
  std::size_t scored = 0;
  for (const auto& done : finished) {
    REQUIRE_FALSE(done.failed());
    const auto found = scoring.find(done.id);
    if (found == scoring.end()) {
      CHECK(done.result.tokens.size() == 8);
      continue;
    }
    ++scored;
    CHECK(logprob_mismatches(configs, we, {1.0, std::nullopt, std::nullopt}, false,
                             {true, 2, cospec::logprob_basis::model}, found->second.first, done.result) == 0);
  }
  CHECK(scored == 3);
  CHECK(models[0].largest_batch >= 2);
  for (const auto& model : models) CHECK(model.violations.empty());
}

// ===== text, stop strings and streaming ===================================================

namespace {

/// A model whose greedy output is a script: at output position i its logits favour
/// script[i] (the rest from a synthetic model), and whose tokens have texts.
class scripted_model {
 public:
  scripted_model(std::vector<std::string> texts, std::vector<token_id> script, std::size_t prompt_length,
                 std::uint64_t seed = 3)
      : texts_(std::move(texts)),
        script_(std::move(script)),
        prompt_length_(prompt_length),
        noise_({.vocabulary_size = texts_.size(), .window = 2, .shared_seed = 1, .own_seed = seed, .agreement = 0.5,
                .sharpness = 1.0}) {}

  [[nodiscard]] std::size_t vocabulary_size() const { return texts_.size(); }
  [[nodiscard]] std::size_t context_length() const { return noise_.context_length(); }
  void feed(std::span<const token_id> tokens, cospec::logit_outputs rows) {
    const std::size_t first_row = tokens.size() - rows.size();
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      noise_.feed(std::span<const token_id>(&tokens[i], 1), {});
      if (i < first_row) continue;
      const std::span<float> row = rows[i - first_row];
      noise_.logits_for_context(row);
      const std::size_t output = noise_.context_length() - prompt_length_;
      if (noise_.context_length() >= prompt_length_ && output < script_.size())
        row[static_cast<std::size_t>(script_[output])] += 20.0f;
    }
  }
  void truncate(std::size_t length) { noise_.truncate(length); }
  [[nodiscard]] std::string_view token_text(token_id t) const { return texts_[static_cast<std::size_t>(t)]; }

 private:
  std::vector<std::string> texts_;
  std::vector<token_id> script_;
  std::size_t prompt_length_;
  synthetic_model noise_;
};

const std::vector<std::string> texts{"a", "b", "c", "ab", "bc", "x", "\xC3", "\xA9", "abc", "y"};
enum : token_id { a, b, c, ab, bc, x, lead, trail, abc, y };

struct streamed {
  cospec::generation_result result;
  std::string stream;
  std::vector<std::string> pieces;
};

streamed run_script(const std::vector<token_id>& script, cospec::generation_limits limits,
                    const std::vector<token_id>& prompt = {x, y}) {
  std::vector<scripted_model> models;
  for (std::uint64_t seed : {3u, 4u}) models.emplace_back(texts, script, prompt.size(), seed);
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble::uniform(2),
                          cospec::alternating({3, 1}), greedy);
  streamed out;
  limits.on_token = [&](const cospec::token_event& event) {
    out.stream += event.text;
    out.pieces.emplace_back(event.text);
    return true;
  };
  out.result = decoder.generate(prompt, limits);
  return out;
}

}  // namespace

TEST_CASE("stop strings split across one, two and three tokens end generation, the match left out of text and stream",
          "[serving][stop]") {
  cospec::generation_limits limits;
  limits.max_new_tokens = 12;
  limits.stop_strings = {"abc"};
  struct scenario {
    std::string name;
    std::vector<token_id> script;
    std::string text;    // expected output text
    std::size_t tokens;  // expected output tokens (the one completing the match included)
  };
  const std::vector<scenario> scenarios{
      {"one token", {x, y, abc, x, x}, "xy", 3},
      {"two tokens", {x, ab, c, y, y}, "x", 3},
      {"three tokens", {y, a, b, c, x}, "y", 4},
      {"overlapping candidates", {a, b, a, b, c, x}, "ab", 5},
      {"inside a token", {x, x, bc, x}, "xxbcx", 4},  // no match: generation goes on to the limit
  };
  for (const scenario& s : scenarios) {
    INFO(s.name);
    limits.max_new_tokens = s.script.size();
    const streamed out = run_script(s.script, limits);
    CHECK(out.result.text == s.text);
    CHECK(out.stream == s.text);  // nothing streamed was withdrawn, nothing kept back at the end
    CHECK(out.result.tokens.size() == s.tokens);
    CHECK(out.result.reason == (s.text == "xxbcx" ? cospec::finish_reason::max_new_tokens
                                                   : cospec::finish_reason::stop_string));
  }
  // Several stop strings: the earliest match wins.
  limits.stop_strings = {"bca", "ab"};
  limits.max_new_tokens = 6;
  const streamed both = run_script({x, bc, ab, c, x, x}, limits);
  CHECK(both.result.text == "x");  // "xbcab": "bca" at 1 comes before "ab" at 3
  CHECK(both.result.tokens.size() == 3);
  CHECK(both.result.reason == cospec::finish_reason::stop_string);
}

TEST_CASE("a stop string in the prompt does not stop, and held-back text is released once it cannot match",
          "[serving][stop]") {
  cospec::generation_limits limits;
  limits.max_new_tokens = 5;
  limits.stop_strings = {"abc"};
  const streamed out = run_script({a, b, x, y, a}, limits, {a, b, c, abc});
  CHECK(out.result.reason == cospec::finish_reason::max_new_tokens);
  CHECK(out.result.text == "abxya");
  CHECK(out.stream == "abxya");
  // "a" and "ab" could begin "abc": held back until "x" rules it out; the last "a" is released
  // with the last token, since no more text can complete it.
  REQUIRE(out.pieces.size() == 5);
  CHECK(out.pieces[0].empty());
  CHECK(out.pieces[1].empty());
  CHECK(out.pieces[2] == "abx");
  CHECK(out.pieces[4] == "a");
}

TEST_CASE("a streamed piece never ends inside a UTF-8 character", "[serving][stop][utf8]") {
  cospec::generation_limits limits;
  limits.max_new_tokens = 5;
  const streamed out = run_script({x, lead, trail, lead, trail}, limits);
  CHECK(out.result.text == "x\xC3\xA9\xC3\xA9");
  CHECK(out.stream == out.result.text);
  REQUIRE(out.pieces.size() == 5);
  CHECK(out.pieces[1].empty());             // half of é held back
  CHECK(out.pieces[2] == "\xC3\xA9");
}

TEST_CASE("stop tokens are left out of the output on request, and min_tokens holds stops off", "[serving][stop]") {
  cospec::generation_limits limits;
  limits.max_new_tokens = 8;
  limits.stop_tokens = {y};
  const streamed kept = run_script({x, a, y, b}, limits);
  CHECK(kept.result.tokens == std::vector<token_id>{x, a, y});
  CHECK(kept.result.text == "xay");
  limits.include_stop_token = false;
  const streamed left_out = run_script({x, a, y, b}, limits);
  CHECK(left_out.result.tokens == std::vector<token_id>{x, a});
  CHECK(left_out.result.text == "xa");
  CHECK(left_out.stream == "xa");
  CHECK(left_out.result.reason == cospec::finish_reason::stop_token);
  CHECK(left_out.result.statistics.tokens == 3);  // it was committed all the same
  // min_tokens: the stop token is banned before 4 tokens, and stop strings are not looked for.
  limits.include_stop_token = true;
  limits.min_tokens = 4;
  limits.stop_strings = {"xa"};
  const streamed held = run_script({x, a, y, b, y, a}, limits);
  CHECK(held.result.tokens.size() >= 5);
  for (std::size_t i = 0; i < 4; ++i) CHECK(held.result.tokens[i] != y);
}

TEST_CASE("min_tokens bans the stop tokens from the target exactly until then", "[serving][stop][exactness]") {
  // Enumeration: the first two positions ban token 2, the third allows it.
  const auto configs = model_set(2, 5);
  const reference_combination we{reference_combination::kind::weighted_ensemble, {1.0, 1.0}, std::nullopt};
  const std::vector<token_id> prompt{1, 3};
  std::map<std::vector<token_id>, double> expected;
  for (token_id t0 = 0; t0 < 5; ++t0)
    for (token_id t1 = 0; t1 < 5; ++t1)
      for (token_id t2 = 0; t2 < 5; ++t2) {
        const reference_sampling banned{1.0, std::nullopt, std::nullopt, {{2, -std::numeric_limits<double>::infinity()}}};
        const reference_sampling plain{1.0, std::nullopt, std::nullopt};
        double p = cospec::testing::reference_target(configs, we, banned, prompt)[static_cast<std::size_t>(t0)];
        p *= cospec::testing::reference_target(configs, we, banned, joined(prompt, std::vector<token_id>{t0}))
                 [static_cast<std::size_t>(t1)];
        p *= cospec::testing::reference_target(configs, we, plain, joined(prompt, std::vector<token_id>{t0, t1}))
                 [static_cast<std::size_t>(t2)];
        if (p > 0.0) expected[{t0, t1, t2}] = p;
      }
  auto models = cospec::testing::models_of(configs);
  cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble::uniform(2),
                          cospec::alternating({2, 1}));
  cospec::generation_limits limits;
  limits.max_new_tokens = 3;
  limits.stop_tokens = {2};
  limits.min_tokens = 2;
  constexpr std::size_t trials = 20000;
  sequence_counts counts;
  for (std::size_t trial = 0; trial < trials; ++trial) {
    limits.seed = 7 * trial + 1;
    ++counts[decoder.generate(prompt, limits).tokens];
  }
  const auto test = cospec::testing::chi_square(expected, counts, trials);
  const double critical = cospec::testing::chi_square_critical(test.degrees_of_freedom, significance_z);
  INFO("chi-square " << test.statistic << " on " << test.degrees_of_freedom << " df, critical " << critical);
  CHECK(test.unexpected == 0);
  CHECK(test.statistic < critical);
}

// ===== many recipes in one scheduler ======================================================

TEST_CASE("one batch decoder serves ensembles of other weights and contrastive decoding side by side, each exactly",
          "[serving][recipes][exactness]") {
  const auto configs = model_set(2, 5);
  struct recipe {
    cospec::any_combiner combiner;
    reference_combination reference;
  };
  const std::vector<recipe> recipes{
      {cospec::weighted_ensemble::uniform(2), {reference_combination::kind::weighted_ensemble, {1.0, 1.0}, std::nullopt}},
      {cospec::weighted_ensemble({0.2f, 0.8f}), {reference_combination::kind::weighted_ensemble, {0.2, 0.8}, std::nullopt}},
      {cospec::contrastive_decoding(0.3f), {reference_combination::kind::logit_arithmetic, {1.0, -0.3}, std::nullopt}},
  };
  const std::vector<token_id> prompt{1, 3};
  constexpr std::size_t trials = 20000;
  std::vector<cospec::testing::checking_batch_adapter> models;
  for (const auto& config : configs) models.emplace_back(config, 3);
  cospec::batch_decoder decoder(cospec::testing::pointers(models), cospec::any_combiner(cospec::weighted_ensemble::uniform(2)),
                                cospec::alternating({2, 1}));
  std::vector<sequence_counts> counts(recipes.size());
  std::map<cospec::request_id, std::size_t> recipe_of;
  std::size_t submitted = 0;
  const auto submit = [&] {
    const std::size_t which = submitted % recipes.size();
    cospec::generation_limits limits;
    limits.max_new_tokens = 3;
    limits.seed = 1000003 * submitted + 17;
    recipe_of[decoder.submit(prompt, cospec::sampling_settings{}, limits, recipes[which].combiner)] = which;
    ++submitted;
  };
  for (std::size_t i = 0; i < 4; ++i) submit();
  const auto collect = [&] {
    for (auto& done : decoder.take_finished()) {
      REQUIRE_FALSE(done.failed());
      ++counts[recipe_of.at(done.id)][done.result.tokens];
      if (submitted < trials * recipes.size()) submit();
    }
  };
  while (decoder.step()) collect();
  collect();
  for (std::size_t which = 0; which < recipes.size(); ++which) {
    const auto expected = cospec::testing::sequence_probabilities(configs, recipes[which].reference,
                                                                  {1.0, std::nullopt, std::nullopt}, prompt, 3);
    const auto test = cospec::testing::chi_square(expected, counts[which], trials);
    const double critical = cospec::testing::chi_square_critical(test.degrees_of_freedom, significance_z);
    INFO("recipe " << which << ": chi-square " << test.statistic << " on " << test.degrees_of_freedom << " df, critical "
                   << critical);
    CHECK(test.unexpected == 0);
    CHECK(test.statistic < critical);
  }
  CHECK(models[0].largest_batch >= 2);
}

TEST_CASE("requests of different recipes in one batch are greedy-identical to decoding each alone with its own type",
          "[serving][recipes]") {
  const auto configs = model_set(3, 40);
  std::vector<cospec::testing::checking_batch_adapter> models;
  for (const auto& config : configs) models.emplace_back(config, 4);
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  cospec::batch_decoder decoder(cospec::testing::pointers(models), cospec::any_combiner(cospec::weighted_ensemble::uniform(3)),
                                cospec::adaptive(3), greedy);
  cospec::generation_limits limits;
  limits.max_new_tokens = 30;
  const std::vector<token_id> prompt{5, 9, 2};
  const auto a = decoder.submit(prompt, greedy, limits, cospec::weighted_ensemble({0.1f, 0.3f, 0.6f}));
  const auto b = decoder.submit(prompt, greedy, limits, cospec::logit_arithmetic({1.0f, 1.0f, -1.0f}));
  const auto c = decoder.submit(prompt, greedy, limits);  // the decoder's own
  std::map<cospec::request_id, std::vector<token_id>> outputs;
  for (auto& done : decoder.run()) outputs[done.id] = done.result.tokens;
  const auto alone = [&](auto combiner) {
    auto fresh = cospec::testing::models_of(configs);
    cospec::decoder single(cospec::testing::pointers(fresh), combiner, cospec::adaptive(3), greedy);
    return single.generate(prompt, limits).tokens;
  };
  CHECK(outputs[a] == alone(cospec::weighted_ensemble({0.1f, 0.3f, 0.6f})));
  CHECK(outputs[b] == alone(cospec::logit_arithmetic({1.0f, 1.0f, -1.0f})));
  CHECK(outputs[c] == alone(cospec::weighted_ensemble::uniform(3)));
  CHECK(outputs[a] != outputs[b]);
  CHECK_THROWS_AS(decoder.submit(prompt, greedy, limits, cospec::weighted_ensemble::uniform(2)),
                  cospec::invalid_configuration);
}

TEST_CASE("a decoder's combination can change between calls", "[serving][recipes]") {
  const auto configs = model_set(2, 30);
  auto models = cospec::testing::models_of(configs);
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  cospec::decoder decoder(cospec::testing::pointers(models), cospec::any_combiner(cospec::weighted_ensemble::uniform(2)),
                          cospec::alternating({2, 1}), greedy);
  cospec::generation_limits limits;
  limits.max_new_tokens = 20;
  const std::vector<token_id> prompt{1, 2, 3};
  decoder.set_combination(cospec::contrastive_decoding(0.5f));
  const auto contrastive = decoder.generate(prompt, limits).tokens;
  auto fresh = cospec::testing::models_of(configs);
  cospec::decoder reference(cospec::testing::pointers(fresh), cospec::contrastive_decoding(0.5f),
                            cospec::alternating({2, 1}), greedy);
  CHECK(contrastive == reference.generate(prompt, limits).tokens);
  CHECK_THROWS_AS(decoder.set_combination(cospec::weighted_ensemble::uniform(3)), cospec::invalid_configuration);
}

TEST_CASE("a request waits for a sequence of a pool another batch decoder holds, instead of failing",
          "[serving][batch][queue]") {
  const auto configs = model_set(2, 20);
  std::vector<cospec::testing::checking_batch_adapter> pool;  // one pool of 2 sequences per model, shared
  for (const auto& config : configs) pool.emplace_back(config, 2);
  cospec::batch_decoder first(cospec::testing::pointers(pool), cospec::weighted_ensemble::uniform(2),
                              cospec::alternating({2, 1}));
  cospec::batch_decoder second(cospec::testing::pointers(pool), cospec::weighted_ensemble::uniform(2),
                               cospec::alternating({2, 1}));
  cospec::generation_limits limits;
  limits.max_new_tokens = 10;
  for (std::size_t r = 0; r < 3; ++r) first.submit(std::vector<token_id>{1, static_cast<token_id>(r)}, limits);
  for (std::size_t r = 0; r < 3; ++r) second.submit(std::vector<token_id>{2, static_cast<token_id>(r)}, limits);
  std::size_t finished = 0;
  std::size_t waited = 0;
  bool more = true;
  while (more) {
    const bool a = first.step();
    const bool b = second.step();
    waited += second.queued() > 0 && second.running() == 0 ? 1 : 0;
    for (const auto& done : first.take_finished()) {
      CHECK_FALSE(done.failed());
      ++finished;
    }
    for (const auto& done : second.take_finished()) {
      CHECK_FALSE(done.failed());
      ++finished;
    }
    more = a || b;
  }
  CHECK(finished == 6);
  CHECK(waited > 0);  // the second decoder's requests queued while the first held the pool
  for (const auto& model : pool) CHECK(model.violations.empty());
}

// ===== misuse of a hand-driven session ======================================================

namespace {

using plain_session = cospec::session<cospec::weighted_ensemble, cospec::alternating>;

/// The next request on a session after a misuse (every model emptied first, since it may hold
/// anything): what a fresh decoder gives it.
void check_next_request_exact(plain_session& session, std::vector<synthetic_model>& models,
                              const std::vector<synthetic_model_config>& configs) {
  for (auto& model : models) model.truncate(0);
  cospec::sampling_settings settings;
  settings.temperature = 0.7f;
  cospec::generation_limits limits;
  limits.max_new_tokens = 15;
  limits.seed = 99;
  const std::vector<token_id> prompt{3, 1, 4, 1};
  session.start(prompt, settings, limits);
  while (const cospec::model_pass* pass = session.next_pass()) {
    synthetic_model& model = models[pass->model];
    if (model.context_length() > pass->keep) model.truncate(pass->keep);
    model.feed(pass->tokens, pass->rows);
    session.pass_done(cospec::pass_report{model.context_length(), 0.0});
  }
  auto fresh = cospec::testing::models_of(configs);
  cospec::decoder reference(cospec::testing::pointers(fresh), cospec::weighted_ensemble::uniform(2),
                            cospec::alternating({3, 1}), settings);
  CHECK(session.take_result().tokens == reference.generate(prompt, limits).tokens);
}

}  // namespace

TEST_CASE("a hand-driven session reports a driver that leaves rows unwritten, misplaces them or ignores keep",
          "[serving][misuse]") {
  const auto configs = model_set(2, 30);
  cospec::session_options options;
  options.checked_rows = true;
  cospec::sampling_settings settings;
  settings.temperature = 0.7f;
  cospec::generation_limits limits;
  limits.max_new_tokens = 20;
  const std::vector<token_id> prompt{1, 2, 3};

  SECTION("rows never written") {
    auto models = cospec::testing::models_of(configs);
    plain_session session(cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}),
                          cospec::testing::vocabulary_sizes(models), options);
    session.start(prompt, settings, limits);
    const cospec::model_pass* pass = session.next_pass();
    REQUIRE(pass != nullptr);
    models[pass->model].feed(pass->tokens, {});  // fed, but no row written
    CHECK_THROWS_WITH(session.pass_done(cospec::pass_report{models[pass->model].context_length(), 0.0}),
                      Contains("model " + std::to_string(pass->model)) && Contains("left logit row 0") &&
                          Contains("unwritten"));
    CHECK_FALSE(session.running());
    check_next_request_exact(session, models, configs);
  }
  SECTION("the last position written into rows[0]") {
    auto models = cospec::testing::models_of(configs);
    plain_session session(cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}),
                          cospec::testing::vocabulary_sizes(models), options);
    session.start(prompt, settings, limits);
    bool caught = false;
    while (const cospec::model_pass* pass = session.next_pass()) {
      synthetic_model& model = models[pass->model];
      if (model.context_length() > pass->keep) model.truncate(pass->keep);
      if (pass->rows.size() >= 2) {
        model.feed(pass->tokens, pass->rows.first(1).last(1));  // only one row, and the wrong one
        CHECK_THROWS_WITH(session.pass_done(cospec::pass_report{model.context_length(), 0.0}),
                          Contains("left logit row 1"));
        caught = true;
        break;
      }
      model.feed(pass->tokens, pass->rows);
      session.pass_done(cospec::pass_report{model.context_length(), 0.0});
    }
    CHECK(caught);
    check_next_request_exact(session, models, configs);
  }
  SECTION("keep ignored") {
    auto models = cospec::testing::models_of(configs);
    plain_session session(cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}),
                          cospec::testing::vocabulary_sizes(models), options);
    session.start(prompt, settings, limits);
    bool caught = false;
    while (const cospec::model_pass* pass = session.next_pass()) {
      synthetic_model& model = models[pass->model];
      const bool rolls_back = model.context_length() > pass->keep;
      model.feed(pass->tokens, pass->rows);  // never truncates
      if (rolls_back) {
        CHECK_THROWS_WITH(session.pass_done(cospec::pass_report{model.context_length(), 0.0}),
                          Contains("model " + std::to_string(pass->model) + " holds") && Contains("keep"));
        caught = true;
        break;
      }
      session.pass_done(cospec::pass_report{model.context_length(), 0.0});
    }
    CHECK(caught);
    CHECK_FALSE(session.running());
    check_next_request_exact(session, models, configs);
  }
}

TEST_CASE("settings and limits that can never work are refused with what is wrong", "[serving][misuse]") {
  const auto configs = model_set(2, 30);
  auto models = cospec::testing::models_of(configs);
  cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble::uniform(2),
                          cospec::alternating({3, 1}));
  const std::vector<token_id> prompt{1, 2};
  cospec::generation_limits limits;
  limits.stop_tokens = {-1, 999999};
  CHECK_THROWS_WITH(decoder.generate(prompt, limits), Contains("stop token 0 is -1") && Contains("vocabulary of 30"));
  limits.stop_tokens = {999999};
  CHECK_THROWS_WITH(decoder.generate(prompt, limits), Contains("999999"));
  limits.stop_tokens = {};
  limits.stop_strings = {"x"};
  CHECK_THROWS_WITH(decoder.generate(prompt, limits), Contains("stop strings need token texts"));
  limits.stop_strings = {};
  limits.logprobs = {true, 21, cospec::logprob_basis::model};
  CHECK_THROWS_WITH(decoder.generate(prompt, limits), Contains("at most 20"));
  limits.logprobs = {};
  cospec::sampling_settings settings;
  settings.top_k = 31;
  CHECK_THROWS_WITH(decoder.generate(prompt, settings, limits), Contains("top_k is 31") && Contains("vocabulary of 30"));
  settings.top_k.reset();
  settings.top_p = 95.0f;
  CHECK_THROWS_WITH(decoder.generate(prompt, settings, limits), Contains("got 95") && Contains("percentage"));
  // And the next request is what a fresh decoder gives.
  auto fresh = cospec::testing::models_of(configs);
  cospec::decoder reference(cospec::testing::pointers(fresh), cospec::weighted_ensemble::uniform(2),
                            cospec::alternating({3, 1}));
  limits.max_new_tokens = 10;
  CHECK(decoder.generate(prompt, limits).tokens == reference.generate(prompt, limits).tokens);
  CHECK(std::string(cospec::to_string(cospec::finish_reason::context_limit)) == "context_limit");
  CHECK(std::string(cospec::to_string(cospec::finish_reason::stop_string)) == "stop_string");
}

namespace {

/// A synthetic model with token texts, one of them different from its partner's.
class texted_model : public synthetic_model {
 public:
  texted_model(synthetic_model_config config, std::size_t odd_token)
      : synthetic_model(config), odd_token_(odd_token) {}
  [[nodiscard]] std::string_view token_text(token_id t) {
    // Assigned in two steps: "t" + std::to_string(t) trips g++ 12's -Wrestrict (a false positive).
    text_ = static_cast<std::size_t>(t) == odd_token_ ? "odd" : "t";
    if (static_cast<std::size_t>(t) != odd_token_) text_ += std::to_string(t);
    return text_;
  }

 private:
  std::size_t odd_token_;
  std::string text_;
};

}  // namespace

TEST_CASE("vocabularies are compared token by token where adapters give texts", "[serving][misuse][vocabulary]") {
  auto configs = model_set(2, 50);
  std::vector<texted_model> same{{configs[0], 1000}, {configs[1], 1000}};
  CHECK_NOTHROW(cospec::decoder(cospec::testing::pointers(same), cospec::weighted_ensemble::uniform(2),
                                cospec::standard{}));
  std::vector<texted_model> differ{{configs[0], 1000}, {configs[1], 17}};
  CHECK_THROWS_WITH(cospec::decoder(cospec::testing::pointers(differ), cospec::weighted_ensemble::uniform(2),
                                    cospec::standard{}),
                    Contains("token 17") && Contains("\"t17\" for model 0") && Contains("\"odd\" for model 1"));
  // And with texts, the decoder fills generation_result::text.
  cospec::decoder decoder(cospec::testing::pointers(same), cospec::weighted_ensemble::uniform(2), cospec::standard{});
  cospec::generation_limits limits;
  limits.max_new_tokens = 4;
  const auto result = decoder.generate(std::vector<token_id>{1, 2}, limits);
  std::string text;
  for (token_id t : result.tokens) {
    text += 't';
    text += std::to_string(t);
  }
  CHECK(result.text == text);
}

// Logits processing as engines offer it (issue 13, item 4): what the processor sees, where
// the penalties and the logit bias act, the exactness of penalised and processed speculation,
// greedy identity with standard decoding, and the acceptance gain of process_proposals.
//
// Every expected value is computed here, in double precision, from the documented pipeline
// (docs/combiners.md, "Sampling settings" and "Penalties"):
//   target logits  z = sum_i w_i l_i (logit arithmetic, divided by T later)
//                  z = log(sum_i lambda_i softmax(l_i / T)) (mixtures, already at T)
//   -> llama.cpp penalties over the window of the position's prefix -> processor
//   -> softmax (z / T, or z) -> multiply by exp(bias) -> normalise.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <algorithm>   // std::max_element, std::min
#include <cmath>       // std::exp, std::log, std::isinf
#include <cstddef>     // std::size_t
#include <cstdint>     // std::int64_t, std::uint64_t
#include <functional>  // std::function
#include <limits>      // std::numeric_limits
#include <map>         // std::map
#include <numeric>     // std::accumulate
#include <optional>    // std::optional
#include <random>      // std::mt19937_64, distributions
#include <span>        // std::span
#include <string>      // std::string
#include <utility>     // std::pair
#include <vector>      // std::vector

#include "models/synthetic_model.hpp"
#include "support/reference_decoding.hpp"
#include "support/model_sets.hpp"

namespace {

using cospec::testing::pointers;

using Catch::Matchers::Contains;
using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;

constexpr double minus_infinity = -std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------
// The independent reference: llama.cpp penalties and the target in logit space, in double.

struct reference_penalties {
  double repeat = 1.0;
  double frequency = 0.0;
  double presence = 0.0;
  std::int64_t last_n = 64;  // -1: the whole text
};

/// llama.cpp's rule on every token of the window (the last last_n tokens of `text`):
/// l' = (l > 0 ? l / repeat : l * repeat) - count * frequency - presence; masks stay masked.
void apply_reference_penalties(const reference_penalties& penalties, const std::vector<token_id>& text,
                               std::vector<double>& logits) {
  if (penalties.last_n == 0) return;
  const std::size_t window =
      penalties.last_n < 0 ? text.size() : std::min<std::size_t>(text.size(), static_cast<std::size_t>(penalties.last_n));
  std::map<token_id, std::size_t> counts;
  for (std::size_t i = text.size() - window; i < text.size(); ++i) ++counts[text[i]];
  for (const auto& [token, count] : counts) {
    double& l = logits[static_cast<std::size_t>(token)];
    if (l == minus_infinity) continue;
    l = l > 0.0 ? l / penalties.repeat : l * penalties.repeat;
    l -= static_cast<double>(count) * penalties.frequency + penalties.presence;
  }
}

/// A processor written once for any row type, so that the decoder and the reference run the
/// same user-level rule (it is part of the specification, not of the code under test): it
/// raises the token after the last one and bans one token chosen by the prefix.
template <class Row>
void shifting_processor(std::span<const token_id> prefix, Row& logits, std::size_t vocabulary) {
  const auto last = static_cast<std::size_t>(prefix.back());
  logits[(2 * last + 1) % vocabulary] += 0.8f;
  logits[(prefix.size() + last) % vocabulary] = -std::numeric_limits<float>::infinity();
}

using reference_processor = std::function<void(const std::vector<token_id>& prefix, std::vector<double>& logits)>;

struct reference_pipeline {
  cospec::testing::reference_combination combination;
  double temperature = 1.0;
  reference_penalties penalties;
  reference_processor processor;                   // empty: none
  std::vector<std::pair<token_id, double>> bias;   // multiplies the weight by exp(bias)
};

std::vector<double> softmax_scaled(const std::vector<double>& logits, double scale) {
  double max = minus_infinity;
  for (double x : logits) max = std::max(max, x * scale);
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (std::size_t j = 0; j < p.size(); ++j) sum += p[j] = logits[j] == minus_infinity ? 0.0 : std::exp(logits[j] * scale - max);
  for (double& x : p) x /= sum;
  return p;
}

/// The target logits before penalties, and whether they are already at the temperature.
std::pair<std::vector<double>, bool> reference_target_logits(const std::vector<std::vector<double>>& rows,
                                                             const cospec::testing::reference_combination& combination,
                                                             double temperature) {
  const std::size_t vocabulary = rows[0].size();
  std::vector<double> z(vocabulary, 0.0);
  if (combination.type == cospec::testing::reference_combination::kind::weighted_ensemble) {
    const double total = std::accumulate(combination.weights.begin(), combination.weights.end(), 0.0);
    std::vector<double> mixture(vocabulary, 0.0);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto p = softmax_scaled(rows[i], 1.0 / temperature);
      for (std::size_t j = 0; j < vocabulary; ++j) mixture[j] += combination.weights[i] / total * p[j];
    }
    for (std::size_t j = 0; j < vocabulary; ++j) z[j] = std::log(mixture[j]);
    return {z, true};
  }
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t j = 0; j < vocabulary; ++j) z[j] += combination.weights[i] * rows[i][j];
  return {z, false};
}

/// The processed target at the position after `context` (sampling), from the models' rows.
std::vector<double> reference_processed_target(const std::vector<std::vector<double>>& rows,
                                               const reference_pipeline& pipeline, const std::vector<token_id>& context) {
  auto [z, tempered] = reference_target_logits(rows, pipeline.combination, pipeline.temperature);
  apply_reference_penalties(pipeline.penalties, context, z);
  if (pipeline.processor) pipeline.processor(context, z);
  std::vector<double> p = softmax_scaled(z, tempered ? 1.0 : 1.0 / pipeline.temperature);
  for (const auto& [token, bias] : pipeline.bias) p[static_cast<std::size_t>(token)] *= std::exp(bias);
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  for (double& x : p) x /= total;
  return p;
}

std::vector<double> reference_target_at(const std::vector<synthetic_model_config>& configs,
                                        const reference_pipeline& pipeline, const std::vector<token_id>& context) {
  std::vector<std::vector<double>> rows;
  for (const auto& config : configs) rows.push_back(cospec::testing::model_logits(config, context));
  return reference_processed_target(rows, pipeline, context);
}

/// Probability of every continuation of exactly `length` tokens under standard decoding of
/// the processed target, each position penalised and processed with its own prefix
/// (prompt and every token before it). `window_text` chooses what the penalties count: the
/// right reference passes the whole context; broken variants pass something else.
std::map<std::vector<token_id>, double> reference_sequences(
    const std::vector<synthetic_model_config>& configs, const reference_pipeline& pipeline,
    const std::vector<token_id>& prompt, std::size_t length,
    const std::function<std::vector<token_id>(const std::vector<token_id>& context)>& window_text = {}) {
  std::map<std::vector<token_id>, double> result;
  std::function<void(std::vector<token_id>&, double)> walk = [&](std::vector<token_id>& continuation, double p) {
    if (continuation.size() == length) {
      result[continuation] = p;
      return;
    }
    std::vector<token_id> context = prompt;
    context.insert(context.end(), continuation.begin(), continuation.end());
    std::vector<std::vector<double>> rows;
    for (const auto& config : configs) rows.push_back(cospec::testing::model_logits(config, context));
    auto [z, tempered] = reference_target_logits(rows, pipeline.combination, pipeline.temperature);
    apply_reference_penalties(pipeline.penalties, window_text ? window_text(context) : context, z);
    if (pipeline.processor) pipeline.processor(context, z);
    std::vector<double> target = softmax_scaled(z, tempered ? 1.0 : 1.0 / pipeline.temperature);
    for (const auto& [token, bias] : pipeline.bias) target[static_cast<std::size_t>(token)] *= std::exp(bias);
    const double total = std::accumulate(target.begin(), target.end(), 0.0);
    for (std::size_t t = 0; t < target.size(); ++t) {
      if (target[t] == 0.0) continue;
      continuation.push_back(static_cast<token_id>(t));
      walk(continuation, p * target[t] / total);
      continuation.pop_back();
    }
  };
  std::vector<token_id> continuation;
  walk(continuation, 1.0);
  return result;
}

cospec::penalty_settings to_penalty_settings(const reference_penalties& penalties) {
  cospec::penalty_settings settings;
  settings.repeat = static_cast<float>(penalties.repeat);
  settings.frequency = static_cast<float>(penalties.frequency);
  settings.presence = static_cast<float>(penalties.presence);
  settings.last_n = penalties.last_n;
  return settings;
}

// ---------------------------------------------------------------------------------------
// 1. The target evaluator, one position at a time.

constexpr std::size_t small_vocabulary = 6;
const std::vector<float> row_a{1.5f, -0.5f, 0.25f, 2.0f, -1.0f, 0.75f};
const std::vector<float> row_b{0.5f, 1.0f, -2.0f, 1.25f, 0.0f, -0.25f};

std::vector<double> as_double(const std::vector<float>& row) { return {row.begin(), row.end()}; }

struct recorded_call {
  cospec::processor_context context;
  std::vector<token_id> prefix;
  std::vector<float> logits;
};

/// A processor that records what it saw and then optionally edits the row.
cospec::logits_processor recording(std::vector<recorded_call>& calls,
                                   std::function<void(std::span<float>)> edit = {}) {
  return [&calls, edit](const cospec::processor_context& context, std::span<float> logits) {
    calls.push_back({context, {context.prefix.begin(), context.prefix.end()}, {logits.begin(), logits.end()}});
    if (edit) edit(logits);
  };
}

template <class Combiner>
std::vector<float> evaluate(Combiner combiner, const cospec::sampling_settings& settings,
                            const std::vector<token_id>& prefix) {
  cospec::target_evaluator<Combiner> evaluator(combiner, settings);
  const std::span<const float> rows[] = {row_a, row_b};
  std::vector<float> out(small_vocabulary);
  evaluator.distribution(cospec::logit_rows(rows), prefix, out);
  return out;
}

template <class Combiner>
token_id evaluate_greedy(Combiner combiner, const cospec::sampling_settings& settings,
                         const std::vector<token_id>& prefix) {
  cospec::target_evaluator<Combiner> evaluator(combiner, settings);
  const std::span<const float> rows[] = {row_a, row_b};
  std::vector<float> scratch(small_vocabulary);
  return evaluator.greedy_token(cospec::logit_rows(rows), prefix, scratch);
}

void check_row_near(std::span<const float> actual, const std::vector<double>& expected, double tolerance) {
  REQUIRE(actual.size() == expected.size());
  for (std::size_t j = 0; j < expected.size(); ++j) {
    INFO("token " << j << ": got " << actual[j] << ", expected " << expected[j]);
    if (expected[j] == minus_infinity) {
      CHECK(actual[j] == -std::numeric_limits<float>::infinity());
    } else {
      CHECK(std::abs(static_cast<double>(actual[j]) - expected[j]) <= tolerance * (1.0 + std::abs(expected[j])));
    }
  }
}

std::size_t reference_argmax(const std::vector<double>& row) {
  return static_cast<std::size_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

const cospec::testing::reference_combination contrastive_reference{
    cospec::testing::reference_combination::kind::logit_arithmetic, {1.0, -0.5}, std::nullopt};
const cospec::testing::reference_combination ensemble_reference{
    cospec::testing::reference_combination::kind::weighted_ensemble, {0.3, 0.7}, std::nullopt};

}  // namespace

TEST_CASE("the processor sees logit arithmetic's combined raw logits, untempered, with the temperature",
          "[processor]") {
  std::vector<recorded_call> calls;
  cospec::sampling_settings settings;
  settings.temperature = 0.7f;
  settings.processor = recording(calls);
  const std::vector<token_id> prefix{4, 1};
  const auto out = evaluate(cospec::contrastive_decoding(0.5f), settings, prefix);
  REQUIRE(calls.size() == 1);
  const auto [z, tempered] = reference_target_logits({as_double(row_a), as_double(row_b)}, contrastive_reference, 0.7);
  REQUIRE_FALSE(tempered);
  check_row_near(calls[0].logits, z, 1e-6);
  CHECK_FALSE(calls[0].context.tempered);
  CHECK_FALSE(calls[0].context.greedy);
  CHECK(calls[0].context.temperature == 0.7f);
  CHECK_FALSE(calls[0].context.proposer.has_value());
  CHECK(calls[0].prefix == prefix);
  check_row_near(out, softmax_scaled(z, 1.0 / 0.7), 1e-5);

  // Greedy: the same combined logits at T = 1, and greedy set.
  calls.clear();
  settings.temperature = 0.0f;
  const token_id greedy = evaluate_greedy(cospec::contrastive_decoding(0.5f), settings, prefix);
  REQUIRE(calls.size() == 1);
  check_row_near(calls[0].logits, z, 1e-6);
  CHECK(calls[0].context.greedy);
  CHECK_FALSE(calls[0].context.tempered);
  CHECK(calls[0].context.temperature == 0.0f);
  CHECK(static_cast<std::size_t>(greedy) == reference_argmax(z));
}

TEST_CASE("the processor sees the log of the weighted ensemble's mixture at the temperature, tempered",
          "[processor]") {
  std::vector<recorded_call> calls;
  cospec::sampling_settings settings;
  settings.temperature = 0.8f;
  settings.processor = recording(calls);
  const std::vector<token_id> prefix{2};
  const auto out = evaluate(cospec::weighted_ensemble({0.3f, 0.7f}), settings, prefix);
  REQUIRE(calls.size() == 1);
  const auto [log_mixture, tempered] =
      reference_target_logits({as_double(row_a), as_double(row_b)}, ensemble_reference, 0.8);
  REQUIRE(tempered);
  check_row_near(calls[0].logits, log_mixture, 1e-5);
  CHECK(calls[0].context.tempered);
  CHECK_FALSE(calls[0].context.greedy);
  CHECK(calls[0].context.temperature == 0.8f);
  check_row_near(out, softmax_scaled(log_mixture, 1.0), 1e-5);

  calls.clear();
  settings.temperature = 0.0f;
  const token_id greedy = evaluate_greedy(cospec::weighted_ensemble({0.3f, 0.7f}), settings, prefix);
  REQUIRE(calls.size() == 1);
  const auto at_one = reference_target_logits({as_double(row_a), as_double(row_b)}, ensemble_reference, 1.0).first;
  check_row_near(calls[0].logits, at_one, 1e-5);
  CHECK(calls[0].context.tempered);
  CHECK(calls[0].context.greedy);
  CHECK(static_cast<std::size_t>(greedy) == reference_argmax(at_one));
}

TEST_CASE("penalties act before the processor and the logit bias after it", "[processor][penalties]") {
  const reference_penalties penalties{2.0, 0.5, 0.25, 3};
  // The window is {2, 2, 4} (token 3 lies before it): for contrastive decoding a positive
  // combined logit seen twice (token 2: 0.25 + 1 = 1.25) and a negative one (token 4: -1);
  // for the ensemble, log-probabilities, all negative.
  const std::vector<token_id> prefix{3, 2, 2, 4};
  const std::vector<std::pair<token_id, float>> bias{{0, -1.5f}, {4, 0.75f}};
  for (const bool ensemble : {false, true}) {
    INFO((ensemble ? "weighted ensemble" : "contrastive decoding"));
    std::vector<recorded_call> calls;
    cospec::sampling_settings settings;
    settings.temperature = 0.9f;
    settings.penalties = to_penalty_settings(penalties);
    settings.logit_bias = bias;
    settings.processor = recording(calls, [](std::span<float> logits) { logits[1] += 1.0f; });
    const auto& combination = ensemble ? ensemble_reference : contrastive_reference;
    auto [z, tempered] = reference_target_logits({as_double(row_a), as_double(row_b)}, combination, 0.9);
    apply_reference_penalties(penalties, prefix, z);
    const auto out = ensemble ? evaluate(cospec::weighted_ensemble({0.3f, 0.7f}), settings, prefix)
                              : evaluate(cospec::contrastive_decoding(0.5f), settings, prefix);
    REQUIRE(calls.size() == 1);
    check_row_near(calls[0].logits, z, 1e-5);  // penalised, not yet biased
    z[1] += 1.0;
    std::vector<double> expected = softmax_scaled(z, tempered ? 1.0 : 1.0 / 0.9);
    for (const auto& [token, b] : bias) expected[static_cast<std::size_t>(token)] *= std::exp(static_cast<double>(b));
    const double total = std::accumulate(expected.begin(), expected.end(), 0.0);
    for (double& x : expected) x /= total;
    check_row_near(out, expected, 1e-5);
  }
}

TEST_CASE("the penalised target equals llama.cpp's penalised softmax for both combiners, sampling and greedy",
          "[penalties]") {
  std::mt19937_64 random(1313);
  std::uniform_real_distribution<double> repeat(0.7, 2.5), subtract(-0.5, 1.0);
  std::uniform_int_distribution<token_id> token(0, static_cast<token_id>(small_vocabulary - 1));
  for (int trial = 0; trial < 60; ++trial) {
    const reference_penalties penalties{repeat(random), subtract(random), subtract(random),
                                        std::int64_t{trial % 3 == 0 ? -1 : 1 + trial % 7}};
    std::vector<token_id> prefix;
    for (int i = 0, n = 1 + trial % 9; i < n; ++i) prefix.push_back(token(random));
    const bool ensemble = trial % 2 == 0;
    const double temperature = trial % 4 < 2 ? 1.0 : 0.6;
    INFO("trial " << trial << (ensemble ? ", weighted ensemble" : ", contrastive"));
    cospec::sampling_settings settings;
    settings.temperature = static_cast<float>(temperature);
    settings.penalties = to_penalty_settings(penalties);
    reference_pipeline pipeline{ensemble ? ensemble_reference : contrastive_reference, temperature, penalties, {}, {}};
    const auto expected = reference_processed_target({as_double(row_a), as_double(row_b)}, pipeline, prefix);
    const auto out = ensemble ? evaluate(cospec::weighted_ensemble({0.3f, 0.7f}), settings, prefix)
                              : evaluate(cospec::contrastive_decoding(0.5f), settings, prefix);
    check_row_near(out, expected, 1e-5);

    settings.temperature = 0.0f;
    pipeline.temperature = 1.0;
    const auto at_one = reference_processed_target({as_double(row_a), as_double(row_b)}, pipeline, prefix);
    const token_id greedy = ensemble ? evaluate_greedy(cospec::weighted_ensemble({0.3f, 0.7f}), settings, prefix)
                                     : evaluate_greedy(cospec::contrastive_decoding(0.5f), settings, prefix);
    // Ties within float rounding would make the expected argmax ambiguous; none occur here.
    CHECK(static_cast<std::size_t>(greedy) == reference_argmax(at_one));
  }
}

TEST_CASE("a mask from the processor bans the token; NaN and +inf are invalid logits naming it", "[processor]") {
  // Token 3 is the argmax of both combiners' targets without the processor.
  const auto z = reference_target_logits({as_double(row_a), as_double(row_b)}, contrastive_reference, 1.0).first;
  REQUIRE(reference_argmax(z) == 3);
  cospec::sampling_settings settings;
  settings.processor = [](const cospec::processor_context&, std::span<float> logits) {
    logits[3] = -std::numeric_limits<float>::infinity();
  };
  const std::vector<token_id> prefix{0};
  for (const float temperature : {1.0f, 0.0f}) {
    settings.temperature = temperature;
    if (temperature == 0.0f) {
      CHECK(evaluate_greedy(cospec::contrastive_decoding(0.5f), settings, prefix) != 3);
      CHECK(evaluate_greedy(cospec::weighted_ensemble({0.3f, 0.7f}), settings, prefix) != 3);
    } else {
      CHECK(evaluate(cospec::contrastive_decoding(0.5f), settings, prefix)[3] == 0.0f);
      CHECK(evaluate(cospec::weighted_ensemble({0.3f, 0.7f}), settings, prefix)[3] == 0.0f);
    }
  }
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    settings.processor = [bad](const cospec::processor_context&, std::span<float> logits) { logits[4] = bad; };
    const std::string what = std::isnan(bad) ? "NaN" : "+inf";
    INFO(what);
    settings.temperature = 1.0f;
    CHECK_THROWS_AS(evaluate(cospec::contrastive_decoding(0.5f), settings, prefix), cospec::invalid_logits);
    CHECK_THROWS_WITH(evaluate(cospec::contrastive_decoding(0.5f), settings, prefix),
                      Contains(what) && Contains("token 4"));
    CHECK_THROWS_WITH(evaluate(cospec::weighted_ensemble({0.3f, 0.7f}), settings, prefix),
                      Contains(what) && Contains("token 4"));
    settings.temperature = 0.0f;
    CHECK_THROWS_AS(evaluate_greedy(cospec::contrastive_decoding(0.5f), settings, prefix), cospec::invalid_logits);
    CHECK_THROWS_WITH(evaluate_greedy(cospec::weighted_ensemble({0.3f, 0.7f}), settings, prefix),
                      Contains(what) && Contains("token 4"));
  }
}

TEST_CASE("a processed proposal is the softmax of the proposer's processed raw logits times exp(bias)",
          "[processor][penalties]") {
  std::vector<recorded_call> calls;
  const reference_penalties penalties{1.5, 0.25, 0.5, 4};
  const std::vector<token_id> prefix{0, 3, 3, 1};
  cospec::sampling_settings settings;
  settings.temperature = 0.75f;
  settings.penalties = to_penalty_settings(penalties);
  settings.logit_bias = {{5, 1.0f}};
  settings.process_proposals = true;
  settings.processor = recording(calls, [](std::span<float> logits) { logits[2] = -std::numeric_limits<float>::infinity(); });
  auto combiner = cospec::contrastive_decoding(0.5f);
  cospec::target_evaluator<cospec::logit_arithmetic> evaluator(combiner, settings);
  REQUIRE(evaluator.processes_proposals());
  std::vector<float> out(small_vocabulary);
  evaluator.processed_proposal(1, row_b, prefix, out);
  REQUIRE(calls.size() == 1);
  std::vector<double> l = as_double(row_b);
  apply_reference_penalties(penalties, prefix, l);
  check_row_near(calls[0].logits, l, 1e-6);
  CHECK(calls[0].context.proposer == std::optional<std::size_t>{1});
  CHECK_FALSE(calls[0].context.tempered);
  CHECK_FALSE(calls[0].context.greedy);
  l[2] = minus_infinity;
  std::vector<double> expected = softmax_scaled(l, 1.0 / 0.75);
  expected[5] *= std::exp(1.0);
  const double total = std::accumulate(expected.begin(), expected.end(), 0.0);
  for (double& x : expected) x /= total;
  check_row_near(out, expected, 1e-5);

  // Greedy: argmax of the processed logits plus bias.
  calls.clear();
  settings.temperature = 0.0f;
  cospec::target_evaluator<cospec::logit_arithmetic> greedy_evaluator(combiner, settings);
  std::vector<float> scratch(small_vocabulary);
  const token_id greedy = greedy_evaluator.processed_greedy_proposal(1, row_b, prefix, scratch);
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].context.greedy);
  std::vector<double> scores = as_double(row_b);
  apply_reference_penalties(penalties, prefix, scores);
  scores[2] = minus_infinity;
  scores[5] += 1.0;
  CHECK(static_cast<std::size_t>(greedy) == reference_argmax(scores));
}

TEST_CASE("a mixture's processed proposal is penalised on the log of the proposer's softmax, as its target is",
          "[processor][penalties]") {
  std::vector<recorded_call> calls;
  const reference_penalties penalties{1.5, 0.25, 0.5, 4};
  const std::vector<token_id> prefix{0, 3, 3, 1};
  cospec::sampling_settings settings;
  settings.temperature = 0.75f;
  settings.penalties = to_penalty_settings(penalties);
  settings.process_proposals = true;
  settings.processor = recording(calls, [](std::span<float>) {});
  auto combiner = cospec::weighted_ensemble({0.3f, 0.7f});
  cospec::target_evaluator<cospec::weighted_ensemble> evaluator(combiner, settings);
  std::vector<float> out(small_vocabulary);
  evaluator.processed_proposal(1, row_b, prefix, out);
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].context.tempered);
  // log softmax(l / T), penalised, then softmax with no further temperature.
  std::vector<double> l = softmax_scaled(as_double(row_b), 1.0 / 0.75);
  for (double& x : l) x = std::log(x);
  apply_reference_penalties(penalties, prefix, l);
  check_row_near(calls[0].logits, l, 1e-5);
  check_row_near(out, softmax_scaled(l, 1.0), 1e-5);
}

// ---------------------------------------------------------------------------------------
// 2. Enumeration exactness through the decoder.

namespace {

constexpr std::size_t vocabulary = 5;
constexpr std::size_t length = 3;         // 125 possible continuations
constexpr std::size_t trials = 20000;     // mean expected count per cell 160
constexpr double significance_z = 4.753;  // standard-normal quantile of 1 - 1e-6: significance 1e-6
const std::vector<token_id> prompt{1, 3};

std::vector<synthetic_model_config> model_set(std::size_t n) {
  std::vector<synthetic_model_config> configs;
  for (std::size_t i = 0; i < n; ++i)
    configs.push_back({.vocabulary_size = vocabulary, .window = 2, .shared_seed = 11, .own_seed = 100 + i,
                       .agreement = 0.6, .sharpness = 1.5});
  return configs;
}

using sequence_counts = std::map<std::vector<token_id>, std::size_t>;

template <class Combiner, class Speculator>
sequence_counts frequencies(const std::vector<synthetic_model_config>& configs, Combiner combiner, Speculator speculator,
                            const cospec::sampling_settings& settings) {
  std::vector<synthetic_model> models;
  for (const auto& config : configs) models.emplace_back(config);
  std::vector<synthetic_model*> pointers;
  for (auto& model : models) pointers.push_back(&model);
  cospec::decoder decoder(pointers, std::move(combiner), std::move(speculator), settings);
  sequence_counts counts;
  cospec::generation_limits limits;
  limits.max_new_tokens = length;
  for (std::size_t trial = 0; trial < trials; ++trial) {
    limits.seed = 1000003 * trial + 17;
    ++counts[decoder.generate(prompt, limits).tokens];
  }
  return counts;
}

struct verdict {
  double statistic;
  double critical;
  std::size_t degrees_of_freedom;
  std::size_t unexpected;
  [[nodiscard]] bool passes() const { return unexpected == 0 && statistic < critical; }
};

verdict judge(const std::map<std::vector<token_id>, double>& expected, const sequence_counts& observed) {
  const auto test = cospec::testing::chi_square(expected, observed, trials);
  return {test.statistic, cospec::testing::chi_square_critical(test.degrees_of_freedom, significance_z),
          test.degrees_of_freedom, test.unexpected};
}

void require_exact(const std::string& name, const verdict& v) {
  INFO(name << ": chi-square " << v.statistic << " on " << v.degrees_of_freedom << " df, critical value " << v.critical
            << " at significance 1e-6, " << v.unexpected << " impossible sequences seen");
  CHECK(v.degrees_of_freedom >= 5);
  CHECK(v.unexpected == 0);
  CHECK(v.statistic < v.critical);
}

void require_rejected(const std::string& name, const verdict& v) {
  INFO(name << " (broken variant): chi-square " << v.statistic << " on " << v.degrees_of_freedom
            << " df, critical value " << v.critical);
  CHECK_FALSE(v.passes());
}

/// Repetition, frequency and presence penalties over a window shorter than the text, so
/// that the window moves across speculated positions.
const reference_penalties strong_penalties{1.6, 0.4, 0.3, 3};

cospec::sampling_settings penalised_settings(double temperature) {
  cospec::sampling_settings settings;
  settings.temperature = static_cast<float>(temperature);
  settings.penalties = to_penalty_settings(strong_penalties);
  return settings;
}

const cospec::testing::reference_combination uniform_ensemble{
    cospec::testing::reference_combination::kind::weighted_ensemble, {1.0, 1.0}, std::nullopt};
const cospec::testing::reference_combination contrastive_0_3{
    cospec::testing::reference_combination::kind::logit_arithmetic, {1.0, -0.3}, std::nullopt};

reference_processor shifting_reference = [](const std::vector<token_id>& prefix, std::vector<double>& logits) {
  shifting_processor(std::span<const token_id>(prefix), logits, vocabulary);
};
cospec::logits_processor shifting_cospec = [](const cospec::processor_context& context, std::span<float> logits) {
  shifting_processor(context.prefix, logits, vocabulary);
};

}  // namespace

TEST_CASE("penalties at speculated positions: alternating speculation samples the penalised target exactly",
          "[penalties][exactness]") {
  const auto configs = model_set(2);
  {
    const reference_pipeline pipeline{uniform_ensemble, 1.0, strong_penalties, {}, {}};
    const auto expected = reference_sequences(configs, pipeline, prompt, length);
    const auto observed =
        frequencies(configs, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}), penalised_settings(1.0));
    require_exact("WE gammas (3,1) penalties", judge(expected, observed));
    // Broken variant 1: a reference that penalises every position with the prompt only (the
    // committed text before the run, ignoring the tokens generated and speculated since).
    const auto prompt_only =
        reference_sequences(configs, pipeline, prompt, length, [](const std::vector<token_id>&) { return prompt; });
    require_rejected("WE, reference ignoring the generated prefix", judge(prompt_only, observed));
    // Broken variant 1b, subtler: the window lags one position (the prefix of the position
    // before, as a decoder that penalised a speculated position with its parent's text would).
    const auto lagging = reference_sequences(configs, pipeline, prompt, length, [](const std::vector<token_id>& context) {
      return context.size() > prompt.size() ? std::vector<token_id>(context.begin(), context.end() - 1) : context;
    });
    require_rejected("WE, reference whose window lags one position", judge(lagging, observed));
    // Broken variant 2: the decoder without penalties tested against the penalised law.
    const auto unpenalised = frequencies(configs, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}),
                                         cospec::sampling_settings{});
    require_rejected("WE, decoder without penalties", judge(expected, unpenalised));
  }
  {
    const reference_pipeline pipeline{contrastive_0_3, 0.8, strong_penalties, {}, {}};
    const auto expected = reference_sequences(configs, pipeline, prompt, length);
    const auto observed =
        frequencies(configs, cospec::contrastive_decoding(0.3f), cospec::alternating({4, 1}), penalised_settings(0.8));
    require_exact("CD gammas (4,1) T=0.8 penalties", judge(expected, observed));
    const auto prompt_only =
        reference_sequences(configs, pipeline, prompt, length, [](const std::vector<token_id>&) { return prompt; });
    require_rejected("CD, reference ignoring the generated prefix", judge(prompt_only, observed));
  }
  {
    // Both models propose runs of 3: the second run's positions are speculated on a prefix
    // that itself holds proposals.
    const reference_pipeline pipeline{uniform_ensemble, 0.8, strong_penalties, {}, {}};
    const auto expected = reference_sequences(configs, pipeline, prompt, length);
    const auto observed = frequencies(configs, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 3}),
                                      penalised_settings(0.8));
    require_exact("WE gammas (3,3) T=0.8 penalties", judge(expected, observed));
  }
}

namespace {

/// An independent speculative sampler in double (model 0 proposes `gamma` tokens from its
/// processed distribution, the target verifies them; Leviathan et al.'s acceptance rule and
/// residual), with the acceptance test and residual computed against `verify_with`: the
/// processed proposal (correct) or the unprocessed one (the misuse process_proposals must
/// avoid). Emits `length` tokens.
std::vector<token_id> emulated_speculation(const std::vector<synthetic_model_config>& configs,
                                           const reference_pipeline& pipeline, std::size_t gamma, bool verify_processed,
                                           std::mt19937_64& random) {
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  auto draw = [&](const std::vector<double>& p) {
    double u = uniform(random) * std::accumulate(p.begin(), p.end(), 0.0);
    for (std::size_t t = 0; t < p.size(); ++t) {
      if (u < p[t]) return static_cast<token_id>(t);
      u -= p[t];
    }
    std::size_t last = p.size() - 1;
    while (p[last] == 0.0) --last;
    return static_cast<token_id>(last);
  };
  std::vector<token_id> text = prompt;
  std::vector<token_id> out;
  while (out.size() < length) {
    std::vector<token_id> drafts;
    std::vector<std::vector<double>> processed, raw;
    std::vector<token_id> context = text;
    for (std::size_t g = 0; g < gamma; ++g) {
      std::vector<double> l = cospec::testing::model_logits(configs[0], context);
      raw.push_back(softmax_scaled(l, 1.0 / pipeline.temperature));
      apply_reference_penalties(pipeline.penalties, context, l);
      if (pipeline.processor) pipeline.processor(context, l);
      processed.push_back(softmax_scaled(l, 1.0 / pipeline.temperature));
      drafts.push_back(draw(processed.back()));
      context.push_back(drafts.back());
    }
    bool all_accepted = true;
    for (std::size_t g = 0; g < gamma && out.size() < length; ++g) {
      const auto r = reference_target_at(configs, pipeline, text);
      const auto& q = verify_processed ? processed[g] : raw[g];
      const auto x = static_cast<std::size_t>(drafts[g]);
      if (uniform(random) * q[x] < r[x]) {
        out.push_back(drafts[g]);
        text.push_back(drafts[g]);
        continue;
      }
      std::vector<double> residual(r.size());
      for (std::size_t t = 0; t < r.size(); ++t) residual[t] = std::max(r[t] - q[t], 0.0);
      const token_id replacement = draw(residual);
      out.push_back(replacement);
      text.push_back(replacement);
      all_accepted = false;
      break;
    }
    if (all_accepted && out.size() < length) {
      const token_id bonus = draw(reference_target_at(configs, pipeline, text));
      out.push_back(bonus);
      text.push_back(bonus);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("process_proposals keeps the output law of standard decoding with the same target",
          "[processor][penalties][exactness]") {
  const auto configs = model_set(2);
  const reference_penalties penalty{1.8, 0.0, 0.2, 4};
  cospec::sampling_settings settings;
  settings.penalties = to_penalty_settings(penalty);
  settings.processor = shifting_cospec;
  settings.process_proposals = true;
  {
    const reference_pipeline pipeline{uniform_ensemble, 1.0, penalty, shifting_reference, {}};
    const auto expected = reference_sequences(configs, pipeline, prompt, length);
    const auto observed =
        frequencies(configs, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}), settings);
    require_exact("WE gammas (3,1) process_proposals", judge(expected, observed));
    // A processor that treats proposals differently from the target (here: not at all) draws
    // proposals from other distributions, but the verifier tests each against the one it was
    // drawn from: the law must not change.
    cospec::sampling_settings asymmetric = settings;
    asymmetric.processor = [](const cospec::processor_context& context, std::span<float> logits) {
      if (!context.proposer) shifting_processor(context.prefix, logits, vocabulary);
    };
    const auto observed_asymmetric =
        frequencies(configs, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 3}), asymmetric);
    require_exact("WE gammas (3,3) process_proposals, processor ignoring proposals", judge(expected, observed_asymmetric));
  }
  {
    settings.temperature = 0.8f;
    settings.logit_bias = {{2, 0.7f}, {0, -0.5f}};
    const reference_pipeline pipeline{contrastive_0_3, 0.8, penalty, shifting_reference, {{2, 0.7}, {0, -0.5}}};
    const auto expected = reference_sequences(configs, pipeline, prompt, length);
    const auto observed = frequencies(configs, cospec::contrastive_decoding(0.3f), cospec::alternating({4, 1}), settings);
    require_exact("CD gammas (4,1) T=0.8 bias process_proposals", judge(expected, observed));
  }
}

TEST_CASE("verifying a processed proposal against its unprocessed distribution is caught by the test",
          "[processor][penalties][exactness][teeth]") {
  // The misuse process_proposals must avoid, emulated independently of cospec: proposals drawn
  // from the processed distribution but accepted (and replaced) as if drawn from the raw one.
  // The same emulator verifying against the processed distribution passes, so the failure is
  // the misuse's and the test can tell it apart at 20000 trials.
  const auto configs = model_set(2);
  const reference_penalties penalty{1.8, 0.0, 0.2, 4};
  const reference_pipeline pipeline{uniform_ensemble, 1.0, penalty, shifting_reference, {}};
  const auto expected = reference_sequences(configs, pipeline, prompt, length);
  for (const bool verify_processed : {true, false}) {
    std::mt19937_64 random(verify_processed ? 41 : 43);
    sequence_counts observed;
    for (std::size_t trial = 0; trial < trials; ++trial)
      ++observed[emulated_speculation(configs, pipeline, 3, verify_processed, random)];
    if (verify_processed) require_exact("emulated speculation, verified against the processed proposal", judge(expected, observed));
    else require_rejected("emulated speculation, verified against the unprocessed proposal", judge(expected, observed));
  }
}

// ---------------------------------------------------------------------------------------
// 3. Greedy identity with standard decoding.

namespace {

template <class Combiner, class Speculator>
std::vector<token_id> greedy_run(const std::vector<synthetic_model_config>& configs, const Combiner& combiner,
                                 Speculator speculator, const cospec::sampling_settings& settings,
                                 const std::vector<token_id>& text, std::size_t tokens) {
  std::vector<synthetic_model> models;
  for (const auto& config : configs) models.emplace_back(config);
  cospec::decoder decoder(pointers(models), combiner, std::move(speculator), settings);
  cospec::generation_limits limits;
  limits.max_new_tokens = tokens;
  return decoder.generate(text, limits).tokens;
}

}  // namespace

TEST_CASE("greedy speculation with penalties and a processor is token-identical to standard decoding",
          "[processor][penalties][greedy]") {
  std::mt19937_64 random(20250613);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<std::size_t> vocab(6, 40), count(2, 3), window(1, 3), gamma(1, 5);
  constexpr std::size_t tokens = 30;
  auto ban_last = [](const cospec::processor_context& context, std::span<float> logits) {
    logits[static_cast<std::size_t>(context.prefix.back())] = -std::numeric_limits<float>::infinity();
  };
  int compared = 0;
  for (int trial = 0; trial < 240; ++trial) {
    const std::size_t n = count(random), v = vocab(random), w = window(random);
    const std::uint64_t shared = random();
    std::vector<synthetic_model_config> configs;
    for (std::size_t i = 0; i < n; ++i) configs.push_back({v, w, shared, random(), unit(random), 0.5 + 3.0 * unit(random)});
    std::uniform_int_distribution<token_id> token(0, static_cast<token_id>(v - 1));
    std::vector<token_id> text;
    for (std::size_t i = 0, len = 1 + random() % 4; i < len; ++i) text.push_back(token(random));
    cospec::sampling_settings settings;
    settings.temperature = 0.0f;
    settings.penalties.repeat = static_cast<float>(1.0 + unit(random));
    settings.penalties.frequency = static_cast<float>(0.5 * unit(random));
    settings.penalties.presence = static_cast<float>(0.5 * unit(random));
    settings.penalties.last_n = std::int64_t{trial % 3 == 0 ? -1 : 4 + trial % 13};
    if (trial % 2 == 0) settings.processor = ban_last;
    if (trial % 5 == 0) settings.logit_bias = {{token(random), 1.5f}};
    settings.process_proposals = (trial / 2) % 2 == 0;
    std::vector<std::size_t> gammas;
    for (std::size_t i = 0; i < n; ++i) gammas.push_back(gamma(random));
    INFO("trial " << trial << ", " << n << " models, vocabulary " << v << ", process_proposals "
                  << settings.process_proposals << ", processor " << (trial % 2 == 0));
    auto check = [&](const auto& combiner) {
      const auto expected = greedy_run(configs, combiner, cospec::standard{}, settings, text, tokens);
      REQUIRE(expected.size() == tokens);
      CHECK(greedy_run(configs, combiner, cospec::alternating(gammas), settings, text, tokens) == expected);
      CHECK(greedy_run(configs, combiner, cospec::adaptive(n), settings, text, tokens) == expected);
      if (settings.processor) {
        std::vector<token_id> all = text;
        all.insert(all.end(), expected.begin(), expected.end());
        for (std::size_t i = text.size(); i < all.size(); ++i) CHECK(all[i] != all[i - 1]);
      }
      ++compared;
    };
    if (trial % 4 < 2) {
      std::vector<float> weights;
      for (std::size_t i = 0; i < n; ++i) weights.push_back(static_cast<float>(0.05 + unit(random)));
      check(cospec::weighted_ensemble(weights));
    } else {
      std::vector<float> weights{1.0f, -static_cast<float>(0.5 * unit(random))};
      weights.resize(n, 0.25f);
      check(cospec::logit_arithmetic(weights));
    }
  }
  CHECK(compared == 240);
}

// ---------------------------------------------------------------------------------------
// 4. The acceptance gain of process_proposals.

TEST_CASE("with a strong repetition penalty, process_proposals raises the proposers' acceptance rate",
          "[processor][penalties][acceptance]") {
  // Two confident, largely agreeing models under contrastive decoding: without
  // process_proposals they keep proposing the tokens the penalised target has just made
  // unlikely, and those get rejected. Measured when the test was written (1500 tokens,
  // alternating (4,4), repeat 1.8, last_n 16, seed 99): 0.713 without, 0.895 with; seeds 1-3
  // and repeat 1.5 or 2.0 give 0.67-0.77 without and 0.885-0.898 with.
  // A weighted ensemble's target is penalised on the log of the mixture, and its proposals on
  // the log of each proposer's softmax, the same scale. Same models, measured: repeat 1.5,
  // 0.840 without, 0.906 with; repeat 2.0, 0.746 without, 0.893 with. (When proposals were
  // penalised on raw logits instead, the two scales did not match and repeat 1.5 lost
  // acceptance, 0.840 -> 0.818: the check below would catch that regression.)
  const std::vector<synthetic_model_config> configs{{32, 2, 5, 6, 0.85, 3.0}, {32, 2, 5, 7, 0.85, 3.0}};
  auto acceptance = [&](bool process, bool ensemble = false, float repeat = 1.8f) {
    std::vector<synthetic_model> models;
    for (const auto& config : configs) models.emplace_back(config);
    cospec::sampling_settings settings;
    settings.seed = 99;
    settings.penalties.repeat = repeat;
    settings.penalties.last_n = 16;
    settings.process_proposals = process;
    cospec::generation_limits limits;
    limits.max_new_tokens = 1500;
    const auto result =
        ensemble ? cospec::decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({4, 4}),
                                   settings)
                       .generate(std::vector<token_id>{1, 2, 3}, limits)
                 : cospec::decoder(pointers(models), cospec::contrastive_decoding(0.1f), cospec::alternating({4, 4}),
                                   settings)
                       .generate(std::vector<token_id>{1, 2, 3}, limits);
    std::size_t proposed = 0, accepted = 0;
    for (const auto& p : result.statistics.proposers) {
      proposed += p.proposed;
      accepted += p.accepted;
    }
    REQUIRE(proposed > 1000);
    return static_cast<double>(accepted) / static_cast<double>(proposed);
  };
  const double without = acceptance(false);
  const double with = acceptance(true);
  INFO("acceptance without process_proposals " << without << ", with " << with);
  CHECK(with > without + 0.1);
  for (float repeat : {1.5f, 2.0f}) {
    const double ensemble_without = acceptance(false, true, repeat);
    const double ensemble_with = acceptance(true, true, repeat);
    INFO("weighted ensemble, repeat " << repeat << ": " << ensemble_without << " without, " << ensemble_with << " with");
    CHECK(ensemble_with > ensemble_without + 0.04);
  }
}

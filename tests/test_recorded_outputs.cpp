// Pins the decoder's output. For a grid of 60 configurations (weighted ensembles of 2 and 3
// models; contrastive decoding with and without its plausibility alpha, and logit arithmetic of
// 3 models; the standard, fixed-proposer, alternating and adaptive policies; greedy and sampled
// at T = 0.7, 1 and 1.3, with and without top-k, top-p and min-p, with logit biases including
// bans; vocabularies of 6 to 50 tokens, two of them padded; stop tokens and a stop sequence;
// three successive generate() calls on one decoder, as a chat and with diverging prompts), the
// tokens and the finish reason of every call must be exactly the recorded ones. Statistics are
// not pinned: they may legitimately change.
//
// The expectations were recorded from the decoder of commit 00e62aa, before the session
// refactor of include/cospec/decoder/decoder.hpp, by a throwaway program (not committed) that ran
// these configurations through the same run_case() as below and printed the tables. They came
// out identical under the portable, AVX2 and AVX-512 kernel variants and with g++ 12 and
// clang++ 14, so the test does not depend on the machine (docs/kernels.md, "Run-time dispatch":
// the variants differ only in the last bits). A failure means that a change made the decoder
// emit other tokens for the same seed: find the cause, do not re-record.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <algorithm>  // std::min
#include <cstddef>    // std::size_t, std::ptrdiff_t
#include <cstdint>    // std::uint64_t
#include <limits>     // std::numeric_limits
#include <optional>   // std::optional
#include <stdexcept>  // std::logic_error
#include <string>     // std::string
#include <utility>    // std::move
#include <vector>     // std::vector

#include "models/synthetic_model.hpp"

namespace {

using cospec::finish_reason;
using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;

constexpr float banned = -std::numeric_limits<float>::infinity();

/// The models of a case: model k has shared seed 1, own seed 100 + k and agreements[k]; a window
/// of 2 tokens and sharpness 2 unless changed.
struct model_set {
  std::vector<synthetic_model_config> configs;

  model_set& window(std::size_t tokens) {
    for (auto& c : configs) c.window = tokens;
    return *this;
  }
  model_set& sharpness(double scale) {
    for (auto& c : configs) c.sharpness = scale;
    return *this;
  }
  /// Easy and hard segments (synthetic_model_config::segment_length).
  model_set& segments(std::size_t length, double hard_agreement) {
    for (auto& c : configs) {
      c.segment_length = length;
      c.hard_agreement = hard_agreement;
    }
    return *this;
  }
  /// Vocabulary sizes that differ by padding (decoder_options::vocabulary_padding).
  model_set& vocabularies(std::vector<std::size_t> sizes) {
    for (std::size_t k = 0; k < configs.size(); ++k) configs[k].vocabulary_size = sizes[k];
    return *this;
  }
};

model_set models(std::size_t vocabulary, std::vector<double> agreements) {
  model_set set;
  for (std::size_t k = 0; k < agreements.size(); ++k)
    set.configs.push_back({vocabulary, 2, 1, 100 + k, agreements[k], 2.0, 0, 0.0});
  return set;
}

enum class combiner_kind { weighted_ensemble, contrastive_decoding, logit_arithmetic };

struct combiner_spec {
  combiner_kind kind;
  std::vector<float> weights;                                 // weighted_ensemble, logit_arithmetic
  float mu = 0.0f;                                            // contrastive_decoding
  std::optional<float> alpha;                                 // contrastive_decoding
  std::optional<cospec::plausibility_constraint> constraint;  // logit_arithmetic
};

combiner_spec ensemble(std::vector<float> weights) {
  return {combiner_kind::weighted_ensemble, std::move(weights), 0.0f, {}, {}};
}
combiner_spec contrastive(float mu, std::optional<float> alpha = {}) {
  return {combiner_kind::contrastive_decoding, {}, mu, alpha, {}};
}
combiner_spec arithmetic(std::vector<float> weights, std::optional<cospec::plausibility_constraint> constraint = {}) {
  return {combiner_kind::logit_arithmetic, std::move(weights), 0.0f, {}, constraint};
}

enum class policy_kind { standard, fixed_proposer, alternating, adaptive };

struct policy_spec {
  policy_kind kind;
  std::size_t proposer = 0;             // fixed_proposer
  std::vector<std::size_t> gammas;      // fixed_proposer: {gamma}; alternating: one per model
  std::vector<std::size_t> cost_order;  // alternating; empty: the default order
};

policy_spec standard() { return {policy_kind::standard, 0, {}, {}}; }
policy_spec fixed(std::size_t proposer, std::size_t gamma) {
  return {policy_kind::fixed_proposer, proposer, {gamma}, {}};
}
policy_spec alternating(std::vector<std::size_t> gammas, std::vector<std::size_t> cost_order = {}) {
  return {policy_kind::alternating, 0, std::move(gammas), std::move(cost_order)};
}
/// adaptive with its default options: deterministic (no measured pass costs).
policy_spec adaptive() { return {policy_kind::adaptive, 0, {}, {}}; }

/// Sampling settings, built up by chained calls.
struct sampling_spec {
  cospec::sampling_settings settings;

  sampling_spec& top_k(std::size_t k) {
    settings.top_k = k;
    return *this;
  }
  sampling_spec& top_p(float p) {
    settings.top_p = p;
    return *this;
  }
  sampling_spec& min_p(float p) {
    settings.min_p = p;
    return *this;
  }
  sampling_spec& bias(token_id token, float value) {
    settings.logit_bias.emplace_back(token, value);
    return *this;
  }
};

sampling_spec greedy() {
  sampling_spec spec;
  spec.settings.temperature = 0.0f;
  return spec;
}
sampling_spec sampled(float temperature, std::uint64_t seed) {
  sampling_spec spec;
  spec.settings.temperature = temperature;
  spec.settings.seed = seed;
  return spec;
}

/// Keeps all of the previous call's prompt and output (a chat's next turn).
constexpr std::size_t whole_text = std::numeric_limits<std::size_t>::max();

/// One generate() call: its prompt is the first `keep` tokens of the previous call's prompt +
/// output, then `appended`; and what it gave when recorded.
struct turn {
  std::size_t keep = 0;
  std::vector<token_id> appended;
  std::size_t max_new_tokens = 0;
  std::vector<token_id> stop_tokens;
  std::vector<std::vector<token_id>> stop_sequences;
  std::optional<std::uint64_t> seed;  // generation_limits::seed
  std::vector<token_id> expected;
  finish_reason expected_reason = finish_reason::max_new_tokens;

  turn& stop_at(std::vector<token_id> tokens) {
    stop_tokens = std::move(tokens);
    return *this;
  }
  turn& stop_after(std::vector<token_id> sequence) {
    stop_sequences.push_back(std::move(sequence));
    return *this;
  }
  turn& with_seed(std::uint64_t value) {
    seed = value;
    return *this;
  }
  turn& gives(std::vector<token_id> tokens, finish_reason reason) {
    expected = std::move(tokens);
    expected_reason = reason;
    return *this;
  }
};

/// A prompt of its own, whatever the previous text was (the first call, or a fresh start).
turn prompt(std::vector<token_id> tokens, std::size_t max_new_tokens) {
  turn t;
  t.appended = std::move(tokens);
  t.max_new_tokens = max_new_tokens;
  return t;
}
/// The previous prompt and output, then `tokens`.
turn chat(std::vector<token_id> tokens, std::size_t max_new_tokens) {
  turn t = prompt(std::move(tokens), max_new_tokens);
  t.keep = whole_text;
  return t;
}
/// The first `keep` tokens of the previous prompt and output, then `tokens`.
turn diverge(std::size_t keep, std::vector<token_id> tokens, std::size_t max_new_tokens) {
  turn t = prompt(std::move(tokens), max_new_tokens);
  t.keep = keep;
  return t;
}

struct recorded_case {
  const char* name;
  model_set models;
  combiner_spec combiner;
  policy_spec policy;
  sampling_spec sampling;
  std::vector<turn> turns;
};

struct call_result {
  std::vector<token_id> tokens;
  finish_reason reason;
};

template <class Combiner, class Speculator>
std::vector<call_result> run_turns(const recorded_case& c, Combiner combiner, Speculator speculator) {
  std::vector<synthetic_model> owned;
  for (const auto& config : c.models.configs) owned.emplace_back(config);
  std::vector<synthetic_model*> pointers;
  for (auto& m : owned) pointers.push_back(&m);
  cospec::decoder decoder(std::move(pointers), std::move(combiner), std::move(speculator), c.sampling.settings,
                          cospec::decoder_options{});
  std::vector<call_result> results;
  std::vector<token_id> text;  // the previous call's prompt and output
  for (const turn& t : c.turns) {
    const auto kept = static_cast<std::ptrdiff_t>(std::min(t.keep, text.size()));
    std::vector<token_id> input(text.begin(), text.begin() + kept);
    input.insert(input.end(), t.appended.begin(), t.appended.end());
    cospec::generation_limits limits;
    limits.max_new_tokens = t.max_new_tokens;
    limits.stop_tokens = t.stop_tokens;
    limits.stop_sequences = t.stop_sequences;
    limits.seed = t.seed;
    auto result = decoder.generate(input, limits);
    text = input;
    text.insert(text.end(), result.tokens.begin(), result.tokens.end());
    results.push_back({std::move(result.tokens), result.reason});
  }
  return results;
}

template <class Combiner>
std::vector<call_result> run_with_policy(const recorded_case& c, Combiner combiner) {
  const policy_spec& p = c.policy;
  switch (p.kind) {
    case policy_kind::standard:
      return run_turns(c, std::move(combiner), cospec::standard{});
    case policy_kind::fixed_proposer:
      return run_turns(c, std::move(combiner), cospec::fixed_proposer(p.proposer, p.gammas.at(0)));
    case policy_kind::alternating:
      return run_turns(c, std::move(combiner), cospec::alternating(p.gammas, p.cost_order));
    case policy_kind::adaptive:
      return run_turns(c, std::move(combiner), cospec::adaptive(c.models.configs.size()));
  }
  throw std::logic_error("unknown policy");
}

std::vector<call_result> run_case(const recorded_case& c) {
  const combiner_spec& m = c.combiner;
  switch (m.kind) {
    case combiner_kind::weighted_ensemble:
      return run_with_policy(c, cospec::weighted_ensemble(m.weights));
    case combiner_kind::contrastive_decoding:
      return run_with_policy(c, cospec::contrastive_decoding(m.mu, m.alpha));
    case combiner_kind::logit_arithmetic:
      return run_with_policy(c, cospec::logit_arithmetic(m.weights, m.constraint));
  }
  throw std::logic_error("unknown combiner");
}

// ---- the recorded outputs (decoder of 00e62aa) ---------------------------------------------

/// Weighted ensembles of 2 and 3 models, unequal weights.
std::vector<recorded_case> ensemble_cases() {
  return {
      {"ensemble of 2, greedy, standard",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), standard(), greedy(),
       {prompt({3, 1, 4}, 30)
            .gives({7, 2, 9, 1, 6, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, greedy, fixed proposer 1 gamma 3",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), fixed(1, 3), greedy(),
       {prompt({3, 1, 4}, 30)
            .gives({7, 2, 9, 1, 6, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, greedy, alternating 3-1",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), alternating({3, 1}), greedy(),
       {prompt({3, 1, 4}, 30)
            .gives({7, 2, 9, 1, 6, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, greedy, adaptive",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), adaptive(), greedy(),
       {prompt({3, 1, 4}, 30)
            .gives({7, 2, 9, 1, 6, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, greedy, alternating 2-2, bias bans token 5",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), alternating({2, 2}), greedy().bias(5, banned).bias(7, 0.75f),
       {prompt({3, 1, 4}, 30)
            .gives({7, 2, 9, 1, 6, 7, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10, 9, 9, 8, 9, 7, 0, 10},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 1, standard",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), standard(), sampled(1.0f, 1),
       {prompt({3, 1, 4}, 30)
            .gives({7, 4, 4, 6, 5, 1, 0, 4, 10, 6, 9, 11, 10, 9, 9, 10, 2, 7, 2, 1, 2, 9, 1, 4, 5, 1, 4, 11, 9, 11},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 1, fixed proposer 1 gamma 4",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), fixed(1, 4), sampled(1.0f, 2),
       {prompt({3, 1, 4}, 30)
            .gives({6, 7, 1, 1, 10, 11, 5, 5, 3, 4, 3, 4, 2, 11, 6, 10, 0, 3, 2, 6, 2, 2, 6, 9, 4, 1, 0, 4, 8, 9},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 1, alternating 2-2, seed 3",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), alternating({2, 2}), sampled(1.0f, 3),
       {prompt({3, 1, 4}, 30)
            .gives({7, 5, 3, 4, 9, 0, 8, 9, 7, 3, 9, 8, 7, 0, 4, 10, 8, 1, 3, 5, 9, 8, 5, 10, 7, 5, 9, 0, 8, 3},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 1, alternating 2-2, seed 101",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), alternating({2, 2}), sampled(1.0f, 101),
       {prompt({3, 1, 4}, 30)
            .gives({0, 2, 10, 9, 9, 4, 1, 4, 0, 4, 8, 2, 0, 10, 9, 5, 0, 5, 10, 10, 4, 10, 5, 0, 5, 0, 5, 10, 10, 7},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 1, alternating 2-2, seed 20250301",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), alternating({2, 2}), sampled(1.0f, 20250301),
       {prompt({3, 1, 4}, 30)
            .gives({11, 9, 6, 3, 10, 1, 7, 6, 6, 8, 6, 6, 8, 9, 5, 3, 10, 8, 9, 11, 5, 7, 7, 9, 10, 8, 8, 9, 7, 0},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 0.7, alternating 4-1",
       models(12, {0.8, 0.7}), ensemble({0.7f, 0.3f}), alternating({4, 1}), sampled(0.7f, 4),
       {prompt({0, 11}, 36)
            .gives({5, 9, 4, 7, 0, 1, 6, 7, 3, 5, 4, 8, 2, 9, 1, 11, 6, 7, 2, 10, 1, 6, 1, 6, 7, 3, 0, 5, 2, 4, 2, 11,
                    6, 10, 1, 2},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 1.3, adaptive",
       models(12, {0.8, 0.7}), ensemble({0.7f, 0.3f}), adaptive(), sampled(1.3f, 5),
       {prompt({0, 11}, 36)
            .gives({3, 6, 7, 3, 2, 11, 2, 5, 9, 9, 8, 10, 9, 0, 9, 10, 6, 3, 6, 5, 2, 11, 6, 10, 7, 1, 6, 7, 2, 8, 0, 5,
                    10, 3, 9, 8},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 1, alternating 1-1, top-k 4",
       models(16, {0.5, 0.5}).window(1), ensemble({0.4f, 0.6f}), alternating({1, 1}), sampled(1.0f, 6).top_k(4),
       {prompt({9}, 25)
            .gives({8, 0, 15, 9, 12, 12, 5, 1, 1, 15, 11, 4, 2, 5, 3, 4, 2, 2, 14, 10, 12, 8, 5, 1, 14},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 0.7, fixed proposer 0 gamma 2, top-p 0.9",
       models(16, {0.5, 0.5}).window(1), ensemble({0.4f, 0.6f}), fixed(0, 2), sampled(0.7f, 7).top_p(0.9f),
       {prompt({9}, 25)
            .gives({12, 3, 8, 3, 2, 14, 5, 11, 6, 10, 13, 11, 6, 11, 15, 9, 4, 5, 1, 14, 8, 12, 8, 3, 4},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 1.3, alternating 3-2, min-p 0.1",
       models(16, {0.5, 0.5}).window(1), ensemble({0.4f, 0.6f}), alternating({3, 2}), sampled(1.3f, 8).min_p(0.1f),
       {prompt({9}, 25)
            .gives({12, 8, 6, 12, 12, 12, 6, 10, 5, 15, 3, 3, 9, 8, 11, 14, 10, 2, 14, 15, 13, 11, 14, 0, 15},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 1, adaptive, top-k 6 top-p 0.95 min-p 0.05",
       models(16, {0.5, 0.5}).window(1), ensemble({0.4f, 0.6f}), adaptive(),
       sampled(1.0f, 9).top_k(6).top_p(0.95f).min_p(0.05f),
       {prompt({9}, 25)
            .gives({0, 4, 6, 10, 9, 15, 7, 4, 7, 6, 6, 12, 6, 10, 12, 5, 1, 0, 8, 3, 2, 9, 12, 6, 6},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 1, alternating 2-3, bias bans token 0",
       models(16, {0.5, 0.5}).window(1), ensemble({0.4f, 0.6f}), alternating({2, 3}),
       sampled(1.0f, 10).bias(0, banned).bias(3, 1.5f).bias(4, -2.0f),
       {prompt({9}, 25)
            .gives({15, 9, 1, 14, 10, 3, 3, 15, 3, 3, 15, 12, 3, 13, 11, 10, 9, 2, 14, 8, 3, 3, 2, 14, 3},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, T 0.7, fixed proposer 1 gamma 3, top-k 3 and a ban",
       models(16, {0.5, 0.5}).window(1), ensemble({0.4f, 0.6f}), fixed(1, 3),
       sampled(0.7f, 11).top_k(3).bias(2, banned),
       {prompt({9}, 25)
            .gives({8, 1, 13, 11, 14, 10, 9, 4, 7, 6, 10, 9, 8, 0, 15, 11, 10, 12, 3, 4, 6, 10, 9, 12, 8},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 3, greedy, standard",
       models(30, {0.7, 0.5, 0.3}).window(3), ensemble({0.5f, 0.3f, 0.2f}), standard(), greedy(),
       {prompt({1, 2, 3, 4}, 32)
            .gives({4, 21, 1, 23, 13, 11, 28, 4, 26, 5, 25, 12, 16, 20, 13, 17, 21, 10, 12, 7, 14, 28, 16, 0, 22, 1, 3,
                    20, 1, 17, 11, 9},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 3, greedy, alternating 2-3-1",
       models(30, {0.7, 0.5, 0.3}).window(3), ensemble({0.5f, 0.3f, 0.2f}), alternating({2, 3, 1}), greedy(),
       {prompt({1, 2, 3, 4}, 32)
            .gives({4, 21, 1, 23, 13, 11, 28, 4, 26, 5, 25, 12, 16, 20, 13, 17, 21, 10, 12, 7, 14, 28, 16, 0, 22, 1, 3,
                    20, 1, 17, 11, 9},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 3, greedy, adaptive",
       models(30, {0.7, 0.5, 0.3}).window(3), ensemble({0.5f, 0.3f, 0.2f}), adaptive(), greedy(),
       {prompt({1, 2, 3, 4}, 32)
            .gives({4, 21, 1, 23, 13, 11, 28, 4, 26, 5, 25, 12, 16, 20, 13, 17, 21, 10, 12, 7, 14, 28, 16, 0, 22, 1, 3,
                    20, 1, 17, 11, 9},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 3, T 1, standard",
       models(30, {0.7, 0.5, 0.3}).window(3), ensemble({0.5f, 0.3f, 0.2f}), standard(), sampled(1.0f, 12),
       {prompt({1, 2, 3, 4}, 32)
            .gives({4, 21, 26, 26, 14, 5, 21, 25, 20, 12, 26, 4, 18, 6, 24, 10, 26, 2, 3, 13, 17, 18, 14, 1, 2, 16, 21,
                    26, 26, 7, 23, 25},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 3, T 1, alternating 3-2-1",
       models(30, {0.7, 0.5, 0.3}).window(3), ensemble({0.5f, 0.3f, 0.2f}), alternating({3, 2, 1}), sampled(1.0f, 13),
       {prompt({1, 2, 3, 4}, 32)
            .gives({1, 29, 29, 2, 19, 17, 4, 2, 11, 23, 23, 26, 11, 2, 21, 11, 17, 6, 2, 16, 12, 9, 16, 17, 6, 3, 29, 2,
                    18, 1, 16, 13},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 3, T 1, alternating 1-2-4, cost order 2-1-0",
       models(30, {0.7, 0.5, 0.3}).window(3), ensemble({0.5f, 0.3f, 0.2f}), alternating({1, 2, 4}, {2, 1, 0}),
       sampled(1.0f, 14),
       {prompt({1, 2, 3, 4}, 32)
            .gives({18, 13, 20, 26, 5, 26, 13, 3, 14, 0, 16, 11, 16, 14, 7, 25, 27, 18, 10, 5, 5, 9, 22, 6, 0, 27, 14,
                    17, 16, 18, 28, 25},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 3, T 0.7, fixed proposer 2 gamma 5",
       models(30, {0.7, 0.5, 0.3}).window(3), ensemble({0.5f, 0.3f, 0.2f}), fixed(2, 5), sampled(0.7f, 15),
       {prompt({1, 2, 3, 4}, 32)
            .gives({13, 26, 24, 28, 7, 6, 13, 20, 14, 28, 0, 0, 3, 21, 26, 26, 18, 8, 16, 9, 21, 17, 16, 29, 23, 29, 1,
                    2, 3, 0, 12, 16},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 3, T 1.3, adaptive, top-k 10",
       models(30, {0.7, 0.5, 0.3}).window(3), ensemble({0.5f, 0.3f, 0.2f}), adaptive(), sampled(1.3f, 16).top_k(10),
       {prompt({1, 2, 3, 4}, 32)
            .gives({27, 2, 8, 17, 17, 18, 15, 19, 6, 14, 22, 19, 22, 2, 19, 8, 15, 27, 26, 25, 21, 6, 15, 26, 17, 29,
                    29, 5, 28, 5, 2, 27},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 3, T 1, adaptive, bias bans token 7",
       models(30, {0.7, 0.5, 0.3}).window(3), ensemble({0.5f, 0.3f, 0.2f}), adaptive(),
       sampled(1.0f, 17).bias(7, banned).bias(8, 1.0f),
       {prompt({1, 2, 3, 4}, 32)
            .gives({20, 24, 29, 18, 20, 4, 10, 27, 0, 25, 4, 14, 1, 10, 17, 5, 16, 12, 0, 2, 8, 16, 14, 2, 22, 25, 6,
                    14, 5, 4, 20, 28},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2 over 6 tokens, T 1, alternating 5-5",
       models(6, {0.9, 0.9}).sharpness(1.0), ensemble({0.6f, 0.4f}), alternating({5, 5}), sampled(1.0f, 18),
       {prompt({2, 5}, 40)
            .gives({3, 4, 2, 5, 2, 4, 1, 3, 5, 1, 0, 4, 0, 0, 2, 2, 1, 2, 1, 1, 4, 1, 3, 5, 0, 5, 0, 5, 3, 4, 5, 0, 0,
                    2, 2, 0, 0, 2, 4, 4},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2 over 6 tokens, greedy, adaptive",
       models(6, {0.9, 0.9}).sharpness(1.0), ensemble({0.6f, 0.4f}), adaptive(), greedy(),
       {prompt({2, 5}, 40)
            .gives({2, 4, 4, 2, 1, 2, 5, 2, 4, 4, 2, 1, 2, 5, 2, 4, 4, 2, 1, 2, 5, 2, 4, 4, 2, 1, 2, 5, 2, 4, 4, 2, 1,
                    2, 5, 2, 4, 4, 2, 1},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, padded vocabularies 40 and 44, T 1, alternating 2-1",
       models(40, {0.6, 0.6}).vocabularies({40, 44}), ensemble({0.55f, 0.45f}), alternating({2, 1}), sampled(1.0f, 19),
       {prompt({39, 0, 17}, 30)
            .gives({15, 28, 7, 24, 18, 21, 4, 7, 4, 38, 19, 0, 5, 34, 8, 38, 31, 38, 6, 9, 11, 13, 6, 0, 16, 12, 1, 37,
                    18, 26},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, padded vocabularies 40 and 44, greedy, fixed proposer 0 gamma 4",
       models(40, {0.6, 0.6}).vocabularies({44, 40}), ensemble({0.55f, 0.45f}), fixed(0, 4), greedy(),
       {prompt({39, 0, 17}, 30)
            .gives({4, 28, 5, 1, 21, 12, 5, 39, 32, 23, 4, 14, 6, 24, 11, 27, 13, 39, 26, 39, 34, 7, 11, 37, 31, 12, 19,
                    15, 1, 18},
                   finish_reason::max_new_tokens)}},
      {"ensemble of 2, easy and hard segments, T 1, adaptive",
       models(24, {0.95, 0.9}).segments(8, 0.1), ensemble({0.7f, 0.3f}), adaptive(), sampled(1.0f, 20),
       {prompt({5, 6}, 40)
            .gives({18, 15, 4, 23, 0, 15, 11, 13, 17, 12, 0, 19, 15, 15, 5, 2, 23, 8, 3, 10, 7, 5, 7, 6, 10, 7, 14, 9,
                    22, 15, 9, 22, 12, 2, 0, 16, 21, 3, 22, 15},
                   finish_reason::max_new_tokens)}},
  };
}

/// Contrastive decoding (with and without its plausibility alpha) and logit arithmetic of 3 models.
std::vector<recorded_case> logit_arithmetic_cases() {
  return {
      {"contrastive mu 0.1, greedy, standard",
       models(20, {0.6, 0.5}), contrastive(0.1f), standard(), greedy(),
       {prompt({4, 8, 15}, 30)
            .gives({3, 11, 17, 2, 13, 5, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16,
                    8},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.1, greedy, alternating 3-1",
       models(20, {0.6, 0.5}), contrastive(0.1f), alternating({3, 1}), greedy(),
       {prompt({4, 8, 15}, 30)
            .gives({3, 11, 17, 2, 13, 5, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16,
                    8},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.1, greedy, fixed proposer 1 gamma 3",
       models(20, {0.6, 0.5}), contrastive(0.1f), fixed(1, 3), greedy(),
       {prompt({4, 8, 15}, 30)
            .gives({3, 11, 17, 2, 13, 5, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16, 8, 2, 16,
                    8},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.1, T 1, standard",
       models(20, {0.6, 0.5}), contrastive(0.1f), standard(), sampled(1.0f, 21),
       {prompt({4, 8, 15}, 30)
            .gives({0, 16, 13, 4, 10, 0, 17, 4, 18, 3, 9, 11, 13, 16, 3, 2, 11, 6, 2, 7, 9, 16, 13, 10, 17, 13, 1, 13,
                    5, 9},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.1, T 1, alternating 2-1",
       models(20, {0.6, 0.5}), contrastive(0.1f), alternating({2, 1}), sampled(1.0f, 22),
       {prompt({4, 8, 15}, 30)
            .gives({19, 3, 0, 2, 10, 8, 1, 3, 5, 9, 19, 5, 17, 16, 19, 15, 14, 1, 4, 7, 15, 19, 17, 16, 11, 16, 1, 5,
                    17, 3},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.1, T 0.7, fixed proposer 1 gamma 4, top-p 0.8",
       models(20, {0.6, 0.5}), contrastive(0.1f), fixed(1, 4), sampled(0.7f, 23).top_p(0.8f),
       {prompt({4, 8, 15}, 30)
            .gives({14, 3, 12, 12, 0, 0, 12, 19, 15, 15, 17, 13, 17, 9, 18, 5, 8, 1, 15, 11, 12, 12, 7, 2, 9, 1, 6, 3,
                    6, 8},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.1, T 1.3, adaptive",
       models(20, {0.6, 0.5}), contrastive(0.1f), adaptive(), sampled(1.3f, 24),
       {prompt({4, 8, 15}, 30)
            .gives({11, 19, 5, 1, 8, 1, 3, 5, 18, 3, 3, 19, 14, 11, 8, 7, 16, 10, 12, 11, 1, 10, 14, 2, 3, 11, 0, 0, 13,
                    10},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.5 alpha 0.1, greedy, adaptive",
       models(20, {0.7, 0.6}).sharpness(3.0), contrastive(0.5f, 0.1f), adaptive(), greedy(),
       {prompt({16, 3, 2}, 30)
            .gives({6, 13, 5, 2, 16, 0, 8, 3, 4, 2, 11, 0, 14, 6, 17, 0, 1, 1, 19, 13, 9, 3, 10, 18, 9, 8, 9, 6, 12,
                    16},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.5 alpha 0.1, greedy, alternating 1-3",
       models(20, {0.7, 0.6}).sharpness(3.0), contrastive(0.5f, 0.1f), alternating({1, 3}), greedy(),
       {prompt({16, 3, 2}, 30)
            .gives({6, 13, 5, 2, 16, 0, 8, 3, 4, 2, 11, 0, 14, 6, 17, 0, 1, 1, 19, 13, 9, 3, 10, 18, 9, 8, 9, 6, 12,
                    16},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.5 alpha 0.1, T 1, alternating 2-2",
       models(20, {0.7, 0.6}).sharpness(3.0), contrastive(0.5f, 0.1f), alternating({2, 2}), sampled(1.0f, 25),
       {prompt({16, 3, 2}, 30)
            .gives({12, 9, 1, 6, 7, 18, 12, 7, 6, 6, 1, 15, 11, 12, 12, 7, 6, 6, 6, 18, 3, 10, 2, 17, 13, 17, 11, 14,
                    15, 12},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.5 alpha 0.1, T 1, standard, min-p 0.2",
       models(20, {0.7, 0.6}).sharpness(3.0), contrastive(0.5f, 0.1f), standard(), sampled(1.0f, 26).min_p(0.2f),
       {prompt({16, 3, 2}, 30)
            .gives({3, 10, 4, 0, 0, 13, 10, 0, 13, 10, 19, 18, 2, 5, 5, 3, 18, 16, 19, 8, 10, 12, 18, 19, 6, 0, 0, 12,
                    4, 8},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.5 alpha 0.1, T 0.7, fixed proposer 1 gamma 3, bias on tokens 1 and 2",
       models(20, {0.7, 0.6}).sharpness(3.0), contrastive(0.5f, 0.1f), fixed(1, 3),
       sampled(0.7f, 27).bias(1, 2.0f).bias(2, -1.0f),
       {prompt({16, 3, 2}, 30)
            .gives({6, 13, 5, 9, 9, 17, 2, 15, 1, 16, 18, 5, 8, 2, 16, 8, 2, 16, 0, 8, 8, 13, 4, 4, 6, 5, 18, 3, 10, 7},
                   finish_reason::max_new_tokens)}},
      {"contrastive mu 0.5 alpha 0.1, T 1.3, alternating 4-1, top-k 5",
       models(20, {0.7, 0.6}).sharpness(3.0), contrastive(0.5f, 0.1f), alternating({4, 1}), sampled(1.3f, 28).top_k(5),
       {prompt({16, 3, 2}, 30)
            .gives({3, 5, 16, 12, 13, 16, 7, 16, 10, 2, 17, 7, 0, 4, 10, 19, 8, 18, 11, 3, 10, 4, 0, 12, 4, 4, 7, 2, 9,
                    1},
                   finish_reason::max_new_tokens)}},
      {"logit arithmetic of 3 with plausibility on model 2, greedy, alternating 1-2-3",
       models(50, {0.6, 0.4, 0.7}), arithmetic({1.0f, -0.3f, 0.5f}, cospec::plausibility_constraint{2, 0.2f}),
       alternating({1, 2, 3}), greedy(),
       {prompt({49, 7, 21, 33}, 32)
            .gives({5, 22, 24, 12, 28, 32, 24, 47, 45, 48, 27, 37, 12, 25, 23, 46, 38, 5, 42, 22, 27, 3, 42, 12, 22, 46,
                    10, 35, 9, 0, 8, 8},
                   finish_reason::max_new_tokens)}},
      {"logit arithmetic of 3 with plausibility on model 2, T 1, standard",
       models(50, {0.6, 0.4, 0.7}), arithmetic({1.0f, -0.3f, 0.5f}, cospec::plausibility_constraint{2, 0.2f}),
       standard(), sampled(1.0f, 29),
       {prompt({49, 7, 21, 33}, 32)
            .gives({5, 6, 44, 25, 39, 40, 24, 35, 47, 18, 14, 20, 10, 2, 20, 13, 29, 17, 9, 45, 41, 46, 35, 31, 29, 4,
                    18, 25, 39, 40, 24, 13},
                   finish_reason::max_new_tokens)}},
      {"logit arithmetic of 3 with plausibility on model 2, T 1, adaptive",
       models(50, {0.6, 0.4, 0.7}), arithmetic({1.0f, -0.3f, 0.5f}, cospec::plausibility_constraint{2, 0.2f}),
       adaptive(), sampled(1.0f, 30),
       {prompt({49, 7, 21, 33}, 32)
            .gives({5, 16, 12, 4, 32, 25, 20, 35, 40, 16, 26, 3, 6, 30, 32, 17, 7, 21, 45, 10, 6, 28, 35, 36, 9, 47, 45,
                    48, 27, 43, 42, 5},
                   finish_reason::max_new_tokens)}},
      {"logit arithmetic of 3 without constraint, T 0.7, alternating 2-2-2, top-k 20 top-p 0.9",
       models(50, {0.6, 0.4, 0.7}), arithmetic({1.0f, -0.3f, 0.5f}), alternating({2, 2, 2}),
       sampled(0.7f, 31).top_k(20).top_p(0.9f),
       {prompt({49, 7, 21, 33}, 32)
            .gives({18, 29, 34, 8, 32, 13, 43, 14, 21, 45, 16, 44, 39, 37, 3, 39, 25, 30, 16, 44, 39, 37, 3, 2, 6, 13,
                    5, 32, 31, 43, 20, 16},
                   finish_reason::max_new_tokens)}},
  };
}

/// Generation ended by a stop token or a stop sequence, proposals possibly still pending.
std::vector<recorded_case> stop_cases() {
  return {
      {"stop token, ensemble of 2, T 1, alternating 2-2",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), alternating({2, 2}), sampled(1.0f, 3),
       {prompt({3, 1, 4}, 30).stop_at({9})
            .gives({7, 5, 3, 4, 9}, finish_reason::stop_token)}},
      {"stop token, ensemble of 2, greedy, fixed proposer 1 gamma 4",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), fixed(1, 4), greedy(),
       {prompt({3, 1, 4}, 30).stop_at({10, 11})
            .gives({7, 2, 9, 1, 6, 7, 0, 10}, finish_reason::stop_token)}},
      {"stop token, contrastive mu 0.1, T 1.3, adaptive",
       models(20, {0.6, 0.5}), contrastive(0.1f), adaptive(), sampled(1.3f, 24),
       {prompt({4, 8, 15}, 30).stop_at({12})
            .gives({11, 19, 5, 1, 8, 1, 3, 5, 18, 3, 3, 19, 14, 11, 8, 7, 16, 10, 12}, finish_reason::stop_token)}},
      {"stop sequence, ensemble of 3, T 1, alternating 3-2-1",
       models(30, {0.7, 0.5, 0.3}).window(3), ensemble({0.5f, 0.3f, 0.2f}), alternating({3, 2, 1}), sampled(1.0f, 13),
       {prompt({1, 2, 3, 4}, 32).stop_after({17, 6})
            .gives({1, 29, 29, 2, 19, 17, 4, 2, 11, 23, 23, 26, 11, 2, 21, 11, 17, 6}, finish_reason::stop_sequence)}},
  };
}

/// Three generate() calls on one decoder: a chat (each prompt extends the previous prompt and
/// output), prompts that diverge from the previous text, the same prompt again.
std::vector<recorded_case> multi_turn_cases() {
  return {
      {"chat, ensemble of 2, T 1, alternating 2-2",
       models(12, {0.6, 0.4}), ensemble({0.7f, 0.3f}), alternating({2, 2}), sampled(1.0f, 3),
       {prompt({3, 1, 4}, 20)
            .gives({7, 5, 3, 4, 9, 0, 8, 9, 7, 3, 9, 8, 7, 0, 4, 10, 8, 1, 3, 5}, finish_reason::max_new_tokens),
        chat({5, 1}, 20)
            .gives({7, 6, 8, 9, 5, 10, 6, 2, 1, 9, 1, 6, 7, 7, 0, 10, 9, 10, 4, 3}, finish_reason::max_new_tokens),
        chat({2}, 20)
            .gives({6, 5, 4, 10, 3, 10, 1, 7, 4, 10, 2, 11, 5, 11, 2, 10, 10, 7, 5, 4},
                   finish_reason::max_new_tokens)}},
      {"chat, ensemble of 2, T 1, adaptive (learns across calls)",
       models(24, {0.95, 0.9}).segments(8, 0.1), ensemble({0.7f, 0.3f}), adaptive(), sampled(1.0f, 32),
       {prompt({5, 6}, 24)
            .gives({18, 8, 1, 15, 20, 3, 7, 4, 8, 12, 7, 6, 21, 10, 4, 0, 4, 8, 2, 16, 0, 15, 8, 19},
                   finish_reason::max_new_tokens),
        chat({7, 8, 9}, 24)
            .gives({7, 8, 1, 15, 20, 3, 4, 2, 22, 12, 2, 10, 7, 3, 4, 10, 6, 16, 2, 10, 20, 17, 19, 11},
                   finish_reason::max_new_tokens),
        chat({10}, 24)
            .gives({14, 2, 1, 18, 4, 8, 6, 10, 11, 19, 7, 9, 1, 6, 7, 2, 21, 22, 4, 13, 12, 10, 23, 15},
                   finish_reason::max_new_tokens)}},
      {"chat, contrastive mu 0.5 alpha 0.1, greedy, adaptive",
       models(20, {0.7, 0.6}).sharpness(3.0), contrastive(0.5f, 0.1f), adaptive(), greedy(),
       {prompt({16, 3, 2}, 20)
            .gives({6, 13, 5, 2, 16, 0, 8, 3, 4, 2, 11, 0, 14, 6, 17, 0, 1, 1, 19, 13}, finish_reason::max_new_tokens),
        chat({0}, 20)
            .gives({0, 12, 4, 4, 14, 6, 17, 0, 1, 1, 19, 13, 9, 3, 10, 18, 9, 8, 9, 6}, finish_reason::max_new_tokens),
        chat({1, 19}, 20)
            .gives({13, 9, 3, 10, 18, 9, 8, 9, 6, 12, 16, 14, 13, 16, 9, 10, 8, 6, 7, 18},
                   finish_reason::max_new_tokens)}},
      {"chat with per-call seeds, ensemble of 3, T 0.7, fixed proposer 2 gamma 3",
       models(30, {0.7, 0.5, 0.3}).window(3), ensemble({0.5f, 0.3f, 0.2f}), fixed(2, 3), sampled(0.7f, 33),
       {prompt({1, 2, 3, 4}, 20).with_seed(1)
            .gives({23, 20, 19, 13, 3, 5, 20, 20, 8, 14, 9, 10, 13, 3, 2, 12, 11, 18, 24, 29},
                   finish_reason::max_new_tokens),
        chat({29}, 20).with_seed(2)
            .gives({28, 11, 28, 8, 11, 9, 10, 9, 7, 28, 1, 9, 25, 18, 23, 2, 15, 4, 16, 13},
                   finish_reason::max_new_tokens),
        chat({28, 27}, 20).with_seed(3)
            .gives({3, 11, 27, 5, 22, 3, 28, 24, 7, 16, 0, 13, 9, 15, 19, 29, 21, 6, 3, 8},
                   finish_reason::max_new_tokens)}},
      {"diverging prompts, ensemble of 2, T 1, alternating 3-1",
       models(16, {0.5, 0.5}).window(1), ensemble({0.4f, 0.6f}), alternating({3, 1}), sampled(1.0f, 34),
       {prompt({9, 8, 7, 6}, 24)
            .gives({9, 4, 1, 15, 3, 4, 6, 3, 13, 0, 13, 11, 8, 7, 9, 8, 3, 4, 10, 11, 15, 15, 11, 3},
                   finish_reason::max_new_tokens),
        diverge(10, {0, 0}, 24)
            .gives({13, 11, 8, 5, 4, 2, 2, 10, 3, 9, 12, 12, 3, 0, 15, 11, 4, 7, 9, 0, 14, 3, 9, 2},
                   finish_reason::max_new_tokens),
        diverge(2, {15}, 24)
            .gives({7, 9, 2, 15, 13, 4, 7, 4, 1, 14, 0, 13, 11, 8, 7, 9, 8, 3, 4, 10, 11, 15, 15, 11},
                   finish_reason::max_new_tokens)}},
      {"diverging prompts, logit arithmetic of 3, greedy, alternating 1-2-3",
       models(50, {0.6, 0.4, 0.7}), arithmetic({1.0f, -0.3f, 0.5f}, cospec::plausibility_constraint{2, 0.2f}),
       alternating({1, 2, 3}), greedy(),
       {prompt({49, 7, 21, 33}, 24)
            .gives({5, 22, 24, 12, 28, 32, 24, 47, 45, 48, 27, 37, 12, 25, 23, 46, 38, 5, 42, 22, 27, 3, 42, 12},
                   finish_reason::max_new_tokens),
        diverge(4, {}, 24)
            .gives({5, 22, 24, 12, 28, 32, 24, 47, 45, 48, 27, 37, 12, 25, 23, 46, 38, 5, 42, 22, 27, 3, 42, 12},
                   finish_reason::max_new_tokens),
        diverge(12, {48}, 24)
            .gives({20, 23, 17, 11, 20, 30, 45, 40, 26, 0, 6, 31, 32, 24, 47, 45, 48, 27, 37, 12, 25, 23, 46, 38},
                   finish_reason::max_new_tokens)}},
      {"the same prompt again and a fresh one, contrastive mu 0.1, T 1.3, adaptive",
       models(20, {0.6, 0.5}), contrastive(0.1f), adaptive(), sampled(1.3f, 35),
       {prompt({4, 8, 15}, 24)
            .gives({3, 18, 3, 14, 4, 4, 6, 5, 2, 0, 12, 5, 10, 10, 19, 13, 2, 9, 5, 6, 18, 6, 9, 7},
                   finish_reason::max_new_tokens),
        diverge(3, {}, 24)
            .gives({3, 18, 3, 14, 4, 4, 6, 5, 2, 0, 12, 5, 10, 10, 19, 13, 2, 9, 5, 6, 18, 6, 9, 0},
                   finish_reason::max_new_tokens),
        prompt({19, 18}, 24)
            .gives({1, 12, 3, 12, 8, 4, 4, 18, 5, 4, 4, 7, 7, 19, 18, 16, 4, 13, 11, 14, 1, 9, 13, 12},
                   finish_reason::max_new_tokens)}},
  };
}

/// Runs every case in a section of its own, so that one mismatch does not hide the others.
void check_recorded(const std::vector<recorded_case>& cases) {
  for (const recorded_case& c : cases) {
    DYNAMIC_SECTION(c.name) {
      const std::vector<call_result> results = run_case(c);
      REQUIRE(results.size() == c.turns.size());
      for (std::size_t i = 0; i < results.size(); ++i) {
        INFO("generate() call " << i + 1 << " of " << results.size());
        REQUIRE(results[i].tokens == c.turns[i].expected);
        REQUIRE(cospec::to_string(results[i].reason) == std::string(cospec::to_string(c.turns[i].expected_reason)));
      }
    }
  }
}

}  // namespace

TEST_CASE("weighted ensembles emit the recorded tokens under every policy and sampling setting",
          "[decoder][recorded]") {
  check_recorded(ensemble_cases());
}

TEST_CASE("contrastive decoding and logit arithmetic emit the recorded tokens", "[decoder][recorded]") {
  check_recorded(logit_arithmetic_cases());
}

TEST_CASE("stop tokens and stop sequences end generation at the recorded token", "[decoder][recorded]") {
  check_recorded(stop_cases());
}

TEST_CASE("successive calls on one decoder, as a chat and with diverging prompts, emit the recorded tokens",
          "[decoder][recorded]") {
  check_recorded(multi_turn_cases());
}

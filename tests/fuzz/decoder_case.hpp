// One fuzz case for the decoder's bookkeeping: arbitrary bytes become a set of synthetic models
// behind checking adapters, a combiner, a speculation policy and sampling settings, and then a
// conversation of up to five generate calls. Each call has its own prompt (new, repeated, or
// continuing or cutting the text so far) and may misbehave: an adapter's feed or truncate
// throws, feed throws context_overflow, a context limit, a poisoned logit row, on_token or the
// logits processor throws.
//
// After every call the case checks what docs/reliability.md promises: no adapter saw a call
// that breaks the adapter contract; after a failure no model holds a token that was never
// committed (except one whose truncate keeps failing); and a call that succeeds returns exactly
// the tokens and finish reason a fresh decoder (with the same context limits) returns for the
// same prompt and seed, whatever happened before.
//
// Shared by the libFuzzer target (tests/fuzz/fuzz_decoder.cpp) and the regression tests
// (tests/test_fuzz_regressions.cpp). run_decoder_case throws invariant_violation for a broken
// promise; it catches every exception generate may legitimately throw.
#pragma once

#include <algorithm>  // std::min
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint8_t, std::uint64_t
#include <exception>  // std::exception
#include <limits>     // std::numeric_limits
#include <memory>     // std::shared_ptr, std::make_shared
#include <optional>   // std::optional
#include <span>       // std::span
#include <stdexcept>  // std::runtime_error
#include <string>     // std::string, std::to_string
#include <vector>     // std::vector

#include <cospec/cospec.hpp>

#include "fuzz/verify_case.hpp"  // byte_reader, invariant_violation
#include "support/checking_adapter.hpp"

namespace cospec::fuzzing {

/// What goes wrong during one generate call.
enum class mishap : std::uint8_t {
  none,
  feed_throws,
  truncate_throws,
  truncate_keeps_failing,
  feed_overflows,
  context_limit,
  poisoned_row,
  callback_throws,
  processor_throws,
};

/// How a call's prompt relates to the text so far.
enum class prompt_kind : std::uint8_t { fresh, same_as_last, continue_text, cut_text };

struct decoder_turn {
  prompt_kind prompt = prompt_kind::fresh;
  std::vector<token_id> fresh_tokens;  ///< the prompt (fresh) or the tokens appended (continue)
  std::size_t cut = 0;                 ///< cut_text: keep this many tokens of the text (at least 1)
  std::size_t max_new_tokens = 0;
  std::uint64_t seed = 0;
  mishap trouble = mishap::none;
  std::size_t model = 0;  ///< the model that misbehaves
  std::size_t at = 1;     ///< its n-th call (or the n-th token, position or processor call)
  testing::poison_kind poison = testing::poison_kind::nan;
};

struct decoder_case {
  std::size_t models = 1;
  std::size_t vocabulary = 2;
  std::size_t window = 2;
  double agreement = 0.5;
  std::uint64_t shared_seed = 1;
  std::uint8_t combination = 0;  ///< 0: weighted ensemble, 1: logit arithmetic, 2: contrastive + plausibility
  std::uint8_t policy = 0;       ///< 0: standard, 1: fixed proposer, 2: alternating
  std::vector<std::size_t> gammas;
  std::size_t proposer = 0;
  bool greedy = false;
  float temperature = 1.0f;
  std::optional<std::size_t> top_k;
  bool ban_repeats = false;  ///< a processor that bans the last token of the prefix
  std::vector<decoder_turn> turns;
};

/// Turns bytes into a case. Never fails: every byte string is a case.
inline decoder_case decode_decoder_case(std::span<const std::uint8_t> bytes) {
  static constexpr std::size_t vocabulary_sizes[] = {2, 3, 5, 8, 16, 33};
  byte_reader in(bytes);
  decoder_case c;
  c.models = 1 + in.below(3);
  c.vocabulary = vocabulary_sizes[in.below(std::size(vocabulary_sizes))];
  c.window = in.byte() % 2 == 0 ? 64 : 1 + in.below(3);  // 64: every stale token changes logits
  c.agreement = static_cast<double>(in.byte()) / 255.0;
  c.shared_seed = in.byte();
  c.combination = static_cast<std::uint8_t>(in.below(c.models == 2 ? 3 : 2));
  c.policy = static_cast<std::uint8_t>(in.below(3));
  for (std::size_t k = 0; k < c.models; ++k) c.gammas.push_back(1 + in.below(5));
  c.proposer = in.below(c.models);
  const std::uint8_t sampling = in.byte();
  c.greedy = sampling % 3 == 0;
  c.temperature = 0.5f + static_cast<float>(sampling % 4) * 0.5f;
  if (sampling & 16) c.top_k = 1 + in.below(c.vocabulary);
  c.ban_repeats = (sampling & 32) != 0;
  const std::size_t turns = 1 + in.below(5);
  for (std::size_t t = 0; t < turns; ++t) {
    decoder_turn turn;
    turn.prompt = static_cast<prompt_kind>(t == 0 ? 0 : in.byte() % 4);
    const std::size_t length = 1 + in.below(6);
    for (std::size_t i = 0; i < length; ++i) turn.fresh_tokens.push_back(static_cast<token_id>(in.below(c.vocabulary)));
    turn.cut = 1 + in.below(40);
    turn.max_new_tokens = in.below(24);
    turn.seed = in.byte();
    turn.trouble = static_cast<mishap>(in.byte() % 9);
    turn.model = in.below(c.models);
    turn.at = 1 + in.below(40);
    turn.poison = static_cast<testing::poison_kind>(in.below(3));
    c.turns.push_back(std::move(turn));
  }
  return c;
}

namespace detail {

template <class Function>
void with_decoder_parts(const decoder_case& c, Function&& f) {
  auto with_policy = [&](auto combiner) {
    switch (c.policy) {
      case 0: f(std::move(combiner), standard{}); break;
      case 1: f(std::move(combiner), fixed_proposer(c.proposer, c.gammas[c.proposer])); break;
      default: f(std::move(combiner), alternating(c.gammas)); break;
    }
  };
  switch (c.combination) {
    case 0: with_policy(weighted_ensemble::uniform(c.models)); break;
    case 1: {
      std::vector<float> weights{1.0f, -0.25f, 0.5f};
      weights.resize(c.models);
      with_policy(logit_arithmetic(weights));
      break;
    }
    default: with_policy(contrastive_decoding(0.1f, 0.1f)); break;
  }
}

/// The processor of a case: bans the prefix's last token (when asked), and throws at its n-th
/// call while `throw_at` is set. Copies share the counter.
struct case_processor {
  bool ban = false;
  std::shared_ptr<std::size_t> calls = std::make_shared<std::size_t>(0);
  std::shared_ptr<std::size_t> throw_at = std::make_shared<std::size_t>(0);
  void operator()(const processor_context& context, std::span<float> logits) const {
    if (++*calls == *throw_at) throw std::runtime_error("injected processor failure");
    if (ban && logits.size() > 1)
      logits[static_cast<std::size_t>(context.prefix.back())] = -std::numeric_limits<float>::infinity();
  }
};

}  // namespace detail

/// Runs a decoded case; throws invariant_violation if a promise is broken.
inline void run_decoder_case(const decoder_case& c) {
  auto configs = [&] {
    std::vector<examples::synthetic_model_config> result;
    for (std::size_t k = 0; k < c.models; ++k)
      result.push_back({.vocabulary_size = c.vocabulary, .window = c.window, .shared_seed = c.shared_seed,
                        .own_seed = 100 + k, .agreement = c.agreement, .sharpness = 2.0});
    return result;
  }();
  auto fresh = [&] {
    std::vector<testing::checking_adapter> adapters;
    for (const auto& config : configs) adapters.emplace_back(config);
    return adapters;
  };
  auto pointers = [](std::vector<testing::checking_adapter>& adapters) {
    std::vector<testing::checking_adapter*> result;
    for (auto& a : adapters) result.push_back(&a);
    return result;
  };
  sampling_settings settings;
  settings.temperature = c.greedy ? 0.0f : c.temperature;
  settings.top_k = c.top_k;

  detail::with_decoder_parts(c, [&](auto combiner, auto speculator) {
    // Always a processor, so that it can be told to throw; the fresh decoders get one too
    // (with a processor the target is built in logit space, which rounds differently, hence
    // the tokens).
    detail::case_processor processor{.ban = c.ban_repeats};
    settings.processor = processor;
    auto adapters = fresh();
    decoder decoder(pointers(adapters), combiner, speculator, settings);

    std::vector<token_id> text;  // the committed text as the caller knows it
    std::vector<token_id> last_prompt;
    for (std::size_t t = 0; t < c.turns.size(); ++t) {
      const decoder_turn& turn = c.turns[t];
      const std::string where = "turn " + std::to_string(t) + ": ";
      std::vector<token_id> prompt;
      switch (turn.prompt) {
        case prompt_kind::fresh: prompt = turn.fresh_tokens; break;
        case prompt_kind::same_as_last: prompt = last_prompt; break;
        case prompt_kind::continue_text:
          prompt = text;
          prompt.insert(prompt.end(), turn.fresh_tokens.begin(), turn.fresh_tokens.end());
          break;
        case prompt_kind::cut_text:
          prompt.assign(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(std::min(turn.cut, text.size())));
          if (prompt.empty()) prompt = turn.fresh_tokens;
          break;
      }
      if (prompt.empty()) prompt = turn.fresh_tokens;
      last_prompt = prompt;

      auto& misbehaving = adapters[turn.model];
      switch (turn.trouble) {
        case mishap::none: break;
        case mishap::feed_throws: misbehaving.fail_feed_at = misbehaving.feeds + turn.at; break;
        case mishap::truncate_throws: misbehaving.fail_truncate_at = misbehaving.truncates + turn.at; break;
        case mishap::truncate_keeps_failing:
          misbehaving.fail_truncate_at = misbehaving.truncates + turn.at;
          misbehaving.truncate_keeps_failing = true;
          break;
        case mishap::feed_overflows: misbehaving.overflow_feed_at = misbehaving.feeds + turn.at; break;
        case mishap::context_limit: misbehaving.limit = turn.at; break;
        case mishap::poisoned_row: misbehaving.poison = testing::row_poison{turn.at, turn.poison, 0}; break;
        case mishap::callback_throws: break;
        case mishap::processor_throws: *processor.throw_at = *processor.calls + turn.at; break;
      }

      std::vector<std::size_t> truncate_failures_before;
      std::vector<std::vector<token_id>> held_before;  // committed by earlier calls
      for (const auto& a : adapters) {
        truncate_failures_before.push_back(a.truncate_failures);
        held_before.push_back(a.context());
      }
      std::vector<token_id> committed = prompt;
      generation_limits limits;
      limits.max_new_tokens = turn.max_new_tokens;
      limits.seed = turn.seed;
      limits.on_token = [&](token_id token) {
        committed.push_back(token);
        if (turn.trouble == mishap::callback_throws && committed.size() - prompt.size() == turn.at)
          throw std::runtime_error("injected callback failure");
        return true;
      };
      std::optional<generation_result> result;
      try {
        result = decoder.generate(prompt, limits);
      } catch (const error&) {
      } catch (const std::runtime_error& e) {
        const std::string what = e.what();
        if (what != "injected callback failure" && what != "injected processor failure")
          throw invariant_violation(where + "generate threw an unexpected exception: " + what);
      }

      for (std::size_t k = 0; k < adapters.size(); ++k)
        if (!adapters[k].violations.empty())
          throw invariant_violation(where + "model " + std::to_string(k) + " saw a contract violation: " +
                                    adapters[k].violations.front());
      if (!result) {
        // A model whose truncate threw during the rollback may keep uncommitted tokens: the
        // decoder truncates it first at the next call (checked by that call's tokens). Any
        // other model holds a prefix of this call's text, or of the text before it (a call
        // refused before it touched the model, such as a prompt beyond a context limit).
        for (std::size_t k = 0; k < adapters.size(); ++k)
          if (adapters[k].truncate_failures == truncate_failures_before[k] && !adapters[k].context_is_prefix_of(committed) &&
              !adapters[k].context_is_prefix_of(held_before[k]))
            throw invariant_violation(where + "after a failure model " + std::to_string(k) +
                                      " holds a token that was never committed");
      } else {
        std::vector<token_id> streamed(committed.begin() + static_cast<std::ptrdiff_t>(prompt.size()), committed.end());
        if (result->tokens != streamed) throw invariant_violation(where + "returned tokens differ from the streamed ones");
        auto clean = fresh();
        // A context limit is the model's, not a failure of the call: a call that reaches it ends
        // with finish_reason::context_limit and keeps its tokens, so the fresh decoder gets it too.
        if (turn.trouble == mishap::context_limit) clean[turn.model].limit = adapters[turn.model].limit;
        detail::case_processor clean_processor{.ban = c.ban_repeats};
        sampling_settings clean_settings = settings;
        clean_settings.processor = clean_processor;
        cospec::decoder reference(pointers(clean), combiner, speculator, clean_settings);
        limits.on_token = nullptr;
        std::optional<generation_result> expected;
        try {
          expected = reference.generate(prompt, limits);
        } catch (const std::exception& e) {
          throw invariant_violation(where + "a fresh decoder failed where this one succeeded: " + e.what());
        }
        if (expected->tokens != result->tokens) throw invariant_violation(where + "the tokens differ from a fresh decoder's");
        if (expected->reason != result->reason)
          throw invariant_violation(where + "the finish reason differs from a fresh decoder's");
      }
      text = committed;
      for (auto& a : adapters) a.behave();
      *processor.throw_at = 0;
    }
  });
}

/// Decodes and runs one input.
inline void run_decoder_case(std::span<const std::uint8_t> bytes) { run_decoder_case(decode_decoder_case(bytes)); }

}  // namespace cospec::fuzzing

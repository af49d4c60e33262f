// Decoders on separate models run in parallel (docs/engine.md, "Threads and allocation"):
// four decoders on four threads, two over synthetic models and two over n-gram models that
// share one ngram_statistics (the realistic case: one set of weights, several sessions), each
// give exactly the tokens they give alone. CI runs these tests under ThreadSanitizer (the
// `tsan` preset, docs/reliability.md), which also reports any data race between them.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <latch>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include "models/ngram_model.hpp"
#include "models/synthetic_model.hpp"

namespace {

using cospec::token_id;
using cospec::examples::character_vocabulary;
using cospec::examples::ngram_model;
using cospec::examples::ngram_statistics;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;

constexpr std::string_view training_text =
    "A decoder owns its text, its buffers and its random source; the models it drives are its own "
    "as well. Two sessions of one service share nothing but the weights, which nobody writes once "
    "they are loaded. So each session may run on a thread of its own, and each one writes the same "
    "text it would write if it ran alone, whatever the others are doing at the same moment.";

/// One thread's work: several generates on its own decoder; returns every token it produced.
using job = std::function<std::vector<std::vector<token_id>>()>;

template <class Model, class Combiner, class Speculator>
std::vector<std::vector<token_id>> generate_several(std::vector<Model*> models, Combiner combiner, Speculator speculator,
                                                    cospec::sampling_settings settings, cospec::decoder_options options,
                                                    const std::vector<token_id>& prompt) {
  cospec::decoder decoder(std::move(models), std::move(combiner), std::move(speculator), settings, std::move(options));
  std::vector<std::vector<token_id>> outputs;
  cospec::generation_limits limits;
  limits.max_new_tokens = 60;
  for (std::uint64_t seed = 0; seed < 4; ++seed) {
    limits.seed = seed;
    outputs.push_back(decoder.generate(prompt, limits).tokens);
  }
  // A follow-up turn that reuses the cached prefix.
  std::vector<token_id> follow_up = prompt;
  follow_up.insert(follow_up.end(), outputs.back().begin(), outputs.back().end());
  outputs.push_back(decoder.generate(follow_up, limits).tokens);
  return outputs;
}

job synthetic_job(bool greedy, std::uint64_t seed) {
  return [=] {
    std::vector<synthetic_model> models;
    for (std::uint64_t k = 0; k < 3; ++k)
      models.emplace_back(synthetic_model_config{.vocabulary_size = 300, .window = 3, .shared_seed = seed,
                                                 .own_seed = seed + 10 + k, .agreement = 0.8, .sharpness = 2.5});
    std::vector<synthetic_model*> pointers{&models[0], &models[1], &models[2]};
    cospec::sampling_settings settings;
    settings.temperature = greedy ? 0.0f : 0.8f;
    settings.top_p = 0.95f;
    if (greedy)
      return generate_several(pointers, cospec::logit_arithmetic({1.0f, -0.1f, 0.3f}), cospec::fixed_proposer(1, 4),
                              settings, {}, {1, 2, 3});
    return generate_several(pointers, cospec::weighted_ensemble({0.5f, 0.3f, 0.2f}), cospec::alternating({4, 2, 1}),
                            settings, {}, {1, 2, 3});
  };
}

job ngram_job(std::shared_ptr<const ngram_statistics> statistics, const character_vocabulary& vocabulary, bool greedy) {
  return [=, &vocabulary] {
    ngram_model small(statistics, greedy ? 2 : 3), large(statistics, 6);
    std::vector<ngram_model*> pointers{&small, &large};
    cospec::sampling_settings settings;
    settings.temperature = greedy ? 0.0f : 1.0f;
    settings.min_p = 0.01f;
    cospec::decoder_options options;
    // A repetition penalty: the processor reads the prefix, so it must see its own thread's text.
    settings.processor = [](const cospec::processor_context& context, std::span<float> logits) {
      const std::span<const token_id> prefix = context.prefix;
      for (std::size_t i = prefix.size() > 8 ? prefix.size() - 8 : 0; i < prefix.size(); ++i)
        logits[static_cast<std::size_t>(prefix[i])] -= 0.35f;
    };
    const std::vector<token_id> prompt = vocabulary.encode("So each session ");
    if (greedy)
      return generate_several(pointers, cospec::contrastive_decoding(0.1f, 0.1f), cospec::alternating({5, 1}), settings,
                              options, prompt);
    return generate_several(pointers, cospec::weighted_ensemble::uniform(2), cospec::alternating({4, 1}), settings,
                            options, prompt);
  };
}

}  // namespace

TEST_CASE("four decoders on four threads, on separate models and shared n-gram statistics, give their "
          "single-threaded tokens",
          "[threads]") {
  const character_vocabulary vocabulary(training_text);
  const std::vector<token_id> tokens = vocabulary.encode(training_text);
  const auto statistics = std::make_shared<const ngram_statistics>(tokens, vocabulary.size(), 6);
  const std::vector<job> jobs{synthetic_job(false, 1), synthetic_job(true, 2), ngram_job(statistics, vocabulary, false),
                              ngram_job(statistics, vocabulary, true)};

  std::vector<std::vector<std::vector<token_id>>> expected;
  for (const job& j : jobs) expected.push_back(j());
  for (const auto& outputs : expected)
    for (const auto& output : outputs) REQUIRE(output.size() == 60);

  for (int round = 0; round < 3; ++round) {
    std::vector<std::vector<std::vector<token_id>>> results(jobs.size());
    std::latch start(static_cast<std::ptrdiff_t>(jobs.size()));
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < jobs.size(); ++i)
      threads.emplace_back([&, i] {
        start.arrive_and_wait();  // all four decode at the same time
        results[i] = jobs[i]();
      });
    for (auto& thread : threads) thread.join();
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      INFO("round " << round << ", thread " << i);
      CHECK(results[i] == expected[i]);
    }
  }
}

TEST_CASE("one decoder per thread over the same kind of model, failures included, stays exact on every thread",
          "[threads]") {
  // Each thread decodes, hits invalid logits half-way (a model of its own returns NaN), then
  // decodes again: recovery touches only that thread's decoder and models.
  struct poisoned : synthetic_model {
    using synthetic_model::synthetic_model;
    std::size_t poison_at = 0;
    void feed(std::span<const token_id> tokens, cospec::logit_outputs rows) {
      synthetic_model::feed(tokens, rows);
      // Row i predicts position context_length() - rows.size() + i + 1.
      for (std::size_t i = 0; i < rows.size(); ++i)
        if (poison_at != 0 && context_length() - rows.size() + i + 1 == poison_at) rows[i][0] = NAN;
    }
  };
  auto work = [](std::uint64_t seed) {
    std::vector<poisoned> models;
    for (std::uint64_t k = 0; k < 2; ++k)
      models.emplace_back(synthetic_model_config{.vocabulary_size = 64, .window = 2, .shared_seed = seed,
                                                 .own_seed = seed + k + 1, .agreement = 0.7, .sharpness = 2.0});
    std::vector<poisoned*> pointers{&models[0], &models[1]};
    cospec::decoder decoder(pointers, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}));
    cospec::generation_limits limits;
    limits.max_new_tokens = 40;
    limits.seed = seed;
    std::vector<std::vector<token_id>> outputs;
    models[1].poison_at = 20;
    bool reported = false;
    try {
      decoder.generate(std::vector<token_id>{1, 2}, limits);
    } catch (const cospec::invalid_logits&) {
      reported = true;
    }
    models[1].poison_at = 0;
    outputs.push_back({reported ? token_id{1} : token_id{0}});
    outputs.push_back(decoder.generate(std::vector<token_id>{1, 2}, limits).tokens);
    return outputs;
  };
  std::vector<std::vector<std::vector<token_id>>> expected;
  for (std::uint64_t seed = 0; seed < 4; ++seed) expected.push_back(work(seed));
  std::vector<std::vector<std::vector<token_id>>> results(4);
  std::vector<std::thread> threads;
  for (std::uint64_t seed = 0; seed < 4; ++seed) threads.emplace_back([&, seed] { results[seed] = work(seed); });
  for (auto& thread : threads) thread.join();
  for (std::uint64_t seed = 0; seed < 4; ++seed) {
    INFO("thread " << seed);
    CHECK(expected[seed][0] == std::vector<token_id>{1});  // the failure was reported
    CHECK(results[seed] == expected[seed]);
  }
}

// Many concurrent requests on the transformer example: S requests decoded together by one
// cospec::batch_decoder over two batched transformers (the large model and its draft), with
// standard collaborative decoding, speculative decoding (SD), CoS, the adaptive policy and,
// when sampling, mixture sampling plain and speculative.
// Shared by the serving demo (serve.cpp) and its benchmark (bench/bench_serving.cpp).
#pragma once

#include <algorithm>  // std::sort, std::max
#include <chrono>     // std::chrono::steady_clock
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <memory>     // std::shared_ptr
#include <span>       // std::span
#include <string>     // std::string
#include <utility>    // std::move
#include <vector>     // std::vector

#include <cospec/cospec.hpp>

#include "transformer/batched_transformer.hpp"
#include "transformer/demo_models.hpp"
#include "transformer/thread_team.hpp"

namespace cospec::examples::llama {

/// What every method's run shares.
struct serving_setup {
  const model_pair* models = nullptr;
  std::shared_ptr<thread_team> team;
  float small_weight = 0.5f;  // the draft's weight in the ensemble; the large model has the rest
  float temperature = 0.0f;   // 0: greedy
  std::uint64_t seed = 1;     // request r samples with seed + r
  std::size_t tokens = 32;    // generated per request
  std::size_t gamma = 1;      // the draft's proposal length for SD and CoS
  /// The cost clock's price of a pass of the small (0) and the large (1) model, fitted to
  /// measured passes (fit_pass_cost); empty: no clock.
  std::vector<cospec::pass_cost> pass_costs;
};

/// One method's run over every request.
struct serving_run {
  std::string method;
  std::vector<std::vector<token_id>> outputs;  // by request
  std::vector<double> latencies;               // seconds from submit to the end, by request
  std::size_t tokens = 0;
  double seconds = 0.0;
  std::size_t passes[2] = {0, 0};     // batched passes of the small (0) and large (1) model
  std::size_t sequences[2] = {0, 0};  // sequence entries in them
  std::size_t proposed[2] = {0, 0};
  std::size_t accepted[2] = {0, 0};
  std::size_t tokens_fed[2] = {0, 0};  // by all sequences of those passes
  double virtual_time = 0.0;           // the batch's cost clock under serving_setup::pass_costs
  bool failed = false;

  [[nodiscard]] double tokens_per_second() const { return seconds > 0.0 ? static_cast<double>(tokens) / seconds : 0.0; }
  /// The q-quantile of the latencies (0.5: median, 1: worst).
  [[nodiscard]] double latency(double q) const {
    if (latencies.empty()) return 0.0;
    std::vector<double> sorted = latencies;
    std::sort(sorted.begin(), sorted.end());
    const auto index = static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
    return sorted[index];
  }
  [[nodiscard]] double acceptance(std::size_t model) const {
    return proposed[model] == 0 ? -1.0 : static_cast<double>(accepted[model]) / static_cast<double>(proposed[model]);
  }
};

/// Decodes every prompt as one request of one batch decoder, on fresh batched models with a
/// sequence per request.
template <class Speculator>
serving_run serve_requests(std::string method, Speculator speculator, const serving_setup& setup,
                           const std::vector<std::vector<token_id>>& prompts) {
  std::size_t longest = 0;
  for (const auto& prompt : prompts) longest = std::max(longest, prompt.size());
  // Room for the prompt, the output and a pending chain; bounded caches keep S = 16 small.
  const std::size_t context = longest + setup.tokens + 2 * setup.gamma + 8;
  const model_pair& pair = *setup.models;
  batched_transformer small(pair.small, setup.team,
                            {.layers = pair.small_layers, .context_limit = context, .max_sequences = prompts.size()});
  batched_transformer large(pair.large, setup.team,
                            {.layers = 0, .context_limit = context, .max_sequences = prompts.size()});
  cospec::sampling_settings sampling;
  sampling.temperature = setup.temperature;
  cospec::batch_options options;
  options.pass_costs = setup.pass_costs;
  cospec::batch_decoder decoder(std::vector<batched_transformer*>{&small, &large},
                                cospec::weighted_ensemble({setup.small_weight, 1.0f - setup.small_weight}),
                                std::move(speculator), sampling, options);
  serving_run run;
  run.method = std::move(method);
  run.outputs.resize(prompts.size());
  run.latencies.resize(prompts.size());
  const auto started = std::chrono::steady_clock::now();
  std::vector<cospec::request_id> ids;
  for (std::size_t r = 0; r < prompts.size(); ++r) {
    cospec::generation_limits limits;
    limits.max_new_tokens = setup.tokens;
    limits.seed = setup.seed + r;
    ids.push_back(decoder.submit(prompts[r], limits));
  }
  const auto finished = decoder.run();
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  for (const auto& done : finished) {
    const auto r = static_cast<std::size_t>(done.id - ids.front());
    if (done.failed()) run.failed = true;
    run.outputs[r] = done.result.tokens;
    run.latencies[r] = done.result.statistics.seconds_total;
    run.tokens += done.result.tokens.size();
    for (std::size_t k = 0; k < 2; ++k) {
      run.proposed[k] += done.result.statistics.proposers[k].proposed;
      run.accepted[k] += done.result.statistics.proposers[k].accepted;
    }
  }
  for (std::size_t k = 0; k < 2; ++k) {
    run.passes[k] = decoder.statistics().models[k].passes;
    run.sequences[k] = decoder.statistics().models[k].sequences;
    run.tokens_fed[k] = decoder.statistics().models[k].tokens_fed;
  }
  run.virtual_time = decoder.statistics().virtual_time;
  return run;
}

/// A pass of `layers` layers of `weights` priced as per_pass + per_token * tokens, fitted to
/// the measured time (median of 5) of one pass over 1 sequence of 1 token and of one over
/// 16 sequences of 1 token each, every sequence after an 8-token prompt.
inline cospec::pass_cost fit_pass_cost(const std::shared_ptr<const transformer_weights>& weights, std::size_t layers,
                                       const std::shared_ptr<thread_team>& team) {
  constexpr std::size_t wide = 16;
  batched_transformer model(weights, team, {.layers = layers, .context_limit = 16, .max_sequences = wide});
  const std::size_t vocabulary = weights->config.vocab_size;
  std::vector<token_id> prompt(8);
  for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<token_id>((i * 7919) % vocabulary);
  std::vector<cospec::sequence_feed> batch;
  std::vector<std::vector<float>> storage(wide, std::vector<float>(vocabulary));
  std::vector<std::span<float>> rows(storage.begin(), storage.end());
  const std::vector<token_id> next{1};
  for (std::size_t s = 0; s < wide; ++s) {
    const cospec::sequence_feed feed{model.create_sequence(), prompt, {}};
    model.feed(std::span(&feed, 1));
    batch.push_back({feed.sequence, next, cospec::logit_outputs(rows.data() + s, 1)});
  }
  const auto median_seconds = [&](std::size_t sequences) {
    std::vector<double> seconds;
    for (int repeat = 0; repeat < 5; ++repeat) {
      const auto started = std::chrono::steady_clock::now();
      model.feed(std::span(batch).first(sequences));
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      for (std::size_t s = 0; s < sequences; ++s) model.truncate(batch[s].sequence, prompt.size());
    }
    std::sort(seconds.begin(), seconds.end());
    return seconds[seconds.size() / 2];
  };
  const double one = median_seconds(1);
  const double many = median_seconds(wide);
  const double per_token = std::max(0.0, (many - one) / static_cast<double>(wide - 1));
  return {std::max(0.0, one - per_token), per_token};
}

/// Standard, SD, CoS, adaptive, (when sampling) mixture sampling, plain and speculative, and the
/// automatic choice, in turn on the same requests.
inline std::vector<serving_run> serve_every_method(const serving_setup& setup,
                                                   const std::vector<std::vector<token_id>>& prompts) {
  const std::string g = std::to_string(setup.gamma);
  // Adaptive plans with measured pass costs: the batch decoder charges each request its share
  // of every pass (an equal part of the fixed cost, plus its tokens), so the policy sees what
  // speculation costs at this batch size.
  cospec::adaptive_options measured;
  measured.measure_pass_costs = true;
  std::vector<serving_run> runs;
  runs.push_back(serve_requests("standard", cospec::standard{}, setup, prompts));
  runs.push_back(serve_requests("SD g=" + g, cospec::fixed_proposer(0, setup.gamma), setup, prompts));
  runs.push_back(serve_requests("CoS g=" + g, cospec::alternating({setup.gamma, 1}), setup, prompts));
  runs.push_back(serve_requests("adaptive", cospec::adaptive(2, measured), setup, prompts));
  if (setup.temperature > 0.0f) {
    // Only the drawn model's requests ride a pass; the speculative form lets the draft propose
    // runs where the large model was drawn, priced from the passes it measures.
    cospec::mixture_options speculative;
    speculative.max_gamma = 6;
    speculative.fallback = measured;
    runs.push_back(serve_requests("mixture", cospec::mixture_sampling(2), setup, prompts));
    runs.push_back(serve_requests("mixture+spec", cospec::mixture_sampling(2, speculative), setup, prompts));
  }
  // The automatic choice (the batch decoder's default), with measured costs like adaptive.
  cospec::automatic_options automatic;
  automatic.measure_pass_costs = true;
  runs.push_back(serve_requests("auto", cospec::automatic(2, automatic), setup, prompts));
  return runs;
}

}  // namespace cospec::examples::llama

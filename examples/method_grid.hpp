// The grid of regimes on which the automatic policy is measured against every fixed method
// (docs/benchmarks.md, "The automatic choice"): combiners x greedy or sampling x pass-cost
// ratios x text that repeats or not, on synthetic models with the cost clock, so every figure is
// deterministic. Shared by cospec-method-grid (examples/method_grid.cpp) and its test.
#pragma once

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint64_t
#include <string>   // std::string
#include <utility>  // std::move
#include <vector>   // std::vector

#include <cospec/cospec.hpp>

#include "models/synthetic_model.hpp"

namespace cospec::examples::grid {

/// One cell of the grid.
struct regime {
  std::string combiner;  // "WE2", "WE3", "CD", "proxy"
  bool greedy = false;
  double ratio = 1.0;    // an expensive model's pass costs this many cheap ones
  bool repeats = false;  // the text repeats its prompt (models that quote their context)

  [[nodiscard]] std::size_t models() const { return combiner == "WE3" || combiner == "proxy" ? 3 : 2; }
  [[nodiscard]] std::string name() const {
    return combiner + (greedy ? " greedy" : " T=1") + " 1:" + std::to_string(static_cast<int>(ratio)) +
           (repeats ? " repeats" : " fresh");
  }
  /// Per-pass costs: the cheap model(s) 1, the others `ratio`. WE: model 0 is cheap; CD: the
  /// amateur (model 1); proxy-tuning 1, 1, -1: the two small tuned/untuned models 1 and 2.
  [[nodiscard]] std::vector<double> costs() const {
    std::vector<double> c(models(), ratio);
    if (combiner == "CD") c[1] = 1.0;
    else if (combiner == "proxy") c[1] = c[2] = 1.0;
    else c[0] = 1.0;
    return c;
  }
};

/// The 48 cells: {WE2, WE3, CD, proxy} x {greedy, T = 1} x {1:1, 1:4, 1:20} x {repeats, fresh}.
inline std::vector<regime> every_regime() {
  std::vector<regime> cells;
  for (const char* combiner : {"WE2", "WE3", "CD", "proxy"})
    for (bool greedy : {true, false})
      for (double ratio : {1.0, 4.0, 20.0})
        for (bool repeats : {true, false}) cells.push_back({combiner, greedy, ratio, repeats});
  return cells;
}

/// The fixed methods, and the automatic one, by name.
inline const std::vector<std::string>& method_names() {
  static const std::vector<std::string> names{"standard",      "standard+ctx",      "CoS",
                                              "CoS+ctx",       "mixture",           "mixture+ctx",
                                              "mixture+spec",  "mixture+spec+ctx",  "auto"};
  return names;
}

/// What a method did over the seeds of a cell.
struct measurement {
  double virtual_time = 0.0;
  std::size_t tokens = 0;
  [[nodiscard]] double cost_per_token() const { return virtual_time / static_cast<double>(tokens); }
};

/// Synthetic models of the cell: vocabulary 64, agreement 0.75; quoting their context where
/// the text repeats.
inline std::vector<synthetic_model_config> model_configs(const regime& r) {
  std::vector<synthetic_model_config> configs;
  for (std::size_t k = 0; k < r.models(); ++k)
    configs.push_back({.vocabulary_size = 64, .window = 3, .shared_seed = 7, .own_seed = 40 + k, .agreement = 0.75,
                       .sharpness = 2.5, .copy = r.repeats ? 2.5 : 0.0});
  return configs;
}

/// The prompt: 48 tokens; where the text repeats, a passage of 40 followed by its first 8
/// tokens again, so that the models, which quote their context, go on copying it.
inline std::vector<token_id> prompt_of(const regime& r, std::uint64_t seed) {
  random_source random(seed * 7919 + 1);
  std::vector<token_id> prompt;
  const std::size_t fresh = r.repeats ? 40 : 48;
  for (std::size_t i = 0; i < fresh; ++i) prompt.push_back(static_cast<token_id>(random.next() % 64));
  if (r.repeats) prompt.insert(prompt.end(), prompt.begin(), prompt.begin() + 8);
  return prompt;
}

template <class Combiner, class Speculator>
measurement run_with(const regime& r, const Combiner& combiner, const Speculator& speculator, std::size_t seeds,
                     std::size_t tokens) {
  measurement total;
  const auto configs = model_configs(r);
  for (std::uint64_t seed = 0; seed < seeds; ++seed) {
    std::vector<synthetic_model> models;
    for (const auto& config : configs) models.emplace_back(config);
    std::vector<synthetic_model*> pointers;
    for (auto& m : models) pointers.push_back(&m);
    sampling_settings settings;
    settings.temperature = r.greedy ? 0.0f : 1.0f;
    settings.seed = seed + 1;
    decoder_options options;
    for (double c : r.costs()) options.pass_costs.push_back({c, 0.0});
    decoder decoding(pointers, combiner, speculator, settings, options);
    generation_limits limits;
    limits.max_new_tokens = tokens;
    const generation_result result = decoding.generate(prompt_of(r, seed), limits);
    total.virtual_time += result.statistics.virtual_time;
    total.tokens += result.tokens.size();
  }
  return total;
}

/// Every method of method_names() on the cell, with `seeds` prompts of `tokens` tokens each.
template <class Combiner>
std::vector<measurement> run_cell(const regime& r, const Combiner& combiner, std::size_t seeds, std::size_t tokens) {
  const std::size_t n = r.models();
  const std::vector<double> costs = r.costs();
  constexpr std::size_t context = 8;
  adaptive_options adaptive_costs;
  adaptive_costs.pass_costs = costs;
  mixture_options plain;
  plain.fallback = adaptive_costs;
  mixture_options speculative = plain;
  speculative.max_gamma = 8;
  automatic_options automatic_costs;
  automatic_costs.pass_costs = costs;
  std::vector<measurement> out;
  out.push_back(run_with(r, combiner, standard{}, seeds, tokens));
  out.push_back(run_with(r, combiner, with_context_proposals(standard{}, context), seeds, tokens));
  out.push_back(run_with(r, combiner, adaptive(n, adaptive_costs), seeds, tokens));
  out.push_back(run_with(r, combiner, with_context_proposals(adaptive(n, adaptive_costs), context), seeds, tokens));
  out.push_back(run_with(r, combiner, mixture_sampling(n, plain), seeds, tokens));
  out.push_back(run_with(r, combiner, with_context_proposals(mixture_sampling(n, plain), context), seeds, tokens));
  out.push_back(run_with(r, combiner, mixture_sampling(n, speculative), seeds, tokens));
  out.push_back(run_with(r, combiner, with_context_proposals(mixture_sampling(n, speculative), context), seeds, tokens));
  out.push_back(run_with(r, combiner, automatic(n, automatic_costs), seeds, tokens));
  return out;
}

inline std::vector<measurement> run_regime(const regime& r, std::size_t seeds, std::size_t tokens) {
  if (r.combiner == "WE2") return run_cell(r, weighted_ensemble::uniform(2), seeds, tokens);
  if (r.combiner == "WE3") return run_cell(r, weighted_ensemble::uniform(3), seeds, tokens);
  if (r.combiner == "CD") return run_cell(r, contrastive_decoding(0.1f), seeds, tokens);
  return run_cell(r, logit_arithmetic({1.0f, 1.0f, -1.0f}), seeds, tokens);
}

}  // namespace cospec::examples::grid

// Serving many requests at once (docs/benchmarks.md, "Serving many requests"): S concurrent
// requests of 32 tokens through one batch decoder on the 200M-parameter transformer example
// and its early-exit draft (2 of 12 layers), a 0.5/0.5 weighted ensemble, greedy and T = 1.
// Each iteration runs standard, SD g=1, CoS g=1, adaptive and (at T = 1) mixture sampling, plain
// and speculative, in turn on the same requests, so
// each ratio compares runs of the same moment of a shared machine:
//   tps_<method>:      total tokens per second of all S requests;
//   vs_std_<method>:   that against standard decoding at the same S, in the same iteration;
//   clock_<method>:    the same ratio on the cost clock, each pass priced per_pass + per_token *
//                      tokens with both fitted to passes measured at the start (fit_pass_cost);
//   p50_s_<method>, worst_s_<method>: per-request latency (submit to end).
// Run with --benchmark_repetitions=3 --benchmark_report_aggregates_only=true and read the medians.
#include <benchmark/benchmark.h>

#include <cstddef>  // std::size_t
#include <limits>   // std::numeric_limits
#include <memory>   // std::make_shared
#include <string>   // std::string
#include <vector>   // std::vector

#include "transformer/demo_models.hpp"
#include "transformer/serving.hpp"

namespace {

using namespace cospec::examples::llama;

const model_pair& bench_models() {
  static const model_pair pair = load_models(model_source{});
  return pair;
}

/// Counter names: letters and underscores only ("CoS g=1" becomes "CoS", "mixture+spec"
/// "mixture_spec").
std::string short_name(const std::string& method) {
  std::string name = method.substr(0, method.find(' '));
  for (char& c : name)
    if (c == '+') c = '_';
  return name;
}

void BM_serving(benchmark::State& state) {
  const auto requests = static_cast<std::size_t>(state.range(0));
  const bool greedy = state.range(1) == 0;
  serving_setup setup;
  setup.models = &bench_models();
  setup.team = std::make_shared<thread_team>(2);
  setup.temperature = greedy ? 0.0f : 1.0f;
  setup.tokens = 32;
  setup.gamma = 1;
  setup.pass_costs = {fit_pass_cost(setup.models->small, setup.models->small_layers, setup.team),
                      fit_pass_cost(setup.models->large, setup.models->large->config.n_layers, setup.team)};
  const auto prompts = random_prompts(requests, setup.models->large->config.vocab_size, 7 + requests);
  for (auto _ : state) {
    const auto runs = serve_every_method(setup, prompts);
    const double reference = runs.front().tokens_per_second();
    for (const serving_run& run : runs) {
      const std::string name = short_name(run.method);
      state.counters["tps_" + name] = run.tokens_per_second();
      state.counters["vs_std_" + name] = run.tokens_per_second() / reference;
      state.counters["clock_" + name] = runs.front().virtual_time / run.virtual_time;
      state.counters["p50_s_" + name] = run.latency(0.5);
      state.counters["worst_s_" + name] = run.latency(1.0);
      if (run.failed || (greedy && run.outputs != runs.front().outputs))
        state.SkipWithError(("greedy outputs differ or a request failed: " + run.method).c_str());
    }
    // Google Benchmark's CSV output wants every counter in every run: greedy, where mixture
    // sampling does not apply, its counters are NaN (gnuplot draws no point for them).
    if (greedy)
      for (const char* name : {"mixture", "mixture_spec"})
        for (const char* prefix : {"tps_", "vs_std_", "clock_", "p50_s_", "worst_s_"})
          state.counters[std::string(prefix) + name] = std::numeric_limits<double>::quiet_NaN();
  }
}

BENCHMARK(BM_serving)
    ->Name("serving")
    ->ArgNames({"S", "T"})
    ->ArgsProduct({{1, 2, 4, 8, 16}, {0, 1}})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

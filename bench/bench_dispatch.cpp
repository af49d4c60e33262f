// Run-time dispatch against a native build, in one run (docs/benchmarks.md, "Run-time
// dispatch"; docs/kernels.md, "Run-time dispatch").
//
// The same workloads are compiled twice into this binary: in dispatch/baseline_unit.cpp, built
// with -march=x86-64 (what a binary shipped to many machines uses; before run-time dispatch its
// kernels were SSE2), and in this unit, built with -march=native. Every iteration runs the
// workload once in each unit, in alternating order, and records both times; the counters are
// the two medians and their ratio (baseline / native), so machine noise hits both alike. Goal:
// ratio <= 1.15 for a log-sum-exp over 152064 logits, one verified position (two-model
// weighted-ensemble target and the verifier) and the decoder's library time per token.
#include <benchmark/benchmark.h>

#include <algorithm>  // std::nth_element
#include <chrono>     // std::chrono::steady_clock
#include <cmath>      // std::sqrt, std::log, std::cos
#include <cstddef>    // std::size_t
#include <cstdio>     // std::printf
#include <numbers>    // std::numbers::pi
#include <string>     // std::string
#include <vector>     // std::vector

#include "dispatch/workloads.hpp"

#define DISPATCH_BENCH_UNIT native_unit
#define DISPATCH_BENCH_NAMESPACE native_code
#include "dispatch/unit_body.hpp"

namespace {

using dispatch_bench::unit_functions;
using dispatch_bench::workload_data;

constexpr std::size_t vocabulary = 152064;

const workload_data& data() {
  static const workload_data built = [] {
    workload_data d{vocabulary, std::vector<std::vector<float>>(2, std::vector<float>(vocabulary)), {}, {}};
    cospec::random_source random(2026);
    auto normal = [&random] {
      const double radius = std::sqrt(-2.0 * std::log(1.0 - random.uniform()));
      return radius * std::cos(2.0 * std::numbers::pi * random.uniform());
    };
    for (std::size_t j = 0; j < vocabulary; ++j) {
      const double shared = 2.0 * normal();
      for (auto& row : d.logits) row[j] = static_cast<float>(shared + 0.5 * normal());
    }
    d.proposal.resize(vocabulary);
    cospec::softmax_proposal(0, d.logits[0], 1.0f, d.proposal);
    for (int k = 0; k < 256; ++k)
      d.proposed.push_back(static_cast<cospec::token_id>(cospec::kernels::sample_inverse_cdf(d.proposal, random.uniform(), 1.0)));
    return d;
  }();
  return built;
}

double median(std::vector<double> values) {
  const auto middle = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
  std::nth_element(values.begin(), middle, values.end());
  return *middle;
}

/// Runs `work(unit)` for both units in every iteration, alternating which goes first.
template <class Work>
void compare(benchmark::State& state, Work&& work) {
  using clock = std::chrono::steady_clock;
  const unit_functions units[] = {dispatch_bench::baseline_unit(), dispatch_bench::native_unit()};
  std::vector<double> seconds[2];
  std::size_t iteration = 0;
  for (auto _ : state) {
    for (std::size_t k = 0; k < 2; ++k) {
      const std::size_t unit = (iteration + k) % 2;
      const auto start = clock::now();
      const double reported = work(units[unit]);
      const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
      seconds[unit].push_back(reported > 0.0 ? reported : elapsed);
    }
    ++iteration;
  }
  const double baseline = median(seconds[0]);
  const double native = median(seconds[1]);
  state.counters["baseline_us"] = baseline * 1e6;
  state.counters["native_us"] = native * 1e6;
  state.counters["ratio"] = baseline / native;
  state.counters["native_level"] = units[1].level;
  state.SetLabel(std::string("kernels: ") + std::string(cospec::kernels::to_string(cospec::kernels::active_instruction_set())));
}

void log_sum_exp(benchmark::State& state) {
  compare(state, [](const unit_functions& unit) {
    benchmark::DoNotOptimize(unit.log_sum_exp(data().logits[0]));
    return 0.0;
  });
}

void verified_position(benchmark::State& state) {
  std::size_t which = 0;
  compare(state, [&which](const unit_functions& unit) {
    benchmark::DoNotOptimize(unit.verify_position(data(), which++));
    return 0.0;
  });
}

void decoder_library_time_per_token(benchmark::State& state) {
  // The decoder reports its own time (outside the adapters) per committed token.
  compare(state, [](const unit_functions& unit) { return unit.decoder_seconds_per_token(data(), 64); });
}

BENCHMARK(log_sum_exp)->Unit(benchmark::kMicrosecond)->MinTime(1.0);
BENCHMARK(verified_position)->Unit(benchmark::kMicrosecond)->MinTime(1.0);
BENCHMARK(decoder_library_time_per_token)->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();

// Row kernels against their scalar references (docs/benchmarks.md, "Row kernels").
//
// Every kernel of include/cospec/kernels/ runs twice per vocabulary size: the xsimd kernel
// ("simd") and the plain loop of include/cospec/kernels/reference.hpp ("reference"), on the
// same seeded rows, so the ratio of the two is measured on one machine in one run. Names read
// BM_<kernel>/<simd|reference>/<V>. A streaming read of the row (BM_read_row) is the
// bandwidth yardstick for the single-pass kernels.
//
// Counters: items = V entries per call; bytes = the rows the call must read plus the rows it
// must write, each counted once (4 bytes per entry), whatever the implementation re-reads. So
// GB/s compares implementations of one kernel, and a one-pass kernel near BM_read_row runs
// at memory (cache) speed.
//
// A default run takes about 7 s on an idle machine (min time 0.05 s per benchmark, set below
// unless the command line gives --benchmark_min_time). For docs/benchmarks.md (about 18 s):
//   cospec-bench-kernels --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <xsimd/xsimd.hpp>

#include <cmath>    // std::sqrt, std::log, std::cos
#include <cstddef>  // std::size_t
#include <cstdint>  // std::int64_t, std::uint64_t
#include <cstring>  // std::strncmp
#include <map>      // std::map
#include <numbers>  // std::numbers::pi
#include <random>   // std::mt19937_64
#include <span>     // std::span
#include <string>   // std::string
#include <vector>   // std::vector

#include <cospec/kernels.hpp>
#include <cospec/kernels/reference.hpp>

namespace {

namespace kernels = cospec::kernels;
namespace reference = cospec::kernels::reference;

/// Llama 2 (32000), Llama 3 (128256) and Qwen2 / Qwen2.5 7B (152064) vocabularies.
constexpr std::int64_t vocabulary_sizes[] = {32000, 128256, 152064};
constexpr std::int64_t bytes_per_entry = sizeof(float);

/// Seeded inputs for one vocabulary size: two logit rows of N(0, 2^2) (a target and a
/// proposing model) and their softmax distributions.
struct rows {
  std::vector<float> logits;
  std::vector<float> other_logits;
  std::vector<float> distribution;
  std::vector<float> proposal;
};

std::vector<float> normal_row(std::size_t size, std::mt19937_64& engine) {
  auto uniform = [&] { return static_cast<double>(engine() >> 11) * 0x1p-53; };
  std::vector<float> row(size);
  for (float& x : row)
    x = static_cast<float>(2.0 * std::sqrt(-2.0 * std::log(1.0 - uniform())) * std::cos(2.0 * std::numbers::pi * uniform()));
  return row;
}

const rows& rows_for(std::int64_t size) {
  static std::map<std::int64_t, rows> cache;
  auto [entry, inserted] = cache.try_emplace(size);
  if (inserted) {
    std::mt19937_64 engine(static_cast<std::uint64_t>(size));
    rows& r = entry->second;
    const auto length = static_cast<std::size_t>(size);
    r.logits = normal_row(length, engine);
    r.other_logits = normal_row(length, engine);
    r.distribution.resize(length);
    r.proposal.resize(length);
    reference::softmax(r.logits, r.distribution);
    reference::softmax(r.other_logits, r.proposal);
  }
  return entry->second;
}

/// Sets the counters of a benchmark that reads `rows_read` and writes `rows_written` rows of V.
void count(benchmark::State& state, std::int64_t rows_read, std::int64_t rows_written) {
  const std::int64_t size = state.range(0);
  state.SetItemsProcessed(state.iterations() * size);
  state.SetBytesProcessed(state.iterations() * size * bytes_per_entry * (rows_read + rows_written));
}

enum class implementation { simd, reference };

// ---------------------------------------------------------------------------------------------
// One function per kernel; `which` picks the xsimd kernel or the scalar reference.
// ---------------------------------------------------------------------------------------------

void read_row(benchmark::State& state, implementation) {
  // The yardstick: sum the row with four independent accumulators, nothing else per entry.
  // xsimd at this unit's flags: the cospec preset builds benchmarks natively.
  using batch = xsimd::batch<float>;
  constexpr std::size_t lanes = batch::size;
  const std::vector<float>& row = rows_for(state.range(0)).logits;
  const std::size_t body = row.size() - row.size() % (4 * lanes);
  for (auto _ : state) {
    batch a(0.0f), b(0.0f), c(0.0f), d(0.0f);
    for (std::size_t i = 0; i < body; i += 4 * lanes) {
      a += batch::load_unaligned(row.data() + i);
      b += batch::load_unaligned(row.data() + i + lanes);
      c += batch::load_unaligned(row.data() + i + 2 * lanes);
      d += batch::load_unaligned(row.data() + i + 3 * lanes);
    }
    float sum = xsimd::hadd((a + b) + (c + d));
    for (std::size_t i = body; i < row.size(); ++i) sum += row[i];
    benchmark::DoNotOptimize(sum);
  }
  count(state, 1, 0);
}

void max_argmax(benchmark::State& state, implementation which) {
  const std::vector<float>& row = rows_for(state.range(0)).logits;
  for (auto _ : state) {
    const auto result = which == implementation::simd ? kernels::max_argmax(row) : reference::max_argmax(row);
    benchmark::DoNotOptimize(result);
  }
  count(state, 1, 0);
}

void log_sum_exp(benchmark::State& state, implementation which) {
  const std::vector<float>& row = rows_for(state.range(0)).logits;
  for (auto _ : state) {
    const double result = which == implementation::simd ? kernels::log_sum_exp(row) : reference::log_sum_exp(row);
    benchmark::DoNotOptimize(result);
  }
  count(state, 1, 0);
}

void unnormalized_softmax(benchmark::State& state, implementation which) {
  // The reference has no unnormalised variant: its softmax (log-sum-exp, then exp(x - lse))
  // is the scalar way to get the same exponentials.
  const std::vector<float>& row = rows_for(state.range(0)).logits;
  std::vector<float> out(row.size());
  for (auto _ : state) {
    if (which == implementation::simd) benchmark::DoNotOptimize(kernels::unnormalized_softmax(row, out));
    else reference::softmax(row, out);
    benchmark::ClobberMemory();
  }
  count(state, 1, 1);
}

void softmax(benchmark::State& state, implementation which) {
  const std::vector<float>& row = rows_for(state.range(0)).logits;
  std::vector<float> out(row.size());
  for (auto _ : state) {
    if (which == implementation::simd) benchmark::DoNotOptimize(kernels::softmax(row, out));
    else reference::softmax(row, out);
    benchmark::ClobberMemory();
  }
  count(state, 1, 1);
}

void scale_row(benchmark::State& state, implementation which) {
  // In place, alternately by 2 and by 1/2: exact, so the row never drifts into subnormals.
  // reference.hpp has no scale_row; the reference is the plain loop, which GCC vectorises.
  std::vector<float> row = rows_for(state.range(0)).distribution;
  float factor = 2.0f;
  for (auto _ : state) {
    if (which == implementation::simd) {
      kernels::scale_row(row, factor);
    } else {
      for (float& x : row) x *= factor;
    }
    benchmark::ClobberMemory();
    factor = 1.0f / factor;
  }
  count(state, 1, 1);
}

void linear_combination(benchmark::State& state, implementation which) {
  // Contrastive decoding: expert - 0.1 amateur, two rows in, one out.
  const rows& r = rows_for(state.range(0));
  const std::vector<std::span<const float>> inputs{r.logits, r.other_logits};
  const std::vector<float> weights{1.0f, -0.1f};
  std::vector<float> out(r.logits.size());
  for (auto _ : state) {
    if (which == implementation::simd) kernels::linear_combination(inputs, weights, out);
    else reference::linear_combination(inputs, weights, out);
    benchmark::ClobberMemory();
  }
  count(state, 2, 1);
}

void mixture(benchmark::State& state, implementation which) {
  const rows& r = rows_for(state.range(0));
  const std::vector<std::span<const float>> inputs{r.distribution, r.proposal};
  const std::vector<float> weights{0.5f, 0.5f};
  std::vector<float> out(r.logits.size());
  for (auto _ : state) {
    if (which == implementation::simd) kernels::mixture(inputs, weights, out);
    else reference::mixture(inputs, weights, out);
    benchmark::ClobberMemory();
  }
  count(state, 2, 1);
}

void residual(benchmark::State& state, implementation which) {
  const rows& r = rows_for(state.range(0));
  std::vector<float> out(r.logits.size());
  for (auto _ : state) {
    const double sum = which == implementation::simd ? kernels::residual(r.distribution, r.proposal, out)
                                                     : reference::residual(r.distribution, r.proposal, out);
    benchmark::DoNotOptimize(sum);
    benchmark::ClobberMemory();
  }
  count(state, 2, 1);
}

void sample_inverse_cdf(benchmark::State& state, implementation which) {
  // u = 0.999: the mass of random logits is spread over the whole row, so the draw lands near
  // its end and both implementations scan (almost) the whole row, the worst case.
  const std::vector<float>& row = rows_for(state.range(0)).distribution;
  double total = 0.0;
  for (float w : row) total += w;
  for (auto _ : state) {
    const std::size_t index = which == implementation::simd ? kernels::sample_inverse_cdf(row, 0.999, total)
                                                            : reference::sample_inverse_cdf(row, 0.999, total);
    benchmark::DoNotOptimize(index);
  }
  count(state, 1, 0);
}

/// Filters work in place: each iteration restores the softmax row untimed, then filters it.
template <class Filter>
void run_filter(benchmark::State& state, Filter&& filter) {
  const std::vector<float>& original = rows_for(state.range(0)).distribution;
  std::vector<float> row = original;
  for (auto _ : state) {
    state.PauseTiming();
    row = original;
    state.ResumeTiming();
    filter(std::span<float>(row));
    benchmark::ClobberMemory();
  }
  count(state, 1, 1);
}

void top_k_filter(benchmark::State& state, implementation which) {
  kernels::filter_workspace workspace;
  run_filter(state, [&](std::span<float> row) {
    if (which == implementation::simd) benchmark::DoNotOptimize(kernels::top_k_filter(row, 50, workspace));
    else reference::top_k_filter(row, 50);
  });
}

void top_p_filter(benchmark::State& state, implementation which) {
  kernels::filter_workspace workspace;
  run_filter(state, [&](std::span<float> row) {
    if (which == implementation::simd) benchmark::DoNotOptimize(kernels::top_p_filter(row, 0.9f, workspace));
    else reference::top_p_filter(row, 0.9f);
  });
}

void min_p_filter(benchmark::State& state, implementation which) {
  run_filter(state, [&](std::span<float> row) {
    if (which == implementation::simd) benchmark::DoNotOptimize(kernels::min_p_filter(row, 0.05f));
    else reference::min_p_filter(row, 0.05f);
  });
}

struct kernel_benchmark {
  const char* name;
  void (*function)(benchmark::State&, implementation);
  bool has_reference;
};

constexpr kernel_benchmark kernel_benchmarks[] = {
    {"read_row", read_row, false},
    {"max_argmax", max_argmax, true},
    {"log_sum_exp", log_sum_exp, true},
    {"unnormalized_softmax", unnormalized_softmax, true},
    {"softmax", softmax, true},
    {"scale_row", scale_row, true},
    {"linear_combination", linear_combination, true},
    {"mixture", mixture, true},
    {"residual", residual, true},
    {"sample_inverse_cdf", sample_inverse_cdf, true},
    {"top_k_filter", top_k_filter, true},
    {"top_p_filter", top_p_filter, true},
    {"min_p_filter", min_p_filter, true},
};

void register_benchmarks() {
  for (const kernel_benchmark& kernel : kernel_benchmarks)
    for (implementation which : {implementation::simd, implementation::reference}) {
      if (which == implementation::reference && !kernel.has_reference) continue;
      const std::string name =
          std::string("BM_") + kernel.name + (which == implementation::simd ? "/simd" : "/reference");
      auto* benchmark = benchmark::RegisterBenchmark(name.c_str(), kernel.function, which);
      for (std::int64_t size : vocabulary_sizes) benchmark->Arg(size);
      benchmark->Unit(benchmark::kMicrosecond);
    }
}

}  // namespace

int main(int argc, char** argv) {
  // A default minimum time of 0.05 s per benchmark keeps the whole run short; it is a default
  // flag rather than ->MinTime() so that benchmark names stay BM_<kernel>/<impl>/<V>.
  std::vector<char*> arguments(argv, argv + argc);
  static char default_min_time[] = "--benchmark_min_time=0.05";
  bool min_time_given = false;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--benchmark_min_time", 20) == 0) min_time_given = true;
  if (!min_time_given) arguments.insert(arguments.begin() + 1, default_min_time);
  int argument_count = static_cast<int>(arguments.size());

  register_benchmarks();
  benchmark::Initialize(&argument_count, arguments.data());
  if (benchmark::ReportUnrecognizedArguments(argument_count, arguments.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

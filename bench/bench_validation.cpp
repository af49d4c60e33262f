// The cost of validation (docs/reliability.md, "What the checks cost").
//
// cospec checks every logit row it uses: a NaN, a +inf or a fully masked row becomes a
// cospec::invalid_logits naming the model, position and value, never a wrong token. The checks
// are meant to be nearly free, because they piggyback on reductions the arithmetic needs
// anyway (a non-finite maximum or sum reveals a bad row; the scan that names the bad token runs
// only after a failure). This benchmark measures what is left: it runs the verification of one
// position as bench_verify.cpp does (the target, then the verifier on a proposed token; greedy:
// the target's argmax), once through the library and once through the same arithmetic written
// here without any check, and reports the difference.
//
// What the unchecked variant leaves out, per position:
//  - the row-shape check of the combiners and the validity test of every reduction (O(n));
//  - linear_combination's +inf test per entry and row (a +inf logit becomes NaN, so that it is
//    reported rather than taken for a mask or the most likely token);
//  - max_argmax's NaN test per entry (a NaN never compares greater, so it is looked for);
//  - mask_below's NaN guard per entry (a NaN must survive the plausibility mask);
//  - the target's sum tests and the verifier's token and probability tests (O(1)).
// The unchecked kernels below are the library's kernels with exactly those lines removed; the
// benchmark first checks that both variants give bit-identical targets and the same tokens.
//
// Both variants are timed in the same iteration, in alternating order, writing the same row,
// and the overhead is the ratio of their median times minus one; repetitions give a median of
// that. A control compares the unchecked variant with a second copy of itself: its difference
// is what the measurement alone produces on this (shared) machine.
#include <benchmark/benchmark.h>

#include <algorithm> // std::min, std::max, std::nth_element
#include <chrono>    // std::chrono::steady_clock
#include <cmath>     // std::sqrt, std::log, std::cos, std::abs
#include <cstddef>   // std::size_t
#include <cstdio>    // std::printf, std::fprintf
#include <cstdlib>   // std::abort
#include <limits>    // std::numeric_limits
#include <map>       // std::map
#include <numbers>   // std::numbers::pi
#include <optional>  // std::optional
#include <span>      // std::span
#include <string>    // std::string, std::to_string
#include <utility>   // std::pair
#include <vector>    // std::vector

#include <cospec/cospec.hpp>
#include <xsimd/xsimd.hpp>

namespace {

// The unchecked copies below are xsimd code at this unit's flags (native in the cospec
// preset), as the library's kernels were before run-time dispatch.
using float_batch = xsimd::batch<float>;
constexpr std::size_t lanes = float_batch::size;

float_batch load_tail(const float* data, std::size_t count, float fill) noexcept {
  alignas(64) float buffer[lanes];
  for (std::size_t lane = 0; lane < lanes; ++lane) buffer[lane] = lane < count ? data[lane] : fill;
  return float_batch::load_aligned(buffer);
}

void store_tail(float* data, std::size_t count, const float_batch& values) noexcept {
  alignas(64) float buffer[lanes];
  values.store_aligned(buffer);
  for (std::size_t lane = 0; lane < count; ++lane) data[lane] = buffer[lane];
}
constexpr float minus_infinity = -std::numeric_limits<float>::infinity();

// ---- the library's kernels without their checks -------------------------------------------------

namespace unchecked {

/// kernels::max_argmax without the NaN test.
cospec::kernels::max_location max_argmax(std::span<const float> row) {
  const std::size_t body = row.size() - row.size() % lanes;
  float_batch best(minus_infinity), best_block(0.0f), block(0.0f);
  auto visit = [&](const float_batch& x) {
    const auto greater = x > best;
    best = xsimd::select(greater, x, best);
    best_block = xsimd::select(greater, block, best_block);
    block = block + float_batch(1.0f);
  };
  for (std::size_t i = 0; i < body; i += lanes) visit(float_batch::load_unaligned(row.data() + i));
  if (body < row.size()) visit(load_tail(row.data() + body, row.size() - body, minus_infinity));
  alignas(64) float values[lanes];
  alignas(64) float blocks[lanes];
  best.store_aligned(values);
  best_block.store_aligned(blocks);
  cospec::kernels::max_location result{minus_infinity, 0};
  bool found = false;
  for (std::size_t lane = 0; lane < lanes; ++lane) {
    if (!(values[lane] > minus_infinity)) continue;
    const std::size_t index = static_cast<std::size_t>(blocks[lane]) * lanes + lane;
    if (!found || values[lane] > result.value || (values[lane] == result.value && index < result.index)) {
      result = {values[lane], index};
      found = true;
    }
  }
  return result;
}

/// kernels::unnormalized_softmax itself: its one check (is the maximum finite?) is O(1) per
/// row, and its exp is the dispatched variant's, which an xsimd copy here would not reproduce
/// bit for bit.
float unnormalized_softmax(std::span<const float> row, std::span<float> out, float scale) {
  return cospec::kernels::unnormalized_softmax(row, out, scale).sum;
}

/// kernels::linear_combination without the +inf test (masks are kept: they are semantics).
void linear_combination(cospec::logit_rows rows, std::span<const float> weights, std::span<float> out,
                        float scale = 1.0f) {
  const std::size_t size = out.size();
  const std::size_t body = size - size % lanes;
  const float_batch masked(minus_infinity);
  auto combine = [&](std::size_t offset, auto&& load) {
    float_batch accumulator(0.0f);
    auto mask = accumulator != accumulator;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (weights[i] == 0.0f) continue;
      const float_batch x = load(rows[i].data() + offset);
      mask = mask | (x == masked);
      accumulator = xsimd::fma(float_batch(weights[i] * scale), x, accumulator);
    }
    return xsimd::select(mask, masked, accumulator);
  };
  for (std::size_t j = 0; j < body; j += lanes)
    combine(j, [](const float* p) { return float_batch::load_unaligned(p); }).store_unaligned(out.data() + j);
  if (body < size)
    store_tail(out.data() + body, size - body,
               combine(body, [&](const float* p) { return load_tail(p, size - body, 0.0f); }));
}

/// kernels::mask_below without the NaN guard.
void mask_below(std::span<const float> reference, float threshold, std::span<float> out) {
  const std::size_t size = out.size();
  const std::size_t body = size - size % lanes;
  const float_batch limit(threshold), masked(minus_infinity);
  for (std::size_t j = 0; j < body; j += lanes) {
    const auto drop = float_batch::load_unaligned(reference.data() + j) < limit;
    xsimd::select(drop, masked, float_batch::load_unaligned(out.data() + j)).store_unaligned(out.data() + j);
  }
  for (std::size_t j = body; j < size; ++j)
    if (reference[j] < threshold) out[j] = minus_infinity;
}

/// speculative_verifier::verify without the token and probability tests.
cospec::verdict verify(cospec::token_id x, std::span<const float> proposal, std::span<const float> target,
                       cospec::random_source& random, std::vector<float>& residual) {
  const auto index = static_cast<std::size_t>(x);
  const double accept = std::min(1.0, static_cast<double>(target[index]) / static_cast<double>(proposal[index]));
  if (random.uniform() < accept) return {true, x};
  residual.resize(target.size());
  const float mass = cospec::kernels::residual(target, proposal, residual);
  const double u = random.uniform();
  const std::size_t drawn = mass > 0.0f ? cospec::kernels::sample_inverse_cdf(residual, u, mass)
                                        : cospec::kernels::sample_inverse_cdf(target, u, 1.0);
  return {false, static_cast<cospec::token_id>(drawn)};
}

}  // namespace unchecked

// ---- one position, both ways --------------------------------------------------------------------

constexpr std::size_t vocabulary_sizes[] = {32000, 152064};
constexpr std::size_t model_counts[] = {2, 3};
constexpr double min_time_seconds = 0.1;
constexpr int repetitions = 7;

/// n logit rows of related models (a shared N(0, 2^2) part plus N(0, 0.5^2) noise), model 0's
/// proposal distribution and tokens drawn from it.
struct position {
  std::vector<std::vector<float>> logits;
  std::vector<std::span<const float>> rows;
  std::vector<float> proposal;
  std::vector<cospec::token_id> proposed;

  position(std::size_t models, std::size_t size) : logits(models, std::vector<float>(size)), proposal(size) {
    cospec::random_source random(size * 31 + models);
    auto normal = [&random] {
      return std::sqrt(-2.0 * std::log(1.0 - random.uniform())) * std::cos(2.0 * std::numbers::pi * random.uniform());
    };
    for (std::size_t j = 0; j < size; ++j) {
      const double shared = 2.0 * normal();
      for (auto& row : logits) row[j] = static_cast<float>(shared + 0.5 * normal());
    }
    rows.assign(logits.begin(), logits.end());
    cospec::softmax_proposal(0, logits[0], 1.0f, proposal);
    for (int k = 0; k < 256; ++k)
      proposed.push_back(static_cast<cospec::token_id>(cospec::kernels::sample_inverse_cdf(proposal, random.uniform(), 1.0)));
  }
  [[nodiscard]] cospec::logit_rows view() const { return rows; }
};

/// The combinations of bench_verify.cpp.
enum class combination { weighted_ensemble, logit_arithmetic, contrastive_plausibility };

struct case_info {
  combination kind;
  std::string name;
  std::size_t models;
  std::size_t size;
  bool greedy;
};

/// The unchecked target (and, for greedy, token) of `kind` at temperature 1.
class unchecked_target {
 public:
  /// `temperature` as the library receives it: a value known only at run time, so that neither
  /// variant can fold the scaling by 1 / temperature away.
  unchecked_target(combination kind, std::size_t models, std::size_t size, float temperature)
      : kind_(kind), scratch_(models * size), row_weights_(models), views_(models) {
    if (kind == combination::weighted_ensemble) weights_.assign(models, 1.0f / static_cast<float>(models));
    else if (models == 2) weights_ = {1.0f, -0.1f};
    else weights_ = {1.0f, 1.0f, -1.0f};
    benchmark::DoNotOptimize(temperature);
    scale_ = 1.0f / temperature;
  }

  /// Writes the normalised target.
  void distribution(cospec::logit_rows logits, std::span<float> out) {
    if (kind_ == combination::weighted_ensemble) {
      ensemble(logits, out);
      return;  // the ensemble's weights are normalised: sum 1, no scaling pass
    }
    combine(logits, out);
    const float sum = unchecked::unnormalized_softmax(out, out, scale_);
    cospec::kernels::scale_row(out, 1.0f / sum);
  }

  /// The greedy token (construct with temperature 1, as the greedy target is the T = 1 one).
  cospec::token_id greedy(cospec::logit_rows logits, std::span<float> scratch) {
    if (kind_ == combination::weighted_ensemble) ensemble(logits, scratch);
    else combine(logits, scratch);
    return static_cast<cospec::token_id>(unchecked::max_argmax(scratch).index);
  }

 private:
  void ensemble(cospec::logit_rows logits, std::span<float> out) {
    const std::size_t size = logits[0].size();
    for (std::size_t i = 0; i < logits.size(); ++i) {
      const std::span<float> row(scratch_.data() + i * size, size);
      views_[i] = row;
      row_weights_[i] = weights_[i] / unchecked::unnormalized_softmax(logits[i], row, scale_);
    }
    cospec::kernels::mixture(views_, row_weights_, out);
  }

  void combine(cospec::logit_rows logits, std::span<float> out) {
    unchecked::linear_combination(logits, weights_, out);
    if (kind_ != combination::contrastive_plausibility) return;
    const float expert_max = unchecked::max_argmax(logits[0]).value;
    unchecked::mask_below(logits[0], expert_max + std::log(0.1f), out);
  }

  combination kind_;
  float scale_;
  std::vector<float> weights_;
  std::vector<float> scratch_;
  std::vector<float> row_weights_;
  std::vector<std::span<const float>> views_;
};

/// The library's combiner for `kind`, as bench_verify.cpp builds it.
template <class Function>
void with_combiner(combination kind, std::size_t models, Function&& f) {
  switch (kind) {
    case combination::weighted_ensemble: f(cospec::weighted_ensemble::uniform(models)); break;
    case combination::logit_arithmetic:
      f(models == 2 ? cospec::contrastive_decoding(0.1f) : cospec::logit_arithmetic({1.0f, 1.0f, -1.0f}));
      break;
    case combination::contrastive_plausibility: f(cospec::contrastive_decoding(0.1f, 0.1f)); break;
  }
}

[[noreturn]] void differs(const case_info& info, const char* what) {
  std::fprintf(stderr, "%s n=%zu V=%zu: the unchecked variant %s\n", info.name.c_str(), info.models, info.size, what);
  std::abort();
}

double median_of(std::vector<double>& samples) {
  std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(samples.size() / 2), samples.end());
  return samples[samples.size() / 2];
}

/// Times `first` and `second` on the same position in every iteration, in alternating order,
/// and reports the ratio of their median times as the overhead of `first`. Medians, not sums:
/// a time slice lost to another process lands in one sample, not in the result.
template <class First, class Second>
void time_pair(benchmark::State& state, const position& data, First&& first, Second&& second) {
  using clock = std::chrono::steady_clock;
  std::vector<double> first_seconds, second_seconds;
  std::size_t next = 0;
  bool first_goes_first = true;
  for (auto _ : state) {
    const cospec::token_id x = data.proposed[next++ % data.proposed.size()];
    for (int half = 0; half < 2; ++half) {
      const bool run_first = (half == 0) == first_goes_first;
      const auto start = clock::now();
      benchmark::DoNotOptimize(run_first ? first(x) : second(x));
      const double seconds = std::chrono::duration<double>(clock::now() - start).count();
      (run_first ? first_seconds : second_seconds).push_back(seconds);
      if (run_first) state.SetIterationTime(seconds);
    }
    first_goes_first = !first_goes_first;
  }
  const double first_median = median_of(first_seconds), second_median = median_of(second_seconds);
  state.counters["checked_us"] = first_median * 1e6;
  state.counters["unchecked_us"] = second_median * 1e6;
  state.counters["overhead_percent"] = 100.0 * (first_median / second_median - 1.0);
}

/// `control`: compare the unchecked variant with a second copy of itself instead of the
/// library, which shows how large a difference the measurement itself produces.
void run_case(benchmark::State& state, const case_info& info, bool control) {
  const position data(info.models, info.size);
  with_combiner(info.kind, info.models, [&](auto combiner) {
    cospec::sampling_settings settings;
    if (info.greedy) settings.temperature = 0.0f;
    cospec::target_evaluator evaluator(combiner, settings);
    cospec::speculative_verifier verifier;
    unchecked_target plain(info.kind, info.models, info.size, 1.0f), twin(info.kind, info.models, info.size, 1.0f);
    std::vector<float> residual, twin_residual;
    // Both variants write the target into the same row, so that its placement favours neither.
    std::vector<float> row(info.size), other_row(info.size);
    cospec::random_source checked_random(7), unchecked_random(7);

    auto checked = [&](cospec::token_id x, std::span<float> out) {
      if (info.greedy) return evaluator.greedy_token(data.view(), {}, out);
      evaluator.distribution(data.view(), {}, out);
      return verifier.verify(x, data.proposal, out, checked_random).token;
    };
    auto without_checks = [&](unchecked_target& target, std::vector<float>& buffer, cospec::token_id x,
                              std::span<float> out) {
      if (info.greedy) return target.greedy(data.view(), out);
      target.distribution(data.view(), out);
      return unchecked::verify(x, data.proposal, out, unchecked_random, buffer).token;
    };

    // The same arithmetic: bit-identical targets and the same tokens.
    for (int k = 0; k < 32; ++k) {
      const cospec::token_id x = data.proposed[static_cast<std::size_t>(k)];
      if (checked(x, row) != without_checks(plain, residual, x, other_row)) differs(info, "emits another token");
      if (!info.greedy && row != other_row) differs(info, "writes another target");
    }
    checked_random = unchecked_random;

    if (control)
      time_pair(
          state, data, [&](cospec::token_id x) { return without_checks(twin, twin_residual, x, row); },
          [&](cospec::token_id x) { return without_checks(plain, residual, x, row); });
    else
      time_pair(
          state, data, [&](cospec::token_id x) { return checked(x, row); },
          [&](cospec::token_id x) { return without_checks(plain, residual, x, row); });
  });
}

struct registered {
  std::string id;
  case_info info;
  bool control;
};

std::vector<registered>& registry() {
  static std::vector<registered> cases;
  return cases;
}

void register_benchmarks() {
  for (std::size_t size : vocabulary_sizes)
    for (std::size_t models : model_counts)
      for (bool greedy : {false, true})
        for (combination kind :
             {combination::weighted_ensemble, combination::logit_arithmetic, combination::contrastive_plausibility}) {
          if (kind == combination::contrastive_plausibility && models != 2) continue;
          const char* name = kind == combination::weighted_ensemble ? "weighted ensemble (uniform)"
                             : kind == combination::contrastive_plausibility
                                 ? "contrastive mu 0.1 + plausibility alpha 0.1"
                                 : (models == 2 ? "logit arithmetic: contrastive mu 0.1"
                                                : "logit arithmetic: proxy-tuning 1, 1, -1");
          const case_info info{kind, name, models, size, greedy};
          const std::string id = std::string(kind == combination::weighted_ensemble   ? "weighted_ensemble"
                                             : kind == combination::logit_arithmetic ? "logit_arithmetic"
                                                                                      : "contrastive_plausibility") +
                                 (greedy ? "/greedy" : "/sampling") + "/n:" + std::to_string(models) +
                                 "/V:" + std::to_string(size);
          for (bool control : {false, true}) {
            const std::string full_id = (control ? "control/" : "") + id;
            registry().push_back({full_id, info, control});
            benchmark::RegisterBenchmark(full_id.c_str(),
                                         [info, control](benchmark::State& state) { run_case(state, info, control); })
                ->MinTime(min_time_seconds)
                ->Unit(benchmark::kMicrosecond)
                ->Repetitions(repetitions)
                ->ReportAggregatesOnly(true)
                ->UseManualTime();
          }
        }
}

/// The console output, then the table of docs/reliability.md (medians over the repetitions).
class summary_reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Aggregate || run.aggregate_name != "median") continue;
      medians_[run.run_name.function_name] = {run.counters.at("checked_us"), run.counters.at("unchecked_us"),
                                              run.counters.at("overhead_percent")};
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\n| combiner | n | V | mode | checked (library) | unchecked | overhead | control (unchecked vs itself) |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
    double worst = -100.0, worst_control = 0.0;
    for (const registered& r : registry()) {
      if (r.control) continue;
      const auto found = medians_.find(r.id);
      const auto control = medians_.find("control/" + r.id);
      if (found == medians_.end() || control == medians_.end()) continue;
      const median& m = found->second;
      worst = std::max(worst, m.overhead);
      worst_control = std::max(worst_control, std::abs(control->second.overhead));
      std::printf("| %s | %zu | %zu | %s | %.1f us | %.1f us | %+.2f %% | %+.2f %% |\n", r.info.name.c_str(),
                  r.info.models, r.info.size, r.info.greedy ? "greedy" : "sampling", m.checked_us, m.unchecked_us,
                  m.overhead, control->second.overhead);
    }
    std::printf("\nLargest median overhead %+.2f %%; largest control difference %.2f %%\n", worst, worst_control);
  }

 private:
  struct median {
    double checked_us;
    double unchecked_us;
    double overhead;
  };
  std::map<std::string, median> medians_;
};

}  // namespace

int main(int argc, char** argv) {
  register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  summary_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

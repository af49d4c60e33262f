// Verification of one position (docs/benchmarks.md, "Verification of one position").
//
// What a decoder pays per verified position once the n models' logit rows are known:
//   sampling: target_evaluator::distribution (combine, then normalise) and
//             speculative_verifier::verify of one proposed token (accept test; on rejection a
//             residual pass and an inverse-CDF draw);
//   greedy:   target_evaluator::greedy_token.
// The floor is one streaming exp pass over the same n rows (kernels::log_sum_exp on each): any
// exact combination of softmax-scaled rows has to exponentiate every logit at least once. The
// target is 1.5x the floor.
//
// The machine this runs on is shared (two cores, other builds running), so a floor measured a
// few seconds apart from a case is not comparable with it. Every position benchmark therefore
// times the floor inside the same iteration, right after the position (manual timing), and
// reports the ratio of the two sums; repetitions give a median. The floor is also timed on its
// own, and so are the single passes the combiners are built from, so that the cost of a
// combination can be read as a sum of passes.
//
// The logits are those of related models: a shared N(0, 2^2) row plus N(0, 0.5^2) noise per
// model, so proposals (drawn from model 0 at T = 1) are accepted at realistic rates (the
// "acceptance" counter). At the end a table gives every time per position, its floor and the
// ratio.
#include <benchmark/benchmark.h>

#include <chrono>    // std::chrono::steady_clock
#include <cmath>     // std::sqrt, std::log, std::cos
#include <cstddef>   // std::size_t
#include <cstdio>    // std::printf
#include <limits>    // std::numeric_limits
#include <map>       // std::map
#include <numbers>   // std::numbers::pi
#include <span>      // std::span
#include <string>    // std::string, std::to_string
#include <utility>   // std::pair
#include <vector>    // std::vector

#include <cospec/cospec.hpp>

namespace {

constexpr std::size_t vocabulary_sizes[] = {32000, 152064};  // Llama-2, Qwen2.5
constexpr std::size_t model_counts[] = {2, 3};
constexpr double min_time_seconds = 0.05;
constexpr int repetitions = 3;

/// n logit rows of related models and model 0's proposal distribution with tokens drawn from it.
struct position {
  std::vector<std::vector<float>> logits;
  std::vector<std::span<const float>> rows;
  std::vector<float> proposal;
  std::vector<cospec::token_id> proposed;

  position(std::size_t models, std::size_t size) : logits(models, std::vector<float>(size)), proposal(size) {
    cospec::random_source random(size * 10 + models);
    auto normal = [&random] {
      const double radius = std::sqrt(-2.0 * std::log(1.0 - random.uniform()));
      return radius * std::cos(2.0 * std::numbers::pi * random.uniform());
    };
    for (std::size_t j = 0; j < size; ++j) {
      const double shared = 2.0 * normal();
      for (auto& row : logits) row[j] = static_cast<float>(shared + 0.5 * normal());
    }
    rows.assign(logits.begin(), logits.end());
    cospec::softmax_proposal(0, logits[0], 1.0f, proposal);
    for (int k = 0; k < 256; ++k)
      proposed.push_back(
          static_cast<cospec::token_id>(cospec::kernels::sample_inverse_cdf(proposal, random.uniform(), 1.0)));
  }
  [[nodiscard]] cospec::logit_rows view() const { return rows; }
};

/// What the summary table needs to know about a benchmark.
struct case_info {
  std::string combiner;
  std::size_t models;
  std::size_t size;
  std::string mode;  // "sampling", "greedy", "floor", or a pass name
};

/// Every benchmark's name and description, in registration order (the order of the tables).
std::vector<std::pair<std::string, case_info>>& registry() {
  static std::vector<std::pair<std::string, case_info>> cases;
  return cases;
}

std::string floor_name(std::size_t models, std::size_t size) {
  return "floor/n:" + std::to_string(models) + "/V:" + std::to_string(size);
}

// ---------------------------------------------------------------------------------------------

/// The floor: one streaming exp pass over each of the n rows.
void floor_pass(const position& data) {
  for (const auto& row : data.rows) benchmark::DoNotOptimize(cospec::kernels::log_sum_exp(row));
}

/// Times `step` (the position) and then the floor in every iteration; the benchmark's time is
/// the position's, the floor and the ratio of the two sums are counters.
template <class Step>
void time_against_floor(benchmark::State& state, const position& data, Step&& step) {
  using clock = std::chrono::steady_clock;
  double position_seconds = 0.0;
  double floor_seconds = 0.0;
  for (auto _ : state) {
    const auto start = clock::now();
    step();
    const auto middle = clock::now();
    floor_pass(data);
    const auto end = clock::now();
    const double seconds = std::chrono::duration<double>(middle - start).count();
    position_seconds += seconds;
    floor_seconds += std::chrono::duration<double>(end - middle).count();
    state.SetIterationTime(seconds);
  }
  state.counters["floor_us"] = benchmark::Counter(floor_seconds * 1e6, benchmark::Counter::kAvgIterations);
  state.counters["ratio"] = position_seconds / floor_seconds;
}

template <class Combiner>
void sampling_position(benchmark::State& state, Combiner combiner, std::size_t models, std::size_t size) {
  const position data(models, size);
  cospec::sampling_settings settings;
  cospec::target_evaluator evaluator(combiner, settings);
  cospec::speculative_verifier verifier;
  cospec::random_source random(7);
  std::vector<float> target(size);
  std::size_t next = 0;
  double accepted = 0.0;
  time_against_floor(state, data, [&] {
    evaluator.distribution(data.view(), {}, target);
    const cospec::verdict v =
        verifier.verify(data.proposed[next++ % data.proposed.size()], data.proposal, target, random);
    benchmark::DoNotOptimize(v);
    accepted += v.accepted ? 1.0 : 0.0;
  });
  state.counters["acceptance"] = benchmark::Counter(accepted, benchmark::Counter::kAvgIterations);
}

template <class Combiner>
void greedy_position(benchmark::State& state, Combiner combiner, std::size_t models, std::size_t size) {
  const position data(models, size);
  cospec::sampling_settings settings;
  settings.temperature = 0.0f;
  cospec::target_evaluator evaluator(combiner, settings);
  std::vector<float> scratch(size);
  time_against_floor(state, data, [&] {
    const cospec::token_id token = evaluator.greedy_token(data.view(), {}, scratch);
    benchmark::DoNotOptimize(token);
  });
}

void floor_position(benchmark::State& state, std::size_t models, std::size_t size) {
  const position data(models, size);
  for (auto _ : state) floor_pass(data);
}

/// The single passes the combiners and the verifier are made of, on rows of this size.
void pass(benchmark::State& state, const std::string& name, std::size_t models, std::size_t size) {
  const position data(models, size);
  std::vector<float> out(size);
  std::vector<float> target(size);
  cospec::softmax_proposal(1, data.logits[1], 1.0f, target);
  const std::vector<float> weights(models, 1.0f / static_cast<float>(models));
  std::vector<std::span<const float>> distributions(models, std::span<const float>(data.proposal));
  cospec::random_source random(3);
  const float expert_max = cospec::kernels::max_argmax(data.rows[0]).value;
  std::size_t round = 0;
  for (auto _ : state) {
    if (name == "max") {
      benchmark::DoNotOptimize(cospec::kernels::max_argmax(data.rows[0]));
    } else if (name == "max + exp (unnormalized_softmax)") {
      benchmark::DoNotOptimize(cospec::kernels::unnormalized_softmax(data.rows[0], out));
    } else if (name == "log_sum_exp") {
      benchmark::DoNotOptimize(cospec::kernels::log_sum_exp(data.rows[0]));
    } else if (name == "scale_row") {
      // Alternating 2 and 1/2 keeps the values exact (no drift into subnormals) and, unlike a
      // factor of 1, cannot be folded away by the compiler.
      cospec::kernels::scale_row(out, (round++ % 2 == 0) ? 2.0f : 0.5f);
    } else if (name == "mixture of n rows") {
      cospec::kernels::mixture(distributions, weights, out);
    } else if (name == "linear_combination of n rows") {
      cospec::kernels::linear_combination(data.rows, weights, out);
    } else if (name == "plausibility mask: scalar loop") {
      // The loop logit_arithmetic::combine used before kernels::mask_below, alpha = 0.1.
      const float threshold = expert_max + std::log(0.1f);
      for (std::size_t j = 0; j < size; ++j)
        if (data.rows[0][j] < threshold) out[j] = -std::numeric_limits<float>::infinity();
    } else if (name == "plausibility mask: mask_below") {
      // What logit_arithmetic::combine runs now, alpha = 0.1.
      cospec::kernels::mask_below(data.rows[0], expert_max + std::log(0.1f), out);
    } else if (name == "residual") {
      benchmark::DoNotOptimize(cospec::residual_distribution(data.proposal, target, out));
    } else if (name == "sample_inverse_cdf") {
      benchmark::DoNotOptimize(cospec::kernels::sample_inverse_cdf(target, random.uniform(), 1.0));
    }
    benchmark::ClobberMemory();
  }
}

const char* const pass_names[] = {"max",
                                  "max + exp (unnormalized_softmax)",
                                  "log_sum_exp",
                                  "scale_row",
                                  "mixture of n rows",
                                  "linear_combination of n rows",
                                  "plausibility mask: scalar loop",
                                  "plausibility mask: mask_below",
                                  "residual",
                                  "sample_inverse_cdf"};

void add(const std::string& name, const case_info& info, auto&& function) {
  registry().emplace_back(name, info);
  benchmark::internal::Benchmark* benchmark = benchmark::RegisterBenchmark(name.c_str(), function);
  benchmark->MinTime(min_time_seconds)->Unit(benchmark::kMicrosecond)->Repetitions(repetitions);
  benchmark->ReportAggregatesOnly(true);
  if (info.mode == "sampling" || info.mode == "greedy") benchmark->UseManualTime();
}

void register_benchmarks() {
  for (std::size_t size : vocabulary_sizes)
    for (std::size_t models : model_counts) {
      const std::string suffix = "/n:" + std::to_string(models) + "/V:" + std::to_string(size);
      add(floor_name(models, size), {"floor: log_sum_exp of each row", models, size, "floor"},
          [=](benchmark::State& state) { floor_position(state, models, size); });

      const std::string arithmetic_name =
          models == 2 ? "logit arithmetic: contrastive mu 0.1" : "logit arithmetic: proxy-tuning 1, 1, -1";
      auto arithmetic = [models] {
        return models == 2 ? cospec::contrastive_decoding(0.1f) : cospec::logit_arithmetic({1.0f, 1.0f, -1.0f});
      };
      for (const char* const mode_name : {"sampling", "greedy"}) {
        const std::string mode = mode_name;
        const bool sampling = mode == "sampling";
        add("weighted_ensemble/" + mode + suffix, {"weighted ensemble (uniform)", models, size, mode},
            [=](benchmark::State& state) {
              if (sampling) sampling_position(state, cospec::weighted_ensemble::uniform(models), models, size);
              else greedy_position(state, cospec::weighted_ensemble::uniform(models), models, size);
            });
        add("logit_arithmetic/" + mode + suffix, {arithmetic_name, models, size, mode},
            [=](benchmark::State& state) {
              if (sampling) sampling_position(state, arithmetic(), models, size);
              else greedy_position(state, arithmetic(), models, size);
            });
        if (models == 2)
          add("contrastive_plausibility/" + mode + suffix,
              {"contrastive mu 0.1 + plausibility alpha 0.1", models, size, mode}, [=](benchmark::State& state) {
                if (sampling) sampling_position(state, cospec::contrastive_decoding(0.1f, 0.1f), models, size);
                else greedy_position(state, cospec::contrastive_decoding(0.1f, 0.1f), models, size);
              });
      }
    }
  for (std::size_t size : vocabulary_sizes)
    for (const char* name : pass_names) {
      const std::size_t rows_read = std::string(name).ends_with("of n rows") ? 2 : 1;
      add(std::string("pass/") + name + "/V:" + std::to_string(size), {"pass", rows_read, size, name},
          [=](benchmark::State& state) { pass(state, name, 2, size); });
    }
}

/// The console output, then the summary tables of docs/benchmarks.md (medians over the
/// repetitions).
class summary_reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Aggregate || run.aggregate_name != "median") continue;
      median& m = medians_[run.run_name.function_name];
      m.seconds = run.GetAdjustedRealTime() * 1e-6;  // the unit is microseconds
      for (const char* counter : {"floor_us", "ratio", "acceptance"})
        if (run.counters.count(counter)) m.counters[counter] = run.counters.at(counter);
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\n| combiner | n | V | mode | time per position | floor | ratio to floor | acceptance |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
    for (const auto& [name, info] : registry()) {
      if (info.mode != "sampling" && info.mode != "greedy") continue;
      const auto found = medians_.find(name);
      if (found == medians_.end()) continue;
      const median& m = found->second;
      const auto acceptance = m.counters.find("acceptance");
      const std::string accepted =
          acceptance == m.counters.end() ? "" : std::to_string(acceptance->second).substr(0, 4);
      std::printf("| %s | %zu | %zu | %s | %.1f us | %.1f us | %.2f | %s |\n", info.combiner.c_str(), info.models,
                  info.size, info.mode.c_str(), m.seconds * 1e6, m.counters.at("floor_us"), m.counters.at("ratio"),
                  accepted.c_str());
    }
    std::printf("\n| pass | n | V | time |\n|---|---|---|---|\n");
    for (const auto& [name, info] : registry()) {
      if (info.mode == "sampling" || info.mode == "greedy") continue;
      const auto found = medians_.find(name);
      if (found == medians_.end()) continue;
      const std::string pass_name = info.combiner == "pass" ? info.mode : info.combiner + " (alone)";
      std::printf("| %s | %zu | %zu | %.1f us |\n", pass_name.c_str(), info.models, info.size,
                  found->second.seconds * 1e6);
    }
  }

 private:
  struct median {
    double seconds = 0.0;
    std::map<std::string, double> counters;
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

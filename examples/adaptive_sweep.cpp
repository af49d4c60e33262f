// cospec-adaptive-sweep: the adaptive policy against every fixed proposal length under the
// cost clock (docs/benchmarks.md, "Adaptive speculation"). Deterministic: the same command
// prints the same tables.
//
// Two synthetic models (examples/models/synthetic_model.hpp: V = 200, window 2, sharpness 3),
// temperature 1, per-pass costs only, each schedule run with sampling seeds 3, 4 and 5 and
// its cost per token averaged over them: a single run's cost carries 1-2% sampling noise, and
// picking the best of six noisy fixed lengths would flatter them by about that much. For each
// setting it decodes with
// standard decoding, with CoS at every fixed length g in {1, 2, 3, 4, 6, 8} of the cheap,
// proposing model (the other proposes 1) and with cospec::adaptive given the pass costs, and
// prints one markdown row: speedups over standard decoding and adaptive's ratio to the best
// fixed length.
//   steady:    weighted ensemble (0.5, 0.5) with model 0 cheap, and contrastive
//              decoding mu 0.1 with the expert cheap (its proposals are almost always accepted,
//              which stresses long proposals), at cost ratios 1:1, 1:8 and 1:100 and agreements
//              0, 0.3, 0.6, 0.9, 0.98; 4000 tokens each;
//   segmented: segments of 200 positions alternate between agreement 0.98 and 0; model 0
//              (WE) or the amateur (CD) is cheap; 6000 tokens each.
// With --check it exits with status 1 unless adaptive is within 3% of the best fixed length
// in every steady row and better than every fixed length in the segmented rows at 1:8. With
// --csv PATH it also writes every row, with the speedup of each fixed length, for
// docs/plots/adaptive.gp.
#include <cospec/cospec.hpp>

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint64_t
#include <iterator> // std::size
#include <cstdio>   // std::printf, std::fprintf, std::FILE, std::fopen, std::fclose
#include <limits>   // std::numeric_limits
#include <string>   // std::string
#include <vector>   // std::vector

#include "models/synthetic_model.hpp"

namespace {

using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;

struct run_result {
  double cost_per_token = 0.0;
  double acceptance = 0.0;  // of the cheap model's proposals
};

inline constexpr std::uint64_t seeds[] = {3, 4, 5};

/// Cost per token and the cheap model's acceptance, averaged over `seeds`.
template <class Combiner, class Speculator>
run_result run(const std::vector<synthetic_model_config>& configs, const Combiner& combiner,
               const Speculator& speculator, const std::vector<cospec::pass_cost>& costs, std::size_t cheap,
               std::size_t tokens) {
  run_result mean;
  for (const std::uint64_t seed : seeds) {
    std::vector<synthetic_model> models;
    for (const auto& c : configs) models.emplace_back(c);
    std::vector<synthetic_model*> pointers;
    for (auto& m : models) pointers.push_back(&m);
    cospec::decoder_options options;
    options.pass_costs = costs;
    cospec::sampling_settings sampling;
    sampling.seed = seed;
    cospec::decoder decoder(pointers, combiner, speculator, sampling, options);
    cospec::generation_limits limits;
    limits.max_new_tokens = tokens;
    const auto result = decoder.generate(std::vector<token_id>{1}, limits);
    mean.cost_per_token += result.statistics.virtual_time / static_cast<double>(result.tokens.size());
    mean.acceptance += result.statistics.proposers[cheap].acceptance_rate();
  }
  const auto count = static_cast<double>(std::size(seeds));
  mean.cost_per_token /= count;
  mean.acceptance /= count;
  return mean;
}

inline constexpr std::size_t fixed_gammas[] = {1, 2, 3, 4, 6, 8};

struct comparison {
  double standard = 0.0;
  double best_fixed = std::numeric_limits<double>::infinity();
  std::size_t best_gamma = 0;
  std::vector<double> fixed;  // cost per token at each of fixed_gammas
  run_result adaptive;
  [[nodiscard]] double ratio() const { return best_fixed / adaptive.cost_per_token; }
};

template <class Combiner>
comparison compare(const std::vector<synthetic_model_config>& configs, const Combiner& combiner, std::size_t cheap,
                   double ratio, std::size_t tokens) {
  std::vector<cospec::pass_cost> costs(2, {ratio, 0.0});
  costs[cheap] = {1.0, 0.0};
  comparison c;
  c.standard = run(configs, combiner, cospec::standard{}, costs, cheap, tokens).cost_per_token;
  for (std::size_t gamma : fixed_gammas) {
    std::vector<std::size_t> gammas(2, 1);
    gammas[cheap] = gamma;
    const double cost = run(configs, combiner, cospec::alternating(gammas), costs, cheap, tokens).cost_per_token;
    c.fixed.push_back(cost);
    if (cost < c.best_fixed) {
      c.best_fixed = cost;
      c.best_gamma = gamma;
    }
  }
  cospec::adaptive_options options;
  options.pass_costs = {costs[0].per_pass, costs[1].per_pass};
  c.adaptive = run(configs, combiner, cospec::adaptive(2, options), costs, cheap, tokens);
  return c;
}

std::vector<synthetic_model_config> pair(double agreement, std::size_t segment_length = 0, double hard = 0.0) {
  return {{200, 2, 1, 2, agreement, 3.0, segment_length, hard}, {200, 2, 1, 3, agreement, 3.0, segment_length, hard}};
}

}  // namespace

int main(int argc, char** argv) {
  bool check = false;
  std::string csv_path;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--check") {
      check = true;
    } else if (flag == "--csv" && i + 1 < argc) {
      csv_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: cospec-adaptive-sweep [--check] [--csv PATH]\n");
      return 2;
    }
  }
  std::FILE* csv = nullptr;
  if (!csv_path.empty()) {
    csv = std::fopen(csv_path.c_str(), "w");
    if (csv == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", csv_path.c_str());
      return 2;
    }
    std::fprintf(csv, "workload,combination,cost_ratio,agreement,acceptance,best_gamma,adaptive_speedup");
    for (std::size_t g : fixed_gammas) std::fprintf(csv, ",speedup_g%zu", g);
    std::fprintf(csv, "\n");
  }
  auto csv_row = [&](const char* workload, const char* name, double ratio, double agreement, const comparison& c) {
    if (csv == nullptr) return;
    std::fprintf(csv, "%s,%s,%g,%.2f,%.4f,%zu,%.4f", workload, name, ratio, agreement, c.adaptive.acceptance,
                 c.best_gamma, c.standard / c.adaptive.cost_per_token);
    for (double cost : c.fixed) std::fprintf(csv, ",%.4f", c.standard / cost);
    std::fprintf(csv, "\n");
  };
  bool failed = false;
  std::printf("| combination | cost cheap:expensive | agreement | acceptance | best fixed g | best fixed speedup | "
              "adaptive speedup | adaptive / best fixed |\n|---|---|---|---|---|---|---|---|\n");
  auto steady_row = [&](const char* name, const comparison& c, double ratio, double agreement) {
    std::printf("| %s | 1:%g | %.2f | %.2f | %zu | %.3f | %.3f | %.3f |\n", name, ratio, agreement, c.adaptive.acceptance,
                c.best_gamma, c.standard / c.best_fixed, c.standard / c.adaptive.cost_per_token, c.ratio());
    csv_row("steady", name, ratio, agreement, c);
    if (c.ratio() < 0.97) failed = true;
  };
  for (double ratio : {1.0, 8.0, 100.0})
    for (double agreement : {0.0, 0.3, 0.6, 0.9, 0.98})
      steady_row("WE (0.5 0.5)", compare(pair(agreement), cospec::weighted_ensemble::uniform(2), 0, ratio, 4000), ratio,
                 agreement);
  for (double ratio : {1.0, 8.0, 100.0})
    for (double agreement : {0.0, 0.3, 0.6, 0.9, 0.98})
      steady_row("CD mu 0.1 expert proposes",
                 compare(pair(agreement), cospec::contrastive_decoding(0.1f), 0, ratio, 4000), ratio, agreement);

  std::printf("\n| combination | cost ratio | best fixed g | best fixed speedup | adaptive speedup | adaptive / best fixed "
              "|\n|---|---|---|---|---|---|\n");
  const auto segmented = pair(0.98, 200, 0.0);
  auto segmented_row = [&](const char* name, const comparison& c, double ratio) {
    std::printf("| %s | 1:%g | %zu | %.3f | %.3f | %.3f |\n", name, ratio, c.best_gamma, c.standard / c.best_fixed,
                c.standard / c.adaptive.cost_per_token, c.ratio());
    csv_row("segmented", name, ratio, 0.0, c);
  };
  for (double ratio : {1.0, 8.0, 100.0}) {
    const auto we = compare(segmented, cospec::weighted_ensemble::uniform(2), 0, ratio, 6000);
    const auto cd = compare(segmented, cospec::contrastive_decoding(0.1f), 1, ratio, 6000);
    segmented_row("WE (0.5 0.5) model 0 proposes", we, ratio);
    segmented_row("CD mu 0.1 amateur proposes", cd, ratio);
    if (ratio == 8.0 && (we.ratio() <= 1.0 || cd.ratio() <= 1.0)) failed = true;
  }
  if (csv != nullptr) std::fclose(csv);
  if (check && failed) {
    std::printf("\nadaptive missed a bound (steady: 0.97 of the best fixed length; segmented 1:8: above it)\n");
    return 1;
  }
  return 0;
}

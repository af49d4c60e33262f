// cospec-cost-sweep: speedups measured under the paper's cost model against the closed-form
// predictions of docs/theory.md (docs/benchmarks.md, "Cost-model sweep" and "Calibration
// against the paper").
//
// Every run decodes synthetic models (examples/models/synthetic_model.hpp) with the cost
// clock on (decoder_options::pass_costs), so the result is deterministic: the same command
// writes the same CSV. The sweep covers
//   - model agreement, which sets the acceptance rate of the cheap model's proposals
//     (from about 0.3 to 1);
//   - the combination: a weighted ensemble 0.5/0.5 (its acceptance is >= 0.5 by construction),
//     a skewed ensemble 0.1/0.9 and contrastive decoding mu 0.1, which reach low acceptance;
//     with three models a uniform and a skewed ensemble;
//   - the cost of a pass of the cheap model relative to the others' (1, 1/8, 1/100);
//   - the cheap model's proposal length gamma;
// for standard decoding, a fixed proposer (SD) and alternating proposers (CoS). Each decode
// runs once with unit pass costs; its per-model virtual times (passes) are then weighted by
// each cost ratio, which is what the cost clock computes for those costs (virtual time is
// linear in them).
//
// One CSV row per (decode, cost ratio): measured acceptance rates, virtual time per token,
// speedup over standard decoding, and the speedup predicted from the measured acceptance
// rates (docs/theory.md: two models as written there, three models as derived in
// "Expected cost, three models"). The program exits with status 1 if any prediction misses
// the measured speedup by more than the tolerance, 2 / sqrt(tokens) relative (3.7 % at the
// default 3000 tokens, 6.3 % at 1000). Over the full sweep the deviations have a standard
// deviation of about 0.15 / sqrt(tokens) and a mean within 0.15 % of zero (docs/benchmarks.md).
//
// With --calibrate it instead fits the model agreement to the SD speedups of the paper's
// table (docs/algorithm.md, "The paper's results") and prints cospec's CoS speedup next to
// the paper's. With --models it instead writes the cost per token of standard decoding, CoS
// (gammas all 1) and mixture sampling for uniform ensembles of 1 to 4 models of equal cost at
// T = 1 and three agreements (docs/benchmarks.md, "Mixture sampling"; docs/plots/models.gp).
#include <cospec/cospec.hpp>

#include <chrono>     // std::chrono::steady_clock
#include <cmath>      // std::pow, std::sqrt, std::abs
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <cstdio>     // std::FILE, std::fprintf, std::fopen, std::snprintf
#include <cstdlib>    // std::exit
#include <stdexcept>  // std::invalid_argument, std::runtime_error, std::logic_error
#include <string>     // std::string, std::to_string
#include <utility>    // std::move, std::pair
#include <vector>     // std::vector

#include "models/synthetic_model.hpp"

namespace {

using cospec::token_id;
using cospec::examples::synthetic_model;

const char* const usage = R"(usage: cospec-cost-sweep [options]
  --csv PATH     write the sweep's CSV to PATH (default: standard output)
  --tokens N     tokens generated per decode (default 3000)
  --quick        a reduced grid (for tests): fewer agreements and gammas
  --seed S       sampling seed (default 1)
  --calibrate    fit the paper's SD column instead and print the calibration table
  --models       cost per token against the number of models (1-4, equal costs, T = 1) for
                 standard, CoS and mixture sampling, as CSV (to --csv or standard output)
)";

struct sweep_options {
  std::string csv;
  std::size_t tokens = 3000;
  bool quick = false;
  bool calibrate = false;
  bool models = false;
  std::uint64_t seed = 1;
};

sweep_options parse(int argc, char** argv) {
  sweep_options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (flag == "--quick") {
      options.quick = true;
      continue;
    }
    if (flag == "--calibrate") {
      options.calibrate = true;
      continue;
    }
    if (flag == "--models") {
      options.models = true;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + flag);
    const std::string value = argv[++i];
    if (flag == "--csv") options.csv = value;
    else if (flag == "--tokens") options.tokens = std::stoul(value);
    else if (flag == "--seed") options.seed = std::stoull(value);
    else throw std::invalid_argument("unknown flag " + flag + "\n" + usage);
  }
  if (options.tokens < 100) throw std::invalid_argument("--tokens must be >= 100");
  return options;
}

// ---- models, combinations and one decode ----------------------------------------------

// Synthetic models: logits over 128 tokens that depend on the last 4 tokens. A window that
// long keeps contexts from repeating, so that greedy decoding does not fall into a short
// cycle and acceptances of successive proposals are independent, as the formulas assume.
constexpr std::size_t vocabulary = 128;
constexpr std::size_t window = 4;
constexpr double sharpness = 3.0;
const std::vector<token_id> prompt{1, 2, 3};

/// A combination of n synthetic models and which of them is cheap.
struct family {
  std::string name;
  std::size_t models;
  bool contrastive;                    // contrastive decoding mu 0.1 (model 0 expert) or an ensemble
  std::vector<float> weights;          // ensemble weights, by model
  std::vector<std::size_t> cost_order; // cheapest first; the cheap model proposes in SD and CoS
};

/// What one decode did, per model in cost order (index 0 is the cheap model).
struct measurement {
  std::size_t tokens = 0;
  std::size_t invocations = 0;
  std::vector<double> passes;  // virtual time at unit pass cost
  std::vector<std::size_t> proposed, accepted;

  [[nodiscard]] double acceptance(std::size_t i) const {
    return proposed[i] == 0 ? 0.0 : static_cast<double>(accepted[i]) / static_cast<double>(proposed[i]);
  }
  /// Virtual time per token when the models in cost order cost `costs` per pass.
  [[nodiscard]] double cost_per_token(const std::vector<double>& costs) const {
    double total = 0.0;
    for (std::size_t i = 0; i < passes.size(); ++i) total += costs[i] * passes[i];
    return total / static_cast<double>(tokens);
  }
};

/// The speculation method of a decode: standard, SD with gamma, or CoS with gamma for the
/// cheap model and 1 for the others.
enum class method { standard, fixed_proposer, alternating };

const char* method_name(method m) {
  switch (m) {
    case method::standard: return "standard";
    case method::fixed_proposer: return "SD";
    case method::alternating: return "CoS";
  }
  return "?";
}

template <class Combiner, class Speculator>
measurement decode_with(const family& f, double agreement, const Combiner& combiner, Speculator speculator,
                        float temperature, std::size_t tokens, std::uint64_t seed) {
  std::vector<synthetic_model> models;
  for (std::size_t k = 0; k < f.models; ++k)
    models.emplace_back(cospec::examples::synthetic_model_config{
        .vocabulary_size = vocabulary, .window = window, .shared_seed = 1, .own_seed = 100 + k, .agreement = agreement,
        .sharpness = sharpness});
  std::vector<synthetic_model*> pointers;
  for (auto& m : models) pointers.push_back(&m);
  cospec::sampling_settings sampling;
  sampling.temperature = temperature;
  sampling.seed = seed;
  cospec::decoder_options options;
  options.pass_costs.assign(f.models, cospec::pass_cost{1.0, 0.0});
  cospec::decoder decoder(pointers, combiner, std::move(speculator), sampling, options);
  cospec::generation_limits limits;
  limits.max_new_tokens = tokens;
  const cospec::generation_result result = decoder.generate(prompt, limits);
  const auto& stats = result.statistics;
  measurement m;
  m.tokens = stats.tokens;
  m.invocations = stats.invocations;
  for (std::size_t model : f.cost_order) {
    m.passes.push_back(stats.models[model].virtual_time);
    m.proposed.push_back(stats.proposers[model].proposed);
    m.accepted.push_back(stats.proposers[model].accepted);
  }
  return m;
}

template <class Combiner>
measurement decode_method(const family& f, double agreement, const Combiner& combiner, method m, std::size_t gamma,
                          float temperature, std::size_t tokens, std::uint64_t seed) {
  switch (m) {
    case method::standard:
      return decode_with(f, agreement, combiner, cospec::standard{}, temperature, tokens, seed);
    case method::fixed_proposer:
      return decode_with(f, agreement, combiner, cospec::fixed_proposer(f.cost_order.front(), gamma), temperature,
                         tokens, seed);
    case method::alternating: {
      std::vector<std::size_t> gammas(f.models, 1);
      gammas[f.cost_order.front()] = gamma;
      return decode_with(f, agreement, combiner, cospec::alternating(gammas, f.cost_order), temperature, tokens, seed);
    }
  }
  throw std::logic_error("unknown method");
}

measurement decode(const family& f, double agreement, method m, std::size_t gamma, float temperature,
                   std::size_t tokens, std::uint64_t seed) {
  if (f.contrastive) return decode_method(f, agreement, cospec::contrastive_decoding(0.1f), m, gamma, temperature, tokens, seed);
  return decode_method(f, agreement, cospec::weighted_ensemble(f.weights), m, gamma, temperature, tokens, seed);
}

// ---- closed-form predictions (docs/theory.md) ------------------------------------------

/// a + a^2 + ... + a^g: expected accepted proposals of a chain of g, acceptances independent.
double expected_accepted(double a, std::size_t g) {
  double sum = 0.0, power = 1.0;
  for (std::size_t j = 0; j < g; ++j) {
    power *= a;
    sum += power;
  }
  return sum;
}

double sum(const std::vector<double>& values) {
  double total = 0.0;
  for (double v : values) total += v;
  return total;
}

/// SD with the cheap model (costs[0]) proposing g tokens and every other model scoring them
/// in one pass: E[T] = a (1 - a^g) / (1 - a) + 1, E[C] = g c_1 + sum_{k>1} c_k + a^g c_1.
double predicted_fixed_proposer(double a, std::size_t g, const std::vector<double>& costs) {
  const double tokens = expected_accepted(a, g) + 1.0;
  const double cost = static_cast<double>(g) * costs[0] + (sum(costs) - costs[0]) + std::pow(a, g) * costs[0];
  return tokens * sum(costs) / cost;
}

/// The paper's SD, which emits no token at the frontier after a full acceptance:
/// E[T] = a (1 - a^g) / (1 - a) + 1 - a^g, E[C] = g c_1 + sum_{k>1} c_k (docs/theory.md).
double predicted_paper_sd(double a, std::size_t g, const std::vector<double>& costs) {
  const double tokens = expected_accepted(a, g) + 1.0 - std::pow(a, g);
  const double cost = static_cast<double>(g) * costs[0] + (sum(costs) - costs[0]);
  return tokens * sum(costs) / cost;
}

/// CoS with gammas (g, 1) or (g, 1, 1) in cost order; `a[i]` is the acceptance rate of model
/// i's proposals. Two models: docs/theory.md, "Expected cost, two models". Three models: the
/// renewal argument of docs/theory.md, "Expected cost, three models".
double predicted_alternating(const std::vector<double>& a, std::size_t g, const std::vector<double>& costs) {
  const double accepted = expected_accepted(a[0], g);
  const double full = std::pow(a[0], g);
  const double gamma = static_cast<double>(g);
  if (costs.size() == 2) {
    const double tokens = accepted + 1.0;
    const double cost = gamma * costs[0] + costs[1] + full * (1.0 - a[1]) * costs[0];
    return tokens * sum(costs) / cost;
  }
  // State R: after a rejection (the cheap model first feeds the replacement). State S: the
  // cheap model has just verified the second model's bonus token and holds the third's.
  const double cost_r = gamma * costs[0] + costs[1] + costs[2] + full * costs[0];
  const double tokens_r = accepted + 1.0;
  const double cost_s = (gamma - 1.0) * costs[0] + costs[1] + a[2] * (costs[2] + full * costs[0]);
  const double tokens_s = 1.0 + a[2] * (accepted + 1.0);
  const double r_to_s = full * a[1];
  const double s_to_s = a[2] * full * a[1];
  const double share_s = r_to_s / (r_to_s + 1.0 - s_to_s);
  const double share_r = 1.0 - share_s;
  return sum(costs) * (share_r * tokens_r + share_s * tokens_s) / (share_r * cost_r + share_s * cost_s);
}

double predicted(method m, const measurement& run, std::size_t gamma, const std::vector<double>& costs) {
  std::vector<double> a;
  for (std::size_t i = 0; i < run.passes.size(); ++i) a.push_back(run.acceptance(i));
  switch (m) {
    case method::standard: return 1.0;
    case method::fixed_proposer: return predicted_fixed_proposer(a[0], gamma, costs);
    case method::alternating: return predicted_alternating(a, gamma, costs);
  }
  return 0.0;
}

/// Pass costs in cost order: the cheap model costs `ratio`, the others 1.
std::vector<double> costs_for(std::size_t models, double ratio) {
  std::vector<double> costs(models, 1.0);
  costs[0] = ratio;
  return costs;
}

// ---- the sweep --------------------------------------------------------------------------

struct ratio_setting {
  double ratio;
  const char* label;
};
constexpr ratio_setting cost_ratios[] = {{1.0, "1:1"}, {1.0 / 8.0, "1:8"}, {1.0 / 100.0, "1:100"}};

std::string format(double value, int digits = 4) {
  char text[32];
  std::snprintf(text, sizeof text, "%.*f", digits, value);
  return text;
}

int run_sweep(const sweep_options& options) {
  std::FILE* out = stdout;
  if (!options.csv.empty()) {
    out = std::fopen(options.csv.c_str(), "w");
    if (out == nullptr) throw std::runtime_error("cannot write " + options.csv);
  }
  // Agreement grids per family, chosen so that the cheap model's acceptance rate spans about
  // 0.3 to 0.95 overall (the 0.5/0.5 ensemble cannot go below 0.5, the others start lower).
  struct swept_family {
    family f;
    std::vector<double> agreements;
  };
  const std::vector<swept_family> families{
      {{"WE 0.5/0.5", 2, false, {0.5f, 0.5f}, {0, 1}}, {0.0, 0.4, 0.6, 0.75, 0.88, 0.96}},
      {{"WE 0.1/0.9", 2, false, {0.1f, 0.9f}, {0, 1}}, {0.3, 0.5, 0.65, 0.8, 0.9, 0.97}},
      {{"CD mu 0.1", 2, true, {}, {1, 0}}, {0.5, 0.6, 0.7, 0.8, 0.9, 0.97}},  // model 1, the amateur, is cheap
      {{"WE 3 x 1/3", 3, false, {1.0f, 1.0f, 1.0f}, {0, 1, 2}}, {0.0, 0.4, 0.6, 0.75, 0.88, 0.96}},
      {{"WE 0.1/0.45/0.45", 3, false, {0.1f, 0.45f, 0.45f}, {0, 1, 2}}, {0.3, 0.5, 0.65, 0.8, 0.9, 0.97}},
  };
  const double tolerance = 2.0 / std::sqrt(static_cast<double>(options.tokens));

  std::fprintf(out,
               "setting,models,agreement,method,gamma,gammas,cost_ratio,cost_label,tokens,acceptance_1,acceptance_2,"
               "acceptance_3,tokens_per_invocation,passes_per_token,virtual_time_per_token,"
               "standard_virtual_time_per_token,speedup,predicted_speedup,deviation\n");
  std::size_t checked = 0, failures = 0;
  double worst = 0.0;
  std::string worst_row;
  for (const swept_family& swept : families) {
    const family& f = swept.f;
    const std::vector<std::size_t> gammas =
        options.quick ? std::vector<std::size_t>{1, 5}
                      : (f.models == 2 ? std::vector<std::size_t>{1, 3, 5, 8} : std::vector<std::size_t>{1, 3, 5});
    std::vector<double> agreements = swept.agreements;
    if (options.quick) agreements = {agreements[0], agreements[3], agreements[5]};
    for (double agreement : agreements) {
      const measurement standard = decode(f, agreement, method::standard, 1, 1.0f, options.tokens, options.seed);
      struct planned {
        method m;
        std::size_t gamma;
      };
      std::vector<planned> plan{{method::standard, 1}};
      for (std::size_t g : gammas) {
        plan.push_back({method::fixed_proposer, g});
        plan.push_back({method::alternating, g});
      }
      for (const planned& p : plan) {
        const measurement run =
            p.m == method::standard ? standard : decode(f, agreement, p.m, p.gamma, 1.0f, options.tokens, options.seed);
        std::string gamma_list;
        if (p.m == method::fixed_proposer) gamma_list = std::to_string(p.gamma);
        if (p.m == method::alternating) {
          gamma_list = std::to_string(p.gamma);
          for (std::size_t k = 1; k < f.models; ++k) gamma_list += "/1";
        }
        double passes = 0.0;
        for (double v : run.passes) passes += v;
        for (const ratio_setting& ratio : cost_ratios) {
          const std::vector<double> costs = costs_for(f.models, ratio.ratio);
          const double cost = run.cost_per_token(costs);
          const double standard_cost = standard.cost_per_token(costs);
          const double speedup = standard_cost / cost;
          const double expected = predicted(p.m, run, p.gamma, costs);
          const double deviation = speedup / expected - 1.0;
          std::string acceptance[3];
          for (std::size_t i = 0; i < f.models; ++i)
            if (p.m != method::standard && run.proposed[i] > 0) acceptance[i] = format(run.acceptance(i));
          std::fprintf(out, "%s,%zu,%.2f,%s,%zu,%s,%.6g,%s,%zu,%s,%s,%s,%.4f,%.4f,%.6f,%.6f,%.4f,%.4f,%.4f\n",
                       f.name.c_str(), f.models, agreement, method_name(p.m), p.m == method::standard ? 0 : p.gamma,
                       gamma_list.c_str(), ratio.ratio, ratio.label, run.tokens, acceptance[0].c_str(),
                       acceptance[1].c_str(), acceptance[2].c_str(),
                       static_cast<double>(run.tokens) / static_cast<double>(run.invocations),
                       passes / static_cast<double>(run.tokens), cost, standard_cost, speedup, expected, deviation);
          if (p.m == method::standard) continue;
          ++checked;
          if (std::abs(deviation) > std::abs(worst)) {
            worst = deviation;
            worst_row = f.name + ", agreement " + format(agreement, 2) + ", " + method_name(p.m) + " gamma " +
                        std::to_string(p.gamma) + ", cost " + ratio.label;
          }
          if (std::abs(deviation) > tolerance) ++failures;
        }
      }
    }
  }
  if (out != stdout) std::fclose(out);
  std::fprintf(stderr,
               "cospec-cost-sweep: %zu predictions checked at %zu tokens per decode; largest deviation %+.2f %% (%s); "
               "tolerance %.1f %% (2 / sqrt(tokens)); %zu outside\n",
               checked, options.tokens, 100.0 * worst, worst_row.c_str(), 100.0 * tolerance, failures);
  return failures == 0 ? 0 : 1;
}

// ---- calibration against the paper -------------------------------------------------------

/// A row of the paper's table (docs/algorithm.md, "The paper's results") and the settings
/// assumed for it.
struct paper_row {
  std::string name;
  family models;
  float temperature;
  double cheap_cost;  // per pass, relative to the others
  std::size_t sd_gamma;   // the cheap model's proposal length in SD
  std::size_t cos_gamma;  // and in CoS (the other models propose 1)
  double sd[4];           // HumanEval, GSM8K, MMLU, CNNDM
  double cos[4];
};

int run_calibration(const sweep_options& options) {
  const family ensemble{"WE 0.5/0.5", 2, false, {0.5f, 0.5f}, {0, 1}};
  const family contrastive{"CD mu 0.1", 2, true, {}, {1, 0}};
  const family three{"WE 3 x 1/3", 3, false, {1.0f, 1.0f, 1.0f}, {0, 1, 2}};
  const std::vector<paper_row> rows{
      {"WE Llama-Vicuna", ensemble, 1.0f, 1.0, 2, 1, {1.27, 1.21, 1.19, 1.15}, {1.58, 1.52, 1.41, 1.46}},
      {"WE Llama-Vicuna", ensemble, 1.0f, 1.0, 3, 1, {1.27, 1.21, 1.19, 1.15}, {1.58, 1.52, 1.41, 1.46}},
      {"WE Qwen-3b", ensemble, 1.0f, 1.0, 2, 1, {1.13, 1.06, 1.09, 1.08}, {1.62, 1.52, 1.42, 1.38}},
      {"WE Qwen-1.5b, 3 models", three, 1.0f, 1.0, 3, 1, {0.96, 0.92, 0.98, 0.95}, {1.85, 1.53, 1.38, 1.27}},
      {"CD Llama-3, T=0", contrastive, 0.0f, 1.0 / 8.0, 5, 5, {2.04, 1.81, 1.52, 1.58}, {2.23, 2.00, 1.77, 1.61}},
      {"CD Llama-3, T=1", contrastive, 1.0f, 1.0 / 8.0, 5, 5, {1.55, 1.21, 1.20, 1.07}, {1.65, 1.44, 1.31, 1.18}},
  };
  const char* const datasets[] = {"HumanEval", "GSM8K", "MMLU", "CNNDM"};
  std::printf("| setting | cost | gamma SD / CoS | dataset | paper SD | agreement | acceptance | paper-SD model | cospec SD "
              "(fixed_proposer) | cospec CoS | CoS predicted | paper CoS | cospec CoS / paper-SD model | paper CoS / SD |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const paper_row& row : rows) {
    const std::vector<double> costs = costs_for(row.models.models, row.cheap_cost);
    // The paper-SD speedup over a grid of agreements, from the acceptance rate of cospec's
    // fixed proposer (the same proposals against the same target).
    std::vector<double> grid, model_speedup;
    for (int step = 0; step <= 20; ++step) {
      const double agreement = step / 20.0;
      const measurement sd = decode(row.models, agreement, method::fixed_proposer, row.sd_gamma, row.temperature,
                                    options.tokens, options.seed);
      grid.push_back(agreement);
      model_speedup.push_back(predicted_paper_sd(sd.acceptance(0), row.sd_gamma, costs));
    }
    for (std::size_t d = 0; d < 4; ++d) {
      const double target = row.sd[d];
      // The first crossing of the target, interpolated linearly in the agreement.
      double agreement = -1.0;
      for (std::size_t i = 1; i < grid.size() && agreement < 0.0; ++i) {
        const double lo = model_speedup[i - 1], hi = model_speedup[i];
        if ((lo - target) * (hi - target) <= 0.0 && lo != hi)
          agreement = grid[i - 1] + (target - lo) / (hi - lo) * (grid[i] - grid[i - 1]);
      }
      const std::string cost_label = row.cheap_cost == 1.0 ? "1:1" : "1:" + format(1.0 / row.cheap_cost, 0);
      if (agreement < 0.0) {
        std::printf("| %s | %s | %zu / %zu | %s | %.2f | (out of reach: %.2f to %.2f) | | | | | | %.2f | | |\n",
                    row.name.c_str(), cost_label.c_str(), row.sd_gamma, row.cos_gamma, datasets[d], target,
                    model_speedup.front(), model_speedup.back(), row.cos[d]);
        continue;
      }
      const measurement sd = decode(row.models, agreement, method::fixed_proposer, row.sd_gamma, row.temperature,
                                    options.tokens * 4, options.seed);
      const measurement cos = decode(row.models, agreement, method::alternating, row.cos_gamma, row.temperature,
                                     options.tokens * 4, options.seed);
      const measurement standard =
          decode(row.models, agreement, method::standard, 1, row.temperature, options.tokens * 4, options.seed);
      const double standard_cost = standard.cost_per_token(costs);
      const double paper_model = predicted_paper_sd(sd.acceptance(0), row.sd_gamma, costs);
      const double cos_speedup = standard_cost / cos.cost_per_token(costs);
      std::printf("| %s | %s | %zu / %zu | %s | %.2f | %.3f | %.3f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n",
                  row.name.c_str(), cost_label.c_str(), row.sd_gamma, row.cos_gamma, datasets[d], target, agreement,
                  sd.acceptance(0), paper_model, standard_cost / sd.cost_per_token(costs), cos_speedup,
                  predicted(method::alternating, cos, row.cos_gamma, costs), row.cos[d], cos_speedup / paper_model,
                  row.cos[d] / target);
    }
  }
  return 0;
}

/// Cost per token of standard decoding, CoS (gammas all 1) and plain mixture sampling of a
/// uniform ensemble of n = 1..4 models of equal cost, sampled at T = 1, per agreement: the
/// plot of docs/plots/models.gp.
int run_models(const sweep_options& options) {
  std::FILE* out = options.csv.empty() ? stdout : std::fopen(options.csv.c_str(), "w");
  if (out == nullptr) throw std::runtime_error("cannot write " + options.csv);
  std::fprintf(out, "models,agreement,method,tokens,cost_per_token,speedup\n");
  for (const double agreement : {0.5, 0.8, 0.95}) {
    for (std::size_t n = 1; n <= 4; ++n) {
      family f{"WE uniform", n, false, std::vector<float>(n, 1.0f / static_cast<float>(n)), {}};
      for (std::size_t k = 0; k < n; ++k) f.cost_order.push_back(k);
      const cospec::weighted_ensemble combiner(f.weights);
      const measurement standard =
          decode_with(f, agreement, combiner, cospec::standard{}, 1.0f, options.tokens, options.seed);
      const measurement cos = decode_with(f, agreement, combiner, cospec::alternating(std::vector<std::size_t>(n, 1)),
                                          1.0f, options.tokens, options.seed);
      const measurement mixture =
          decode_with(f, agreement, combiner, cospec::mixture_sampling(n), 1.0f, options.tokens, options.seed);
      const std::vector<double> equal(n, 1.0);
      const double reference = standard.cost_per_token(equal);
      for (const auto& [name, m] : {std::pair<const char*, const measurement*>{"standard", &standard},
                                    {"CoS", &cos}, {"mixture", &mixture}})
        std::fprintf(out, "%zu,%.2f,%s,%zu,%.4f,%.4f\n", n, agreement, name, m->tokens, m->cost_per_token(equal),
                     reference / m->cost_per_token(equal));
    }
  }
  if (out != stdout) std::fclose(out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  const sweep_options options = parse(argc, argv);
  const auto started = std::chrono::steady_clock::now();
  const int status = options.models ? run_models(options) : options.calibrate ? run_calibration(options) : run_sweep(options);
  std::fprintf(stderr, "cospec-cost-sweep: %.1f s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return status;
} catch (const std::exception& e) {
  std::fprintf(stderr, "cospec-cost-sweep: %s\n", e.what());
  return 2;
}

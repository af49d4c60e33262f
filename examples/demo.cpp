// cospec-demo: the paper's comparison on n-gram models trained at start-up, in seconds.
//
// For a weighted ensemble of two and of three models, and for contrastive decoding at
// temperature 0 and 1, it runs standard collaborative decoding, speculative decoding with a
// fixed proposer (SD) and CoS (alternating proposers) on the same prompts, standard decoding and
// CoS with proposals from the context (+ctx), where the target is a mixture (weighted
// ensembles sampled at T > 0 without penalties) mixture sampling and its speculative form, and
// the automatic choice (auto); it prints one table: passes per model, acceptance rates, cost
// under the paper's cost model (virtual time, with cost ratios like the paper's model pairs),
// wall time, and speedups over standard. One greedy setting's text repeats its prompt (a passage of the
// training text, then its first words again: the models, trained on that text, go on quoting
// it), as summaries, answers about a document and code edits quote their context.
// Greedy runs are checked to be token-identical across methods; the program fails if not.
// --p-min P lets CoS end a proposer's run early (docs/benchmarks.md, "Ending runs early").
// --repeat-penalty and its companions penalise repeated tokens in every setting, and
// --process-proposals applies the penalties to the proposers' own distributions too
// (docs/benchmarks.md, "Penalties on proposals").
#include <cospec/cospec.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/ngram_model.hpp"
#include "models/simulated_latency.hpp"

namespace {

using cospec::token_id;
using cospec::examples::character_vocabulary;
using cospec::examples::ngram_model;
using cospec::examples::ngram_statistics;
using timed_model = cospec::examples::simulated_latency<ngram_model>;

struct demo_options {
  std::size_t tokens = 200;
  std::size_t prompts = 4;
  std::uint64_t seed = 1;
  std::string corpus;
  std::vector<std::size_t> orders{2, 4, 6};  // small, medium, large
  std::vector<std::size_t> ensemble_gammas{1, 1};
  std::vector<std::size_t> contrastive_gammas{3, 1};  // amateur, expert
  std::vector<float> ensemble_weights{0.5f, 0.5f};
  float ensemble_temperature = 1.0f;
  float mu = 0.1f;
  double latency_us = 20.0;  // simulated pass latency per unit of cost
  float p_min = 0.0f;        // CoS ends a proposer's run after a token it gave less (0: never)
  bool details = false;      // print invocations and tokens per invocation too
  cospec::penalty_settings penalties;  // every setting's; the defaults penalise nothing
  bool process_proposals = false;      // penalise the proposers' distributions too
};

const char* const usage = R"(usage: cospec-demo [options]
  --tokens N        tokens generated per prompt (default 200)
  --prompts N       prompts, cut from the corpus (default 4)
  --seed S          sampling seed (default 1)
  --corpus FILE     train the n-gram models on FILE (default: cospec's README and docs)
  --orders a,b,c    n-gram orders of the small, medium and large models (default 2,4,6)
  --we-gammas a,b   CoS proposal lengths for the two-model ensemble (default 1,1)
  --cd-gammas a,e   CoS proposal lengths of amateur and expert for CD (default 3,1)
  --weights a,b     two-model ensemble weights (default 0.5,0.5)
  --temperature T   temperature of the ensemble settings (default 1)
  --mu M            contrastive strength (default 0.1)
  --latency-us U    simulated forward-pass latency per unit of cost, in microseconds
                    (default 20; 0 runs the n-gram models at their own speed)
  --p-min P         CoS: a proposer's run ends after a token its own distribution gave a
                    probability below P, in [0, 1] (default 0: runs are never cut;
                    docs/engine.md, "Ending a run early"). Matters only for proposal lengths
                    of 2 or more (the CD settings, and --we-gammas above 1)
  --details         two more columns: invocations (speculator decisions) and tokens per
                    invocation
  --repeat-penalty R     every setting: a token among the last --penalty-last-n has its
                         logit l divided by R if l > 0, multiplied by R otherwise, llama.cpp's
                         rule (default 1: off; docs/combiners.md, "Penalties")
  --penalty-last-n N     the penalty window, in tokens (characters here), prompt included;
                         0 disables the penalties, -1 counts the whole text (default 64)
  --frequency-penalty F  subtracted from a windowed token's logit once per occurrence (default 0)
  --presence-penalty P   subtracted once from a windowed token's logit (default 0)
  --process-proposals    apply the penalties to each proposer's own distribution too, so that
                         it does not propose what the penalised target rejects (default off;
                         sampling_settings::process_proposals)
)";

template <class T>
std::vector<T> parse_list(const std::string& text) {
  std::vector<T> values;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) values.push_back(static_cast<T>(std::stod(item)));
  return values;
}

demo_options parse(int argc, char** argv) {
  demo_options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (flag == "--details") {
      options.details = true;
      continue;
    }
    if (flag == "--process-proposals") {
      options.process_proposals = true;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + flag);
    const std::string value = argv[++i];
    if (flag == "--tokens") options.tokens = std::stoul(value);
    else if (flag == "--prompts") options.prompts = std::stoul(value);
    else if (flag == "--seed") options.seed = std::stoull(value);
    else if (flag == "--corpus") options.corpus = value;
    else if (flag == "--orders") options.orders = parse_list<std::size_t>(value);
    else if (flag == "--we-gammas") options.ensemble_gammas = parse_list<std::size_t>(value);
    else if (flag == "--cd-gammas") options.contrastive_gammas = parse_list<std::size_t>(value);
    else if (flag == "--weights") options.ensemble_weights = parse_list<float>(value);
    else if (flag == "--temperature") options.ensemble_temperature = std::stof(value);
    else if (flag == "--mu") options.mu = std::stof(value);
    else if (flag == "--latency-us") options.latency_us = std::stod(value);
    else if (flag == "--p-min") options.p_min = std::stof(value);
    else if (flag == "--repeat-penalty") options.penalties.repeat = std::stof(value);
    else if (flag == "--penalty-last-n") options.penalties.last_n = std::stoll(value);
    else if (flag == "--frequency-penalty") options.penalties.frequency = std::stof(value);
    else if (flag == "--presence-penalty") options.penalties.presence = std::stof(value);
    else throw std::invalid_argument("unknown flag " + flag + "\n" + usage);
  }
  if (options.orders.size() != 3) throw std::invalid_argument("--orders takes three orders");
  if (options.ensemble_gammas.size() != 2 || options.contrastive_gammas.size() != 2 ||
      options.ensemble_weights.size() != 2)
    throw std::invalid_argument("--we-gammas, --cd-gammas and --weights take two values");
  if (options.prompts == 0 || options.tokens == 0) throw std::invalid_argument("--prompts and --tokens must be >= 1");
  if (!(options.p_min >= 0.0f && options.p_min <= 1.0f)) throw std::invalid_argument("--p-min must be in [0, 1]");
  cospec::validate(options.penalties);  // invalid_configuration names the bad value
  return options;
}

std::string read_corpus(const demo_options& options) {
  std::vector<std::filesystem::path> files;
  if (!options.corpus.empty()) {
    files.push_back(options.corpus);
  } else {
    const std::filesystem::path root = COSPEC_DEMO_SOURCE_DIR;
    files.push_back(root / "README.md");
    if (std::filesystem::is_directory(root / "docs"))
      for (const auto& entry : std::filesystem::directory_iterator(root / "docs"))
        if (entry.path().extension() == ".md") files.push_back(entry.path());
    std::sort(files.begin() + 1, files.end());
  }
  std::string text;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + file.string() + " (give a text file with --corpus)");
    std::stringstream buffer;
    buffer << in.rdbuf();
    text += buffer.str();
  }
  if (text.size() < 1000) throw std::runtime_error("the corpus is too small to train on (under 1000 bytes)");
  return text;
}

/// One model set and combination of the comparison.
struct setting {
  std::string name;
  std::vector<std::size_t> orders;           // n-gram order of each model
  std::vector<cospec::pass_cost> costs;      // the paper-like cost ratio
  std::function<cospec::sampling_settings()> sampling;
  bool contrastive = false;
  std::vector<float> weights;                // ensemble weights
  std::vector<std::size_t> cos_gammas;
  std::size_t sd_proposer = 0;
  std::size_t sd_gamma = 1;
  bool repeats = false;  // prompts that repeat a passage (see make_repeating_prompts)

  /// Mixture sampling applies: a weighted ensemble sampled without transforms.
  [[nodiscard]] bool mixture() const {
    const cospec::sampling_settings settings = sampling();
    return !contrastive && !settings.greedy() && !settings.penalties.active();
  }
};

/// Totals of one method over all prompts.
struct method_run {
  std::string method;
  std::size_t tokens = 0;
  std::vector<std::size_t> passes;
  std::vector<std::size_t> proposed, accepted;
  std::size_t context_proposed = 0, context_accepted = 0;
  std::size_t invocations = 0;
  double virtual_time = 0.0;
  double wall_seconds = 0.0;
  std::vector<std::vector<token_id>> outputs;
};

template <class Combiner, class Speculator>
method_run run_method(const std::string& method, const setting& s, const std::shared_ptr<const ngram_statistics>& stats,
                      const Combiner& combiner, Speculator speculator, const std::vector<std::vector<token_id>>& prompts,
                      std::size_t tokens, std::uint64_t seed, double latency_us) {
  std::vector<timed_model> models;
  for (std::size_t k = 0; k < s.orders.size(); ++k)
    models.emplace_back(ngram_model(stats, s.orders[k]),
                        std::chrono::nanoseconds(static_cast<long long>(s.costs[k].per_pass * latency_us * 1e3)));
  std::vector<timed_model*> pointers;
  for (auto& m : models) pointers.push_back(&m);
  cospec::sampling_settings sampling = s.sampling();
  sampling.seed = seed;
  cospec::decoder_options options;
  options.pass_costs = s.costs;
  cospec::decoder decoder(pointers, combiner, std::move(speculator), sampling, options);
  method_run run;
  run.method = method;
  run.passes.assign(models.size(), 0);
  run.proposed.assign(models.size(), 0);
  run.accepted.assign(models.size(), 0);
  cospec::generation_limits limits;
  limits.max_new_tokens = tokens;
  for (const auto& prompt : prompts) {
    const auto result = decoder.generate(prompt, limits);
    const auto& st = result.statistics;
    run.tokens += st.tokens;
    run.invocations += st.invocations;
    run.virtual_time += st.virtual_time;
    run.wall_seconds += st.seconds_total;
    for (std::size_t k = 0; k < models.size(); ++k) {
      run.passes[k] += st.models[k].forward_passes;
      run.proposed[k] += st.proposers[k].proposed;
      run.accepted[k] += st.proposers[k].accepted;
    }
    run.context_proposed += st.context.proposed;
    run.context_accepted += st.context.accepted;
    run.outputs.push_back(result.tokens);
  }
  return run;
}

template <class Combiner>
std::vector<method_run> compare(const setting& s, const std::shared_ptr<const ngram_statistics>& stats,
                                const Combiner& combiner, const std::vector<std::vector<token_id>>& prompts,
                                const demo_options& options) {
  std::vector<method_run> runs;
  constexpr std::size_t context = 8;  // proposals from the context per invocation (+ctx rows)
  runs.push_back(run_method("standard", s, stats, combiner, cospec::standard{}, prompts, options.tokens, options.seed,
                            options.latency_us));
  runs.push_back(run_method("standard+ctx", s, stats, combiner, cospec::with_context_proposals(cospec::standard{}, context),
                            prompts, options.tokens, options.seed, options.latency_us));
  runs.push_back(run_method("SD", s, stats, combiner, cospec::fixed_proposer(s.sd_proposer, s.sd_gamma), prompts,
                            options.tokens, options.seed, options.latency_us));
  runs.push_back(run_method("CoS", s, stats, combiner, cospec::alternating(s.cos_gammas, {}, options.p_min), prompts,
                            options.tokens, options.seed, options.latency_us));
  runs.push_back(run_method("CoS+ctx", s, stats, combiner,
                            cospec::with_context_proposals(cospec::alternating(s.cos_gammas, {}, options.p_min), context),
                            prompts, options.tokens, options.seed, options.latency_us));
  cospec::automatic_options automatic;
  for (const cospec::pass_cost& cost : s.costs) automatic.pass_costs.push_back(cost.per_pass);
  if (s.mixture()) {
    // Plain: only the drawn model runs. Speculative: cheaper models may propose runs, priced
    // with the setting's pass costs (the same cost ratio the clock charges).
    cospec::mixture_options plain;
    cospec::mixture_options speculative;
    speculative.max_gamma = 6;
    for (const cospec::pass_cost& cost : s.costs) speculative.fallback.pass_costs.push_back(cost.per_pass);
    runs.push_back(run_method("mixture", s, stats, combiner, cospec::mixture_sampling(s.orders.size(), plain), prompts,
                              options.tokens, options.seed, options.latency_us));
    runs.push_back(run_method("mixture+spec", s, stats, combiner, cospec::mixture_sampling(s.orders.size(), speculative),
                              prompts, options.tokens, options.seed, options.latency_us));
    runs.push_back(run_method("mix+spec+ctx", s, stats, combiner,
                              cospec::with_context_proposals(cospec::mixture_sampling(s.orders.size(), speculative), context),
                              prompts, options.tokens, options.seed, options.latency_us));
  }
  runs.push_back(run_method("auto", s, stats, combiner, cospec::automatic(s.orders.size(), automatic), prompts,
                            options.tokens, options.seed, options.latency_us));
  return runs;
}

std::string join(const std::vector<std::size_t>& values, const char* separator) {
  std::string text;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) text += separator;
    text += std::to_string(values[i]);
  }
  return text;
}

/// One line: newlines and tabs shown as spaces.
std::string printable(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\t' || c == '\r') c = ' ';
  return text;
}

std::string acceptance(const method_run& run) {
  std::string text;
  if (run.context_proposed > 0) {
    char cell[24];
    std::snprintf(cell, sizeof cell, "c%.2f ", static_cast<double>(run.context_accepted) /
                                                   static_cast<double>(run.context_proposed));
    text += cell;
  }
  for (std::size_t k = 0; k < run.proposed.size(); ++k) {
    char cell[16];
    if (run.proposed[k] == 0) std::snprintf(cell, sizeof cell, "-");
    else std::snprintf(cell, sizeof cell, "%.2f", static_cast<double>(run.accepted[k]) / static_cast<double>(run.proposed[k]));
    if (k > 0) text += '/';
    text += cell;
  }
  return text;
}

}  // namespace

int main(int argc, char** argv) try {
  const demo_options options = parse(argc, argv);
  const auto started = std::chrono::steady_clock::now();
  const std::string corpus = read_corpus(options);
  const character_vocabulary vocabulary(corpus);
  const std::vector<token_id> text = vocabulary.encode(corpus);
  std::size_t max_order = 1;
  for (std::size_t order : options.orders) max_order = std::max(max_order, order);
  std::fprintf(stderr, "training n-gram models of orders %s on %zu characters (%zu distinct)...\n",
               join(options.orders, ", ").c_str(), text.size(), vocabulary.size());
  const auto stats = std::make_shared<const ngram_statistics>(text, vocabulary.size(), max_order);

  // Prompts: text from the corpus, 24 characters starting after a space, spread over it.
  std::vector<std::vector<token_id>> prompts;
  for (std::size_t p = 0; p < options.prompts; ++p) {
    std::size_t start = (p * 7919 + 1) * (text.size() / (options.prompts * 7919 + 1));
    while (start + 25 < text.size() && vocabulary.decode(std::span(text).subspan(start, 1)) != " ") ++start;
    start = std::min(start + 1, text.size() - 25);
    prompts.emplace_back(text.begin() + static_cast<std::ptrdiff_t>(start),
                         text.begin() + static_cast<std::ptrdiff_t>(start + 24));
  }

  const std::size_t small = options.orders[0], medium = options.orders[1], large = options.orders[2];
  const float ensemble_temperature = options.ensemble_temperature;
  auto at = [&options](float temperature) {
    return [temperature, penalties = options.penalties, process_proposals = options.process_proposals] {
      cospec::sampling_settings s;
      s.temperature = temperature;
      s.penalties = penalties;
      s.process_proposals = process_proposals;
      return s;
    };
  };
  const std::vector<float> three_weights(3, 1.0f / 3.0f);
  const std::vector<setting> settings{
      {"WE, 2 models, cost 1:1", {medium, large}, {{1, 0}, {1, 0}}, at(ensemble_temperature), false,
       options.ensemble_weights, options.ensemble_gammas, 0, 1},
      {"WE, 3 models, cost 1:1:1", {small, medium, large}, {{1, 0}, {1, 0}, {1, 0}}, at(ensemble_temperature), false,
       three_weights, {1, 1, 1}, 0, 1},
      {"WE, 2 models, cost 1:8", {medium, large}, {{1, 0}, {8, 0}}, at(ensemble_temperature), false,
       options.ensemble_weights, {3, 1}, 0, 3},
      {"CD, T=0, cost 1:8", {large, medium}, {{8, 0}, {1, 0}}, at(0.0f), true, {},
       {options.contrastive_gammas[1], options.contrastive_gammas[0]}, 1, options.contrastive_gammas[0]},
      {"CD, T=1, cost 1:8", {large, medium}, {{8, 0}, {1, 0}}, at(1.0f), true, {},
       {options.contrastive_gammas[1], options.contrastive_gammas[0]}, 1, options.contrastive_gammas[0]},
      {"CD, T=0, tiny amateur 1:100", {large, small}, {{100, 0}, {1, 0}}, at(0.0f), true, {},
       {1, 5}, 1, 5},
      {"WE, 1:8, T=0, text repeats", {medium, large}, {{1, 0}, {8, 0}}, at(0.0f), false,
       options.ensemble_weights, {3, 1}, 0, 3, true},
  };
  // The repeating setting's prompts: a passage of the training text (160 characters), then its
  // first 24 characters again, so that the models, which learnt the passage, go on quoting it.
  std::vector<std::vector<token_id>> repeating_prompts;
  for (const auto& prompt : prompts) {
    const auto start = static_cast<std::size_t>(
        std::search(text.begin(), text.end(), prompt.begin(), prompt.end()) - text.begin());
    const std::size_t length = std::min<std::size_t>(160, text.size() - start);
    std::vector<token_id> passage(text.begin() + static_cast<std::ptrdiff_t>(start),
                                  text.begin() + static_cast<std::ptrdiff_t>(start + length));
    passage.insert(passage.end(), prompt.begin(), prompt.end());
    repeating_prompts.push_back(std::move(passage));
  }

  std::printf("\ncospec %s demo: %zu prompts x %zu tokens, character n-gram models (orders %s) trained on %zu characters\n",
              cospec::version_string, options.prompts, options.tokens, join(options.orders, "/").c_str(), text.size());
  std::printf("CD: model 0 is the expert (order %zu), model 1 the amateur (order %zu; order %zu for the tiny one),\n"
              "mu = %.2f. cost/token: the paper's cost model, a pass of model i costs its share of the ratio whatever\n"
              "the tokens it feeds. Wall time: each pass takes %.0f us per unit of cost (a simulated accelerator).\n\n",
              large, medium, small, static_cast<double>(options.mu), options.latency_us);
  if (options.p_min > 0.0f)
    std::printf("CoS: a proposer's run ends after a token it gave a probability below p_min = %.2f.\n\n",
                static_cast<double>(options.p_min));
  if (options.penalties.active() || options.process_proposals)
    std::printf("Penalties (every setting): repeat %.2f, frequency %.2f, presence %.2f over the last %lld tokens;\n"
                "proposers' own distributions penalised too (process_proposals): %s.\n\n",
                static_cast<double>(options.penalties.repeat), static_cast<double>(options.penalties.frequency),
                static_cast<double>(options.penalties.presence), static_cast<long long>(options.penalties.last_n),
                options.process_proposals ? "yes" : "no");
  std::printf("%-28s %-12s %7s %-16s %-20s %11s %8s %9s %8s", "setting", "method", "tokens", "passes/model",
              "acceptance", "cost/token", "speedup", "wall ms", "speedup");
  if (options.details) std::printf(" %11s %8s", "invocations", "tok/inv");
  std::printf("\n");
  bool identical = true;
  std::size_t greedy_checks = 0;
  std::string ensemble_sample, contrastive_sample;
  for (std::size_t index = 0; index < settings.size(); ++index) {
    const setting& s = settings[index];
    std::fprintf(stderr, "[%zu/%zu] %s...\n", index + 1, settings.size(), s.name.c_str());
    const auto& setting_prompts = s.repeats ? repeating_prompts : prompts;
    const std::vector<method_run> runs =
        s.contrastive ? compare(s, stats, cospec::contrastive_decoding(options.mu), setting_prompts, options)
                      : compare(s, stats, cospec::weighted_ensemble(s.weights), setting_prompts, options);
    const auto named = [&](const char* method) -> const method_run& {
      for (const method_run& run : runs)
        if (run.method == method) return run;
      return runs.front();
    };
    const method_run& standard = runs[0];
    for (const method_run& run : runs) {
      const double cost = run.virtual_time / static_cast<double>(run.tokens);
      const double standard_cost = standard.virtual_time / static_cast<double>(standard.tokens);
      const double wall = run.wall_seconds / static_cast<double>(run.tokens);
      const double standard_wall = standard.wall_seconds / static_cast<double>(standard.tokens);
      std::printf("%-28s %-12s %7zu %-16s %-20s %11.2f %7.2fx %9.1f %7.2fx", &run == &runs[0] ? s.name.c_str() : "",
                  run.method.c_str(), run.tokens, join(run.passes, "/").c_str(), acceptance(run).c_str(), cost,
                  standard_cost / cost, run.wall_seconds * 1e3, standard_wall / wall);
      if (options.details)
        std::printf(" %11zu %8.2f", run.invocations,
                    static_cast<double>(run.tokens) / static_cast<double>(run.invocations));
      std::printf("\n");
    }
    if (s.sampling().greedy()) {
      for (const method_run& run : runs) {
        identical = identical && run.outputs == standard.outputs;
        ++greedy_checks;
      }
      if (contrastive_sample.empty()) contrastive_sample = vocabulary.decode(named("CoS").outputs[0]);
    } else if (ensemble_sample.empty()) {
      ensemble_sample = vocabulary.decode(named("CoS").outputs[0]);
    }
  }
  std::printf("\nprompt:           \"%s\"\n", printable(vocabulary.decode(prompts[0])).c_str());
  if (!ensemble_sample.empty()) std::printf("CoS, WE 2 models: \"%s\"\n", printable(ensemble_sample).c_str());
  if (!contrastive_sample.empty()) std::printf("CoS, CD T=0:      \"%s\"\n", printable(contrastive_sample).c_str());
  std::printf("\ngreedy outputs identical across every method (checked, %zu runs x %zu prompts): %s\n",
              greedy_checks, options.prompts, identical ? "yes" : "NO");
  std::printf("acceptance: per model, the share of its proposals accepted ('-' = never proposed); cX: of the\n"
              "proposals from the context. +ctx: up to 8 proposals from the context per invocation; auto: cospec::automatic.\n"
              "The last setting's (greedy) prompts are a 160-character passage of the training text followed by its first\n"
              "24 characters again: the models go on quoting it, as a summary or an edit quotes its source.\n"
              "Wall time includes everything cospec does per token; the gap between the two speedups is its overhead.\n"
              "Total %.1f s.\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return identical ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "cospec-demo: %s\n", e.what());
  return 2;
}

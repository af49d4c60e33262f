// cospec serving many requests at once on the transformer example: for each number S of
// concurrent requests, one batch decoder runs S requests over batched transformers (the large
// model and its early-exit draft, a weighted ensemble), with standard collaborative decoding,
// SD, CoS, the adaptive policy and, when sampling, mixture sampling (plain and speculative). Prints total tokens/s and each method's ratio to standard
// decoding at the same S, per-request latency (median and worst), batched passes and their
// mean batch, and acceptance. With greedy decoding (the default) it exits non-zero unless
// every request's output is the same under every method, and the first request's is the one
// single-sequence decoding gives it alone (docs/benchmarks.md, "Serving many requests").
#include <chrono>     // std::chrono::steady_clock
#include <cstddef>    // std::size_t
#include <algorithm>  // std::min
#include <cstdio>     // std::printf, std::fprintf, std::fputs, std::snprintf
#include <cstdlib>    // std::exit
#include <exception>  // std::exception
#include <functional> // std::function
#include <map>        // std::map
#include <memory>     // std::make_shared
#include <stdexcept>  // std::logic_error
#include <string>     // std::string, std::stoul, std::stoull, std::stof
#include <vector>     // std::vector

#include <cospec/cospec.hpp>

#include "transformer/demo_models.hpp"
#include "transformer/serving.hpp"
#include "transformer/thread_team.hpp"
#include "transformer/transformer.hpp"

namespace {

using cospec::token_id;
using namespace cospec::examples::llama;

const char* const usage = R"(usage: cospec-transformer-serve [options]
  --requests S[,S...]     numbers of concurrent requests, each a run (default 1,4)
  --tokens N              tokens generated per request (default 32)
  --gamma G               the draft's proposal length for SD and CoS (default 1)
  --temperature T         0 is greedy and checks token identity (default 0)
  --small-weight W        the draft's weight in the ensemble; the large model has 1 - W (default 0.5)
  --threads N             threads of the shared team (default 2)
  --seed S                seed of the weights, prompts and sampling (default 1)
  --draft-layers K        layers of the early-exit draft (default 2)
  --block-scale B         seed-built weights: what each block adds to the residual stream (default 0.1)
  --quick                 an 8M-parameter seed-built network instead (for tests)
  --checkpoint FILE       a llama2.c checkpoint for the large model
  --draft-checkpoint FILE a llama2.c checkpoint for the small model (default: early exit of the large)
)";

struct serve_options {
  model_source models;
  std::vector<std::size_t> requests{1, 4};
  std::size_t threads = 2;
  serving_setup setup;
};

std::vector<std::size_t> number_list(const std::string& text) {
  std::vector<std::size_t> numbers;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    numbers.push_back(std::stoul(text.substr(start, comma - start)));
    start = comma + 1;
  }
  return numbers;
}

[[noreturn]] void refuse(const std::string& message) {
  std::fprintf(stderr, "%s\n%s", message.c_str(), usage);
  std::exit(2);
}

serve_options parse(int argc, char** argv) {
  serve_options options;
  // Flags with a value, each with what it sets.
  const std::map<std::string, std::function<void(const std::string&)>> setters{
      {"--requests", [&](const std::string& v) { options.requests = number_list(v); }},
      {"--tokens", [&](const std::string& v) { options.setup.tokens = std::stoul(v); }},
      {"--gamma", [&](const std::string& v) { options.setup.gamma = std::stoul(v); }},
      {"--temperature", [&](const std::string& v) { options.setup.temperature = std::stof(v); }},
      {"--small-weight", [&](const std::string& v) { options.setup.small_weight = std::stof(v); }},
      {"--threads", [&](const std::string& v) { options.threads = std::stoul(v); }},
      {"--seed", [&](const std::string& v) { options.models.seed = options.setup.seed = std::stoull(v); }},
      {"--draft-layers", [&](const std::string& v) { options.models.draft_layers = std::stoul(v); }},
      {"--block-scale", [&](const std::string& v) { options.models.block_scale = std::stof(v); }},
      {"--checkpoint", [&](const std::string& v) { options.models.checkpoint = v; }},
      {"--draft-checkpoint", [&](const std::string& v) { options.models.draft_checkpoint = v; }},
  };
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (flag == "--quick") {
      options.models.quick = true;
      continue;
    }
    const auto setter = setters.find(flag);
    if (setter == setters.end()) refuse("unknown option " + flag);
    if (i + 1 >= argc) refuse(flag + " needs a value");
    const std::string value = argv[++i];
    try {
      setter->second(value);
    } catch (const std::logic_error&) {  // std::stoul and friends: not a number
      refuse(flag + ": not a valid value: '" + value + "'");
    }
  }
  for (const std::size_t s : options.requests)
    if (s == 0) refuse("--requests: every number of requests must be at least 1");
  if (options.setup.tokens == 0 || options.threads == 0 || options.setup.gamma == 0)
    refuse("--tokens, --threads and --gamma must be at least 1");
  if (!(options.setup.small_weight >= 0.0f && options.setup.small_weight <= 1.0f))
    refuse("--small-weight must be in [0, 1]");
  return options;
}

/// The request decoded alone: single-sequence transformers and decoder::generate.
std::vector<token_id> decode_alone(const serving_setup& setup, const std::vector<token_id>& prompt) {
  const model_pair& pair = *setup.models;
  transformer small(pair.small, setup.team, {.layers = pair.small_layers, .context_limit = 0});
  transformer large(pair.large, setup.team, {.layers = 0, .context_limit = 0});
  cospec::sampling_settings sampling;
  sampling.temperature = setup.temperature;
  cospec::decoder decoder(std::vector<transformer*>{&small, &large},
                          cospec::weighted_ensemble({setup.small_weight, 1.0f - setup.small_weight}), cospec::standard{},
                          sampling);
  cospec::generation_limits limits;
  limits.max_new_tokens = setup.tokens;
  limits.seed = setup.seed;
  return decoder.generate(prompt, limits).tokens;
}

std::string acceptance_text(double acceptance) {
  if (acceptance < 0.0) return "-";
  char text[16];
  std::snprintf(text, sizeof text, "%.2f", acceptance);
  return text;
}

}  // namespace

int main(int argc, char** argv) try {
  serve_options options = parse(argc, argv);
  options.setup.team = std::make_shared<thread_team>(options.threads);
  const auto building = std::chrono::steady_clock::now();
  const model_pair pair = load_models(options.models);
  if (pair.small->config.vocab_size != pair.large->config.vocab_size) {
    std::fprintf(stderr, "the two checkpoints have different vocabularies\n");
    return 2;
  }
  options.setup.models = &pair;
  print_models(pair, options.models, *options.setup.team, building);
  // The cost clock, priced from measured passes: what each method should gain if a pass cost
  // exactly per_pass + per_token * tokens.
  options.setup.pass_costs = {fit_pass_cost(pair.small, pair.small_layers, options.setup.team),
                              fit_pass_cost(pair.large, pair.large->config.n_layers, options.setup.team)};
  std::printf("cost clock fitted to measured passes: small %.2f ms + %.2f ms per token, large %.2f ms + %.2f ms per "
              "token\n",
              1e3 * options.setup.pass_costs[0].per_pass, 1e3 * options.setup.pass_costs[0].per_token,
              1e3 * options.setup.pass_costs[1].per_pass, 1e3 * options.setup.pass_costs[1].per_token);
  const bool greedy = options.setup.temperature == 0.0f;
  std::printf("weighted ensemble %.2f small + %.2f large, %s, %zu tokens per request; adaptive plans with the pass "
              "costs it measures\n",
              static_cast<double>(options.setup.small_weight), 1.0 - static_cast<double>(options.setup.small_weight),
              greedy ? "greedy" : "sampling", options.setup.tokens);

  bool identical = true;
  for (const std::size_t s : options.requests) {
    const auto prompts = random_prompts(s, pair.large->config.vocab_size, options.setup.seed + s);
    const auto runs = serve_every_method(options.setup, prompts);
    const serving_run& reference = runs.front();
    std::printf("\n%zu concurrent requests\n", s);
    std::printf("%-12s %9s %8s %9s %10s %10s %13s %13s %7s %7s\n", "method", "tokens/s", "vs std", "clock", "median s",
                "worst s", "small passes", "large passes", "s acc", "l acc");
    for (const serving_run& run : runs) {
      const auto batch = [&](std::size_t k) {
        return run.passes[k] == 0 ? 0.0 : static_cast<double>(run.sequences[k]) / static_cast<double>(run.passes[k]);
      };
      std::printf("%-12s %9.2f %7.2fx %8.2fx %10.2f %10.2f %6zu (%4.1f) %6zu (%4.1f) %7s %7s\n", run.method.c_str(),
                  run.tokens_per_second(), run.tokens_per_second() / reference.tokens_per_second(),
                  reference.virtual_time / run.virtual_time, run.latency(0.5),
                  run.latency(1.0), run.passes[0], batch(0), run.passes[1], batch(1),
                  acceptance_text(run.acceptance(0)).c_str(), acceptance_text(run.acceptance(1)).c_str());
      if (run.failed) {
        std::printf("  FAILED: a request of %s ended with an error\n", run.method.c_str());
        identical = false;
      }
      if (greedy && run.outputs != reference.outputs) {
        std::printf("  MISMATCH: a request's greedy output under %s differs from standard decoding's\n",
                    run.method.c_str());
        identical = false;
      }
    }
    if (greedy && decode_alone(options.setup, prompts.front()) != reference.outputs.front()) {
      std::printf("  MISMATCH: request 0 decoded alone gives other tokens than in the batch\n");
      identical = false;
    }
  }
  std::printf("\n(vs std: measured tokens/s against standard decoding's at the same S; clock: the same ratio on the\n"
              "fitted cost clock; passes: batched forward passes, in parentheses the mean number of requests each\n"
              "served)\n");
  if (greedy && identical)
    std::printf("greedy outputs: every request the same under every method, and request 0 the same as decoded alone\n");
  return identical ? 0 : 1;
} catch (const std::exception& error) {
  std::fprintf(stderr, "cospec-transformer-serve: %s\n", error.what());
  return 2;
}

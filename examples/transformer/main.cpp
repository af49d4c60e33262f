// cospec on a real inference stack: a weighted ensemble of a llama-architecture transformer
// and a small draft, decoded by standard collaborative decoding, speculative decoding with the
// draft as the only proposer (SD), CoS (the models alternate as proposers), the adaptive
// policy, when sampling without penalties mixture sampling (only the model drawn for a token
// runs) and its speculative form, and the automatic choice (auto, cospec's default). Prints wall-clock tokens per second, the speedup of each method over standard
// decoding and the acceptance rates, and exits non-zero unless every method's greedy output is
// token-identical to standard decoding's (docs/benchmarks.md, "Transformer").
//
// Without files the models are built from a seed: a 200M-parameter network (12 layers, dim
// 1024; its weights do not fit in any cache, so a pass is memory-bound as on a GPU) and, as the
// draft, the same network exited after its first layers (self-speculative decoding): the two
// share their weights. With llama2.c checkpoints (--checkpoint, --draft-checkpoint, e.g. the
// TinyStories stories110M.bin and stories15M.bin) and its tokenizer.bin, the same comparison
// runs on trained models and prints the text.
//
// --repeat-penalty and its companions penalise repeated tokens for every method, and
// --process-proposals applies them to the proposers' own distributions too (docs/benchmarks.md,
// "Penalties on proposals").
#include <algorithm>  // std::min
#include <chrono>     // std::chrono::steady_clock
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <cstdio>     // std::printf, std::fprintf, std::fputs, std::snprintf
#include <cstdlib>    // std::exit
#include <exception>  // std::exception
#include <stdexcept>  // std::logic_error
#include <memory>     // std::shared_ptr, std::make_shared
#include <optional>   // std::optional
#include <string>     // std::string, std::stoul, std::stoull, std::stof, std::to_string
#include <utility>    // std::move
#include <vector>     // std::vector

#include <cospec/cospec.hpp>

#include "transformer/demo_models.hpp"
#include "transformer/thread_team.hpp"
#include "transformer/tokenizer.hpp"
#include "transformer/transformer.hpp"

namespace {

using cospec::token_id;
using namespace cospec::examples::llama;

struct demo_options {
  model_source models;
  std::string tokenizer;
  std::string prompt = "Once upon a time";
  std::size_t tokens = 64;
  std::size_t prompts = 2;
  std::size_t threads = 2;
  std::vector<std::size_t> gammas{2};  // the draft's proposal lengths for SD and CoS
  float temperature = 0.0f;
  float small_weight = 0.5f;
  float p_min = 0.0f;  // CoS and adaptive end a proposer's run after a token it gave less (0: never)
  bool details = false;                // print invocations and tokens per invocation too
  cospec::penalty_settings penalties;  // every method's; the defaults penalise nothing
  bool process_proposals = false;      // penalise the proposers' distributions too
  std::string save_prefix;             // write both models as llama2.c checkpoints and stop
  std::size_t repeating = 0;           // extend each prompt by the ensemble's greedy continuation
};

const char* const usage = R"(usage: cospec-transformer [options]
  --tokens N              tokens generated per prompt (default 64)
  --prompts N             prompts per method (default 2)
  --threads N             threads of the shared team (default 2)
  --gamma G[,G...]        the draft's proposal lengths for SD and CoS, each run (default 2)
  --temperature T         0 is greedy and checks token identity (default 0)
  --small-weight W        the draft's weight in the ensemble; the large model has 1 - W (default 0.5)
  --p-min P               CoS and adaptive: a proposer's run ends after a token its own
                          distribution gave a probability below P, in [0, 1] (default 0: never;
                          docs/engine.md, "Ending a run early"); SD is not affected
  --repeat-penalty R      every method: a token among the last --penalty-last-n has its
                          logit l divided by R if l > 0, multiplied by R otherwise, llama.cpp's
                          rule (default 1: off; docs/combiners.md, "Penalties")
  --penalty-last-n N      the penalty window in tokens, prompt included; 0 disables the
                          penalties, -1 counts the whole text (default 64)
  --frequency-penalty F   subtracted from a windowed token's logit once per occurrence (default 0)
  --presence-penalty P    subtracted once from a windowed token's logit (default 0)
  --process-proposals     apply the penalties to each proposer's own distribution too, so that
                          it does not propose what the penalised target rejects (default off;
                          sampling_settings::process_proposals)
  --details               two more columns: invocations (speculator decisions) and tokens per
                          invocation
  --repeating-prompt N    extend each prompt by the ensemble's own greedy continuation of N
                          tokens: greedy decoding of these networks settles into a cycle, so
                          the text goes on repeating what the prompt holds, as a summary or an
                          edit repeats its source (default 0: random prompts only)
  --seed S                seed of the weights and prompts (default 1)
  --draft-layers K        layers of the early-exit draft (default 2)
  --block-scale B         seed-built weights: what each block adds to the residual stream (default 0.1)
  --quick                 an 8M-parameter seed-built network instead (for tests)
  --checkpoint FILE       a llama2.c checkpoint for the large model
  --draft-checkpoint FILE a llama2.c checkpoint for the small model (default: early exit of the large)
  --tokenizer FILE        llama2.c tokenizer.bin: encode --prompt and print the text
  --prompt TEXT           the prompt when a tokenizer is given (default "Once upon a time")
  --save-checkpoints P    write the two models as llama2.c checkpoints P-large.bin and P-small.bin
                          (an early-exit draft as a network of its first layers) and stop: what
                          llama.cpp's llama-convert-llama2c-to-ggml turns into GGUF
                          (docs/benchmarks.md, "cospec on llama.cpp")
)";

demo_options parse(int argc, char** argv) {
  demo_options options;
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
    if (flag == "--process-proposals") {
      options.process_proposals = true;
      continue;
    }
    if (flag == "--details") {
      options.details = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n%s", flag.c_str(), usage);
      std::exit(2);
    }
    const std::string value = argv[++i];
    try {
      if (flag == "--tokens") options.tokens = std::stoul(value);
      else if (flag == "--prompts") options.prompts = std::stoul(value);
      else if (flag == "--repeating-prompt") options.repeating = std::stoul(value);
      else if (flag == "--threads") options.threads = std::stoul(value);
      else if (flag == "--gamma") {
        options.gammas.clear();
        std::size_t start = 0;
        while (start <= value.size()) {
          const std::size_t comma = std::min(value.find(',', start), value.size());
          options.gammas.push_back(std::stoul(value.substr(start, comma - start)));
          start = comma + 1;
        }
      }
      else if (flag == "--temperature") options.temperature = std::stof(value);
      else if (flag == "--small-weight") options.small_weight = std::stof(value);
      else if (flag == "--p-min") options.p_min = std::stof(value);
      else if (flag == "--repeat-penalty") options.penalties.repeat = std::stof(value);
      else if (flag == "--penalty-last-n") options.penalties.last_n = std::stoll(value);
      else if (flag == "--frequency-penalty") options.penalties.frequency = std::stof(value);
      else if (flag == "--presence-penalty") options.penalties.presence = std::stof(value);
      else if (flag == "--seed") options.models.seed = std::stoull(value);
      else if (flag == "--draft-layers") options.models.draft_layers = std::stoul(value);
      else if (flag == "--block-scale") options.models.block_scale = std::stof(value);
      else if (flag == "--checkpoint") options.models.checkpoint = value;
      else if (flag == "--draft-checkpoint") options.models.draft_checkpoint = value;
      else if (flag == "--tokenizer") options.tokenizer = value;
      else if (flag == "--prompt") options.prompt = value;
      else if (flag == "--save-checkpoints") options.save_prefix = value;
      else {
        std::fprintf(stderr, "unknown option %s\n%s", flag.c_str(), usage);
        std::exit(2);
      }
    } catch (const std::logic_error&) {  // std::stoul and friends: not a number
      std::fprintf(stderr, "%s: not a valid value: '%s'\n", flag.c_str(), value.c_str());
      std::exit(2);
    }
  }
  if (options.tokens == 0 || options.prompts == 0 || options.threads == 0) {
    std::fprintf(stderr, "--tokens, --prompts and --threads must be at least 1\n");
    std::exit(2);
  }
  if (!(options.p_min >= 0.0f && options.p_min <= 1.0f)) {
    std::fprintf(stderr, "--p-min must be in [0, 1]\n");
    std::exit(2);
  }
  try {
    cospec::validate(options.penalties);
  } catch (const cospec::invalid_configuration& error) {
    std::fprintf(stderr, "%s\n", error.what());
    std::exit(2);
  }
  for (const std::size_t gamma : options.gammas)
    if (gamma == 0) {
      std::fprintf(stderr, "--gamma: proposal lengths must be at least 1\n");
      std::exit(2);
    }
  return options;
}

struct method_result {
  std::string name;
  std::vector<std::vector<token_id>> outputs;
  std::size_t tokens = 0;
  double seconds = 0.0;
  std::size_t small_passes = 0, large_passes = 0;
  std::size_t invocations = 0;
  std::size_t proposed[2] = {0, 0};
  std::size_t accepted[2] = {0, 0};
};

/// One prompt decoded with `speculator`, added to `result`. Fresh models every time: each
/// method starts from an empty KV cache.
template <class Speculator>
void run_method(method_result& result, Speculator speculator, const model_pair& pair,
                const std::shared_ptr<thread_team>& team, const demo_options& options,
                const std::vector<token_id>& prompt) {
  transformer small(pair.small, team, {.layers = pair.small_layers, .context_limit = 0});
  transformer large(pair.large, team, {.layers = 0, .context_limit = 0});
  cospec::sampling_settings sampling;
  sampling.temperature = options.temperature;
  sampling.seed = options.models.seed;
  sampling.penalties = options.penalties;
  sampling.process_proposals = options.process_proposals;
  cospec::decoder decoder(std::vector<transformer*>{&small, &large},
                          cospec::weighted_ensemble({options.small_weight, 1.0f - options.small_weight}),
                          std::move(speculator), sampling);
  cospec::generation_limits limits;
  limits.max_new_tokens = options.tokens;
  const auto started = std::chrono::steady_clock::now();
  const auto generated = decoder.generate(prompt, limits);
  result.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  result.tokens += generated.tokens.size();
  result.outputs.push_back(generated.tokens);
  const auto& stats = generated.statistics;
  result.small_passes += stats.models[0].forward_passes;
  result.large_passes += stats.models[1].forward_passes;
  result.invocations += stats.invocations;
  for (std::size_t k = 0; k < 2; ++k) {
    result.proposed[k] += stats.proposers[k].proposed;
    result.accepted[k] += stats.proposers[k].accepted;
  }
}

std::string acceptance(const method_result& r, std::size_t k) {
  if (r.proposed[k] == 0) return "   -";
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", static_cast<double>(r.accepted[k]) / static_cast<double>(r.proposed[k]));
  return text;
}

}  // namespace

int main(int argc, char** argv) try {
  const demo_options options = parse(argc, argv);
  const auto team = std::make_shared<thread_team>(options.threads);
  const auto building = std::chrono::steady_clock::now();
  const model_pair pair = load_models(options.models);
  const transformer_config& large = pair.large->config;
  if (pair.small->config.vocab_size != large.vocab_size) {
    std::fprintf(stderr, "the two checkpoints have different vocabularies (%zu and %zu)\n", pair.small->config.vocab_size,
                 large.vocab_size);
    return 2;
  }
  print_models(pair, options.models, *team, building);
  if (!options.save_prefix.empty()) {
    transformer_weights small = *pair.small;
    small.layers.resize(pair.small_layers);
    small.config.n_layers = pair.small_layers;
    save_checkpoint(*pair.large, options.save_prefix + "-large.bin");
    save_checkpoint(small, options.save_prefix + "-small.bin");
    std::printf("wrote %s-large.bin and %s-small.bin\n", options.save_prefix.c_str(), options.save_prefix.c_str());
    return 0;
  }

  std::optional<tokenizer> text_tokenizer;
  std::vector<std::vector<token_id>> prompts;
  if (!options.tokenizer.empty()) {
    text_tokenizer = tokenizer::load(options.tokenizer, large.vocab_size);
    const auto encoded = text_tokenizer->encode(options.prompt, true, false);
    for (std::size_t p = 0; p < options.prompts; ++p) prompts.push_back(encoded);
  } else {
    prompts = random_prompts(options.prompts, large.vocab_size, options.models.seed);
  }
  if (options.repeating > 0)
    for (auto& prompt : prompts) {
      transformer small(pair.small, team, {.layers = pair.small_layers, .context_limit = 0});
      transformer large_model(pair.large, team, {.layers = 0, .context_limit = 0});
      cospec::sampling_settings greedy;
      greedy.temperature = 0.0f;
      cospec::decoder decoder(std::vector<transformer*>{&small, &large_model},
                              cospec::weighted_ensemble({options.small_weight, 1.0f - options.small_weight}),
                              cospec::standard{}, greedy);
      cospec::generation_limits limits;
      limits.max_new_tokens = options.repeating;
      const auto continuation = decoder.generate(prompt, limits).tokens;
      prompt.insert(prompt.end(), continuation.begin(), continuation.end());
    }
  std::printf("weighted ensemble %.2f small + %.2f large, %s, %zu prompts x %zu tokens\n", options.small_weight,
              1.0f - options.small_weight, options.temperature == 0.0f ? "greedy" : "sampling", prompts.size(),
              options.tokens);
  if (options.repeating > 0)
    std::printf("each prompt extended by the ensemble's greedy continuation of %zu tokens (text that repeats)\n",
                options.repeating);
  std::printf("\n");
  if (options.p_min > 0.0f)
    std::printf("CoS and adaptive: a proposer's run ends after a token it gave a probability below p_min = %.2f\n\n",
                static_cast<double>(options.p_min));
  if (options.penalties.active() || options.process_proposals)
    std::printf("penalties (every method): repeat %.2f, frequency %.2f, presence %.2f over the last %lld tokens;\n"
                "proposers' own distributions penalised too (process_proposals): %s\n\n",
                static_cast<double>(options.penalties.repeat), static_cast<double>(options.penalties.frequency),
                static_cast<double>(options.penalties.presence), static_cast<long long>(options.penalties.last_n),
                options.process_proposals ? "yes" : "no");

  // The methods take turns on each prompt, so that a slow spell of the (shared, noisy)
  // machine does not fall on one method only.
  // Mixture sampling applies where the target is the mixture itself: sampling, no penalties.
  const bool mixture = options.temperature > 0.0f && !options.penalties.active();
  const std::size_t adaptive_row = 2 + 2 * options.gammas.size();
  std::vector<method_result> results(adaptive_row + 3 + (mixture ? 2 : 0));
  results.front().name = "standard";
  results[1].name = "standard+ctx";
  for (std::size_t g = 0; g < options.gammas.size(); ++g) {
    results[2 + g].name = "SD g=" + std::to_string(options.gammas[g]);
    results[2 + options.gammas.size() + g].name = "CoS g=" + std::to_string(options.gammas[g]);
  }
  results[adaptive_row].name = "adaptive";
  results[adaptive_row + 1].name = "adaptive+ctx";
  const std::size_t mixture_row = adaptive_row + 2;
  if (mixture) {
    results[mixture_row].name = "mixture";
    results[mixture_row + 1].name = "mixture+spec";
  }
  results.back().name = "auto";
  for (const auto& prompt : prompts) {
    run_method(results.front(), cospec::standard{}, pair, team, options, prompt);
    // Standard decoding with up to 8 free proposals from the context (prompt lookup decoding).
    run_method(results[1], cospec::with_context_proposals(cospec::standard{}, 8), pair, team, options, prompt);
    for (std::size_t g = 0; g < options.gammas.size(); ++g) {
      run_method(results[2 + g], cospec::fixed_proposer(0, options.gammas[g]), pair, team, options, prompt);
      run_method(results[2 + options.gammas.size() + g], cospec::alternating({options.gammas[g], 1}, {}, options.p_min),
                 pair, team, options, prompt);
    }
    // Planned with the measured pass costs (wall clock is what this program compares; the
    // price, tokens that may differ between runs when sampling, does not matter to it).
    cospec::adaptive_options measured;
    measured.measure_pass_costs = true;
    measured.p_min = options.p_min;
    run_method(results[adaptive_row], cospec::adaptive(2, measured), pair, team, options, prompt);
    // The same with up to 8 proposals copied from the context per invocation.
    run_method(results[adaptive_row + 1], cospec::with_context_proposals(cospec::adaptive(2, measured), 8), pair, team,
               options, prompt);
    if (mixture) {
      run_method(results[mixture_row], cospec::mixture_sampling(2), pair, team, options, prompt);
      // The draft proposes runs where the large model was drawn, priced from measured passes.
      cospec::mixture_options speculative;
      speculative.max_gamma = 6;
      speculative.fallback = measured;
      run_method(results[mixture_row + 1], cospec::mixture_sampling(2, speculative), pair, team, options, prompt);
    }
    // The automatic choice, planning with measured costs like the adaptive row.
    cospec::automatic_options automatic;
    automatic.measure_pass_costs = true;
    run_method(results.back(), cospec::automatic(2, automatic), pair, team, options, prompt);
  }

  const method_result& reference = results.front();
  const double reference_rate = static_cast<double>(reference.tokens) / reference.seconds;
  std::printf("%-12s %9s %8s %12s %12s %12s %12s", "method", "tokens/s", "speedup", "small passes", "large passes",
              "small accept", "large accept");
  if (options.details) std::printf(" %11s %8s", "invocations", "tok/inv");
  std::printf("\n");
  bool identical = true;
  for (const method_result& r : results) {
    const double rate = static_cast<double>(r.tokens) / r.seconds;
    std::printf("%-12s %9.2f %7.2fx %12zu %12zu %12s %12s", r.name.c_str(), rate, rate / reference_rate,
                r.small_passes, r.large_passes, acceptance(r, 0).c_str(), acceptance(r, 1).c_str());
    if (options.details)
      std::printf(" %11zu %8.2f", r.invocations, static_cast<double>(r.tokens) / static_cast<double>(r.invocations));
    std::printf("\n");
    if (options.temperature == 0.0f && r.outputs != reference.outputs) {
      std::printf("  MISMATCH: %s's greedy output differs from standard decoding's\n", r.name.c_str());
      identical = false;
    }
  }
  if (options.temperature == 0.0f && identical)
    std::printf("\ngreedy outputs of every method are token-identical to standard decoding's\n");
  if (text_tokenizer) {
    std::printf("\n%s", options.prompt.c_str());
    token_id previous = reference.outputs.front().empty() ? 1 : prompts.front().back();
    for (const token_id token : reference.outputs.front()) {
      std::printf("%s", text_tokenizer->decode(previous, token).c_str());
      previous = token;
    }
    std::printf("\n");
  }
  return identical ? 0 : 1;
} catch (const std::exception& error) {
  std::fprintf(stderr, "cospec-transformer: %s\n", error.what());
  return 2;
}

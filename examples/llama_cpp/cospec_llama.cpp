// cospec on llama.cpp (docs/adapters.md, "llama.cpp"): a weighted ensemble of two GGUF models
// (a target and a draft sharing its vocabulary) decoded by standard collaborative decoding, SD
// (the draft proposes), CoS, the adaptive policy and, when sampling (T > 0), mixture sampling
// (only the model drawn for a token runs) and its speculative form, through the shipped
// adapters of include/cospec/adapters/llama_cpp.hpp. Prints wall-clock tokens/s and the speedup
// over standard decoding, acceptance, and the library's own time per token; with greedy
// decoding it exits non-zero unless every method gives the same tokens. --requests S > 1
// serves S requests at once through one batch decoder (one context per model with S sequences
// in one unified KV cache, as configure_context_params sets it). Flash attention, the KV type
// and everything else are llama.cpp's defaults, as llama-speculative has them. Built only where
// CMake found llama.cpp.
#include <algorithm>   // std::sort
#include <chrono>      // std::chrono::steady_clock
#include <cstddef>     // std::size_t
#include <cstdint>     // std::uint32_t, std::int32_t
#include <cstdio>      // std::printf, std::fprintf, std::snprintf
#include <cstdlib>     // std::exit
#include <exception>   // std::exception, std::rethrow_exception
#include <functional>  // std::function
#include <map>         // std::map
#include <memory>      // std::unique_ptr
#include <random>      // std::mt19937_64
#include <stdexcept>   // std::logic_error, std::runtime_error
#include <string>      // std::string, std::stoul, std::stof
#include <utility>     // std::move
#include <vector>      // std::vector

#include <llama.h>

#include <cospec/adapters/llama_cpp.hpp>
#include <cospec/cospec.hpp>

namespace {

using cospec::token_id;

const char* const usage = R"(usage: cospec-llama --model TARGET.gguf --draft DRAFT.gguf [options]
  --prompts N        prompts of 8 random tokens, decoded by every method in turn (default 4)
  --tokens N         tokens generated per prompt (default 64)
  --gamma G          the draft's proposal length for SD and CoS (default 2)
  --temperature T    0 is greedy and checks token identity (default 0); T > 0 adds mixture
                     sampling, plain (mixture) and speculative (mixture+spec); every run but
                     --target-only also has the automatic choice (auto)
  --small-weight W   the draft's weight in the ensemble; the target has 1 - W (default 0.5)
  --threads N        n_threads and n_threads_batch of both contexts (default 2)
  --requests S       concurrent requests through one batch decoder (default 1: one decoder)
  --context N        cells per request: each context has n_ctx = N x S, one cache shared by its
                     S sequences (default 1024; llama.cpp rounds n_ctx up, to a multiple of 256
                     from late 2025)
  --prompt TEXT      one prompt, tokenized by the target's vocabulary as llama.cpp's examples do
                     (BOS added); generation stops at its end-of-sequence token
  --target-only      the draft's weight 0: speculative decoding towards the target alone, the work
                     of llama.cpp's llama-speculative (docs/benchmarks.md, "cospec on llama.cpp")
  --print-text       print standard decoding's output for the first prompt as text
)";

struct options {
  std::string model, draft, prompt;
  bool target_only = false, print_text = false;
  std::size_t prompts = 4, tokens = 64, gamma = 2, threads = 2, requests = 1, context = 1024;
  float temperature = 0.0f, small_weight = 0.5f;
};

options parse(int argc, char** argv) {
  options o;
  const std::map<std::string, std::function<void(const std::string&)>> setters{
      {"--model", [&](const std::string& v) { o.model = v; }},
      {"--draft", [&](const std::string& v) { o.draft = v; }},
      {"--prompts", [&](const std::string& v) { o.prompts = std::stoul(v); }},
      {"--tokens", [&](const std::string& v) { o.tokens = std::stoul(v); }},
      {"--gamma", [&](const std::string& v) { o.gamma = std::stoul(v); }},
      {"--temperature", [&](const std::string& v) { o.temperature = std::stof(v); }},
      {"--small-weight", [&](const std::string& v) { o.small_weight = std::stof(v); }},
      {"--threads", [&](const std::string& v) { o.threads = std::stoul(v); }},
      {"--requests", [&](const std::string& v) { o.requests = std::stoul(v); }},
      {"--context", [&](const std::string& v) { o.context = std::stoul(v); }},
      {"--prompt", [&](const std::string& v) { o.prompt = v; }},
  };
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--target-only" || std::string(argv[i]) == "--print-text") {
      (std::string(argv[i]) == "--target-only" ? o.target_only : o.print_text) = true;
      continue;
    }
    const auto setter = setters.find(argv[i]);
    if (setter == setters.end() || i + 1 >= argc) {
      std::fprintf(stderr, "%s: unknown option or missing value\n%s", argv[i], usage);
      std::exit(2);
    }
    try {
      setter->second(argv[++i]);
    } catch (const std::logic_error&) {
      std::fprintf(stderr, "%s: not a valid value: '%s'\n", argv[i - 1], argv[i]);
      std::exit(2);
    }
  }
  if (o.model.empty() || o.draft.empty() || o.prompts == 0 || o.tokens == 0 || o.gamma == 0 || o.requests == 0) {
    std::fprintf(stderr, "%s", usage);
    std::exit(2);
  }
  return o;
}

struct model_deleter {
  void operator()(llama_model* m) const { llama_model_free(m); }
};
struct context_deleter {
  void operator()(llama_context* c) const { llama_free(c); }
};

std::unique_ptr<llama_model, model_deleter> load(const std::string& path) {
  llama_model_params params = llama_model_default_params();
  params.n_gpu_layers = 0;
  std::unique_ptr<llama_model, model_deleter> model(llama_model_load_from_file(path.c_str(), params));
  if (!model) throw std::runtime_error("cannot load " + path);
  return model;
}

std::unique_ptr<llama_context, context_deleter> context_for(llama_model* model, const options& o) {
  llama_context_params params = llama_context_default_params();
  params.n_ctx = static_cast<std::uint32_t>(o.context * o.requests);
  params.n_batch = 512;
  // n_seq_max = S, and one unified cache: without it llama.cpp (late 2025 on) runs a pass whose
  // requests feed different token counts as several, and speculation loses its gain.
  cospec::llama_cpp::configure_context_params(params, {.sequences = o.requests});
  // Both counts: the defaults (4 threads) oversubscribe a 2-core machine by 1.6x.
  params.n_threads = params.n_threads_batch = static_cast<std::int32_t>(o.threads);
  params.no_perf = true;
  std::unique_ptr<llama_context, context_deleter> context(llama_init_from_model(model, params));
  if (!context) throw std::runtime_error("cannot create a llama_context");
  return context;
}

struct method_run {
  std::string name;
  std::vector<std::vector<token_id>> outputs;
  std::size_t tokens = 0;
  double seconds = 0.0, library_seconds = 0.0;
  std::size_t proposed[2] = {0, 0}, accepted[2] = {0, 0};
  void add(const cospec::generation_result& r) {
    outputs.push_back(r.tokens);
    tokens += r.tokens.size();
    for (std::size_t k = 0; k < 2; ++k) {
      proposed[k] += r.statistics.proposers[k].proposed;
      accepted[k] += r.statistics.proposers[k].accepted;
    }
  }
};

template <class Speculator>
void run_method(method_run& run, Speculator speculator, llama_model* small_model, llama_model* large_model,
                const options& o, const std::vector<std::vector<token_id>>& prompts) {
  auto small_context = context_for(small_model, o);
  auto large_context = context_for(large_model, o);
  cospec::sampling_settings settings;
  settings.temperature = o.temperature;
  const float small_weight = o.target_only ? 0.0f : o.small_weight;
  const cospec::weighted_ensemble ensemble({small_weight, 1.0f - small_weight});
  cospec::generation_limits limits;
  limits.max_new_tokens = o.tokens;
  if (!o.prompt.empty()) limits.stop_tokens.push_back(llama_vocab_eos(llama_model_get_vocab(large_model)));
  const auto started = std::chrono::steady_clock::now();
  if (o.requests == 1) {
    cospec::llama_cpp::sequence_adapter small(small_context.get()), large(large_context.get());
    cospec::decoder decoder(std::vector<cospec::llama_cpp::sequence_adapter*>{&small, &large}, ensemble,
                            std::move(speculator), settings);
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      limits.seed = p;
      const auto result = decoder.generate(prompts[p], limits);
      run.library_seconds += result.statistics.seconds_in_cospec();
      run.add(result);
    }
  } else {
    cospec::llama_cpp::batched_adapter small(small_context.get(), o.requests), large(large_context.get(), o.requests);
    cospec::batch_decoder decoder(std::vector<cospec::llama_cpp::batched_adapter*>{&small, &large}, ensemble,
                                  std::move(speculator), settings);
    std::vector<cospec::request_id> ids;
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      limits.seed = p;
      ids.push_back(decoder.submit(prompts[p], limits));
    }
    auto done = decoder.run();
    std::sort(done.begin(), done.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    for (const auto& d : done) {
      if (d.failed()) std::rethrow_exception(d.error);
      run.add(d.result);
    }
    run.library_seconds = -1.0;  // requests overlap: no per-request library time to add up
  }
  run.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse(argc, argv);
  llama_backend_init();
  llama_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
  auto large = load(o.model);
  auto small = load(o.draft);
  const auto vocabulary = static_cast<std::size_t>(llama_vocab_n_tokens(llama_model_get_vocab(large.get())));
  const llama_vocab* vocab = llama_model_get_vocab(large.get());
  std::vector<std::vector<token_id>> prompts(o.prompts, std::vector<token_id>(8));
  if (!o.prompt.empty()) {
    std::vector<llama_token> tokens(o.prompt.size() + 8);
    const std::int32_t n = llama_tokenize(vocab, o.prompt.c_str(), static_cast<std::int32_t>(o.prompt.size()),
                                          tokens.data(), static_cast<std::int32_t>(tokens.size()), true, true);
    if (n <= 0) throw std::runtime_error("cannot tokenize the prompt");
    for (auto& prompt : prompts) prompt.assign(tokens.begin(), tokens.begin() + n);
  } else {
    std::mt19937_64 random(1);
    for (auto& prompt : prompts)
      for (token_id& t : prompt) t = static_cast<token_id>(random() % vocabulary);
  }
  const double small_weight = o.target_only ? 0.0 : static_cast<double>(o.small_weight);
  std::printf("%s + draft %s, weighted ensemble %.2f/%.2f, %s, %zu prompts x %zu tokens, %zu threads, %zu %s\n\n",
              o.model.c_str(), o.draft.c_str(), 1.0 - small_weight, small_weight, o.temperature == 0.0f ? "greedy" : "sampling", o.prompts, o.tokens,
              o.threads, o.requests, o.requests == 1 ? "request at a time" : "concurrent requests (batch decoder)");
  // Mixture sampling applies where the target is the mixture itself: sampling (this program
  // has no penalties). Towards the target alone only SD is the peer's work: CoS, adaptive and
  // mixture sampling would let the draft, whose weight is 0, verify nothing and propose in vain.
  const bool mixture = o.temperature > 0.0f && !o.target_only;
  std::vector<method_run> runs(o.target_only ? 2 : mixture ? 7 : 5);
  runs[0].name = "standard";
  runs[1].name = "SD g=" + std::to_string(o.gamma);
  run_method(runs[0], cospec::standard{}, small.get(), large.get(), o, prompts);
  run_method(runs[1], cospec::fixed_proposer(0, o.gamma), small.get(), large.get(), o, prompts);
  cospec::adaptive_options measured;
  measured.measure_pass_costs = true;
  if (!o.target_only) {
    runs[2].name = "CoS g=" + std::to_string(o.gamma);
    runs[3].name = "adaptive";
    run_method(runs[2], cospec::alternating({o.gamma, 1}), small.get(), large.get(), o, prompts);
    run_method(runs[3], cospec::adaptive(2, measured), small.get(), large.get(), o, prompts);
  }
  if (mixture) {
    runs[4].name = "mixture";
    runs[5].name = "mixture+spec";
    run_method(runs[4], cospec::mixture_sampling(2), small.get(), large.get(), o, prompts);
    // The draft proposes runs where the target was drawn, priced from measured passes.
    cospec::mixture_options speculative;
    speculative.max_gamma = 6;
    speculative.fallback = measured;
    run_method(runs[5], cospec::mixture_sampling(2, speculative), small.get(), large.get(), o, prompts);
  }
  if (!o.target_only) {
    // The automatic choice (cospec's default), planning with measured costs like adaptive.
    cospec::automatic_options automatic;
    automatic.measure_pass_costs = true;
    runs.back().name = "auto";
    run_method(runs.back(), cospec::automatic(2, automatic), small.get(), large.get(), o, prompts);
  }

  const double reference = static_cast<double>(runs[0].tokens) / runs[0].seconds;
  std::printf("%-12s %9s %8s %12s %12s %16s\n", "method", "tokens/s", "speedup", "draft accept", "target accept",
              "library ms/token");
  bool identical = true;
  for (const method_run& r : runs) {
    const double rate = static_cast<double>(r.tokens) / r.seconds;
    // "-" where the model proposed nothing (standard decoding, plain mixture sampling).
    const auto acceptance = [&](std::size_t k) {
      if (r.proposed[k] == 0) return std::string("-");
      char text[32];
      std::snprintf(text, sizeof text, "%.2f", static_cast<double>(r.accepted[k]) / static_cast<double>(r.proposed[k]));
      return std::string(text);
    };
    std::printf("%-12s %9.2f %7.2fx %12s %12s", r.name.c_str(), rate, rate / reference, acceptance(0).c_str(),
                acceptance(1).c_str());
    if (r.library_seconds >= 0.0) std::printf(" %16.3f\n", 1e3 * r.library_seconds / static_cast<double>(r.tokens));
    else std::printf(" %16s\n", "-");
    if (o.temperature == 0.0f && r.outputs != runs[0].outputs) {
      std::printf("  MISMATCH: %s's greedy output differs from standard decoding's\n", r.name.c_str());
      identical = false;
    }
  }
  if (o.temperature == 0.0f && identical)
    std::printf("\ngreedy outputs of every method are token-identical to standard decoding's\n");
  if (o.print_text) {
    std::string text;
    char piece[256];
    for (const token_id t : runs[0].outputs.front()) {
      const std::int32_t n = llama_token_to_piece(vocab, t, piece, sizeof piece, 0, true);
      if (n > 0) text.append(piece, static_cast<std::size_t>(n));
    }
    std::printf("\nstandard decoding's text for prompt 0 (%zu tokens):\n%s\n", runs[0].outputs.front().size(),
                text.c_str());
  }
  return identical ? 0 : 1;
} catch (const std::exception& error) {
  std::fprintf(stderr, "cospec-llama: %s\n", error.what());
  return 2;
}

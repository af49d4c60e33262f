// The llama.cpp backend (include/cospec/adapters/llama_cpp.hpp) against the real engine: a
// checkpoint written by the transformer example, converted to GGUF by llama.cpp's own
// llama-convert-llama2c-to-ggml, gives the Eigen transformer's logits; greedy decoding is
// token-identical across standard, SD, CoS and adaptive; chunked feeds equal unchunked ones;
// rollback re-feeds exactly; an aborted decode and a full context are clean errors after
// which the decoder is exact; a KV cache that fills up mid-feed is a context_overflow that
// leaves the sequence as it was; the batched adapter serves a batch decoder, reports a
// sequence's own limit where llama.cpp splits the cache per sequence, and, with the settings of
// configure_context_params, has llama.cpp compute a pass of uneven feeds at once. Built only
// where CMake found llama.cpp (ctest label "llama"), and run on every llama.cpp version the
// header names; each test passes with a warning when the converter or
// ../shared/models/tokenizer.bin is missing. Each test process converts the models into a
// folder of its own: ctest runs the tests as processes in parallel, and a file rewritten while
// another process has it memory-mapped kills that process with a bus error.
#include <catch2/catch.hpp>

#include <cospec/adapters/llama_cpp.hpp>
#include <cospec/cospec.hpp>

#include <algorithm>   // std::max
#include <cmath>       // std::abs
#include <cstddef>     // std::size_t, std::ptrdiff_t
#include <cstdint>     // std::uint64_t
#include <cstdlib>     // std::system
#include <exception>   // std::rethrow_exception
#include <filesystem>  // std::filesystem
#include <memory>      // std::unique_ptr, std::make_shared
#include <optional>    // std::optional
#include <random>      // std::random_device
#include <span>        // std::span
#include <string>      // std::string, std::to_string
#include <string_view> // std::string_view
#include <system_error> // std::error_code
#include <vector>      // std::vector

#include "transformer/checkpoint.hpp"
#include "transformer/seeded_weights.hpp"
#include "transformer/transformer.hpp"

#ifdef COSPEC_LLAMA_SERVER_BINARY
// After Eigen (the transformer's): httplib.h pulls in <resolv.h>, whose `_res` macro breaks it.
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "server/server_process.hpp"
#endif

namespace {

using cospec::token_id;
namespace fs = std::filesystem;
namespace llama = cospec::examples::llama;

struct model_deleter {
  void operator()(llama_model* m) const { llama_model_free(m); }
};
struct context_deleter {
  void operator()(llama_context* c) const { llama_free(c); }
};
using model_handle = std::unique_ptr<llama_model, model_deleter>;
using context_handle = std::unique_ptr<llama_context, context_deleter>;

llama::transformer_config test_config() {
  llama::transformer_config config;
  config.dim = 64;
  config.hidden_dim = 172;
  config.n_layers = 4;
  config.n_heads = 4;
  config.n_kv_heads = 4;
  config.vocab_size = 32000;  // the converter copies tokenizer.bin's 32000-token vocabulary
  config.seq_len = 256;
  config.shared_classifier = false;
  return config;
}

/// A folder of this process's own under the temporary directory, removed when the process
/// ends: create_directory succeeds for one caller only, so no two processes (tests of one
/// build tree or of two) ever write or map the same files.
class private_folder {
 public:
  private_folder() {
    std::random_device entropy;
    for (;;) {
      const std::uint64_t name = (std::uint64_t{entropy()} << 32) ^ entropy();
      path_ = fs::temp_directory_path() / ("cospec-llama-cpp-test-" + std::to_string(name));
      if (fs::create_directory(path_)) return;
    }
  }
  ~private_folder() {
    std::error_code ignored;  // a folder left behind is no reason to fail a test run
    fs::remove_all(path_, ignored);
  }
  private_folder(const private_folder&) = delete;
  private_folder& operator=(const private_folder&) = delete;
  [[nodiscard]] const fs::path& path() const noexcept { return path_; }

 private:
  fs::path path_;
};

/// A seed-built network and its 2-layer early exit, as llama2.c checkpoints and as GGUF
/// files converted by llama.cpp, built once per process for all of its tests.
struct converted_models {
  std::shared_ptr<const llama::transformer_weights> large, small;
  fs::path large_gguf, small_gguf;
  std::string missing;  // why the files could not be made, or empty
};

const converted_models& models() {
  static const converted_models result = [] {
    converted_models m;
    const fs::path tools = COSPEC_LLAMA_CPP_TOOLS;
    const fs::path converter = tools / "llama-convert-llama2c-to-ggml";
    const fs::path tokenizer = fs::path(COSPEC_SHARED_MODELS_DIR) / "tokenizer.bin";
    if (!fs::exists(converter)) {
      m.missing = "no " + converter.string();
      return m;
    }
    if (!fs::exists(tokenizer)) {
      m.missing = "no " + tokenizer.string() + " (the shared models folder)";
      return m;
    }
    llama::seeded_weights_options seeded;
    seeded.seed = 3;
    auto large = llama::seeded_weights(test_config(), seeded);
    auto small = large;
    small.layers.resize(2);
    small.config.n_layers = 2;
    m.large = std::make_shared<const llama::transformer_weights>(large);
    m.small = std::make_shared<const llama::transformer_weights>(small);
    static const private_folder own;
    const fs::path& folder = own.path();
    for (const auto& [weights, name] : {std::pair{m.large, "large"}, std::pair{m.small, "small"}}) {
      const fs::path checkpoint = folder / (std::string(name) + ".bin");
      const fs::path gguf = folder / (std::string(name) + ".gguf");
      llama::save_checkpoint(*weights, checkpoint);
      const std::string command = "\"" + converter.string() + "\" --copy-vocab-from-model \"" + tokenizer.string() +
                                  "\" --llama2c-model \"" + checkpoint.string() + "\" --llama2c-output-model \"" +
                                  gguf.string() + "\" > \"" + (folder / (std::string(name) + ".log")).string() +
                                  "\" 2>&1";
      if (std::system(command.c_str()) != 0 || !fs::exists(gguf)) {
        m.missing = "the conversion failed: " + command;
        return m;
      }
      (std::string(name) == "large" ? m.large_gguf : m.small_gguf) = gguf;
    }
    return m;
  }();
  return result;
}

#define COSPEC_REQUIRE_MODELS()                                                        \
  if (!models().missing.empty()) {                                                     \
    WARN("skipped: " << models().missing);                                             \
    return;                                                                            \
  }

model_handle load(const fs::path& gguf) {
  static const bool initialised = [] {
    llama_backend_init();
    llama_log_set([](ggml_log_level, const char*, void*) {}, nullptr);  // quiet
    return true;
  }();
  (void)initialised;
  llama_model_params params = llama_model_default_params();
  params.n_gpu_layers = 0;
  model_handle model(llama_model_load_from_file(gguf.string().c_str(), params));
  REQUIRE(model != nullptr);
  return model;
}

struct context_shape {
  unsigned n_ctx = 256;  // llama.cpp rounds n_ctx up to a multiple of 256 (late 2025 on)
  unsigned n_batch = 32;
  unsigned n_seq_max = 1;
  bool fp32_attention = true;  // false: llama.cpp's default (f16) KV cache, as cospec-server runs it
};

/// llama.cpp's defaults with the shape, two threads and configure_context_params, with fp32
/// attention: the tests compare logits with the Eigen transformer's fp32 ones.
llama_context_params context_params(context_shape shape) {
  llama_context_params params = llama_context_default_params();
  params.n_ctx = shape.n_ctx;
  params.n_batch = shape.n_batch;
  params.n_ubatch = shape.n_batch;
  params.n_threads = 2;
  params.n_threads_batch = 2;
  params.no_perf = true;
  cospec::llama_cpp::configure_context_params(params, {.sequences = shape.n_seq_max, .fp32_attention = shape.fp32_attention});
  return params;
}

context_handle context_from(llama_model* model, const llama_context_params& params) {
  context_handle context(llama_init_from_model(model, params));
  REQUIRE(context != nullptr);
  return context;
}

context_handle make_context(llama_model* model, context_shape shape) {
  return context_from(model, context_params(shape));
}

/// Gives each sequence a share of the cache of its own (kv_unified = false), where this
/// llama.cpp can; false where it has one unified cache only (before mid 2025).
template <class Params>
bool split_cache_per_sequence(Params& params) {
  if constexpr (requires { params.kv_unified; }) {
    params.kv_unified = false;
    return true;
  } else {
    return false;
  }
}

/// The last position sequence `sequence` holds in the KV cache, from llama.cpp itself rather
/// than from an adapter's counter; the newest API first, as the header's remove_cells. Not for
/// an empty sequence: early 2025 versions say 0 for it, as for one token.
template <class Context>
auto last_position(Context* context, llama_seq_id sequence, int)
    -> decltype(llama_memory_seq_pos_max(llama_get_memory(context), sequence)) {
  return llama_memory_seq_pos_max(llama_get_memory(context), sequence);
}
template <class Context>
auto last_position(Context* context, llama_seq_id sequence, long) -> decltype(llama_kv_self_seq_pos_max(context, sequence)) {
  return llama_kv_self_seq_pos_max(context, sequence);
}
template <class Context>
auto last_position(Context* context, llama_seq_id sequence, ...) -> decltype(llama_kv_cache_seq_pos_max(context, sequence)) {
  return llama_kv_cache_seq_pos_max(context, sequence);
}

/// Counts llama.cpp's graph computations: the abort callback is polled while a graph runs.
struct compute_counter {
  int polls = 0;
  void attach(llama_context* context) {
    llama_set_abort_callback(
        context,
        [](void* data) {
          ++static_cast<compute_counter*>(data)->polls;
          return false;
        },
        this);
  }
};

std::vector<token_id> prompt_of(std::size_t length, std::size_t salt = 0) {
  std::vector<token_id> prompt;
  for (std::size_t i = 0; i < length; ++i) prompt.push_back(static_cast<token_id>((i * 7919 + salt * 104729) % 32000));
  return prompt;
}

/// The logits after each of the last `rows` tokens of `tokens`, from one feed.
template <class Model>
std::vector<std::vector<float>> rows_after(Model& model, std::span<const token_id> tokens, std::size_t rows) {
  std::vector<std::vector<float>> storage(rows, std::vector<float>(model.vocabulary_size()));
  std::vector<std::span<float>> views(storage.begin(), storage.end());
  model.feed(tokens, views);
  return storage;
}

float largest_difference(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  float largest = 0.0f;
  for (std::size_t r = 0; r < a.size(); ++r)
    for (std::size_t j = 0; j < a[r].size(); ++j) largest = std::max(largest, std::abs(a[r][j] - b[r][j]));
  return largest;
}

}  // namespace

TEST_CASE("a converted checkpoint gives the Eigen transformer's logits in llama.cpp", "[llama_cpp]") {
  COSPEC_REQUIRE_MODELS();
  auto model = load(models().large_gguf);
  auto context = make_context(model.get(), {});
  cospec::llama_cpp::sequence_adapter engine(context.get());
  llama::transformer reference(models().large, std::make_shared<llama::thread_team>(1));
  REQUIRE(engine.vocabulary_size() == reference.vocabulary_size());
  const auto prompt = prompt_of(40);  // longer than n_batch = 32: two chunks
  const auto ours = rows_after(reference, prompt, 4);
  const auto theirs = rows_after(engine, prompt, 4);
  // Measured on this network: 2.9e-6 (fp32 throughout, different summation orders).
  CHECK(largest_difference(ours, theirs) < 1e-4f);
  CHECK(engine.context_length() == 40);
}

TEST_CASE("chunked feeds equal unchunked ones, and truncate then re-feed gives the same rows", "[llama_cpp]") {
  COSPEC_REQUIRE_MODELS();
  auto model = load(models().large_gguf);
  auto narrow = make_context(model.get(), {256, 8, 1});
  auto wide = make_context(model.get(), {256, 128, 1});
  cospec::llama_cpp::sequence_adapter chunked(narrow.get()), whole(wide.get());
  const auto prompt = prompt_of(50);
  const auto a = rows_after(chunked, prompt, 20);  // 7 chunks, rows across 3 of them
  const auto b = rows_after(whole, prompt, 20);
  // Not bit for bit: llama.cpp's products depend on the micro-batch (measured 3.8e-6).
  CHECK(largest_difference(a, b) < 1e-5f);
  // The same chunks again after a rollback: the same rows, bit for bit.
  chunked.truncate(45);
  const auto again = rows_after(chunked, std::span(prompt).subspan(45), 5);
  CHECK(largest_difference(again, std::vector<std::vector<float>>(a.end() - 5, a.end())) == 0.0f);
  CHECK(chunked.context_length() == 50);
}

namespace {

struct decoding_pair {
  model_handle small_model, large_model;
  context_handle small_context, large_context;
  std::optional<cospec::llama_cpp::sequence_adapter> small, large;
  explicit decoding_pair(context_shape shape = {}) {
    small_model = load(models().small_gguf);
    large_model = load(models().large_gguf);
    small_context = make_context(small_model.get(), shape);
    large_context = make_context(large_model.get(), shape);
    small.emplace(small_context.get());
    large.emplace(large_context.get());
  }
  std::vector<cospec::llama_cpp::sequence_adapter*> pointers() { return {&*small, &*large}; }
};

template <class Speculator>
std::vector<token_id> greedy(decoding_pair& pair, Speculator speculator, const std::vector<token_id>& prompt,
                             std::size_t tokens) {
  cospec::sampling_settings settings;
  settings.temperature = 0.0f;
  cospec::decoder decoder(pair.pointers(), cospec::weighted_ensemble({0.5f, 0.5f}), std::move(speculator), settings);
  cospec::generation_limits limits;
  limits.max_new_tokens = tokens;
  return decoder.generate(prompt, limits).tokens;
}

}  // namespace

TEST_CASE("token texts come from llama_token_to_piece: the output's text, stop strings and the vocabulary check",
          "[llama_cpp][text]") {
  COSPEC_REQUIRE_MODELS();
  decoding_pair pair;
  cospec::sampling_settings settings;
  settings.temperature = 0.0f;
  // Both models share the tokenizer, so the decoder's token-by-token check of the vocabularies passes.
  cospec::decoder decoder(pair.pointers(), cospec::weighted_ensemble({0.5f, 0.5f}), cospec::alternating({2, 1}), settings);
  cospec::generation_limits limits;
  limits.max_new_tokens = 24;
  const auto prompt = prompt_of(20, 3);
  const auto result = decoder.generate(prompt, limits);
  std::string expected;
  for (token_id t : result.tokens) expected.append(pair.small->token_text(t));
  CHECK(result.text == expected);
  REQUIRE(expected.size() > 12);
  // A stop string from the middle of the text, across token boundaries: the text ends before it.
  const std::string stop = expected.substr(expected.size() / 2, 6);
  limits.stop_strings = {stop};
  std::string streamed;
  limits.on_token = [&](const cospec::token_event& event) {
    streamed.append(event.text);
    return true;
  };
  const auto stopped = decoder.generate(prompt, limits);
  CHECK(stopped.reason == cospec::finish_reason::stop_string);
  CHECK(stopped.text == expected.substr(0, expected.find(stop)));
  CHECK(streamed == stopped.text);
}

TEST_CASE("greedy decoding on llama.cpp is token-identical across standard, SD, CoS and adaptive", "[llama_cpp][greedy]") {
  COSPEC_REQUIRE_MODELS();
  decoding_pair pair;
  for (std::size_t salt = 0; salt < 3; ++salt) {
    const auto prompt = prompt_of(36, salt);
    const auto expected = greedy(pair, cospec::standard{}, prompt, 40);
    REQUIRE(expected.size() == 40);
    CHECK(greedy(pair, cospec::fixed_proposer(0, 3), prompt, 40) == expected);
    CHECK(greedy(pair, cospec::alternating({2, 1}), prompt, 40) == expected);
    CHECK(greedy(pair, cospec::adaptive(2), prompt, 40) == expected);
  }
}

TEST_CASE("an aborted decode is a backend_failure, and the decoder is exact afterwards", "[llama_cpp][failure]") {
  COSPEC_REQUIRE_MODELS();
  decoding_pair pair;
  const auto prompt = prompt_of(20);
  const auto expected = greedy(pair, cospec::standard{}, prompt, 30);
  struct abort_after {
    int calls_left;
  } trigger{0};
  llama_set_abort_callback(
      pair.large_context.get(),
      [](void* data) {
        auto* t = static_cast<abort_after*>(data);
        return t->calls_left >= 0 && --t->calls_left < 0;
      },
      &trigger);
  cospec::sampling_settings settings;
  settings.temperature = 0.0f;
  cospec::decoder decoder(pair.pointers(), cospec::weighted_ensemble({0.5f, 0.5f}), cospec::alternating({2, 1}), settings);
  cospec::generation_limits limits;
  limits.max_new_tokens = 30;
  std::size_t aborted = 0;
  for (int at : {1, 3, 7, 20}) {
    trigger.calls_left = at;  // the abort callback is polled during graph computation
    try {
      (void)decoder.generate(prompt, limits);
    } catch (const cospec::backend_failure& e) {
      ++aborted;
      CHECK_THAT(e.what(), Catch::Matchers::Contains("aborted"));
    }
    trigger.calls_left = -1;
    CHECK(decoder.generate(prompt, limits).tokens == expected);
  }
  CHECK(aborted >= 1);
}

TEST_CASE("a full context ends the request with its tokens, a prompt that does not fit is a context_overflow, and "
          "the decoder is exact afterwards",
          "[llama_cpp][failure]") {
  COSPEC_REQUIRE_MODELS();
  decoding_pair pair({256, 32, 1});
  REQUIRE(pair.large->context_limit() == 256);
  const auto prompt = prompt_of(220);
  cospec::sampling_settings settings;
  settings.temperature = 0.0f;
  cospec::decoder decoder(pair.pointers(), cospec::weighted_ensemble({0.5f, 0.5f}), cospec::alternating({2, 1}), settings);
  cospec::generation_limits limits;
  limits.max_new_tokens = 60;
  // The models hold at most 256 tokens, which give the 257th: 37 tokens after 220.
  const auto ended = decoder.generate(prompt, limits);
  CHECK(ended.reason == cospec::finish_reason::context_limit);
  REQUIRE(ended.tokens.size() == 37);
  decoding_pair unlimited({512, 32, 1});
  const auto reference = greedy(unlimited, cospec::standard{}, prompt, 37);
  CHECK(ended.tokens == reference);
  CHECK_THROWS_AS(decoder.generate(prompt_of(257), limits), cospec::context_overflow);
  limits.max_new_tokens = 10;
  decoding_pair fresh({256, 32, 1});
  CHECK(decoder.generate(prompt, limits).tokens == greedy(fresh, cospec::standard{}, prompt, 10));
}

TEST_CASE("the batched adapter serves a batch decoder, each request as decoded alone", "[llama_cpp][batch]") {
  COSPEC_REQUIRE_MODELS();
  auto small_model = load(models().small_gguf);
  auto large_model = load(models().large_gguf);
  auto small_context = make_context(small_model.get(), {512, 32, 4});
  auto large_context = make_context(large_model.get(), {512, 32, 4});
  cospec::llama_cpp::batched_adapter small(small_context.get(), 4), large(large_context.get(), 4);
  REQUIRE(small.max_sequences() == 4);
  cospec::sampling_settings settings;
  settings.temperature = 0.0f;
  cospec::batch_decoder decoder(std::vector<cospec::llama_cpp::batched_adapter*>{&small, &large},
                                cospec::weighted_ensemble({0.5f, 0.5f}), cospec::alternating({2, 1}), settings);
  std::vector<std::vector<token_id>> prompts;
  for (std::size_t r = 0; r < 5; ++r) prompts.push_back(prompt_of(10 + 3 * r, r + 1));  // 5 requests, 4 sequences
  cospec::generation_limits limits;
  limits.max_new_tokens = 24;
  std::vector<cospec::request_id> ids;
  for (const auto& prompt : prompts) ids.push_back(decoder.submit(prompt, limits));
  const auto done = decoder.run();
  REQUIRE(done.size() == prompts.size());
  decoding_pair alone;
  std::size_t identical = 0;
  for (const auto& d : done) {
    INFO("request " << d.id);
    REQUIRE_FALSE(d.failed());
    const auto r = static_cast<std::size_t>(d.id - ids.front());
    // llama.cpp's attention over a shared KV cache may round differently from a sequence
    // alone; with no near tie the greedy tokens agree.
    identical += d.result.tokens == greedy(alone, cospec::standard{}, prompts[r], 24) ? 1 : 0;
  }
  CHECK(identical == prompts.size());
  CHECK(decoder.statistics().models[1].sequences > decoder.statistics().models[1].passes);  // passes were shared
}

TEST_CASE("a KV cache that fills up is a context_overflow from llama_decode, and the feed is all or nothing",
          "[llama_cpp][failure]") {
  COSPEC_REQUIRE_MODELS();
  auto model = load(models().large_gguf);
  auto context = make_context(model.get(), {256, 16, 2});  // 256 cells shared by 2 sequences
  cospec::llama_cpp::batched_adapter engine(context.get(), 2);
  const cospec::sequence_id a = engine.create_sequence();
  const cospec::sequence_id b = engine.create_sequence();
  REQUIRE(engine.context_limit(b) == 256);  // one pool (kv_unified): either sequence may take it all
  const auto first = prompt_of(200, 1);
  const auto second = prompt_of(100, 2);
  std::vector<float> row(engine.vocabulary_size());
  std::vector<std::span<float>> rows{std::span<float>(row)};
  const cospec::sequence_feed feed_a{a, first, {}};
  engine.feed(std::span(&feed_a, 1));
  // 100 more tokens do not fit beside the first 200: llama_decode finds no slot (status 1) on a
  // later chunk of 16, after earlier chunks went in; the adapter takes those out again.
  const cospec::sequence_feed feed_b{b, second, cospec::logit_outputs(rows)};
  CHECK_THROWS_AS(engine.feed(std::span(&feed_b, 1)), cospec::context_overflow);
  CHECK(engine.context_length(a) == 200);
  CHECK(engine.context_length(b) == 0);
  // Room made, the same feed succeeds and gives the row a sequence alone gives.
  engine.truncate(a, 10);
  engine.feed(std::span(&feed_b, 1));
  CHECK(engine.context_length(b) == 100);
  auto alone_context = make_context(model.get(), {256, 16, 1});
  cospec::llama_cpp::sequence_adapter alone(alone_context.get());
  const auto expected = rows_after(alone, second, 1);
  CHECK(largest_difference({row}, expected) < 1e-4f);
}

TEST_CASE("a sequence's own limit below the context's is the batched adapter's, and past it is a context_overflow "
          "before any cell is written",
          "[llama_cpp][failure][batch]") {
  COSPEC_REQUIRE_MODELS();
  auto model = load(models().large_gguf);
  llama_context_params params = context_params({512, 4, 2});
  if (!split_cache_per_sequence(params)) {
    WARN("skipped: this llama.cpp has one unified KV cache only, so every sequence's limit is n_ctx");
    return;
  }
  auto context = context_from(model.get(), params);
  cospec::llama_cpp::batched_adapter engine(context.get(), 2);
  const cospec::sequence_id a = engine.create_sequence();
  const cospec::sequence_id b = engine.create_sequence();
  // n_ctx / n_seq_max cells each, which llama_n_ctx_seq says and llama_n_ctx does not.
  REQUIRE(llama_n_ctx(context.get()) == 512);
  REQUIRE(engine.context_limit(a) == 256);
  REQUIRE(engine.context_limit(b) == 256);

  const auto text = prompt_of(256, 3);
  const cospec::sequence_feed start{a, std::span(text).first(248), {}};
  engine.feed(std::span(&start, 1));
  const cospec::sequence_feed other{b, std::span(text).first(20), {}};
  engine.feed(std::span(&other, 1));
  // 12 more tokens end past a's 256 cells. In chunks of n_batch = 4, llama.cpp would take the
  // first two before refusing the third; the adapter refuses before computing anything.
  compute_counter computes;
  computes.attach(context.get());
  const auto more = prompt_of(12, 4);
  const cospec::sequence_feed past{a, more, {}};
  CHECK_THROWS_AS(engine.feed(std::span(&past, 1)), cospec::context_overflow);
  CHECK(computes.polls == 0);
  CHECK(engine.context_length(a) == 248);
  CHECK(last_position(context.get(), static_cast<llama_seq_id>(a), 0) == 247);
  CHECK(last_position(context.get(), static_cast<llama_seq_id>(b), 0) == 19);
  // Up to the limit it fits, and gives the row of the same 256 tokens decoded alone.
  std::vector<float> row(engine.vocabulary_size());
  std::vector<std::span<float>> rows{std::span<float>(row)};
  const cospec::sequence_feed last{a, std::span(text).subspan(248), cospec::logit_outputs(rows)};
  engine.feed(std::span(&last, 1));
  CHECK(computes.polls > 0);
  CHECK(engine.context_length(a) == 256);
  auto alone_context = make_context(model.get(), {256, 4, 1});
  cospec::llama_cpp::sequence_adapter alone(alone_context.get());
  CHECK(largest_difference({row}, rows_after(alone, text, 1)) < 1e-4f);
}

TEST_CASE("the batch decoder keeps each request within its sequence's own limit", "[llama_cpp][failure][batch]") {
  COSPEC_REQUIRE_MODELS();
  auto small_model = load(models().small_gguf);
  auto large_model = load(models().large_gguf);
  llama_context_params params = context_params({512, 32, 2});
  if (!split_cache_per_sequence(params)) {
    WARN("skipped: this llama.cpp has one unified KV cache only, so every sequence's limit is n_ctx");
    return;
  }
  auto small_context = context_from(small_model.get(), params);
  auto large_context = context_from(large_model.get(), params);
  cospec::llama_cpp::batched_adapter small(small_context.get(), 2), large(large_context.get(), 2);
  cospec::sampling_settings settings;
  settings.temperature = 0.0f;
  cospec::batch_decoder decoder(std::vector<cospec::llama_cpp::batched_adapter*>{&small, &large},
                                cospec::weighted_ensemble({0.5f, 0.5f}), cospec::alternating({2, 1}), settings);
  cospec::generation_limits limits;
  limits.max_new_tokens = 30;
  const auto long_prompt = prompt_of(240, 5);  // 240 + 30 > 256 cells of its sequence, < 512 of the context
  const auto short_prompt = prompt_of(12, 6);
  const cospec::request_id too_long = decoder.submit(long_prompt, limits);
  const cospec::request_id fits = decoder.submit(short_prompt, limits);
  const auto done = decoder.run();
  REQUIRE(done.size() == 2);
  for (const auto& d : done) {
    if (d.id == too_long) {
      // Ended by the decoder at the sequence's own limit (256 of the context's 512 cells), its
      // tokens kept, before llama_decode could refuse a pass half done (which would also end the
      // other requests of that pass).
      REQUIRE_FALSE(d.failed());
      CHECK(d.result.reason == cospec::finish_reason::context_limit);
      CHECK(d.result.tokens.size() == 256 + 1 - long_prompt.size());
      decoding_pair alone({512, 32, 1});
      CHECK(d.result.tokens == greedy(alone, cospec::standard{}, long_prompt, d.result.tokens.size()));
    } else {
      REQUIRE(d.id == fits);
      REQUIRE_FALSE(d.failed());
      decoding_pair alone;
      CHECK(d.result.tokens == greedy(alone, cospec::standard{}, short_prompt, 30));
    }
  }
}

TEST_CASE("with configure_context_params a pass whose sequences feed different token counts is one computation",
          "[llama_cpp][batch]") {
  COSPEC_REQUIRE_MODELS();
  auto model = load(models().large_gguf);
  // Counts the computations of the logits ("result_output"), one per micro-batch llama.cpp runs.
  static int outputs = 0;
  const auto count_outputs = [](ggml_tensor* tensor, bool ask, void*) {
    const bool logits = std::string_view(tensor->name) == "result_output";
    if (!ask && logits) ++outputs;
    return ask ? logits : true;
  };
  const auto computations = [&](llama_context_params params) {
    params.cb_eval = count_outputs;
    auto context = context_from(model.get(), params);
    cospec::llama_cpp::batched_adapter engine(context.get(), 2);
    const cospec::sequence_id a = engine.create_sequence();
    const cospec::sequence_id b = engine.create_sequence();
    const auto first = prompt_of(10, 7);
    const auto second = prompt_of(10, 8);
    const cospec::sequence_feed prompts[] = {{a, first, {}}, {b, second, {}}};
    engine.feed(prompts);
    // A verification of 6 tokens beside a single token, as CoS passes look.
    std::vector<std::vector<float>> storage(7, std::vector<float>(engine.vocabulary_size()));
    std::vector<std::span<float>> views(storage.begin(), storage.end());
    const auto six = prompt_of(6, 9);
    const auto one = prompt_of(1, 10);
    const cospec::sequence_feed uneven[] = {{a, six, cospec::logit_outputs(views).first(6)},
                                            {b, one, cospec::logit_outputs(views).subspan(6)}};
    outputs = 0;
    engine.feed(uneven);
    return outputs;
  };
  CHECK(computations(context_params({512, 32, 2})) == 1);
  // Where llama.cpp can split the cache per sequence, it splits such a pass too: the reason
  // configure_context_params asks for one unified cache.
  llama_context_params split = context_params({512, 32, 2});
  if (split_cache_per_sequence(split)) CHECK(computations(split) > 1);
}

#ifdef COSPEC_LLAMA_SERVER_BINARY
TEST_CASE("cospec-server on the GGUF files: greedy completions are the library's own decoding on llama.cpp, by every method",
          "[llama_cpp][server]") {
  COSPEC_REQUIRE_MODELS();
  using json = nlohmann::json;
  // The reference: the library's standard decoding of the same ensemble on llama.cpp, with the
  // server's cache type (llama.cpp's default), decoding alone.
  context_shape shape;
  shape.fp32_attention = false;
  decoding_pair pair(shape);
  cospec::testing::server_process server(
      COSPEC_LLAMA_SERVER_BINARY, {"--model", models().small_gguf.string(), "--model", models().large_gguf.string(),
                                   "--ctx-size", "128", "--parallel", "2", "--threads", "2"});
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(300, 0);
  for (std::size_t salt = 0; salt < 2; ++salt) {
    const auto prompt = prompt_of(24, salt);
    std::vector<std::string> expected;
    for (token_id t : greedy(pair, cospec::standard{}, prompt, 24)) expected.push_back("token_id:" + std::to_string(t));
    for (const char* method : {"standard", "auto", "cos", "mixture+spec"}) {
      INFO("prompt " << salt << ", " << method);
      const json request{{"prompt", prompt},          {"max_tokens", 24}, {"temperature", 0}, {"logprobs", 0},
                         {"return_tokens_as_token_ids", true}, {"method", method}};
      const auto response = client.Post("/v1/completions", request.dump(), "application/json");
      REQUIRE(response);
      REQUIRE(response->status == 200);
      const json answer = json::parse(response->body);
      // The server stops at an end-of-generation token, the reference does not: compare up to it.
      const auto tokens = answer["choices"][0]["logprobs"]["tokens"].get<std::vector<std::string>>();
      REQUIRE(tokens.size() <= expected.size());
      CHECK(tokens == std::vector<std::string>(expected.begin(), expected.begin() + static_cast<std::ptrdiff_t>(tokens.size())));
      if (tokens.size() < expected.size()) CHECK(answer["choices"][0]["finish_reason"] == "stop");
    }
  }
  CHECK(server.terminate() == 0);
}
#endif

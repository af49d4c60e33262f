// cospec-server's backends: the models, their vocabulary and the engine over them
// (docs/server.md, "Backends"). The project's transformer (llama2.c checkpoints, or the
// seed-built demo) is always there; llama.cpp GGUF files where CMake found llama.cpp
// (COSPEC_SERVER_LLAMA_CPP).
#pragma once

#include <algorithm>  // std::min
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t, std::int32_t
#include <cstdio>     // std::fputs
#include <filesystem>  // std::filesystem::path
#include <memory>     // std::unique_ptr, std::make_unique, std::shared_ptr
#include <stdexcept>  // std::invalid_argument, std::runtime_error
#include <string>     // std::string
#include <utility>    // std::move
#include <vector>     // std::vector

#include <cospec/cospec.hpp>

#include "server/codec.hpp"
#include "server/engine.hpp"
#include "transformer/batched_transformer.hpp"
#include "transformer/checkpoint.hpp"
#include "transformer/demo_models.hpp"
#include "transformer/thread_team.hpp"
#include "transformer/tokenizer.hpp"

#ifdef COSPEC_SERVER_LLAMA_CPP
#include <llama.h>

#include <cospec/adapters/llama_cpp.hpp>
#endif

namespace cospec::server {

/// What the models are and how they are run.
struct backend_options {
  bool demo = false;
  bool quick = false;
  std::vector<std::string> models;
  std::string tokenizer;
  std::size_t context = 0;  // 0: the models' own, at most 2048
  std::size_t parallel = 4;
  std::size_t threads = 2;
  std::uint64_t seed = 1;
};

/// Loaded models and what serves them.
class loaded_backend {
 public:
  virtual ~loaded_backend() = default;
  [[nodiscard]] virtual std::string id() const = 0;
  [[nodiscard]] virtual std::vector<std::string> model_names() const = 0;
  [[nodiscard]] virtual std::size_t context() const = 0;
  /// The engine over these models; the backend must outlive it.
  [[nodiscard]] virtual std::unique_ptr<engine> make_engine(any_combiner combiner, any_speculator policy,
                                                            engine_info info) = 0;
};

inline batch_options engine_batch_options(const engine_info& info) {
  batch_options options;
  options.max_waiting = info.max_queue + 16;  // the engine's own bound is the binding one
  return options;
}

/// The project's transformer: llama2.c checkpoints (each a model, the same vocabulary), or the
/// seed-built demo network and its early-exit draft (model 0).
class transformer_backend final : public loaded_backend {
 public:
  explicit transformer_backend(const backend_options& o) : team_(std::make_shared<examples::llama::thread_team>(o.threads)) {
    using namespace cospec::examples::llama;
    if (o.demo) {
      model_source source;
      source.quick = o.quick;
      source.seed = o.seed;
      const model_pair pair = load_models(source);
      weights_ = {pair.small, pair.large};
      layers_ = {pair.small_layers, 0};
      names_ = {"demo-draft (first " + std::to_string(pair.small_layers) + " layers)",
                std::string(o.quick ? "demo-8M" : "demo-200M")};
      id_ = o.quick ? "cospec-demo-quick" : "cospec-demo";
    } else {
      for (const std::string& file : o.models) {
        weights_.push_back(std::make_shared<const transformer_weights>(load_checkpoint(file)));
        layers_.push_back(0);
        names_.push_back(std::filesystem::path(file).filename().string());
      }
      id_ = "cospec";
      for (const std::string& name : names_) id_ += "+" + name;
    }
    const std::size_t vocabulary = weights_.front()->config.vocab_size;
    std::size_t seq_len = weights_.front()->config.seq_len;
    for (const auto& w : weights_) {
      if (w->config.vocab_size != vocabulary)
        throw std::invalid_argument("the models' vocabularies differ (" + std::to_string(vocabulary) + " and " +
                                    std::to_string(w->config.vocab_size) + ")");
      seq_len = std::min(seq_len, w->config.seq_len);
    }
    context_ = o.context == 0 ? std::min<std::size_t>(seq_len, 2048) : o.context;
    if (context_ > seq_len)
      throw std::invalid_argument("--ctx-size " + std::to_string(context_) + " exceeds the models' seq_len " +
                                  std::to_string(seq_len));
    for (std::size_t k = 0; k < weights_.size(); ++k)
      models_.push_back(std::make_unique<batched_transformer>(
          weights_[k], team_, batched_transformer_options{.layers = layers_[k], .context_limit = context_, .max_sequences = o.parallel}));
    if (o.tokenizer.empty()) {
      vocabulary_codec_ = std::make_unique<codec>(demo_codec(vocabulary));
    } else {
      auto words = std::make_shared<const tokenizer>(tokenizer::load(o.tokenizer, vocabulary));
      std::vector<std::string> pieces(vocabulary);
      for (std::size_t t = 0; t < vocabulary; ++t) pieces[t] = words->decode(tokenizer::eos_id, static_cast<token_id>(t));
      auto encode = [words](std::string_view text, bool add_special) { return words->encode(text, add_special, false); };
      vocabulary_codec_ = std::make_unique<codec>(std::move(pieces), encode, plain_chat, std::vector<token_id>{tokenizer::eos_id},
                                                  "llama2.c tokenizer " + o.tokenizer);
    }
  }

  [[nodiscard]] std::string id() const override { return id_; }
  [[nodiscard]] std::vector<std::string> model_names() const override { return names_; }
  [[nodiscard]] std::size_t context() const override { return context_; }

  [[nodiscard]] std::unique_ptr<engine> make_engine(any_combiner combiner, any_speculator policy,
                                                    engine_info info) override {
    std::vector<examples::llama::batched_transformer*> pointers;
    for (auto& m : models_) pointers.push_back(m.get());
    return std::make_unique<batch_engine<examples::llama::batched_transformer>>(
        pointers, std::move(combiner), std::move(policy), *vocabulary_codec_, std::move(info), engine_batch_options(info));
  }

 private:
  std::shared_ptr<examples::llama::thread_team> team_;
  std::vector<std::shared_ptr<const examples::llama::transformer_weights>> weights_;
  std::vector<std::size_t> layers_;
  std::vector<std::string> names_;
  std::string id_;
  std::size_t context_ = 0;
  std::vector<std::unique_ptr<examples::llama::batched_transformer>> models_;
  std::unique_ptr<codec> vocabulary_codec_;
};

#ifdef COSPEC_SERVER_LLAMA_CPP
/// llama.cpp GGUF models, each with its own context of `parallel` sequences (kv_unified, so
/// that a pass whose requests feed different token counts stays one computation).
class llama_backend final : public loaded_backend {
 public:
  explicit llama_backend(const backend_options& o) {
    llama_backend_init();
    // llama.cpp's warnings and errors only: its information lines would bury the server's own.
    llama_log_set(
        [](ggml_log_level level, const char* text, void*) {
          if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
        },
        nullptr);
    for (const std::string& file : o.models) {
      llama_model_params params = llama_model_default_params();
      llama_model* model = llama_model_load_from_file(file.c_str(), params);
      if (model == nullptr) throw std::runtime_error("llama.cpp cannot load " + file);
      models_.push_back(model);
      names_.push_back(std::filesystem::path(file).filename().string());
    }
    context_ = o.context == 0 ? std::min<std::size_t>(2048, static_cast<std::size_t>(llama_model_n_ctx_train(models_[0])))
                              : o.context;
    for (llama_model* model : models_) {
      llama_context_params params = llama_context_default_params();
      params.n_ctx = static_cast<std::uint32_t>(context_ * o.parallel);
      params.n_batch = 512;
      params.n_threads = static_cast<std::int32_t>(o.threads);
      params.n_threads_batch = static_cast<std::int32_t>(o.threads);
      llama_cpp::configure_context_params(params, {.sequences = o.parallel});
      llama_context* context = llama_init_from_model(model, params);
      if (context == nullptr) throw std::runtime_error("llama.cpp cannot create a context");
      contexts_.push_back(context);
      adapters_.push_back(std::make_unique<llama_cpp::batched_adapter>(context, o.parallel));
    }
    id_ = "cospec";
    for (const std::string& name : names_) id_ += "+" + name;
    // The vocabulary, from model 0 (the decoder checks the others agree, token by token).
    const llama_vocab* vocab = llama_model_get_vocab(models_[0]);
    const auto size = static_cast<std::size_t>(llama_vocab_n_tokens(vocab));
    std::vector<std::string> pieces(size);
    std::vector<token_id> ends;
    char buffer[256];
    for (std::size_t t = 0; t < size; ++t) {
      const std::int32_t n = llama_token_to_piece(vocab, static_cast<llama_token>(t), buffer, sizeof buffer, 0, false);
      if (n > 0) pieces[t].assign(buffer, static_cast<std::size_t>(n));
      if (llama_vocab_is_eog(vocab, static_cast<llama_token>(t))) ends.push_back(static_cast<token_id>(t));
    }
    auto encode = [vocab](std::string_view text, bool add_special) {
      std::vector<llama_token> tokens(text.size() + 16);
      std::int32_t n = llama_tokenize(vocab, text.data(), static_cast<std::int32_t>(text.size()), tokens.data(),
                                      static_cast<std::int32_t>(tokens.size()), add_special, true);
      if (n < 0) {
        tokens.resize(static_cast<std::size_t>(-n));
        n = llama_tokenize(vocab, text.data(), static_cast<std::int32_t>(text.size()), tokens.data(),
                           static_cast<std::int32_t>(tokens.size()), add_special, true);
      }
      return std::vector<token_id>(tokens.begin(), tokens.begin() + std::max<std::int32_t>(0, n));
    };
    const char* model_template = llama_model_chat_template(models_[0], nullptr);
    const std::string chat_template = model_template == nullptr ? "chatml" : model_template;
    auto chat = [chat_template](const std::vector<chat_message>& messages) {
      std::vector<llama_chat_message> chat;
      for (const chat_message& m : messages) chat.push_back({m.role.c_str(), m.content.c_str()});
      std::vector<char> out(4096);
      std::int32_t n = llama_chat_apply_template(chat_template.c_str(), chat.data(), chat.size(), true, out.data(),
                                                 static_cast<std::int32_t>(out.size()));
      if (n > static_cast<std::int32_t>(out.size())) {
        out.resize(static_cast<std::size_t>(n));
        n = llama_chat_apply_template(chat_template.c_str(), chat.data(), chat.size(), true, out.data(),
                                      static_cast<std::int32_t>(out.size()));
      }
      return n < 0 ? plain_chat(messages) : std::string(out.data(), static_cast<std::size_t>(n));
    };
    vocabulary_codec_ = std::make_unique<codec>(std::move(pieces), encode, chat, std::move(ends), "llama.cpp vocabulary");
  }

  ~llama_backend() override {
    adapters_.clear();
    for (llama_context* c : contexts_) llama_free(c);
    for (llama_model* m : models_) llama_model_free(m);
    llama_backend_free();
  }

  [[nodiscard]] std::string id() const override { return id_; }
  [[nodiscard]] std::vector<std::string> model_names() const override { return names_; }
  [[nodiscard]] std::size_t context() const override { return context_; }

  [[nodiscard]] std::unique_ptr<engine> make_engine(any_combiner combiner, any_speculator policy,
                                                    engine_info info) override {
    std::vector<llama_cpp::batched_adapter*> pointers;
    for (auto& a : adapters_) pointers.push_back(a.get());
    return std::make_unique<batch_engine<llama_cpp::batched_adapter>>(
        pointers, std::move(combiner), std::move(policy), *vocabulary_codec_, std::move(info), engine_batch_options(info));
  }

 private:
  std::vector<llama_model*> models_;
  std::vector<llama_context*> contexts_;
  std::vector<std::unique_ptr<llama_cpp::batched_adapter>> adapters_;
  std::vector<std::string> names_;
  std::string id_;
  std::size_t context_ = 0;
  std::unique_ptr<codec> vocabulary_codec_;
};
#endif

/// The backend the options name: GGUF files go to llama.cpp, everything else to the transformer.
inline std::unique_ptr<loaded_backend> load_backend(const backend_options& o) {
  const bool gguf = !o.models.empty() && std::filesystem::path(o.models.front()).extension() == ".gguf";
  if (gguf) {
#ifdef COSPEC_SERVER_LLAMA_CPP
    return std::make_unique<llama_backend>(o);
#else
    throw std::invalid_argument("GGUF models need cospec-server built with llama.cpp (docs/server.md, \"Backends\")");
#endif
  }
  return std::make_unique<transformer_backend>(o);
}

}  // namespace cospec::server

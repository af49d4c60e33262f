// The decoder: runs n models under a speculation policy and emits exactly the tokens of
// standard collaborative decoding's distribution (docs/algorithm.md, "Alternation" and
// "Invocations"; docs/engine.md). A short driver over the session (decoder/session.hpp) and
// the adapters.
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::min, std::mismatch
#include <chrono>     // std::chrono::steady_clock
#include <cstddef>    // std::size_t
#include <exception>  // std::exception, std::throw_with_nested
#include <span>       // std::span
#include <string>     // std::string, std::to_string
#include <string_view>  // std::string_view
#include <utility>    // std::move
#include <vector>     // std::vector

#include "cospec/adapters/model_adapter.hpp"
#include "cospec/combine/combiner.hpp"
#include "cospec/decoder/generation.hpp"
#include "cospec/decoder/session.hpp"
#include "cospec/errors.hpp"
#include "cospec/sampling.hpp"
#include "cospec/speculate/speculator.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// What the decoder does when a model's context is not what it left there at the end of the
/// previous call (other code, or a second decoder sharing the model, fed or truncated it).
enum class model_change_policy {
  resynchronise,  ///< truncate it to 0 and feed it the text again (counted in model_statistics)
  report,         ///< throw backend_failure before touching any model
};

/// Settings of a decoder that are not sampling settings.
struct decoder_options : session_options {
  model_change_policy changed_models = model_change_policy::resynchronise;
};

/// Collaborative decoding of `Model`s combined by `Combiner`, scheduled by `Speculator`.
/// Model is one adapter type for all models (a concrete type for static dispatch, or
/// any_model for a runtime mix). The decoder refers to the models; they must outlive it.
/// It is movable; one decoder serves one thread; decoders on separate models may run in
/// parallel.
template <model_adapter Model, combiner Combiner, speculator Speculator>
class decoder {
  using clock = std::chrono::steady_clock;

 public:
  /// Throws invalid_configuration if the models, combiner, speculator and settings do not
  /// fit together (model count, vocabulary sizes, weights, gammas, sampling settings).
  /// `settings` are the defaults of generate() calls that bring none of their own.
  decoder(std::vector<Model*> models, Combiner combiner, Speculator speculator, sampling_settings settings = {},
          decoder_options options = {})
      : models_(std::move(models)),
        session_(std::move(combiner), std::move(speculator), vocabulary_sizes(models_), with_token_text(models_, options)),
        settings_(std::move(settings)),
        changed_models_(options.changed_models) {
    validate(settings_, session_.vocabulary_size());
    if constexpr (adapter_with_token_text<Model>) check_token_texts(models_, session_.vocabulary_size());
    const std::size_t n = models_.size();
    held_.assign(n, 0);
    left_.resize(n);
    dirty_.assign(n, false);
    // A model that already holds tokens holds text we do not know: truncated at first use.
    for (std::size_t k = 0; k < n; ++k) left_[k] = models_[k]->context_length();
    cached_.resize(n);
  }

  decoder(decoder&&) noexcept = default;
  decoder& operator=(decoder&&) noexcept = default;
  decoder(const decoder&) = delete;
  decoder& operator=(const decoder&) = delete;

  /// The vocabulary decoded over: the smallest of the models' sizes.
  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return session_.vocabulary_size(); }
  [[nodiscard]] std::size_t model_count() const noexcept { return models_.size(); }
  /// The default sampling settings.
  [[nodiscard]] const sampling_settings& settings() const noexcept { return settings_; }
  /// Replaces the default sampling settings (validated here); the models keep their text.
  void set_settings(sampling_settings settings) {
    validate(settings, session_.vocabulary_size());
    settings_ = std::move(settings);
  }
  [[nodiscard]] const Speculator& speculator_policy() const noexcept { return session_.speculator_policy(); }

  /// Generates a continuation of `prompt` (non-empty, ids < vocabulary_size()) with the
  /// default sampling settings. See the overload below.
  generation_result generate(std::span<const token_id> prompt, const generation_limits& limits = {}) {
    return generate(prompt, settings_, limits);
  }

  /// Generates a continuation of `prompt` with this call's own sampling settings.
  /// Each model processes what it has not seen of the prompt as one batch at its first
  /// invocation; models keep the longest prefix of the previous call's text (prompt and
  /// output) that the new prompt shares, whatever the settings. Errors: invalid_configuration
  /// (prompt, settings), invalid_logits, backend_failure (an adapter threw, the original
  /// exception nested; or a model changed behind the decoder's back under
  /// model_change_policy::report), context_overflow. After any of them no model holds an
  /// uncommitted token and the next call is exact again.
  generation_result generate(std::span<const token_id> prompt, const sampling_settings& settings,
                             const generation_limits& limits = {}) {
    const auto started = clock::now();
    std::vector<std::size_t> resynchronised = check_models();
    const std::size_t shared = shared_prefix(prompt);
    for (std::size_t k = 0; k < models_.size(); ++k) cached_[k] = std::min(held_[k], shared);
    session_.start(prompt, settings, limits, cached_, context_limit());
    return drive(started, std::move(resynchronised));
  }

  /// Scores `continuation` after `context` (session::start_scoring): each continuation token's
  /// log-probability under the combined target at temperature 1 before any transform, and
  /// whether it is that target's greedy choice, in the result's logprobs and greedy. The models
  /// keep the longest prefix of the previous call's text that the context shares, and hold
  /// context and continuation afterwards. Errors as generate().
  generation_result score(std::span<const token_id> context, std::span<const token_id> continuation,
                          const scoring_options& options = {}) {
    const auto started = clock::now();
    std::vector<std::size_t> resynchronised = check_models();
    const std::size_t shared = shared_prefix(context);
    for (std::size_t k = 0; k < models_.size(); ++k) cached_[k] = std::min(held_[k], shared);
    session_.start_scoring(context, continuation, options, cached_, context_limit());
    return drive(started, std::move(resynchronised));
  }

  /// The combination for the next calls (per-call combiner parameters: other ensemble weights,
  /// another contrastive mu; with any_combiner another recipe). Throws invalid_configuration if
  /// it combines another number of models.
  void set_combination(Combiner combiner) { session_.set_combination(std::move(combiner)); }

 private:
  /// Runs the started request to its end over the adapters.
  generation_result drive(clock::time_point started, std::vector<std::size_t> resynchronised) {
    double tidy_seconds = 0.0;
    try {
      while (const model_pass* pass = session_.next_pass()) run(*pass);
    } catch (...) {
      tidy_seconds = tidy();
      throw;
    }
    tidy_seconds = tidy();
    generation_result result = session_.take_result();
    auto& stats = result.statistics;
    for (std::size_t k : resynchronised) stats.models[k].resynchronisations = 1;
    stats.seconds_in_adapters += tidy_seconds;
    stats.seconds_total = seconds_since(started);
    return result;
  }

 private:
  static double seconds_since(clock::time_point start) {
    return std::chrono::duration<double>(clock::now() - start).count();
  }

  /// The most tokens every model can hold (adapter_with_context_limit), or no limit.
  [[nodiscard]] std::size_t context_limit() const {
    std::size_t limit = session<Combiner, Speculator>::no_context_limit;
    if constexpr (adapter_with_context_limit<Model>)
      for (const Model* model : models_) limit = std::min<std::size_t>(limit, model->context_limit());
    return limit;
  }

  /// The session's options, with token texts from the first model when its adapter gives them
  /// and the caller gave none.
  static decoder_options with_token_text(const std::vector<Model*>& models, decoder_options options) {
    if constexpr (adapter_with_token_text<Model>) {
      if (!options.token_text && !models.empty() && models.front() != nullptr) {
        Model* first = models.front();
        options.token_text = [first](token_id t) -> std::string_view { return first->token_text(t); };
      }
    }
    return options;
  }

  /// Models that give token texts must agree on every token's text: a vocabulary that only
  /// has the right size (5000 against 4900 padded) would decode silently over other tokens.
  /// (llama.cpp's speculative example compares texts the same way.)
  static void check_token_texts(const std::vector<Model*>& models, std::size_t vocabulary) {
    std::string first_text;
    for (std::size_t t = 0; t < vocabulary; ++t) {
      first_text.assign(std::string_view(models[0]->token_text(static_cast<token_id>(t))));
      for (std::size_t k = 1; k < models.size(); ++k) {
        const std::string_view text = models[k]->token_text(static_cast<token_id>(t));
        if (text != first_text)
          throw invalid_configuration("decoder: token " + std::to_string(t) + " is \"" + first_text +
                                      "\" for model 0 but \"" + std::string(text) + "\" for model " +
                                      std::to_string(k) + ": the models do not share a vocabulary");
      }
    }
  }

  static std::vector<std::size_t> vocabulary_sizes(const std::vector<Model*>& models) {
    std::vector<std::size_t> sizes(models.size());
    for (std::size_t k = 0; k < models.size(); ++k) {
      if (models[k] == nullptr) throw invalid_configuration("decoder: model " + std::to_string(k) + " is null");
      sizes[k] = models[k]->vocabulary_size();
    }
    return sizes;
  }

  /// Compares every model's context length with what the decoder left there. A clean model
  /// whose length differs was changed by someone else: what it holds is unknown. Returns the
  /// models resynchronised (or throws under model_change_policy::report).
  std::vector<std::size_t> check_models() {
    std::vector<std::size_t> changed;
    for (std::size_t k = 0; k < models_.size(); ++k) {
      const std::size_t length = models_[k]->context_length();
      if (dirty_[k]) {
        // A truncate failed: the first held_[k] tokens are still ours, anything after goes.
        held_[k] = std::min(held_[k], length);
        continue;
      }
      if (length == left_[k]) continue;
      // An empty context holds nothing that could be wrong: the caller may answer a report by
      // truncating the model to 0, and the decoder then feeds it from scratch.
      if (length == 0) {
        held_[k] = 0;
        continue;
      }
      if (changed_models_ == model_change_policy::report)
        throw backend_failure("model " + std::to_string(k) + " holds " + std::to_string(length) +
                              " tokens, but the decoder left " + std::to_string(left_[k]) +
                              " there: something else fed or truncated it (docs/engine.md, \"Models shared with other "
                              "code\")");
      held_[k] = 0;
      if (!text_.empty() || length != 0) changed.push_back(k);
    }
    return changed;
  }

  [[nodiscard]] std::size_t shared_prefix(std::span<const token_id> prompt) const {
    const std::size_t limit = std::min(text_.size(), prompt.size());
    return static_cast<std::size_t>(
        std::mismatch(text_.begin(), text_.begin() + static_cast<std::ptrdiff_t>(limit), prompt.begin()).first -
        text_.begin());
  }

  /// One pass the session asked for: roll back, feed, report.
  void run(const model_pass& pass) {
    const std::size_t k = pass.model;
    Model& model = *models_[k];
    const auto describe = [&] {
      return "model " + std::to_string(k) + ": feeding " + std::to_string(pass.tokens.size()) + " tokens at position " +
             std::to_string(pass.keep);
    };
    if constexpr (adapter_with_context_limit<Model>) {
      const std::size_t limit = model.context_limit();
      const std::size_t end = pass.keep + pass.tokens.size();
      if (end > limit) {
        session_.pass_failed();
        throw context_overflow(describe() + " needs a context of " + std::to_string(end) +
                               " tokens; its context_limit() is " + std::to_string(limit));
      }
    }
    const auto started = clock::now();
    const std::size_t length = model.context_length();
    if (length < pass.keep) {
      session_.pass_failed();
      throw backend_failure("model " + std::to_string(k) + " holds " + std::to_string(length) +
                            " tokens, fewer than the " + std::to_string(pass.keep) +
                            " the decoder fed it: something else truncated it during generate");
    }
    if (length > pass.keep) {
      dirty_[k] = true;  // until the truncate has succeeded
      try {
        model.truncate(pass.keep);
      } catch (...) {
        session_.pass_failed();
        std::throw_with_nested(backend_failure("model " + std::to_string(k) + ": truncating to " +
                                               std::to_string(pass.keep) + " tokens failed: " + current_message()));
      }
      dirty_[k] = false;
    }
    try {
      model.feed(pass.tokens, pass.rows);
    } catch (...) {
      dirty_[k] = true;
      session_.pass_failed();
      // An adapter that finds out only while feeding that the text does not fit (llama.cpp:
      // no KV-cache slot) may say so with context_overflow; it keeps its type.
      try {
        throw;
      } catch (const context_overflow&) {
        std::throw_with_nested(context_overflow(describe() + " overflowed its context: " + current_message()));
      } catch (...) {
        std::throw_with_nested(backend_failure(describe() + " failed: " + current_message()));
      }
    }
    session_.pass_done(seconds_since(started));
  }

  /// After the request: every model keeps at most the committed text (truncating those that
  /// hold more), and the decoder remembers what it left where. Never throws: a model whose
  /// truncate fails stays dirty and is dealt with at the next call. Returns the seconds spent
  /// in the adapters.
  double tidy() noexcept {
    const auto started = clock::now();
    const std::span<const token_id> committed = session_.committed_text();
    text_.assign(committed.begin(), committed.end());
    for (std::size_t k = 0; k < models_.size(); ++k) {
      held_[k] = session_.held(k);
      try {
        if (models_[k]->context_length() > held_[k]) {
          dirty_[k] = true;
          models_[k]->truncate(held_[k]);
        }
        dirty_[k] = false;
        left_[k] = models_[k]->context_length();
        if (left_[k] != held_[k]) dirty_[k] = true;  // it holds less than it should: re-checked next call
      } catch (...) {
        dirty_[k] = true;
      }
    }
    return seconds_since(started);
  }

  /// The message of the exception being handled, for the one that wraps it.
  static std::string current_message() {
    try {
      throw;
    } catch (const std::exception& e) {
      return e.what();
    } catch (...) {
      return "an exception that is not a std::exception";
    }
  }

  std::vector<Model*> models_;
  session<Combiner, Speculator> session_;
  sampling_settings settings_;
  model_change_policy changed_models_;
  std::vector<token_id> text_;      // the committed text of the last call
  std::vector<std::size_t> held_;   // tokens of text_ each model holds
  std::vector<std::size_t> left_;   // each model's context length when the decoder last looked
  std::vector<bool> dirty_;         // a truncate failed: the model may hold tokens past held_
  std::vector<std::size_t> cached_;
};

template <class Model, class Combiner, class Speculator>
decoder(std::vector<Model*>, Combiner, Speculator) -> decoder<Model, Combiner, Speculator>;
template <class Model, class Combiner, class Speculator>
decoder(std::vector<Model*>, Combiner, Speculator, sampling_settings) -> decoder<Model, Combiner, Speculator>;
template <class Model, class Combiner, class Speculator>
decoder(std::vector<Model*>, Combiner, Speculator, sampling_settings, decoder_options)
    -> decoder<Model, Combiner, Speculator>;

}  // namespace cospec

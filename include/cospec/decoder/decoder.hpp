// The decoder: runs n models under a speculation policy and emits exactly the tokens of
// standard collaborative decoding's distribution (docs/algorithm.md, "Alternation" and
// "Invocations"; docs/engine.md).
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::min, std::max, std::equal, std::fill
#include <chrono>     // std::chrono::steady_clock
#include <cmath>      // std::isfinite
#include <cstddef>    // std::size_t
#include <cstdio>     // std::snprintf
#include <exception>  // std::exception, std::throw_with_nested
#include <optional>   // std::optional
#include <span>       // std::span
#include <string>     // std::string, std::to_string
#include <utility>    // std::move
#include <vector>     // std::vector

#include "cospec/adapters/model_adapter.hpp"
#include "cospec/combine/combiner.hpp"
#include "cospec/combine/target.hpp"
#include "cospec/decoder/generation.hpp"
#include "cospec/errors.hpp"
#include "cospec/kernels/reduce.hpp"
#include "cospec/kernels/sample.hpp"
#include "cospec/random.hpp"
#include "cospec/sampling.hpp"
#include "cospec/speculate/speculator.hpp"
#include "cospec/token.hpp"
#include "cospec/verify/verifier.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Settings of a decoder that are not sampling settings.
struct decoder_options {
  /// Virtual cost of each model's forward passes, one entry per model, for
  /// generation_statistics::virtual_time; empty means no cost clock.
  std::vector<pass_cost> pass_costs;
  /// Largest allowed difference between the models' vocabulary sizes. Models whose sizes
  /// differ by padding only (Qwen2.5: 151936 and 152064) decode over the shared first ids.
  std::size_t vocabulary_padding = 256;
  /// Applied to the target at every position with that position's own prefix.
  logits_processor processor;
};

/// Collaborative decoding of `Model`s combined by `Combiner`, scheduled by `Speculator`.
/// Model is one adapter type for all models (a concrete type for static dispatch, or
/// any_model for a runtime mix). The decoder refers to the models; they must outlive it.
/// One decoder serves one thread; decoders on separate models may run in parallel.
template <model_adapter Model, combiner Combiner, speculator Speculator>
class decoder {
 public:
  /// Throws invalid_configuration if the models, combiner, speculator and settings do not
  /// fit together (model count, vocabulary sizes, weights, gammas, sampling settings).
  decoder(std::vector<Model*> models, Combiner combiner, Speculator speculator, sampling_settings settings = {},
          decoder_options options = {})
      : models_(std::move(models)),
        combiner_(std::move(combiner)),
        speculator_(std::move(speculator)),
        settings_(std::move(settings)),
        options_(std::move(options)),
        target_(combiner_, settings_, options_.processor) {
    const std::size_t n = models_.size();
    if (n == 0) throw invalid_configuration("decoder: needs at least one model");
    for (std::size_t k = 0; k < n; ++k)
      if (models_[k] == nullptr) throw invalid_configuration("decoder: model " + std::to_string(k) + " is null");
    if (combiner_.model_count() != n)
      throw invalid_configuration("decoder: the combiner combines " + std::to_string(combiner_.model_count()) +
                                  " models, but " + std::to_string(n) + " were given");
    speculator_.check(n);
    vocabularies_.resize(n);
    std::size_t smallest = 0, largest = 0;
    for (std::size_t k = 0; k < n; ++k) {
      vocabularies_[k] = models_[k]->vocabulary_size();
      if (vocabularies_[k] == 0) throw invalid_configuration("decoder: model " + std::to_string(k) + " has an empty vocabulary");
      smallest = k == 0 ? vocabularies_[k] : std::min(smallest, vocabularies_[k]);
      largest = std::max(largest, vocabularies_[k]);
    }
    if (largest - smallest > options_.vocabulary_padding)
      throw invalid_configuration("decoder: vocabulary sizes " + std::to_string(smallest) + " and " +
                                  std::to_string(largest) + " differ by more than the allowed padding of " +
                                  std::to_string(options_.vocabulary_padding));
    vocabulary_ = smallest;
    validate(settings_, vocabulary_);
    // The kernels scale logits by 1 / temperature, which overflows for temperatures below
    // about 2.9e-39: every row would then come out invalid.
    if (!settings_.greedy() && !std::isfinite(1.0f / settings_.temperature))
      throw invalid_configuration("sampling: temperature " + number_text(settings_.temperature) +
                                  " is too small for 1 / temperature to be a finite float; use 0 for greedy decoding");
    if (!options_.pass_costs.empty() && options_.pass_costs.size() != n)
      throw invalid_configuration("decoder: " + std::to_string(options_.pass_costs.size()) + " pass costs for " +
                                  std::to_string(n) + " models");
    for (std::size_t k = 0; k < options_.pass_costs.size(); ++k) {
      const pass_cost& cost = options_.pass_costs[k];
      if (!(std::isfinite(cost.per_pass) && cost.per_pass >= 0.0 && std::isfinite(cost.per_token) &&
            cost.per_token >= 0.0))
        throw invalid_configuration("decoder: pass cost of model " + std::to_string(k) + " must be finite and >= 0, got " +
                                    number_text(cost.per_pass) + " per pass and " + number_text(cost.per_token) +
                                    " per token");
    }
    fed_.assign(n, 0);
    dirty_.resize(n);
    // A model that already holds tokens holds text we do not know: cleared at first use.
    for (std::size_t k = 0; k < n; ++k) dirty_[k] = models_[k]->context_length() != 0;
    rows_view_.resize(n);
    target_row_.resize(vocabulary_);
    grow(4);
  }

  decoder(const decoder&) = delete;
  decoder& operator=(const decoder&) = delete;

  /// The vocabulary decoded over: the smallest of the models' sizes.
  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return vocabulary_; }
  [[nodiscard]] std::size_t model_count() const noexcept { return models_.size(); }
  [[nodiscard]] const sampling_settings& settings() const noexcept { return settings_; }

  /// Generates a continuation of `prompt` (non-empty, ids < vocabulary_size()).
  /// Each model processes what it has not seen of the prompt as one batch at its first
  /// invocation; models keep the longest prefix of the previous call's text that the new
  /// prompt shares. Errors: invalid_configuration (prompt), invalid_logits, backend_failure
  /// (an adapter threw; the original exception is nested), context_overflow. After any of
  /// them no model holds an uncommitted token and the next call is exact again.
  generation_result generate(std::span<const token_id> prompt, const generation_limits& limits = {}) {
    const auto started = clock::now();
    check_prompt(prompt);
    result_ = generation_result{};
    // Reserved up front so that committing a token never allocates (bounded for huge limits).
    result_.tokens.reserve(std::min<std::size_t>(limits.max_new_tokens, std::size_t{1} << 16));
    auto& stats = result_.statistics;
    stats.models.assign(models_.size(), model_statistics{});
    stats.proposers.assign(models_.size(), proposer_statistics{});
    limits_ = &limits;
    stop_.reset();
    random_.reseed(limits.seed.value_or(settings_.seed));
    if constexpr (resettable_speculator<Speculator>) speculator_.reset();
    try {
      start_text(prompt);
      if (limits.max_new_tokens == 0) stop_ = finish_reason::max_new_tokens;
      while (!stop_) {
        settle();
        if (stop_) break;
        invoke(speculator_.next(view()));
      }
      finish_text();
    } catch (...) {
      recover();
      limits_ = nullptr;
      throw;
    }
    limits_ = nullptr;
    result_.reason = *stop_;
    stats.seconds_total = seconds_since(started);
    for (std::size_t k = 0; k < models_.size(); ++k) {
      stats.seconds_in_adapters += stats.models[k].adapter_seconds;
      if (!options_.pass_costs.empty()) {
        auto& m = stats.models[k];
        m.virtual_time = options_.pass_costs[k].per_pass * static_cast<double>(m.forward_passes) +
                         options_.pass_costs[k].per_token * static_cast<double>(m.tokens_fed);
        stats.virtual_time += m.virtual_time;
      }
    }
    return std::move(result_);
  }

 private:
  using clock = std::chrono::steady_clock;
  static double seconds_since(clock::time_point start) {
    return std::chrono::duration<double>(clock::now() - start).count();
  }

  struct pending_token {
    token_id token;
    std::size_t proposer;
    std::size_t chain_index;  // position in its proposer's run within one invocation
  };

  // ---- text and positions -------------------------------------------------------------
  // text_ = prompt + committed tokens + pending proposals. committed_ counts the first two.
  // Slot s (0 <= s <= pending) is position committed_ + s; the last slot is the frontier.

  [[nodiscard]] std::size_t pending_count() const noexcept { return pending_.size(); }
  [[nodiscard]] std::size_t ring(std::size_t slot) const noexcept { return (head_ + slot) % capacity_; }
  [[nodiscard]] bool scored(std::size_t model, std::size_t slot) const noexcept {
    return scored_[slot * models_.size() + model] != 0;
  }
  [[nodiscard]] bool scored_by_all(std::size_t slot) const noexcept {
    for (std::size_t k = 0; k < models_.size(); ++k)
      if (!scored(k, slot)) return false;
    return true;
  }
  [[nodiscard]] std::span<float> logits_row(std::size_t model, std::size_t slot) noexcept {
    return {logits_[model].data() + ring(slot) * vocabularies_[model], vocabularies_[model]};
  }
  [[nodiscard]] std::span<float> proposal_row(std::size_t slot) noexcept {
    return {proposals_.data() + ring(slot) * vocabulary_, vocabulary_};
  }
  [[nodiscard]] schedule_view view() const noexcept {
    return schedule_view(models_.size(), pending_count(), scored_, proposers_);
  }

  /// Makes room for `slots` slots; reallocates (keeping live rows) only when growing.
  void grow(std::size_t slots) {
    if (slots <= capacity_) return;
    if (logits_.size() != models_.size()) logits_.resize(models_.size());
    const std::size_t capacity = std::max(slots, 2 * capacity_);
    const std::size_t live = capacity_ == 0 ? 0 : pending_count() + 1;
    for (std::size_t k = 0; k < models_.size(); ++k) {
      std::vector<float> rows(capacity * vocabularies_[k]);
      for (std::size_t s = 0; s < live; ++s) {
        const auto old = logits_row(k, s);
        std::copy(old.begin(), old.end(), rows.begin() + static_cast<std::ptrdiff_t>(s * vocabularies_[k]));
      }
      logits_[k] = std::move(rows);
    }
    if (!settings_.greedy()) {
      std::vector<float> rows(capacity * vocabulary_);
      for (std::size_t s = 0; s < live; ++s) {
        const auto old = proposal_row(s);
        std::copy(old.begin(), old.end(), rows.begin() + static_cast<std::ptrdiff_t>(s * vocabulary_));
      }
      proposals_ = std::move(rows);
    }
    head_ = 0;
    capacity_ = capacity;
    feed_rows_.resize(capacity);
  }

  void check_prompt(std::span<const token_id> prompt) const {
    if (prompt.empty()) throw invalid_configuration("generate: the prompt is empty; models need at least one token");
    for (std::size_t i = 0; i < prompt.size(); ++i)
      if (prompt[i] < 0 || static_cast<std::size_t>(prompt[i]) >= vocabulary_)
        throw invalid_configuration("generate: prompt token " + std::to_string(i) + " is " + std::to_string(prompt[i]) +
                                    ", outside the vocabulary of " + std::to_string(vocabulary_));
  }

  /// Sets the text to the prompt. Models keep what they hold of the longest prefix shared
  /// with the previous text, but never all of the prompt: the first invocation must compute
  /// logits at the prompt's end.
  void start_text(std::span<const token_id> prompt) {
    const std::size_t shared = static_cast<std::size_t>(
        std::mismatch(text_.begin(), text_.begin() + static_cast<std::ptrdiff_t>(std::min(committed_, prompt.size())),
                      prompt.begin())
            .first -
        text_.begin());
    const std::size_t keep = std::min(shared, prompt.size() - 1);
    text_.assign(prompt.begin(), prompt.end());
    committed_ = prompt.size();
    prompt_length_ = prompt.size();
    reset_slots();
    // Every model's bookkeeping first, adapters second: the text just changed, so a model not
    // yet marked when another's truncate throws would be believed to hold the new prompt.
    for (std::size_t k = 0; k < models_.size(); ++k) forget_past(k, keep);
    for (std::size_t k = 0; k < models_.size(); ++k)
      if (dirty_[k]) clean(k);
  }

  /// Drops pending proposals from the text and from every model.
  void finish_text() {
    text_.resize(committed_);
    pending_.clear();
    proposers_.clear();
    for (std::size_t k = 0; k < models_.size(); ++k) roll_back(k, committed_);
  }

  /// After an exception: no model may keep uncommitted tokens. A model whose adapter still
  /// refuses stays dirty and is cleaned (or reported) at the next generate.
  void recover() noexcept {
    text_.resize(committed_);
    reset_slots();
    for (std::size_t k = 0; k < models_.size(); ++k) forget_past(k, committed_);
    for (std::size_t k = 0; k < models_.size(); ++k) {
      if (!dirty_[k]) continue;
      try {
        clean(k);
      } catch (...) {
        // stays dirty
      }
    }
  }

  /// A dirty adapter holds text_[0, fed_[k]) and possibly tokens after it that must go:
  /// truncate to what is known to be right (less, if the adapter lost some).
  void clean(std::size_t k) {
    const auto started = clock::now();
    try {
      const std::size_t length = std::min(fed_[k], models_[k]->context_length());
      models_[k]->truncate(length);
      fed_[k] = length;
      dirty_[k] = false;
    } catch (...) {
      result_.statistics.models[k].adapter_seconds += seconds_since(started);
      std::throw_with_nested(backend_failure("model " + std::to_string(k) + ": truncating to " +
                                             std::to_string(fed_[k]) + " tokens failed: " + current_message()));
    }
    result_.statistics.models[k].adapter_seconds += seconds_since(started);
  }

  /// A number as printf's %g writes it: tiny and huge values stay readable.
  static std::string number_text(double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.9g", value);
    return text;
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

  void reset_slots() {
    pending_.clear();
    proposers_.clear();
    scored_.assign(models_.size(), 0);
    head_ = 0;
  }

  // ---- adapter calls ------------------------------------------------------------------

  /// Rolls model k back to at most `length` tokens. The bookkeeping changes first, so that
  /// if the adapter throws, the model is dirty and recover() or the next generate retries.
  void roll_back(std::size_t k, std::size_t length) {
    forget_past(k, length);
    if (dirty_[k]) clean(k);
  }

  /// Bookkeeping only: model k is known to hold at most `length` tokens of the text, and
  /// whatever it holds past them must go at its next clean().
  void forget_past(std::size_t k, std::size_t length) noexcept {
    if (fed_[k] > length) {
      fed_[k] = length;
      dirty_[k] = true;
    }
  }

  /// Feeds model k every token of the text it has not seen, in one pass, and stores its
  /// logits for every slot it had not scored, the frontier included.
  void feed_unseen(std::size_t k) {
    const std::size_t end = text_.size();
    const std::size_t before = fed_[k];
    const std::size_t first = std::max(before + 1, committed_);  // first position whose logits are needed
    const std::size_t first_slot = first - committed_;
    const std::size_t rows = end - first + 1;
    grow(pending_count() + 1);
    for (std::size_t i = 0; i < rows; ++i) feed_rows_[i] = logits_row(k, first_slot + i);
    const std::span<const token_id> tokens(text_.data() + before, end - before);
    const auto feeding = [&] {
      return "model " + std::to_string(k) + ": feeding " + std::to_string(tokens.size()) + " tokens at position " +
             std::to_string(before);
    };
    if constexpr (adapter_with_context_limit<Model>) {
      const std::size_t limit = models_[k]->context_limit();
      if (end > limit)
        throw context_overflow(feeding() + " needs a context of " + std::to_string(end) + " tokens; its context_limit() is " +
                               std::to_string(limit));
    }
    auto& stats = result_.statistics.models[k];
    const auto started = clock::now();
    try {
      models_[k]->feed(tokens, std::span<const std::span<float>>(feed_rows_.data(), rows));
    } catch (...) {
      stats.adapter_seconds += seconds_since(started);
      fed_[k] = before;
      dirty_[k] = true;
      // An adapter that finds out only while feeding that the text does not fit (llama.cpp:
      // no KV-cache slot) may say so with context_overflow; it keeps its type.
      try {
        throw;
      } catch (const context_overflow&) {
        std::throw_with_nested(context_overflow(feeding() + " overflowed its context: " + current_message()));
      } catch (...) {
        std::throw_with_nested(backend_failure(feeding() + " failed: " + current_message()));
      }
    }
    const double seconds = seconds_since(started);
    stats.adapter_seconds += seconds;
    if constexpr (timing_speculator<Speculator>) speculator_.observe_pass(k, tokens.size(), seconds);
    fed_[k] = end;
    ++stats.forward_passes;
    stats.tokens_fed += tokens.size();
    stats.logit_rows += rows;
    for (std::size_t i = 0; i < rows; ++i) scored_[(first_slot + i) * models_.size() + k] = 1;
  }

  // ---- the algorithm ------------------------------------------------------------------

  /// One invocation (docs/algorithm.md, "Invocations"): feed, verify, propose.
  void invoke(invocation next) {
    const std::size_t k = next.model;
    if (k >= models_.size())
      throw usage_error("speculator chose model " + std::to_string(k) + " of " + std::to_string(models_.size()));
    auto& stats = result_.statistics;
    ++stats.invocations;
    ++stats.models[k].invocations;
    const std::size_t rejections = stats.rejections;
    bool progressed = false;
    if (fed_[k] < text_.size()) {
      feed_unseen(k);
      progressed = true;
      settle();
    }
    for (std::size_t t = 0; t < next.proposals && !stop_ && stats.rejections == rejections; ++t) {
      if (!scored(k, pending_count())) {
        if (fed_[k] >= text_.size())
          throw usage_error("model " + std::to_string(k) + " has no logits at the frontier and nothing to feed");
        feed_unseen(k);
      }
      propose(k, t);
      progressed = true;
      settle();
    }
    if (!progressed)
      throw usage_error("speculator chose model " + std::to_string(k) + ", which had nothing to feed or propose");
  }

  /// Model k proposes one token at the frontier from its own distribution there.
  void propose(std::size_t k, std::size_t chain_index) {
    const std::size_t slot = pending_count();
    const std::span<const float> logits = logits_row(k, slot).first(vocabulary_);
    token_id token;
    try {
      if (settings_.greedy()) {
        const kernels::max_location best = kernels::max_argmax(logits);
        if (!std::isfinite(best.value)) throw_invalid_row(k, logits);
        token = static_cast<token_id>(best.index);
      } else {
        const std::span<float> q = proposal_row(slot);
        combiner_.proposal_distribution(k, logits, settings_.temperature, q);
        token = static_cast<token_id>(kernels::sample_inverse_cdf(q, random_.uniform(), 1.0));
      }
    } catch (const invalid_logits& e) {
      throw invalid_logits("position " + std::to_string(text_.size()) + ", " + e.what());
    }
    pending_.push_back({token, k, chain_index});
    proposers_.push_back(k);
    text_.push_back(token);
    scored_.resize(scored_.size() + models_.size(), 0);  // the new frontier
  }

  /// Verifies every pending token that all models have scored, oldest first, and samples the
  /// target directly at a frontier that all models have scored with nothing pending.
  void settle() {
    while (!stop_) {
      if (!scored_by_all(0)) return;
      for (std::size_t k = 0; k < models_.size(); ++k) rows_view_[k] = logits_row(k, 0).first(vocabulary_);
      const std::span<const token_id> prefix(text_.data(), committed_);
      if (pending_count() == 0) {
        const token_id token = target_token(prefix);
        ++result_.statistics.direct_samples;
        text_.push_back(token);
        advance();
        emit(token);
        return;  // nobody has scored the new frontier
      }
      const pending_token proposal = pending_.front();
      verdict outcome{};
      if (settings_.greedy()) {
        outcome = verify_greedy(proposal.token, target_token(prefix));
      } else {
        target_distribution(prefix);
        outcome = verifier_.verify(proposal.token, proposal_row(0), target_row_, random_);
      }
      record(proposal, outcome.accepted);
      if (outcome.accepted) {
        pending_.erase(pending_.begin());
        proposers_.erase(proposers_.begin());
        advance();
        emit(proposal.token);
        continue;
      }
      reject(outcome.token);
      return;
    }
  }

  token_id target_token(std::span<const token_id> prefix) {
    try {
      if (settings_.greedy()) return target_.greedy_token(rows_view_, prefix, target_row_);
      target_.distribution(rows_view_, prefix, target_row_);
      return static_cast<token_id>(kernels::sample_inverse_cdf(target_row_, random_.uniform(), 1.0));
    } catch (const invalid_logits& e) {
      throw invalid_logits("position " + std::to_string(committed_) + ", " + e.what());
    }
  }

  void target_distribution(std::span<const token_id> prefix) {
    try {
      target_.distribution(rows_view_, prefix, target_row_);
    } catch (const invalid_logits& e) {
      throw invalid_logits("position " + std::to_string(committed_) + ", " + e.what());
    }
  }

  void record(const pending_token& proposal, bool accepted) {
    auto& p = result_.statistics.proposers[proposal.proposer];
    if (p.proposed_at.size() <= proposal.chain_index) {
      p.proposed_at.resize(proposal.chain_index + 1, 0);
      p.accepted_at.resize(proposal.chain_index + 1, 0);
    }
    ++p.proposed;
    ++p.proposed_at[proposal.chain_index];
    if (accepted) {
      ++p.accepted;
      ++p.accepted_at[proposal.chain_index];
    }
    if constexpr (observing_speculator<Speculator>) speculator_.observe(proposal.proposer, proposal.chain_index, accepted);
  }

  /// Commits the token in slot 0 (already in text_): slot 1 becomes slot 0.
  void advance() {
    ++committed_;
    head_ = ring(1);
    scored_.erase(scored_.begin(), scored_.begin() + static_cast<std::ptrdiff_t>(models_.size()));
    if (scored_.empty()) scored_.assign(models_.size(), 0);
  }

  /// The first pending token was rejected: drop every proposal, commit the replacement and
  /// roll back the models that fed rejected tokens.
  void reject(token_id replacement) {
    ++result_.statistics.rejections;
    text_.resize(committed_);
    text_.push_back(replacement);
    ++committed_;
    reset_slots();
    const std::size_t rejected_position = committed_ - 1;
    for (std::size_t k = 0; k < models_.size(); ++k) forget_past(k, rejected_position);
    emit(replacement);
    for (std::size_t k = 0; k < models_.size(); ++k)
      if (dirty_[k]) clean(k);
  }

  /// A token was committed: output, callback and stop conditions.
  void emit(token_id token) {
    auto& output = result_.tokens;
    output.push_back(token);
    ++result_.statistics.tokens;
    const generation_limits& limits = *limits_;
    if (limits.on_token && !limits.on_token(token)) stop_ = finish_reason::stopped_by_callback;
    for (token_id stop : limits.stop_tokens)
      if (token == stop) stop_ = finish_reason::stop_token;
    for (const auto& sequence : limits.stop_sequences)
      if (!sequence.empty() && output.size() >= sequence.size() &&
          std::equal(sequence.begin(), sequence.end(), output.end() - static_cast<std::ptrdiff_t>(sequence.size())))
        stop_ = finish_reason::stop_sequence;
    if (!stop_ && output.size() >= limits.max_new_tokens) stop_ = finish_reason::max_new_tokens;
  }

  std::vector<Model*> models_;
  Combiner combiner_;
  Speculator speculator_;
  sampling_settings settings_;
  decoder_options options_;
  target_evaluator<Combiner> target_;
  speculative_verifier verifier_;
  random_source random_;

  std::vector<std::size_t> vocabularies_;
  std::size_t vocabulary_ = 0;

  std::vector<token_id> text_;
  std::size_t committed_ = 0;
  std::size_t prompt_length_ = 0;
  std::vector<std::size_t> fed_;  // tokens each model holds (a prefix of text_)
  std::vector<bool> dirty_;       // true: the adapter may hold tokens past fed_ that must go
  std::vector<pending_token> pending_;
  std::vector<std::size_t> proposers_;  // pending_[i].proposer, for schedule_view
  std::vector<unsigned char> scored_;   // (pending + 1) x models, slot-major

  std::size_t capacity_ = 0;  // slots in the rings below
  std::size_t head_ = 0;      // ring index of slot 0
  std::vector<std::vector<float>> logits_;  // per model: capacity_ rows of its vocabulary size
  std::vector<float> proposals_;            // capacity_ rows of vocabulary_ (sampling only)
  std::vector<std::span<float>> feed_rows_;
  std::vector<std::span<const float>> rows_view_;
  std::vector<float> target_row_;

  const generation_limits* limits_ = nullptr;
  std::optional<finish_reason> stop_;
  generation_result result_;
};

template <class Model, class Combiner, class Speculator>
decoder(std::vector<Model*>, Combiner, Speculator) -> decoder<Model, Combiner, Speculator>;
template <class Model, class Combiner, class Speculator>
decoder(std::vector<Model*>, Combiner, Speculator, sampling_settings) -> decoder<Model, Combiner, Speculator>;
template <class Model, class Combiner, class Speculator>
decoder(std::vector<Model*>, Combiner, Speculator, sampling_settings, decoder_options)
    -> decoder<Model, Combiner, Speculator>;

}  // namespace cospec

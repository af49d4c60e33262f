// The CoS session: the algorithm and its bookkeeping for one sequence, as a state machine that
// never calls out (docs/engine.md, "Driving a session"; docs/algorithm.md, "Invocations").
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::min, std::max, std::equal, std::copy, std::fill
#include <cmath>      // std::isfinite, std::exp
#include <cstdint>    // std::uint64_t
#include <limits>     // std::numeric_limits
#include <cstddef>    // std::size_t
#include <memory>     // std::unique_ptr, std::make_unique
#include <new>        // std::align_val_t, operator new
#include <optional>   // std::optional
#include <span>       // std::span
#include <string>     // std::string, std::to_string
#include <string_view>  // std::string_view
#include <utility>    // std::move
#include <vector>     // std::vector

#include "cospec/adapters/model_adapter.hpp"
#include "cospec/combine/combiner.hpp"
#include "cospec/combine/target.hpp"
#include "cospec/decoder/generation.hpp"
#include "cospec/decoder/output_text.hpp"
#include "cospec/errors.hpp"
#include "cospec/kernels/reduce.hpp"
#include "cospec/kernels/sample.hpp"
#include "cospec/random.hpp"
#include "cospec/sampling.hpp"
#include "cospec/speculate/context_lookup.hpp"
#include "cospec/speculate/speculator.hpp"
#include "cospec/token.hpp"
#include "cospec/verify/verifier.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

namespace detail {
/// Allocates on 64-byte boundaries: every logit row the session owns starts on a cache line
/// (and on an AVX-512 vector), whatever malloc returns for a large block (glibc: 16 bytes past a page).
template <class T>
struct cache_line_allocator {
  using value_type = T;
  cache_line_allocator() noexcept = default;
  template <class U>
  cache_line_allocator(const cache_line_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{64}); }
  friend bool operator==(const cache_line_allocator&, const cache_line_allocator&) noexcept { return true; }
};
using row_storage = std::vector<float, cache_line_allocator<float>>;

/// Throws invalid_configuration unless `prompt` is non-empty with every id below `vocabulary`.
inline void check_prompt(std::span<const token_id> prompt, std::size_t vocabulary, const char* what = "prompt") {
  if (prompt.empty())
    throw invalid_configuration(std::string("generate: the ") + what + " is empty; models need at least one token");
  for (std::size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] < 0 || static_cast<std::size_t>(prompt[i]) >= vocabulary)
      throw invalid_configuration(std::string("generate: ") + what + " token " + std::to_string(i) + " is " +
                                  std::to_string(prompt[i]) + ", outside the vocabulary of " + std::to_string(vocabulary));
}

/// Log-probability reports: at most this many alternatives per token (OpenAI's bound).
inline constexpr std::size_t max_top_logprobs = 20;

/// Throws invalid_configuration for limits that can never work with this vocabulary: stop
/// tokens outside it, empty stop sequences or strings, stop strings without token texts, more
/// than max_top_logprobs alternatives.
inline void check_limits(const generation_limits& limits, std::size_t vocabulary, bool has_token_text) {
  for (std::size_t i = 0; i < limits.stop_tokens.size(); ++i) {
    const token_id t = limits.stop_tokens[i];
    if (t < 0 || static_cast<std::size_t>(t) >= vocabulary)
      throw invalid_configuration("generate: stop token " + std::to_string(i) + " is " + std::to_string(t) +
                                  ", outside the vocabulary of " + std::to_string(vocabulary));
  }
  for (const auto& sequence : limits.stop_sequences)
    for (token_id t : sequence)
      if (t < 0 || static_cast<std::size_t>(t) >= vocabulary)
        throw invalid_configuration("generate: a stop sequence holds token " + std::to_string(t) +
                                    ", outside the vocabulary of " + std::to_string(vocabulary));
  for (const auto& stop : limits.stop_strings)
    if (stop.empty()) throw invalid_configuration("generate: a stop string is empty (it would match everywhere)");
  if (!limits.stop_strings.empty() && !has_token_text)
    throw invalid_configuration("generate: stop strings need token texts, and none were given (session_options::"
                                "token_text, or adapters with token_text(); docs/engine.md, \"Text, stop strings and "
                                "streaming\")");
  if (limits.logprobs.top > max_top_logprobs)
    throw invalid_configuration("generate: at most " + std::to_string(max_top_logprobs) +
                                " top log-probabilities per token, got " + std::to_string(limits.logprobs.top));
}
}  // namespace detail

/// Settings of a session (and of a decoder) that are not per request.
struct session_options {
  /// Virtual cost of each model's forward passes, one entry per model, for
  /// generation_statistics::virtual_time; empty means no cost clock.
  std::vector<pass_cost> pass_costs;
  /// Largest allowed difference between the models' vocabulary sizes. Models whose sizes
  /// differ by padding only (Qwen2.5: 151936 and 152064) decode over the shared first ids.
  std::size_t vocabulary_padding = 256;
  /// Most proposals that may wait for verification at once. Every pending slot holds a logit
  /// row per model (and a proposal row), so this bounds the session's memory at
  /// (max_pending + 1) * (sum of the vocabulary sizes + V) floats. A speculator that proposes
  /// past it gets a usage_error. The provided policies never come near it (a chain is at most
  /// the sum of the models' proposal lengths).
  std::size_t max_pending = 64;
  /// Each token's text, for stop strings, generation_result::text and the streamed pieces of
  /// token_event (empty: none; a decoder fills it from adapters with token_text()).
  token_text_source token_text;
  /// The index behind context proposals (invocation::context_proposals), allocated at the
  /// first request that asks for one: its size is fixed, whatever the text's length.
  context_lookup_options context_lookup;
  /// Fills every logit row with NaN before handing it to the caller, and checks at
  /// pass_done() that the pass wrote every row: an unwritten row is a usage_error naming the
  /// model and the pass, not silently wrong tokens. A pass over the rows per pass; on in debug
  /// builds (NDEBUG not defined), opt-in in release builds.
#ifdef NDEBUG
  bool checked_rows = false;
#else
  bool checked_rows = true;
#endif
};

/// What the caller reports of a pass it carried out (session::pass_done): the model's context
/// length afterwards, which must be the pass's keep plus its tokens (a driver that fed the
/// wrong text, or ignored `keep`, is told so), and the wall time it took (optional; for the
/// statistics and for speculators that learn pass costs).
struct pass_report {
  std::size_t context_length = 0;
  double adapter_seconds = 0.0;
};

/// What the caller must do next for a session: one forward pass of one model.
/// 1. If `model`'s context holds more than `keep` tokens, truncate it to `keep` (it never
///    holds fewer: a model that does was changed behind the session's back).
/// 2. Feed `tokens` (never empty) in one forward pass, writing the logits after each of the
///    last rows.size() fed tokens into `rows`, oldest first (each row of the model's own
///    vocabulary size).
/// 3. Tell the session: pass_done(), or pass_failed() if anything in 1 or 2 went wrong.
/// The spans point into the session and stay valid until then.
struct model_pass {
  std::size_t model = 0;
  std::size_t keep = 0;
  std::span<const token_id> tokens;
  logit_outputs rows;
};

/// Collaborative decoding of one sequence over n models combined by `Combiner`, scheduled by
/// `Speculator`, with no adapter, clock or thread inside: the caller asks what must happen
/// next (`next_pass`), carries out that forward pass with its own engine, and hands the rows
/// back (`pass_done`). Between requests the session keeps its buffers (no allocation per token
/// in the steady state) and the speculator's learned state; every request brings its own
/// prompt, sampling settings and limits.
///
///     session.start(prompt, settings, limits, cached);   // cached[k]: prompt tokens model k holds
///     while (const model_pass* pass = session.next_pass()) {
///       run(*pass);                                      // truncate, feed, write rows
///       session.pass_done();
///     }
///     generation_result result = session.take_result();
///     // then truncate each model k whose context is longer than session.held(k)
///
/// A call out of this order (start() or take_result() while a request runs, next_pass() with a
/// pass outstanding or before the first start(), pass_done() or pass_failed() with no pass
/// outstanding, take_result() with no result to take) is refused with a usage_error and
/// changes nothing: a running request goes on as if the call had not been made. (A driver's
/// slip should not cost a request the tokens it has, and the caller can still cancel() it.)
/// Any other exception the session throws (invalid_logits, a speculator's impossible choice,
/// a pass_done() report that contradicts the pass), and pass_failed(), end the request:
/// nothing pending remains, and `held(k)` says what each model may keep. The session is
/// movable (its state lives on the heap, so the spans it handed out stay valid across a move)
/// and serves one thread at a time.
template <combiner Combiner, speculator Speculator>
class session {
 public:
  /// `vocabulary_sizes[k]` is model k's row length. Throws invalid_configuration if the models,
  /// combiner, speculator and options do not fit together.
  session(Combiner combiner, Speculator speculator, std::vector<std::size_t> vocabulary_sizes,
          session_options options = {})
      : state_(std::make_unique<state>(std::move(combiner), std::move(speculator), std::move(vocabulary_sizes),
                                       std::move(options))) {}

  session(session&&) noexcept = default;
  session& operator=(session&&) noexcept = default;
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  /// The vocabulary decoded over: the smallest of the models' sizes.
  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return state_->vocabulary_; }
  [[nodiscard]] std::size_t model_count() const noexcept { return state_->vocabularies_.size(); }
  [[nodiscard]] const Speculator& speculator_policy() const noexcept { return state_->speculator_; }
  /// The speculator itself, for a driver that advises it (a batch decoder's batch_advice);
  /// whatever it is told changes the schedule only.
  [[nodiscard]] Speculator& speculator_policy() noexcept { return state_->speculator_; }
  [[nodiscard]] const Combiner& combination() const noexcept { return state_->combiner_; }

  /// Starts a request: `prompt` (non-empty, ids < vocabulary_size()), its sampling settings
  /// and limits (both copied), and `cached[k]`, how many leading prompt tokens model k already
  /// holds in its context (empty: none). A model keeps at most prompt.size() - 1 of them: the
  /// first pass of every model must compute logits at the prompt's end. `context_limit` is the
  /// most tokens any model can hold: the request ends with finish_reason::context_limit, its
  /// text kept, when the next token would need more (proposals never go past it). Throws
  /// invalid_configuration for a bad prompt, settings or limits, context_overflow for a
  /// prompt longer than `context_limit`, usage_error while a request runs.
  void start(std::span<const token_id> prompt, const sampling_settings& settings, const generation_limits& limits = {},
             std::span<const std::size_t> cached = {}, std::size_t context_limit = no_context_limit) {
    state_->start(prompt, settings, limits, cached, context_limit);
  }

  /// Starts a scoring request: the log-probability of each token of `continuation` after
  /// `context` (both non-empty, ids < vocabulary_size()) under the combined target at
  /// temperature 1 before any transform (logprob_basis::model), with whether it is that
  /// target's greedy choice, in generation_result::logprobs and greedy (tokens: the
  /// continuation; reason: finish_reason::scored). Every model feeds what it does not hold of
  /// context and continuation, in passes of at most max_pending + 1 scored positions (one pass
  /// per model for continuations up to that length). Driven like a generation request; the
  /// models then hold context and continuation. Throws as start() does (context_overflow when
  /// context and continuation together exceed `context_limit`).
  void start_scoring(std::span<const token_id> context, std::span<const token_id> continuation,
                     const scoring_options& options = {}, std::span<const std::size_t> cached = {},
                     std::size_t context_limit = no_context_limit) {
    state_->start_scoring(context, continuation, options, cached, context_limit);
  }

  /// No limit on the models' contexts (start()'s default).
  static constexpr std::size_t no_context_limit = static_cast<std::size_t>(-1);

  /// Replaces the combination for the next requests (per-request combiner parameters: another
  /// ensemble's weights, another contrastive mu, or with any_combiner another recipe). Throws
  /// invalid_configuration if it combines another number of models, usage_error while a
  /// request runs.
  void set_combination(Combiner combiner) { state_->set_combination(std::move(combiner)); }

  /// The next forward pass the caller must run, or nullptr once the request has finished.
  /// Everything the algorithm can do without a pass (verification, direct samples, commits,
  /// stop conditions, the token callback) happens inside. Throws invalid_logits for rows that
  /// define no distribution and usage_error for a speculator's impossible choice or a call
  /// out of order; the request has then ended.
  [[nodiscard]] const model_pass* next_pass() { return state_->next_pass(); }

  /// The pass returned by next_pass() was carried out, with what the caller saw (pass_report):
  /// a context length other than the pass's keep plus its tokens is a usage_error naming the
  /// model that ends the request (its model holds something the session did not ask for).
  void pass_done(const pass_report& report) { state_->pass_done(report.adapter_seconds, report.context_length); }

  /// The same without the length check, for drivers that cannot read a context length;
  /// `adapter_seconds` (optional) is the time the pass took.
  void pass_done(double adapter_seconds = 0.0) { state_->pass_done(adapter_seconds, std::nullopt); }

  /// The pass failed (the adapter threw, or the caller could not run it). The request ends:
  /// the failed model may hold anything past `keep` and must be truncated to held(k).
  void pass_failed() { state_->pass_failed(); }

  /// Ends a running request now (finish_reason::cancelled); committed tokens stay.
  void cancel() { state_->cancel(); }

  /// Whether a request is running (started, not yet finished or ended by an error).
  [[nodiscard]] bool running() const noexcept { return state_->phase_ != phase::idle; }

  /// The committed text: prompt and committed tokens (no pending proposal).
  [[nodiscard]] std::span<const token_id> committed_text() const noexcept {
    return {state_->text_.data(), state_->committed_};
  }

  /// How many tokens of committed_text() model k holds (after the caller has done what the
  /// last pass asked). Once the request has ended, a model whose context is longer must be
  /// truncated to this length before it serves this text again.
  [[nodiscard]] std::size_t held(std::size_t model) const noexcept {
    return std::min(state_->fed_[model], state_->committed_);
  }

  /// What the running (or last) request has produced so far: tokens and statistics. After a
  /// request that ended with an error, `reason` means nothing; the tokens are the committed
  /// ones and the statistics count the work done.
  [[nodiscard]] const generation_result& result() const noexcept { return state_->result_; }

  /// The finished request's result, moved out. usage_error while a request runs, before the
  /// first request, or when the last request's result was already taken.
  [[nodiscard]] generation_result take_result() {
    if (running()) throw usage_error("session: take_result() while a request is running");
    if (!state_->result_ready_)
      throw usage_error(state_->started_ ? "session: take_result() twice for one request"
                                         : "session: take_result() before any request was started");
    state_->result_ready_ = false;
    return std::move(state_->result_);
  }

 private:
  enum class phase { idle, deciding, awaiting_pass };

  struct pending_token {
    token_id token;
    std::size_t proposer;
    std::size_t chain_index;  // position in its proposer's run within one invocation
  };

  /// The invocation being carried out (docs/algorithm.md, "Invocations").
  struct current_invocation {
    std::size_t model = 0;
    std::size_t proposals = 0;
    std::size_t proposed = 0;        // proposals made so far in it
    std::size_t rejections = 0;      // statistics.rejections when it began
    bool progressed = false;         // fed or proposed something
    bool stopped_early = false;      // the speculator ended the proposer's run
    std::size_t context_proposals = 0;  // asked for (invocation::context_proposals)
    bool looked_up = false;             // the context proposals were made
  };

  struct state {
    state(Combiner combiner, Speculator speculator, std::vector<std::size_t> vocabulary_sizes, session_options options)
        : combiner_(std::move(combiner)),
          speculator_(std::move(speculator)),
          options_(std::move(options)),
          target_(combiner_, settings_),
          vocabularies_(std::move(vocabulary_sizes)) {
      const std::size_t n = vocabularies_.size();
      if (n == 0) throw invalid_configuration("session: needs at least one model");
      if (combiner_.model_count() != n)
        throw invalid_configuration("session: the combiner combines " + std::to_string(combiner_.model_count()) +
                                    " models, but " + std::to_string(n) + " were given");
      speculator_.check(n);
      std::size_t smallest = 0, largest = 0;
      for (std::size_t k = 0; k < n; ++k) {
        if (vocabularies_[k] == 0)
          throw invalid_configuration("session: model " + std::to_string(k) + " has an empty vocabulary");
        if (vocabularies_[k] < vocabularies_[smallest]) smallest = k;
        if (vocabularies_[k] > vocabularies_[largest]) largest = k;
      }
      if (vocabularies_[largest] - vocabularies_[smallest] > options_.vocabulary_padding)
        throw invalid_configuration(
            "session: model " + std::to_string(smallest) + " has a vocabulary of " +
            std::to_string(vocabularies_[smallest]) + " tokens and model " + std::to_string(largest) + " one of " +
            std::to_string(vocabularies_[largest]) + ", which differ by more than session_options::vocabulary_padding (" +
            std::to_string(options_.vocabulary_padding) +
            "): models of one decoder must share a vocabulary (sizes may differ by padding only)");
      vocabulary_ = vocabularies_[smallest];
      if (!options_.pass_costs.empty() && options_.pass_costs.size() != n)
        throw invalid_configuration("session: " + std::to_string(options_.pass_costs.size()) + " pass costs for " +
                                    std::to_string(n) + " models");
      for (std::size_t k = 0; k < options_.pass_costs.size(); ++k) {
        const pass_cost& cost = options_.pass_costs[k];
        if (!(std::isfinite(cost.per_pass) && cost.per_pass >= 0.0 && std::isfinite(cost.per_token) &&
              cost.per_token >= 0.0))
          throw invalid_configuration("session: pass cost of model " + std::to_string(k) +
                                      " must be finite and >= 0, got " + detail::number_text(cost.per_pass) +
                                      " per pass and " + detail::number_text(cost.per_token) + " per token");
      }
      if (options_.max_pending == 0)
        throw invalid_configuration("session: max_pending must be >= 1 (a proposal must be able to wait for its verifier)");
      fed_.assign(n, 0);
      rows_view_.resize(n);
      known_.resize(n);
      known_maxima_.resize(n);
      target_row_.resize(vocabulary_);
      proposal_scratch_.resize(vocabulary_);
      logits_.resize(n);
      mixture_cumulative_.resize(n);
      draws_.resize(options_.max_pending + 2);
      reset_slots();
      grow(std::min<std::size_t>(4, options_.max_pending + 1));
    }

    // The evaluator points at combiner_ and settings_: the state never moves (it lives behind
    // the session's unique_ptr).
    state(const state&) = delete;
    state& operator=(const state&) = delete;

    // ---- requests -----------------------------------------------------------------------

    void start(std::span<const token_id> prompt, const sampling_settings& settings, const generation_limits& limits,
               std::span<const std::size_t> cached, std::size_t context_limit) {
      if (phase_ != phase::idle)
        throw usage_error("session: start() while a request is running (finish it, or cancel() it first)");
      const std::size_t n = vocabularies_.size();
      if (!cached.empty() && cached.size() != n)
        throw usage_error("session: " + std::to_string(cached.size()) + " cached lengths for " + std::to_string(n) +
                          " models");
      detail::check_prompt(prompt, vocabulary_);
      validate(settings, vocabulary_);
      detail::check_limits(limits, vocabulary_, static_cast<bool>(options_.token_text));
      check_fits(prompt.size(), context_limit, "the prompt");
      settings_ = settings;
      target_.settings_changed();
      limits_ = limits;
      begin_request(prompt, cached, prompt.size() - 1, context_limit);
      // min_tokens: the stop tokens are banned from the target until then.
      banning_stops_ = limits_.min_tokens > 0 && !limits_.stop_tokens.empty();
      if (banning_stops_) target_.set_bannable(limits_.stop_tokens);
      mixture_ = false;
      mixture_eligible_ = false;
      if constexpr (mixture_speculator<Speculator> && combiner_with_mixture_weights<Combiner>) {
        // Mixture sampling needs the target to be the mixture itself, and no report that would
        // need the rows of models that were not drawn.
        if (speculator_.wants_mixture() && !settings_.greedy() && target_.untransformed() && !banning_stops_ &&
            !limits_.logprobs.enabled)
          start_draws(combiner_.mixture_weights(), limits_.seed.value_or(settings_.seed));
      }
      result_.statistics.mixture = mixture_;
      if (limits_.max_new_tokens == 0) stop_ = finish_reason::max_new_tokens;
      phase_ = phase::deciding;
    }

    void start_scoring(std::span<const token_id> context, std::span<const token_id> continuation,
                       const scoring_options& options, std::span<const std::size_t> cached,
                       std::size_t context_limit) {
      if (phase_ != phase::idle)
        throw usage_error("session: start_scoring() while a request is running (finish it, or cancel() it first)");
      const std::size_t n = vocabularies_.size();
      if (!cached.empty() && cached.size() != n)
        throw usage_error("session: " + std::to_string(cached.size()) + " cached lengths for " + std::to_string(n) +
                          " models");
      detail::check_prompt(context, vocabulary_, "context");
      detail::check_prompt(continuation, vocabulary_, "continuation");
      if (options.top > detail::max_top_logprobs)
        throw invalid_configuration("score: at most " + std::to_string(detail::max_top_logprobs) +
                                    " top log-probabilities per token, got " + std::to_string(options.top));
      check_fits(context.size() + continuation.size(), context_limit, "the context and the continuation");
      settings_ = sampling_settings{};
      target_.settings_changed();
      limits_ = generation_limits{};
      limits_.max_new_tokens = continuation.size();
      limits_.logprobs = {true, options.top, logprob_basis::model};
      limits_.on_token = options.on_token;
      continuation_.assign(continuation.begin(), continuation.end());
      begin_request(context, cached, context.size() - 1, context_limit);
      scoring_ = true;
      banning_stops_ = false;
      mixture_ = false;
      mixture_eligible_ = false;
      phase_ = phase::deciding;
    }

    /// What start() and start_scoring() share: the text, the statistics and the output reset
    /// for a request whose prompt (or context) is `prompt`.
    void begin_request(std::span<const token_id> prompt, std::span<const std::size_t> cached, std::size_t cache_bound,
                       std::size_t context_limit) {
      const std::size_t n = vocabularies_.size();
      result_ = generation_result{};
      // Reserved up front so that committing a token never allocates (bounded for huge limits).
      const std::size_t expected = std::min<std::size_t>(limits_.max_new_tokens, std::size_t{1} << 16);
      result_.tokens.reserve(expected);
      if (limits_.logprobs.enabled) {
        result_.logprobs.reserve(expected);
        result_.greedy.reserve(expected);
        result_.top_count = limits_.logprobs.top;
        result_.top.reserve(expected * limits_.logprobs.top);
        if (logprob_row_.size() < vocabulary_) logprob_row_.resize(vocabulary_);
        top_scratch_.resize(limits_.logprobs.top);
      }
      result_.statistics.models.assign(n, model_statistics{});
      result_.statistics.proposers.assign(n, proposer_statistics{});
      stop_.reset();
      invocation_.reset();
      random_.reseed(limits_.seed.value_or(settings_.seed));
      if constexpr (resettable_speculator<Speculator>) speculator_.reset();
      text_.assign(prompt.begin(), prompt.end());
      prompt_size_ = prompt.size();
      committed_ = prompt.size();
      context_limit_ = context_limit;
      scoring_ = false;
      scored_count_ = 0;
      output_text_.start(&limits_.stop_strings);
      if (lookup_) lookup_->clear();
      reset_slots();
      if (!settings_.greedy() && proposals_.size() < capacity_ * vocabulary_) proposals_.resize(capacity_ * vocabulary_);
      for (std::size_t k = 0; k < n; ++k) fed_[k] = cached.empty() ? 0 : std::min(cached[k], cache_bound);
      started_ = true;
      result_ready_ = false;
    }

    /// context_overflow unless `tokens` fit in `limit`.
    static void check_fits(std::size_t tokens, std::size_t limit, const char* what) {
      if (tokens > limit)
        throw context_overflow("session: " + std::string(what) + " holds " + std::to_string(tokens) +
                               " tokens, more than the models' context limit of " + std::to_string(limit));
    }

    void set_combination(Combiner combiner) {
      if (phase_ != phase::idle) throw usage_error("session: set_combination() while a request is running");
      if (combiner.model_count() != vocabularies_.size())
        throw invalid_configuration("session: the combiner combines " + std::to_string(combiner.model_count()) +
                                    " models, but the session has " + std::to_string(vocabularies_.size()));
      combiner_ = std::move(combiner);
      target_.settings_changed();
    }

    const model_pass* next_pass() {
      if (phase_ == phase::idle) {
        if (!started_) throw usage_error("session: next_pass() before start()");
        return nullptr;
      }
      if (phase_ == phase::awaiting_pass)
        throw usage_error("session: next_pass() before the last pass was reported (pass_done or pass_failed)");
      try {
        if (decide()) {
          phase_ = phase::awaiting_pass;
          return &pass_;
        }
      } catch (...) {
        end_after_error();
        throw;
      }
      finish();
      return nullptr;
    }

    void pass_done(double seconds, std::optional<std::size_t> context_length) {
      if (phase_ != phase::awaiting_pass) throw usage_error("session: pass_done() without a pass to report");
      const std::size_t k = pass_.model;
      const std::size_t end = pass_.keep + pass_.tokens.size();
      if (context_length && *context_length != end) {
        fed_[k] = std::min(pass_.keep, *context_length);
        end_after_error();
        throw usage_error("session: model " + std::to_string(k) + " holds " + std::to_string(*context_length) +
                          " tokens after its pass, where the pass asked for " + std::to_string(pass_.keep) +
                          " kept and " + std::to_string(pass_.tokens.size()) + " fed (" + std::to_string(end) +
                          "): truncate it to model_pass::keep first and feed exactly model_pass::tokens; the request "
                          "has ended, and the model must be truncated to held(" + std::to_string(k) + ")");
      }
      if (options_.checked_rows) check_rows_written();
      auto& stats = result_.statistics.models[k];
      stats.adapter_seconds += seconds;
      ++stats.forward_passes;
      stats.tokens_fed += pass_.tokens.size();
      stats.logit_rows += pass_.rows.size();
      for (std::size_t i = 0; i < pass_.rows.size(); ++i) scored_flags_[(pass_first_slot_ + i) * vocabularies_.size() + k] = 1;
      fed_[k] = end;
      if constexpr (timing_speculator<Speculator>) speculator_.observe_pass(k, pass_.tokens.size(), seconds);
      phase_ = phase::deciding;
    }

    /// checked_rows: every row of the pass must have been written over the NaN it was handed
    /// out with (no valid logit row holds a NaN).
    void check_rows_written() {
      for (std::size_t i = 0; i < pass_.rows.size(); ++i) {
        if (!std::isnan(kernels::max_argmax(pass_.rows[i]).value)) continue;
        const std::size_t k = pass_.model;
        const std::size_t rows = pass_.rows.size();
        fed_[k] = pass_.keep;
        end_after_error();
        throw usage_error("session: model " + std::to_string(k) + "'s pass feeding " +
                          std::to_string(pass_.tokens.size()) + " tokens at position " + std::to_string(pass_.keep) +
                          " left logit row " + std::to_string(i) + " of " + std::to_string(rows) +
                          " unwritten (still NaN; session_options::checked_rows): rows[i] must hold the logits after "
                          "the (tokens.size() - rows.size() + i)-th fed token; the request has ended");
      }
    }

    void pass_failed() {
      if (phase_ != phase::awaiting_pass) throw usage_error("session: pass_failed() without a pass to report");
      fed_[pass_.model] = pass_.keep;
      end_after_error();
    }

    void cancel() {
      if (phase_ == phase::idle) return;
      if (phase_ == phase::awaiting_pass) fed_[pass_.model] = pass_.keep;  // the pass may or may not have run
      stop_ = finish_reason::cancelled;
      finish();
    }

    // ---- text and positions -------------------------------------------------------------
    // text_ = prompt + committed tokens + pending proposals. committed_ counts the first two.
    // Slot s (0 <= s <= pending) is position committed_ + s; the last slot is the frontier.

    [[nodiscard]] std::size_t pending_count() const noexcept { return pending_.size(); }
    [[nodiscard]] std::size_t ring(std::size_t slot) const noexcept { return (head_ + slot) % capacity_; }
    [[nodiscard]] bool scored(std::size_t model, std::size_t slot) const noexcept {
      return scored_flags_[slot * vocabularies_.size() + model] != 0;
    }
    [[nodiscard]] bool scored_by_all(std::size_t slot) const noexcept {
      for (std::size_t k = 0; k < vocabularies_.size(); ++k)
        if (!scored(k, slot)) return false;
      return true;
    }
    [[nodiscard]] std::span<float> logits_row(std::size_t model, std::size_t slot) noexcept {
      return {logits_[model].data() + ring(slot) * vocabularies_[model], vocabularies_[model]};
    }
    [[nodiscard]] std::span<float> proposal_row(std::size_t slot) noexcept {
      return {proposals_.data() + ring(slot) * vocabulary_, vocabulary_};
    }
    /// What proposal_row(slot) sums to (1 unless it is kept unnormalised).
    [[nodiscard]] float& proposal_sum(std::size_t slot) noexcept { return proposal_sums_[ring(slot)]; }
    /// q(x) of the token proposed in `slot`, from the row it was drawn from.
    [[nodiscard]] double& proposal_probability_at(std::size_t slot) noexcept { return proposal_probabilities_[ring(slot)]; }
    /// A greedy proposal's largest logit (its argmax's), or NaN (a processed proposal).
    [[nodiscard]] float& proposal_max(std::size_t slot) noexcept { return proposal_maxima_[ring(slot)]; }
    [[nodiscard]] schedule_view view(std::size_t context_match = 0) const noexcept {
      const std::size_t generated = committed_ - prompt_size_;
      const std::size_t room = proposal_room();
      if (mixture_)
        return schedule_view(vocabularies_.size(), pending_count(), scored_flags_, proposers_, draws_, draws_head_,
                             generated, context_match, room, settings_.greedy());
      return schedule_view(vocabularies_.size(), pending_count(), scored_flags_, proposers_, {}, 0, generated,
                           context_match, room, settings_.greedy());
    }
    /// How many more proposals may wait: max_pending less what is pending, and no more than the
    /// context limit leaves.
    [[nodiscard]] std::size_t proposal_room() const noexcept {
      const std::size_t room_in_context = context_limit_ > text_.size() ? context_limit_ - text_.size() : 0;
      return std::min(options_.max_pending - pending_count(), room_in_context);
    }

    // ---- mixture sampling (docs/algorithm.md, "Mixture sampling") ----------------------
    // draws_ is a ring: slot s (position committed_ + s) was drawn draws_[(draws_head_ + s) %
    // size]. Each position's draw is taken, in position order, from a stream of its own seeded
    // from the request's seed, and stays fixed until the position is committed: the draws are
    // independent of every token, proposal and verification, which is what makes the drawn
    // model's distribution an exact stand-in for the mixture.

    /// Starts drawing for a request whose target is the mixture with `weights` (normalised,
    /// one per model); a span of another size leaves the request as collaborative decoding.
    void start_draws(std::span<const float> weights, std::uint64_t seed) {
      if (weights.size() != vocabularies_.size()) return;
      double cumulative = 0.0;
      std::size_t last = 0;  // the last model with a positive weight
      for (std::size_t k = 0; k < weights.size(); ++k) {
        cumulative += static_cast<double>(weights[k]);
        mixture_cumulative_[k] = cumulative;
        if (weights[k] > 0.0f) last = k;
      }
      // Rounding must never let a uniform fall past the last positive weight: it takes the rest.
      for (std::size_t k = last; k < weights.size(); ++k) mixture_cumulative_[k] = 2.0;
      draw_random_.reseed(seed ^ 0x6d69787475726573ULL);  // a stream apart from the tokens' ("mixtures")
      for (std::size_t& draw : draws_) draw = draw_one();
      draws_head_ = 0;
      mixture_ = true;
      mixture_eligible_ = true;
    }

    /// The first model whose cumulative weight exceeds a uniform: model k with probability w_k
    /// (a model of weight 0 never).
    std::size_t draw_one() noexcept {
      const double u = draw_random_.uniform();
      std::size_t k = 0;
      while (!(u < mixture_cumulative_[k])) ++k;
      return k;
    }

    /// The model drawn for `slot` (slot < draws_.size()).
    [[nodiscard]] std::size_t drawn(std::size_t slot) const noexcept {
      return draws_[(draws_head_ + slot) % draws_.size()];
    }

    /// The position in slot 0 was committed: its draw is used up, and a new position comes into view.
    void next_draw() noexcept {
      draws_[draws_head_] = draw_one();
      draws_head_ = (draws_head_ + 1) % draws_.size();
    }

    /// Settles slot 0 once the model drawn for it has scored it: samples that model's
    /// distribution at the frontier, accepts its own proposal, or verifies another model's
    /// proposal against it. Returns whether the next slot may be settled too.
    bool settle_drawn() {
      const std::size_t j = drawn(0);
      if (!scored(j, 0)) return false;
      auto& stats = result_.statistics;
      const std::span<const float> row = logits_row(j, 0).first(vocabulary_);
      ++stats.models[j].draws;
      if (pending_count() == 0) {
        const token_id token = sample_drawn(j, row);
        ++stats.direct_samples;
        text_.push_back(token);
        advance();
        emit(token);
        return false;  // nobody has scored the new frontier
      }
      const pending_token proposal = pending_.front();
      // The drawn model's own proposal already has the law of the position's target.
      const verdict outcome = proposal.proposer == j ? verdict{true, proposal.token} : verify_against(j, row, proposal);
      record(proposal, outcome.accepted, j);
      if (outcome.accepted) {
        pending_.erase(pending_.begin());
        proposers_.erase(proposers_.begin());
        advance();
        emit(proposal.token);
        return true;
      }
      reject(outcome.token);
      return false;
    }

    /// A token from model j's distribution softmax(row / T) (one max and one exp pass, written
    /// to the target row, then inverse CDF).
    token_id sample_drawn(std::size_t j, std::span<const float> row) {
      const kernels::exp_row_stats exps = kernels::unnormalized_softmax(row, target_row_, 1.0f / settings_.temperature);
      if (!exps.valid()) throw_drawn_row(j, row);
      return static_cast<token_id>(kernels::sample_inverse_cdf(target_row_, random_.uniform(), exps.sum));
    }

    [[noreturn]] void throw_drawn_row(std::size_t j, std::span<const float> row) const {
      try {
        throw_invalid_row(j, row);
      } catch (const invalid_logits& e) {
        throw invalid_logits("position " + std::to_string(committed_) + ", " + e.what());
      }
    }

    /// Verifies a proposal against model j's distribution softmax(row / T), evaluated at the
    /// proposed token alone; the row is written only for a rejection's residual.
    verdict verify_against(std::size_t j, std::span<const float> row, const pending_token& proposal) {
      const float scale = 1.0f / settings_.temperature;
      const kernels::exp_row_stats exps = kernels::exp_sum(row, scale);
      if (!exps.valid()) throw_drawn_row(j, row);
      const double r_x =
          std::exp((static_cast<double>(row[static_cast<std::size_t>(proposal.token)]) - exps.max) *
                   static_cast<double>(exps.scale)) /
          static_cast<double>(exps.sum);
      const auto target_row = [&]() -> std::span<const float> {
        const kernels::exp_row_stats written = kernels::unnormalized_softmax(row, target_row_, scale);
        kernels::scale_row(target_row_, 1.0f / written.sum);
        return target_row_;
      };
      if (proposal.proposer == vocabularies_.size()) return verifier_.verify_point(proposal.token, r_x, target_row, random_);
      return verifier_.verify_at(proposal.token, r_x, proposal_probability_at(0), proposal_row(0), proposal_sum(0),
                                 target_row, random_);
    }

    /// Makes room for `slots` slots (at most max_pending + 1, the bound of docs/engine.md);
    /// reallocates (keeping live rows) only when growing.
    void grow(std::size_t slots) {
      if (slots <= capacity_) return;
      const std::size_t capacity = std::max(slots, std::min(2 * capacity_, options_.max_pending + 1));
      const std::size_t live = capacity_ == 0 ? 0 : pending_count() + 1;
      for (std::size_t k = 0; k < vocabularies_.size(); ++k) {
        detail::row_storage rows(capacity * vocabularies_[k]);
        for (std::size_t s = 0; s < live; ++s) {
          const auto old = logits_row(k, s);
          std::copy(old.begin(), old.end(), rows.begin() + static_cast<std::ptrdiff_t>(s * vocabularies_[k]));
        }
        logits_[k] = std::move(rows);
      }
      if (!proposals_.empty() || !settings_.greedy()) {
        detail::row_storage rows(capacity * vocabulary_);
        for (std::size_t s = 0; s < live && !proposals_.empty(); ++s) {
          const auto old = proposal_row(s);
          std::copy(old.begin(), old.end(), rows.begin() + static_cast<std::ptrdiff_t>(s * vocabulary_));
        }
        proposals_ = std::move(rows);
      }
      std::vector<float> sums(capacity, 1.0f);
      std::vector<float> maxima(capacity, std::numeric_limits<float>::quiet_NaN());
      std::vector<double> probabilities(capacity, 0.0);
      for (std::size_t s = 0; s < live && !proposal_sums_.empty(); ++s) {
        sums[s] = proposal_sum(s);
        maxima[s] = proposal_max(s);
        probabilities[s] = proposal_probability_at(s);
      }
      proposal_sums_ = std::move(sums);
      proposal_maxima_ = std::move(maxima);
      proposal_probabilities_ = std::move(probabilities);
      head_ = 0;
      capacity_ = capacity;
      feed_rows_.resize(capacity);
    }

    void reset_slots() {
      pending_.clear();
      proposers_.clear();
      scored_flags_.assign(vocabularies_.size(), 0);
      head_ = 0;
    }

    /// Drops pending proposals; every model keeps at most the committed text.
    void drop_pending() noexcept {
      text_.resize(committed_);
      reset_slots();
      for (std::size_t& f : fed_) f = std::min(f, committed_);
    }

    void finish() {
      drop_pending();
      invocation_.reset();
      result_.reason = stop_.value_or(finish_reason::cancelled);
      seal_result();
      phase_ = phase::idle;
    }

    /// The result's totals and text, once the request has ended.
    void seal_result() {
      sum_statistics();
      result_.text = output_text_.text();
      result_ready_ = true;
      scoring_ = false;
      if (banning_stops_) target_.ban_tokens(false);
    }

    /// The per-call totals of the statistics, from the per-model ones.
    void sum_statistics() noexcept {
      auto& stats = result_.statistics;
      stats.seconds_in_adapters = 0.0;
      stats.virtual_time = 0.0;
      for (std::size_t k = 0; k < vocabularies_.size(); ++k) {
        auto& m = stats.models[k];
        stats.seconds_in_adapters += m.adapter_seconds;
        if (!options_.pass_costs.empty()) {
          m.virtual_time = options_.pass_costs[k].per_pass * static_cast<double>(m.forward_passes) +
                           options_.pass_costs[k].per_token * static_cast<double>(m.tokens_fed);
          stats.virtual_time += m.virtual_time;
        }
      }
    }

    /// After an exception or a failed pass: the request ends with nothing pending.
    void end_after_error() noexcept {
      drop_pending();
      invocation_.reset();
      try {
        seal_result();
      } catch (...) {  // copying the text: the request has ended whatever happens
        result_ready_ = true;
      }
      phase_ = phase::idle;
    }

    // ---- the algorithm ------------------------------------------------------------------

    /// Runs the algorithm up to the next forward pass it needs (true, pass_ set) or to the end
    /// of the request (false).
    bool decide() {
      if (scoring_) return decide_scoring();
      while (true) {
        settle();
        if (stop_) return false;
        if (!invocation_) {
          // A safe point (nothing pending): a policy that switches between mixture sampling and
          // collaborative decoding decides here for the coming positions, from the past alone
          // (docs/algorithm.md, "Mixture sampling": a choice that looked at a coming draw would
          // bias its position).
          if constexpr (mixture_switching_speculator<Speculator>) {
            if (mixture_eligible_ && pending_count() == 0) {
              const std::size_t generated = committed_ - prompt_size_;
              mixture_ = speculator_.mixture_now(
                  schedule_view(vocabularies_.size(), 0, scored_flags_, proposers_, {}, 0, generated));
            }
          }
          std::size_t context_match = 0;
          if constexpr (context_matching_speculator<Speculator>) {
            if (speculator_.wants_context_match()) context_match = look_up_context(proposal_room());
          }
          invocation next = speculator_.next(view(context_match));
          if (next.model >= vocabularies_.size())
            throw usage_error("speculator chose model " + std::to_string(next.model) + " of " +
                              std::to_string(vocabularies_.size()));
          // At the context limit no proposal fits: a model with nothing to feed could only
          // propose, so the model the oldest slot waits for runs instead.
          if (text_.size() >= context_limit_ && fed_[next.model] >= text_.size()) next = {first_waiting_model(), 0};
          const std::size_t k = next.model;
          auto& stats = result_.statistics;
          ++stats.invocations;
          ++stats.models[k].invocations;
          invocation_ = current_invocation{k, next.proposals, 0, stats.rejections, false, false,
                                           next.context_proposals, false};
          // A model that proposes nothing, with nothing pending, scores the context's proposals
          // in its own pass, and so does one asked to take them first (its own proposals go on
          // from their end); otherwise they follow the model's own proposals (so that a wrong
          // one costs none of the model's).
          if (next.context_proposals > 0 && (next.context_first || (next.proposals == 0 && pending_count() == 0))) {
            invocation_->looked_up = true;
            propose_from_context(next.context_proposals);
          }
          if (fed_[k] < text_.size()) {
            invocation_->progressed = true;
            prepare_pass(k);
            return true;
          }
        }
        current_invocation& inv = *invocation_;
        const std::size_t k = inv.model;
        if (inv.proposed < inv.proposals && !inv.stopped_early && result_.statistics.rejections == inv.rejections &&
            text_.size() < context_limit_) {
          // Checked before the pass that would score the frontier: a proposal past the bound
          // is refused without feeding anything for it.
          if (pending_count() >= options_.max_pending)
            throw usage_error("speculator: model " + std::to_string(k) + " would make " +
                              std::to_string(pending_count() + 1) +
                              " proposals wait for verification, more than max_pending = " +
                              std::to_string(options_.max_pending) + " (session_options)");
          if (!scored(k, pending_count())) {
            if (fed_[k] >= text_.size())
              throw usage_error("model " + std::to_string(k) + " has no logits at the frontier and nothing to feed");
            prepare_pass(k);
            return true;
          }
          propose(k, inv);
          inv.progressed = true;
          continue;
        }
        if (!inv.looked_up && inv.context_proposals > 0 && inv.proposed > 0 &&
            result_.statistics.rejections == inv.rejections) {
          // The context's proposals go on from the end of the model's own.
          inv.looked_up = true;
          propose_from_context(inv.context_proposals);
          continue;
        }
        if (!inv.progressed)
          throw usage_error("speculator chose model " + std::to_string(k) + ", which had nothing to feed or propose");
        invocation_.reset();
      }
    }

    /// The pass that feeds model k every token of the text it has not seen and scores every
    /// slot it had not scored, the frontier included.
    void prepare_pass(std::size_t k) {
      const std::size_t end = text_.size();
      const std::size_t before = fed_[k];
      const std::size_t first = std::max(before + 1, committed_);  // first position whose logits are needed
      pass_first_slot_ = first - committed_;
      const std::size_t rows = end - first + 1;
      grow(pending_count() + 1);
      for (std::size_t i = 0; i < rows; ++i) {
        feed_rows_[i] = logits_row(k, pass_first_slot_ + i);
        if (options_.checked_rows) std::fill(feed_rows_[i].begin(), feed_rows_[i].end(), std::numeric_limits<float>::quiet_NaN());
      }
      pass_ = model_pass{k, before, std::span<const token_id>(text_.data() + before, end - before),
                         logit_outputs(feed_rows_.data(), rows)};
    }

    /// Model k proposes one token at the frontier from its own distribution there; then the
    /// speculator may end k's run.
    void propose(std::size_t k, current_invocation& inv) {
      const std::size_t slot = pending_count();  // < max_pending: decide() checked
      const std::span<const float> logits = logits_row(k, slot).first(vocabulary_);
      token_id token;
      float probability = 1.0f;
      float best_probability = 1.0f;
      constexpr bool asks_confidence = confidence_speculator<Speculator>;
      bool wants = false;
      if constexpr (asks_confidence) wants = speculator_.wants_confidence();
      const bool processed = target_.processes_proposals();
      const std::span<const token_id> prefix(text_.data(), text_.size());
      try {
        if (settings_.greedy()) {
          std::span<const float> row = logits;
          proposal_max(slot) = std::numeric_limits<float>::quiet_NaN();
          if (processed) {
            token = target_.processed_greedy_proposal(k, logits, prefix, proposal_scratch_);
            row = proposal_scratch_;
          } else {
            const kernels::max_location best = kernels::max_argmax(logits);
            if (!std::isfinite(best.value)) throw_invalid_row(k, logits);
            token = static_cast<token_id>(best.index);
            proposal_max(slot) = best.value;
          }
          if (wants) {
            // The proposer's temperature-1 probability of its argmax: exp(l_max - log-sum-exp).
            probability = best_probability =
                std::exp(row[static_cast<std::size_t>(token)] - kernels::log_sum_exp(row));
          }
        } else {
          const std::span<float> q = proposal_row(slot);
          float& sum = proposal_sum(slot);
          sum = 1.0f;
          if (processed) target_.processed_proposal(k, logits, prefix, q);
          else sum = proposal_distribution(k, logits, q);
          token = static_cast<token_id>(kernels::sample_inverse_cdf(q, random_.uniform(), sum));
          proposal_probability_at(slot) =
              static_cast<double>(q[static_cast<std::size_t>(token)]) / static_cast<double>(sum);
          if (wants) {
            probability = q[static_cast<std::size_t>(token)] / sum;
            best_probability = kernels::max_argmax(q).value / sum;
          }
        }
      } catch (const invalid_logits& e) {
        throw invalid_logits("position " + std::to_string(text_.size()) + ", " + e.what());
      }
      pending_.push_back({token, k, inv.proposed});
      proposers_.push_back(k);
      text_.push_back(token);
      scored_flags_.resize(scored_flags_.size() + vocabularies_.size(), 0);  // the new frontier
      ++inv.proposed;
      if constexpr (asks_confidence) {
        if (wants && !speculator_.continue_proposing(proposal_confidence{k, inv.proposed - 1, probability, best_probability}))
          inv.stopped_early = true;
      }
    }

    /// Model k's own proposal distribution at the sampling temperature into `q`; returns what
    /// q sums to. A combiner whose proposals are plain softmaxes (combiner_with_point_target
    /// promises it) gets them unnormalised: the verifier needs q at one token and the residual
    /// takes the sum, so the normalising pass over the row is saved.
    float proposal_distribution(std::size_t k, std::span<const float> logits, std::span<float> q) {
      if constexpr (combiner_with_point_target<Combiner>) {
        if (has_point_target(combiner_)) {
          const kernels::exp_row_stats stats = kernels::unnormalized_softmax(logits, q, 1.0f / settings_.temperature);
          if (!stats.valid()) throw_invalid_row(k, logits);
          return stats.sum;
        }
      }
      combiner_.proposal_distribution(k, logits, settings_.temperature, q);
      return 1.0f;
    }

    /// Verifies every pending token that all models have scored, oldest first, and samples
    /// the target directly at a frontier that all models have scored with nothing pending.
    void settle() {
      while (!stop_) {
        if (mixture_) {
          if (!settle_drawn()) return;
          continue;
        }
        if (!scored_by_all(0)) return;
        // Slot 0 is output token committed_ - prompt_size_: min_tokens bans the stop tokens there.
        if (banning_stops_) target_.ban_tokens(committed_ - prompt_size_ < limits_.min_tokens);
        for (std::size_t k = 0; k < vocabularies_.size(); ++k) rows_view_[k] = logits_row(k, 0).first(vocabulary_);
        const std::span<const token_id> prefix(text_.data(), committed_);
        if (pending_count() == 0) {
          const token_id token = target_token(prefix);
          note_logprob(token);
          ++result_.statistics.direct_samples;
          text_.push_back(token);
          advance();
          emit(token);
          return;  // nobody has scored the new frontier
        }
        const pending_token proposal = pending_.front();
        const bool from_context = proposal.proposer == vocabularies_.size();
        verdict outcome{};
        if (settings_.greedy()) {
          // The proposer's largest logit here is known from its argmax: the target need not
          // find it again.
          std::fill(known_maxima_.begin(), known_maxima_.end(), std::numeric_limits<float>::quiet_NaN());
          if (!from_context) known_maxima_[proposal.proposer] = proposal_max(0);
          outcome = verify_greedy(proposal.token, target_token(prefix, known_maxima_));
        } else {
          outcome = from_context ? verify_context(proposal, prefix) : verify_sampled(proposal, prefix);
        }
        record(proposal, outcome.accepted);
        note_logprob(outcome.token);
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

    token_id target_token(std::span<const token_id> prefix, std::span<const float> known_maxima = {}) {
      try {
        if (settings_.greedy()) return target_.greedy_token(rows_view_, prefix, target_row_, known_maxima);
        target_.distribution(rows_view_, prefix, target_row_);
        return static_cast<token_id>(kernels::sample_inverse_cdf(target_row_, random_.uniform(), 1.0));
      } catch (const invalid_logits& e) {
        throw invalid_logits("position " + std::to_string(committed_) + ", " + e.what());
      }
    }

    /// Verifies the oldest pending proposal against the sampling target: at the proposed token
    /// alone where the target allows it (point_target; the proposer's own softmax there is
    /// known from its proposal), and with the whole target row otherwise or on a rejection.
    verdict verify_sampled(const pending_token& proposal, std::span<const token_id> prefix) {
      const float q_sum = proposal_sum(0);
      if (target_.point_target()) {
        const double q_x = proposal_probability_at(0);
        std::fill(known_.begin(), known_.end(), std::numeric_limits<double>::quiet_NaN());
        known_[proposal.proposer] = q_x;
        std::optional<double> r_x;
        try {
          r_x = target_.probability_at(rows_view_, proposal.token, known_);
        } catch (const invalid_logits& e) {
          throw invalid_logits("position " + std::to_string(committed_) + ", " + e.what());
        }
        if (r_x) {
          return verifier_.verify_at(
              proposal.token, *r_x, q_x, proposal_row(0), q_sum,
              [&]() -> std::span<const float> {
                target_distribution(prefix);
                return target_row_;
              },
              random_);
        }
      }
      target_distribution(prefix);
      return verifier_.verify(proposal.token, proposal_row(0), q_sum, target_row_, random_);
    }

    /// Verifies a proposal from the context, a point mass, against the sampling target:
    /// accepted with probability r(x), at the token alone where the target allows it.
    verdict verify_context(const pending_token& proposal, std::span<const token_id> prefix) {
      const auto target_row = [&]() -> std::span<const float> {
        target_distribution(prefix);
        return target_row_;
      };
      if (target_.point_target()) {
        std::fill(known_.begin(), known_.end(), std::numeric_limits<double>::quiet_NaN());
        std::optional<double> r_x;
        try {
          r_x = target_.probability_at(rows_view_, proposal.token, known_);
        } catch (const invalid_logits& e) {
          throw invalid_logits("position " + std::to_string(committed_) + ", " + e.what());
        }
        if (r_x) return verifier_.verify_point(proposal.token, *r_x, target_row, random_);
      }
      target_distribution(prefix);
      return verifier_.verify_point(proposal.token, target_row_[static_cast<std::size_t>(proposal.token)],
                                    [&]() -> std::span<const float> { return target_row_; }, random_);
    }

    /// Appends up to `wanted` proposals from the context: what followed the most recent earlier
    /// occurrence of the text's last tokens (context_lookup). They wait like any proposal and
    /// are verified as point masses. Returns how many were made.
    std::size_t propose_from_context(std::size_t wanted) {
      const std::size_t made = look_up_context(std::min(wanted, proposal_room()));
      const std::size_t context_proposer = vocabularies_.size();
      for (std::size_t i = 0; i < made; ++i) {
        pending_.push_back({lookup_buffer_[i], context_proposer, i});
        proposers_.push_back(context_proposer);
        text_.push_back(lookup_buffer_[i]);
        scored_flags_.resize(scored_flags_.size() + vocabularies_.size(), 0);
      }
      return made;
    }

    /// Writes into lookup_buffer_ up to `wanted` tokens that followed the most recent earlier
    /// occurrence of the text's end (context_lookup over the committed text); returns how many.
    std::size_t look_up_context(std::size_t wanted) {
      if (wanted == 0) return 0;
      if (!lookup_) {
        lookup_.emplace(options_.context_lookup);
        lookup_buffer_.resize(options_.max_pending);
      }
      lookup_->index(text_, committed_);
      return lookup_->propose(text_, std::span<token_id>(lookup_buffer_).first(wanted));
    }

    void target_distribution(std::span<const token_id> prefix) {
      try {
        target_.distribution(rows_view_, prefix, target_row_);
      } catch (const invalid_logits& e) {
        throw invalid_logits("position " + std::to_string(committed_) + ", " + e.what());
      }
    }

    /// `drawn`: under mixture sampling, the model whose distribution verified the proposal.
    void record(const pending_token& proposal, bool accepted, std::size_t drawn = static_cast<std::size_t>(-1)) {
      const bool from_context = proposal.proposer == vocabularies_.size();
      auto& p = from_context ? result_.statistics.context : result_.statistics.proposers[proposal.proposer];
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
      if (from_context) {
        if constexpr (context_observing_speculator<Speculator>) speculator_.observe_context(proposal.chain_index, accepted);
        return;
      }
      if (mixture_) {
        if (drawn == proposal.proposer) return;  // accepted without a test: nothing learned
        if constexpr (mixture_observing_speculator<Speculator>) {
          speculator_.observe_mixture(proposal.proposer, drawn, accepted);
          return;
        }
      }
      if constexpr (observing_speculator<Speculator>)
        speculator_.observe(proposal.proposer, proposal.chain_index, accepted);
    }

    /// Commits the token in slot 0 (already in text_): slot 1 becomes slot 0.
    void advance() {
      ++committed_;
      if (mixture_eligible_) next_draw();
      head_ = ring(1);
      scored_flags_.erase(scored_flags_.begin(), scored_flags_.begin() + static_cast<std::ptrdiff_t>(vocabularies_.size()));
      if (scored_flags_.empty()) scored_flags_.assign(vocabularies_.size(), 0);
    }

    /// The first pending token was rejected: drop every proposal and commit the replacement.
    /// Models that fed rejected tokens are rolled back by their next pass (its `keep`).
    void reject(token_id replacement) {
      ++result_.statistics.rejections;
      text_.resize(committed_);
      text_.push_back(replacement);
      ++committed_;
      if (mixture_eligible_) next_draw();
      reset_slots();
      const std::size_t rejected_position = committed_ - 1;
      for (std::size_t& f : fed_) f = std::min(f, rejected_position);
      emit(replacement);
    }

    /// A token was committed: output, text, log-probability, stop conditions and the callback.
    /// Stop conditions are known before the callback, so that the event of the last token
    /// releases all the text that was held back.
    void emit(token_id token) {
      const std::size_t index = result_.statistics.tokens++;
      const std::size_t generated = index + 1;
      // Before min_tokens nothing stops generation (the stop tokens are banned there).
      const bool stops_count = !scoring_ && index >= limits_.min_tokens;
      std::optional<finish_reason> matched;
      bool excluded = false;
      if (stops_count)
        for (token_id stop : limits_.stop_tokens)
          if (token == stop) {
            matched = finish_reason::stop_token;
            excluded = !limits_.include_stop_token;
          }
      auto& output = result_.tokens;
      if (!excluded) {
        output.push_back(token);
        file_logprob();
      }
      if (stops_count)
        for (const auto& sequence : limits_.stop_sequences)
          if (!sequence.empty() && output.size() >= sequence.size() &&
              std::equal(sequence.begin(), sequence.end(), output.end() - static_cast<std::ptrdiff_t>(sequence.size())))
            matched = finish_reason::stop_sequence;
      const std::string_view piece = options_.token_text && !excluded ? options_.token_text(token) : std::string_view{};
      if (output_text_.append(piece, stops_count && !limits_.stop_strings.empty())) matched = finish_reason::stop_string;
      // What ends the request whatever the callback says, in order of precedence.
      std::optional<finish_reason> ending = matched;
      if (!ending && scoring_ && generated >= continuation_.size()) ending = finish_reason::scored;
      if (!ending && !scoring_ && generated >= limits_.max_new_tokens) ending = finish_reason::max_new_tokens;
      if (!ending && committed_ > context_limit_) ending = finish_reason::context_limit;  // the next token needs one more
      const std::string_view released = output_text_.release(ending.has_value());
      bool callback_stops = false;
      if (limits_.on_token) {
        token_event event;
        event.index = index;
        event.position = prompt_size_ + index;
        event.token = token;
        event.text = released;
        if (limits_.logprobs.enabled) {
          event.logprob = pending_logprob_;
          event.top_logprobs = std::span<const token_logprob>(top_scratch_.data(), top_found_);
        }
        callback_stops = !limits_.on_token(event);
      }
      // A matched stop wins over the callback, which wins over the limits (the order of earlier
      // versions, which the recorded outputs pin).
      if (matched) stop_ = matched;
      else if (callback_stops) stop_ = finish_reason::stopped_by_callback;
      else if (ending) stop_ = ending;
    }

    // ---- log-probabilities (logprob_options; scoring) -----------------------------------

    /// Under logprob_options: the log-probability of `token` at slot 0 under the requested
    /// basis, whether it is that distribution's argmax, and its top alternatives, from the rows
    /// of every model there (rows_view_); emit() files them with the token.
    void note_logprob(token_id token) {
      if (!limits_.logprobs.enabled) return;
      const std::span<float> row(logprob_row_.data(), vocabulary_);
      const std::span<const token_id> prefix(text_.data(), committed_);
      float sum = 1.0f;
      try {
        if (limits_.logprobs.basis == logprob_basis::model) sum = target_.untransformed_distribution(rows_view_, row);
        else if (settings_.greedy()) target_.greedy_distribution(rows_view_, prefix, row);
        else target_.distribution(rows_view_, prefix, row);
      } catch (const invalid_logits& e) {
        throw invalid_logits("position " + std::to_string(committed_) + ", " + e.what());
      }
      const double log_sum = std::log(static_cast<double>(sum));
      const auto log_of = [log_sum](float w) {
        return w > 0.0f ? static_cast<float>(std::log(static_cast<double>(w)) - log_sum)
                        : -std::numeric_limits<float>::infinity();
      };
      pending_logprob_ = log_of(row[static_cast<std::size_t>(token)]);
      pending_greedy_ = kernels::max_argmax(row).index == static_cast<std::size_t>(token);
      // The largest `top` entries, ties to the lower id: a scan that inserts only what beats
      // the smallest kept so far.
      const std::size_t wanted = limits_.logprobs.top;
      top_found_ = 0;
      for (std::size_t j = 0; j < row.size() && wanted > 0; ++j) {
        const float w = row[j];
        if (top_found_ == wanted && !(w > top_scratch_[wanted - 1].logprob)) continue;
        std::size_t at = std::min(top_found_, wanted - 1);
        while (at > 0 && top_scratch_[at - 1].logprob < w) {
          top_scratch_[at] = top_scratch_[at - 1];
          --at;
        }
        top_scratch_[at] = {static_cast<token_id>(j), w};
        top_found_ = std::min(top_found_ + 1, wanted);
      }
      for (std::size_t i = 0; i < top_found_; ++i) top_scratch_[i].logprob = log_of(top_scratch_[i].logprob);
    }

    /// Files the noted log-probability with the output token just appended.
    void file_logprob() {
      if (!limits_.logprobs.enabled) return;
      result_.logprobs.push_back(pending_logprob_);
      result_.greedy.push_back(pending_greedy_ ? 1 : 0);
      for (std::size_t i = 0; i < result_.top_count; ++i)
        result_.top.push_back(i < top_found_ ? top_scratch_[i] : token_logprob{-1, -std::numeric_limits<float>::infinity()});
    }

    // ---- scoring (start_scoring) --------------------------------------------------------

    /// A scoring request's next pass: every model feeds what it has not seen (the context and
    /// the chunk of the continuation pending), then every pending token is scored in order.
    bool decide_scoring() {
      while (true) {
        while (!stop_ && pending_count() > 0 && scored_by_all(0)) {
          for (std::size_t k = 0; k < vocabularies_.size(); ++k) rows_view_[k] = logits_row(k, 0).first(vocabulary_);
          const token_id token = pending_.front().token;
          note_logprob(token);
          pending_.erase(pending_.begin());
          proposers_.erase(proposers_.begin());
          advance();
          ++scored_count_;
          emit(token);
        }
        if (stop_) return false;
        if (pending_count() == 0) {
          // The next chunk: as many continuation tokens as may wait at once.
          const std::size_t chunk = std::min(options_.max_pending, continuation_.size() - scored_count_);
          for (std::size_t i = 0; i < chunk; ++i) {
            const token_id token = continuation_[scored_count_ + i];
            pending_.push_back({token, vocabularies_.size(), 0});
            proposers_.push_back(vocabularies_.size());
            text_.push_back(token);
            scored_flags_.resize(scored_flags_.size() + vocabularies_.size(), 0);
          }
        }
        for (std::size_t k = 0; k < vocabularies_.size(); ++k)
          if (fed_[k] < text_.size()) {
            ++result_.statistics.invocations;
            ++result_.statistics.models[k].invocations;
            prepare_pass(k);
            return true;
          }
        throw usage_error("session: a scoring request has nothing to feed and nothing to score");  // unreachable
      }
    }

    /// The model slot 0 waits for: the one drawn for it under mixture sampling, else the first
    /// that has not scored it.
    [[nodiscard]] std::size_t first_waiting_model() const noexcept {
      if (mixture_) return drawn(0);
      for (std::size_t k = 0; k < vocabularies_.size(); ++k)
        if (!scored(k, 0)) return k;
      return 0;
    }

    Combiner combiner_;
    Speculator speculator_;
    session_options options_;
    sampling_settings settings_;
    target_evaluator<Combiner> target_;
    speculative_verifier verifier_;
    random_source random_;
    random_source draw_random_;  // mixture sampling's draws, apart from random_

    std::vector<std::size_t> vocabularies_;
    std::size_t vocabulary_ = 0;

    phase phase_ = phase::idle;
    std::optional<current_invocation> invocation_;
    model_pass pass_;
    std::size_t pass_first_slot_ = 0;

    std::vector<token_id> text_;
    std::size_t committed_ = 0;
    std::vector<std::size_t> fed_;  // tokens of text_ each model holds once its next pass rolls it back
    std::vector<pending_token> pending_;
    std::vector<std::size_t> proposers_;  // pending_[i].proposer, for schedule_view
    std::vector<unsigned char> scored_flags_;   // (pending + 1) x models, slot-major

    std::size_t capacity_ = 0;                // slots in the rings below
    std::size_t head_ = 0;                    // ring index of slot 0
    std::vector<detail::row_storage> logits_;  // per model: capacity_ rows of its vocabulary size
    detail::row_storage proposals_;            // capacity_ rows of vocabulary_ (once sampling was asked for)
    std::vector<float> proposal_sums_;         // per ring slot: what its proposal row sums to
    std::vector<float> proposal_maxima_;       // per ring slot: a greedy proposal's largest logit, or NaN
    std::vector<double> proposal_probabilities_;  // per ring slot: q at the proposed token
    std::vector<std::span<float>> feed_rows_;
    std::vector<std::span<const float>> rows_view_;
    std::vector<double> known_;         // verify_sampled: each model's proposal probability at the token, or NaN
    std::vector<float> known_maxima_;   // greedy verification: each model's largest logit, or NaN
    detail::row_storage target_row_;
    detail::row_storage proposal_scratch_;  // a greedy proposer's processed logits

    bool mixture_ = false;                     // the coming positions are decided by draws
    bool mixture_eligible_ = false;            // this request's target is the mixture: draws are made
    std::vector<double> mixture_cumulative_;   // per model: its weight plus those before it
    std::vector<std::size_t> draws_;           // ring of the drawn models of slots 0 .. max_pending + 1
    std::size_t draws_head_ = 0;

    generation_limits limits_;
    std::optional<finish_reason> stop_;
    generation_result result_;
    bool started_ = false;       // a request was ever started (next_pass() before that is a usage_error)
    bool result_ready_ = false;  // the last request's result is there to take
    std::size_t prompt_size_ = 0;
    std::size_t context_limit_ = no_context_limit;
    bool banning_stops_ = false;  // min_tokens with stop tokens: banned from the target until then
    output_text output_text_;

    // Log-probabilities: the row they are read from, and the noted values of the token about
    // to be emitted.
    detail::row_storage logprob_row_;
    float pending_logprob_ = 0.0f;
    bool pending_greedy_ = false;
    std::vector<token_logprob> top_scratch_;
    std::size_t top_found_ = 0;

    // Context proposals: the index (allocated at first use) and where its proposals land.
    std::optional<context_lookup> lookup_;
    std::vector<token_id> lookup_buffer_;

    // Scoring requests.
    bool scoring_ = false;
    std::vector<token_id> continuation_;
    std::size_t scored_count_ = 0;
  };

  std::unique_ptr<state> state_;
};

}  // namespace cospec

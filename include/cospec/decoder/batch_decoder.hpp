// The batch decoder: many requests, each its own CoS session (decoder/session.hpp), served by
// forward passes that feed every request waiting on the same model at once, with requests
// joining and leaving between steps (docs/engine.md, "Serving many requests").
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::max, std::min, std::none_of, std::remove_if, std::find_if
#include <concepts>   // std::same_as
#include <chrono>     // std::chrono::steady_clock
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <deque>      // std::deque
#include <exception>  // std::exception_ptr, std::current_exception, std::throw_with_nested
#include <limits>     // std::numeric_limits
#include <optional>   // std::optional
#include <span>       // std::span
#include <string>     // std::string, std::to_string
#include <string_view>  // std::string_view
#include <utility>    // std::move
#include <vector>     // std::vector

#include "cospec/adapters/batched_model_adapter.hpp"
#include "cospec/adapters/model_adapter.hpp"
#include "cospec/combine/combiner.hpp"
#include "cospec/decoder/batch_schedule.hpp"
#include "cospec/decoder/generation.hpp"
#include "cospec/decoder/session.hpp"
#include "cospec/errors.hpp"
#include "cospec/sampling.hpp"
#include "cospec/speculate/automatic.hpp"
#include "cospec/speculate/pass_cost_fit.hpp"
#include "cospec/speculate/speculator.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Names a request of one batch decoder (never reused by it).
using request_id = std::uint64_t;

/// Settings of a batch decoder that are not per request.
struct batch_options : session_options {
  /// Chooses the model of each step's pass; empty means fullest_pass{}.
  step_policy choose_step;
  /// Most requests that may be queued at once (submitted and not yet admitted, which happens at
  /// the next step with a free sequence on every model); submit() past it throws
  /// capacity_exceeded. At least 1. Bounds the queue's memory when requests arrive faster than
  /// they end. A request also waits here when a model's pool is exhausted by someone else (its
  /// create_sequence() threw capacity_exceeded: another batch decoder shares the pool), until
  /// a sequence is free.
  std::size_t max_waiting = 1024;
  /// Lets the batch decide whether its requests speculate (speculation_gate; docs/engine.md,
  /// "The batch decides whether to speculate"), for speculators that take advice
  /// (advisable_speculator: adaptive) and whose schedule follows measured time already
  /// (adaptive with measure_pass_costs), so that no reproducibility is lost. The gate prices
  /// passes on the cost clock of `pass_costs` if given, else on the fits of the measured passes.
  bool gate_speculation = true;
  speculation_gate::settings gate;
};

/// A request that has ended, by finishing, by cancellation or by an error.
struct finished_request {
  request_id id = 0;
  /// Tokens and statistics as generate() would give them; after an error, the tokens that
  /// were committed before it. statistics.seconds_total runs from submit() to the end
  /// (queueing included: the request's latency).
  generation_result result;
  /// What ended the request early, or null: invalid_logits, backend_failure or
  /// context_overflow (its pass failed), or whatever its token callback threw.
  std::exception_ptr error;

  [[nodiscard]] bool failed() const noexcept { return error != nullptr; }
};

/// One model's forward passes in a batch decoder.
struct batch_model_statistics {
  std::size_t passes = 0;      ///< feed calls that succeeded
  std::size_t sequences = 0;   ///< sequence entries in them (sequences / passes: the mean batch)
  std::size_t tokens_fed = 0;  ///< tokens of all sequences
  std::size_t logit_rows = 0;
  double adapter_seconds = 0.0;  ///< wall time of this model's passes (feeds and truncates, failed ones too)
  double virtual_time = 0.0;     ///< under pass_costs: per_pass * passes + per_token * tokens_fed
};

/// What a batch decoder has done since it was built (or reset_statistics()).
struct batch_statistics {
  std::size_t steps = 0;              ///< step() calls that chose a model
  std::size_t requests_finished = 0;  ///< ended requests, failed and cancelled ones included
  std::size_t requests_failed = 0;
  std::size_t tokens = 0;  ///< tokens committed by ended requests
  std::size_t sequences_lost = 0;  ///< releases that threw (those sequences are never reused)
  std::vector<batch_model_statistics> models;
  double seconds_in_adapters = 0.0;  ///< the models' passes and the creation of sequences
  double virtual_time = 0.0;  ///< sum over models: the cost clock of the batched passes
  std::size_t steps_score_only = 0;  ///< steps under the gate's batch_advice::score_only
};

/// Collaborative decoding of many requests at once over `Model`s (batched adapters, one type
/// for all models) combined by `Combiner`, each request scheduled by its own copy of
/// `Speculator`. submit() queues a request; each step() admits queued requests while every
/// model has a free sequence, chooses a model (batch_options::choose_step) and runs one
/// forward pass of it for every request whose session waits on it, each feeding its own
/// tokens. Each request's output has exactly the distribution of decoding it alone, and with
/// rows that do not depend on the batch (batched_model_adapter, requirement 5) the very tokens
/// decoder::generate gives it with the same seed, on a fresh decoder and unless the speculator
/// learns from timings (adaptive with measure_pass_costs: a request's schedule then depends on
/// the time charged to it, though never its distribution). Every request starts from a copy
/// of the speculator given here, so what one request's policy learns never carries over to
/// another. The decoder refers to the models; they must outlive it. One thread at a time.
template <batched_model_adapter Model, combiner Combiner, speculator Speculator = automatic>
class batch_decoder {
 public:
  /// With the automatic policy (the default: docs/engine.md, "automatic"), planning with
  /// equal pass costs; give `automatic(n, options)` explicitly for others.
  batch_decoder(std::vector<Model*> models, Combiner combiner, sampling_settings settings = {},
                batch_options options = {})
    requires std::same_as<Speculator, automatic>
      : batch_decoder(models, std::move(combiner), automatic(models.size()), std::move(settings), std::move(options)) {}

  /// Throws invalid_configuration as decoder's constructor does, or for a model with no
  /// sequences. `settings` are the defaults of requests that bring none of their own.
  batch_decoder(std::vector<Model*> models, Combiner combiner, Speculator speculator, sampling_settings settings = {},
                batch_options options = {})
      : models_(std::move(models)),
        combiner_(std::move(combiner)),
        speculator_(std::move(speculator)),
        settings_(std::move(settings)),
        options_(std::move(options)) {
    const std::size_t n = models_.size();
    for (std::size_t k = 0; k < n; ++k) {
      if (models_[k] == nullptr)
        throw invalid_configuration("batch_decoder: model " + std::to_string(k) + " is null");
      vocabularies_.push_back(models_[k]->vocabulary_size());
      // Read once: it is constant (requirement 2), and step() must not call what may throw
      // where a request could be lost.
      capacities_.push_back(models_[k]->max_sequences());
      if (capacities_.back() == 0)
        throw invalid_configuration("batch_decoder: model " + std::to_string(k) + " offers no sequences");
    }
    if constexpr (adapter_with_token_text<Model>) {
      if (!options_.token_text && n > 0) {
        Model* first = models_.front();
        options_.token_text = [first](token_id t) -> std::string_view { return first->token_text(t); };
      }
    }
    // A session checks that models, combiner, speculator and options fit together.
    const session<Combiner, Speculator> probe(combiner_, speculator_, vocabularies_, options_);
    vocabulary_ = probe.vocabulary_size();
    if constexpr (adapter_with_token_text<Model>) check_token_texts();
    validate(settings_, vocabulary_);
    if (options_.max_waiting == 0)
      throw invalid_configuration("batch_decoder: max_waiting must be >= 1 (submit() queues every request first)");
    if (!options_.choose_step) options_.choose_step = fullest_pass{};
    alive_.assign(n, 0);
    groups_.resize(n);
    fits_.resize(n);
    statistics_.models.resize(n);
    if constexpr (advisable_speculator<Speculator>) gated_ = options_.gate_speculation && speculator_.follows_timings();
    gate_ = speculation_gate(options_.gate);
  }

  // Not noexcept: std::deque's move may allocate.
  batch_decoder(batch_decoder&&) = default;
  batch_decoder& operator=(batch_decoder&&) = default;
  batch_decoder(const batch_decoder&) = delete;
  batch_decoder& operator=(const batch_decoder&) = delete;

  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return vocabulary_; }
  [[nodiscard]] std::size_t model_count() const noexcept { return models_.size(); }
  [[nodiscard]] const sampling_settings& settings() const noexcept { return settings_; }

  /// Queues a request with the default sampling settings; see the overload below.
  request_id submit(std::span<const token_id> prompt, const generation_limits& limits = {}) {
    return submit(prompt, settings_, limits);
  }

  /// Queues a request: its prompt (non-empty, ids < vocabulary_size()), sampling settings and
  /// limits (stop conditions, token callback, seed), all copied. It joins at the next step
  /// with a free sequence on every model. Throws invalid_configuration for a bad prompt or
  /// settings and capacity_exceeded when max_waiting requests are already queued; nothing is
  /// queued then. May be called from a token callback.
  request_id submit(std::span<const token_id> prompt, const sampling_settings& settings,
                    const generation_limits& limits = {}) {
    return submit(prompt, settings, limits, std::nullopt);
  }

  /// The same with this request's own combination (per-request parameters: other ensemble
  /// weights, another contrastive mu; with any_combiner another recipe), which must combine
  /// model_count() models (invalid_configuration otherwise), and its own speculator (another
  /// value of the type; with any_speculator another policy), checked the same way.
  request_id submit(std::span<const token_id> prompt, const sampling_settings& settings, const generation_limits& limits,
                    std::optional<Combiner> combiner, std::optional<Speculator> speculator = std::nullopt) {
    detail::check_prompt(prompt, vocabulary_);
    validate(settings, vocabulary_);
    detail::check_limits(limits, vocabulary_, static_cast<bool>(options_.token_text));
    check_combination(combiner);
    if (speculator) speculator->check(models_.size());
    check_room();
    // The gate runs once any policy follows timings: the default one, or this request's.
    if constexpr (advisable_speculator<Speculator>)
      if (speculator && options_.gate_speculation && speculator->follows_timings()) gated_ = true;
    const request_id id = next_id_++;
    waiting_.push_back({id, std::vector<token_id>(prompt.begin(), prompt.end()), settings, limits, clock::now(),
                        std::move(combiner), {}, {}, std::move(speculator)});
    return id;
  }

  /// Queues a scoring request (session::start_scoring): each token of `continuation` after
  /// `context` gets its log-probability under the combined target at temperature 1 before any
  /// transform, and whether it is the greedy choice; its passes are shared with the generating
  /// requests waiting on the same model. Throws as submit() does.
  request_id submit_scoring(std::span<const token_id> context, std::span<const token_id> continuation,
                            const scoring_options& options = {}, std::optional<Combiner> combiner = std::nullopt) {
    detail::check_prompt(context, vocabulary_, "context");
    detail::check_prompt(continuation, vocabulary_, "continuation");
    if (options.top > detail::max_top_logprobs)
      throw invalid_configuration("score: at most " + std::to_string(detail::max_top_logprobs) +
                                  " top log-probabilities per token, got " + std::to_string(options.top));
    check_combination(combiner);
    check_room();
    const request_id id = next_id_++;
    waiting_.push_back({id, std::vector<token_id>(context.begin(), context.end()), sampling_settings{},
                        generation_limits{}, clock::now(), std::move(combiner),
                        std::vector<token_id>(continuation.begin(), continuation.end()), options, std::nullopt});
    return id;
  }

  /// Ends a queued or running request (finish_reason::cancelled; committed tokens stay in its
  /// result). From a token callback it takes effect at the end of the step. Returns false for
  /// an id that is not queued or running.
  bool cancel(request_id id) {
    const bool known = std::find_if(waiting_.begin(), waiting_.end(), [&](const waiting_request& w) {
                         return w.id == id;
                       }) != waiting_.end() ||
                       std::find_if(active_.begin(), active_.end(), [&](const active_request& r) {
                         return r.id == id && !r.ended;
                       }) != active_.end();
    if (!known) return false;
    cancellations_.push_back(id);
    if (!stepping_) {
      apply_cancellations();
      compact();
    }
    return true;
  }

  /// Runs one step: admits queued requests, then one forward pass of the model the step
  /// policy chooses for every request waiting on it. Returns false when no request is left
  /// running or queued (queued requests that can never start, because sequences were lost,
  /// end then with backend_failure). Requests queued only because a pool shared with someone
  /// else is full keep it true with nothing to run: step the pool's other users from the same
  /// loop (run() alone would wait for them forever). Adapter failures do not escape: the requests they touch
  /// end with the error (finished_request::error) and the others go on. Throws usage_error if
  /// the step policy chooses a model nobody waits on or if called from a token callback, and
  /// passes on whatever a custom step policy throws; no request is lost then.
  bool step() {
    if (stepping_) throw usage_error("batch_decoder: step() called from inside a step (a token callback?)");
    stepping_ = true;
    const step_guard guard{stepping_};
    apply_cancellations();
    admit();
    compact();
    if (active_.empty()) return !waiting_.empty();
    for (auto& g : groups_) g = waiting_pass_group{};
    for (const active_request& r : active_) {
      waiting_pass_group& g = groups_[r.pass->model];
      ++g.requests;
      g.tokens += r.pass->tokens.size();
      g.longest_wait = std::max(g.longest_wait, r.waited);
    }
    const std::size_t k = options_.choose_step(std::span<const waiting_pass_group>(groups_));
    if (k >= groups_.size() || groups_[k].requests == 0)
      throw usage_error("batch_decoder: the step policy chose model " + std::to_string(k) +
                        ", on which no request waits");
    step_cost_ = 0.0;
    step_tokens_ = 0;
    if (gated_ && gate_.advice() == batch_advice::score_only) ++statistics_.steps_score_only;
    serve(k);
    if (gated_) gate_.observe_step(step_cost_, step_tokens_, score_only_cost_per_token());
    for (active_request& r : active_)
      if (!r.ended && !r.served) ++r.waited;
    ++statistics_.steps;
    apply_cancellations();
    compact();
    return true;
  }

  /// Steps until no request is queued or running; returns every ended request not yet taken.
  std::vector<finished_request> run() {
    while (step()) {
    }
    return take_finished();
  }

  /// The requests that have ended since the last call, in the order they ended. They stay
  /// here until taken.
  std::vector<finished_request> take_finished() { return std::exchange(finished_, {}); }

  [[nodiscard]] std::size_t running() const noexcept { return active_.size(); }
  [[nodiscard]] std::size_t queued() const noexcept { return waiting_.size(); }
  [[nodiscard]] const batch_statistics& statistics() const noexcept { return statistics_; }
  /// What the speculation gate has measured and advises (meaningful only while it gates:
  /// batch_options::gate_speculation and an advisable speculator that follows timings).
  [[nodiscard]] const speculation_gate& gate() const noexcept { return gate_; }
  void reset_statistics() {
    statistics_ = batch_statistics{};
    statistics_.models.resize(models_.size());
  }

 private:
  using clock = std::chrono::steady_clock;
  static double seconds_since(clock::time_point start) {
    return std::chrono::duration<double>(clock::now() - start).count();
  }

  struct step_guard {
    bool& flag;
    ~step_guard() { flag = false; }
  };

  struct waiting_request {
    request_id id;
    std::vector<token_id> prompt;  // or a scoring request's context
    sampling_settings settings;
    generation_limits limits;
    clock::time_point submitted;
    std::optional<Combiner> combiner;   // the request's own, or the decoder's
    std::vector<token_id> continuation;  // non-empty: a scoring request
    scoring_options scoring;
    std::optional<Speculator> speculator;  // the request's own, or the decoder's
  };

  void check_combination(const std::optional<Combiner>& combiner) const {
    if (combiner && combiner->model_count() != models_.size())
      throw invalid_configuration("batch_decoder: the request's combiner combines " +
                                  std::to_string(combiner->model_count()) + " models, but the decoder has " +
                                  std::to_string(models_.size()));
  }

  void check_room() const {
    if (waiting_.size() >= options_.max_waiting)
      throw capacity_exceeded("batch_decoder: " + std::to_string(waiting_.size()) +
                              " requests already wait for a sequence (batch_options::max_waiting)");
  }

  /// As decoder::check_token_texts: models that give token texts must agree on each.
  void check_token_texts() {
    std::string first_text;
    for (std::size_t t = 0; t < vocabulary_; ++t) {
      first_text.assign(std::string_view(models_[0]->token_text(static_cast<token_id>(t))));
      for (std::size_t k = 1; k < models_.size(); ++k) {
        const std::string_view text = models_[k]->token_text(static_cast<token_id>(t));
        if (text != first_text)
          throw invalid_configuration("batch_decoder: token " + std::to_string(t) + " is \"" + first_text +
                                      "\" for model 0 but \"" + std::string(text) + "\" for model " +
                                      std::to_string(k) + ": the models do not share a vocabulary");
      }
    }
  }

  struct active_request {
    request_id id;
    session<Combiner, Speculator> decoding;
    std::vector<sequence_id> sequences;  // one per model
    clock::time_point submitted;
    const model_pass* pass = nullptr;  // what its session waits for (while running)
    std::size_t waited = 0;            // steps since it began waiting
    double unsettled_cost = 0.0;       // the gate's price of its passes since its last commit
    bool served = false;               // in this step's pass
    bool ended = false;
  };

  /// Moves queued requests into the batch while every model has a free sequence.
  void admit() {
    const std::size_t n = models_.size();
    while (!waiting_.empty()) {
      for (std::size_t k = 0; k < n; ++k)
        if (alive_[k] >= capacities_[k]) {
          // Nothing running will free one: sequences whose release threw are lost for good.
          if (std::none_of(active_.begin(), active_.end(), [](const active_request& r) { return !r.ended; }))
            fail_queued(k);
          return;
        }
      // The request leaves the queue only once nothing can fail before it is running or ended.
      std::optional<session<Combiner, Speculator>> decoding;
      try {
        const waiting_request& w = waiting_.front();
        decoding.emplace(w.combiner ? *w.combiner : combiner_, w.speculator ? *w.speculator : speculator_,
                         vocabularies_, options_);
        active_.reserve(active_.size() + 1);
      } catch (...) {
        const waiting_request w = take_front();
        end_unstarted(w, std::current_exception());
        continue;
      }
      std::vector<sequence_id> sequences;
      const auto started = clock::now();
      try {
        sequences.reserve(n);
        for (std::size_t k = 0; k < n; ++k) {
          sequences.push_back(models_[k]->create_sequence());
          ++alive_[k];
        }
      } catch (const capacity_exceeded&) {
        // The pool is shared with someone else and has no sequence free now: the request keeps
        // its place at the head of the queue, and admission waits for a later step.
        release(sequences);
        statistics_.seconds_in_adapters += seconds_since(started);
        return;
      } catch (...) {
        const std::size_t k = sequences.size();
        release(sequences);
        const waiting_request w = take_front();
        end_unstarted(w, wrapped("model " + std::to_string(k) + ": creating a sequence"));
        continue;
      }
      const waiting_request w = take_front();
      statistics_.seconds_in_adapters += seconds_since(started);
      active_.push_back({w.id, std::move(*decoding), std::move(sequences), w.submitted});  // reserved: no throw
      active_request& r = active_.back();
      try {
        const std::size_t limit = context_limit(r.sequences);
        if (w.continuation.empty()) r.decoding.start(w.prompt, w.settings, w.limits, {}, limit);
        else r.decoding.start_scoring(w.prompt, w.continuation, w.scoring, {}, limit);
      } catch (...) {
        end(r, std::current_exception());
        continue;
      }
      advance(r);
    }
  }

  /// The most tokens every model's sequence of a request can hold (a model's context may be
  /// shared by sequences: llama.cpp gives each its own share unless the cache is unified).
  [[nodiscard]] std::size_t context_limit(const std::vector<sequence_id>& sequences) const {
    std::size_t limit = session<Combiner, Speculator>::no_context_limit;
    if constexpr (batched_adapter_with_context_limit<Model>)
      for (std::size_t k = 0; k < models_.size(); ++k)
        limit = std::min<std::size_t>(limit, models_[k]->context_limit(sequences[k]));
    return limit;
  }

  waiting_request take_front() {
    waiting_request w = std::move(waiting_.front());
    waiting_.pop_front();
    return w;
  }

  /// One forward pass of model k for every running request that waits on it.
  void serve(std::size_t k) {
    Model& model = *models_[k];
    batch_.clear();
    served_.clear();
    const auto started = clock::now();
    for (std::size_t i = 0; i < active_.size(); ++i) {
      active_request& r = active_[i];
      r.served = false;
      if (r.ended || r.pass->model != k) continue;
      const model_pass& pass = *r.pass;
      const sequence_id sequence = r.sequences[k];
      const auto describe = [&] {
        return "model " + std::to_string(k) + ", sequence " + std::to_string(sequence) + ": feeding " +
               std::to_string(pass.tokens.size()) + " tokens at position " + std::to_string(pass.keep);
      };
      try {
        if constexpr (batched_adapter_with_context_limit<Model>) {
          const std::size_t limit = model.context_limit(sequence);
          const std::size_t end = pass.keep + pass.tokens.size();
          if (end > limit) {
            fail(r, std::make_exception_ptr(context_overflow(describe() + " needs a context of " + std::to_string(end) +
                                                             " tokens; its context_limit() is " +
                                                             std::to_string(limit))));
            continue;
          }
        }
        const std::size_t length = model.context_length(sequence);
        if (length < pass.keep) {
          fail(r, std::make_exception_ptr(backend_failure(
                      "model " + std::to_string(k) + ", sequence " + std::to_string(sequence) + " holds " +
                      std::to_string(length) + " tokens, fewer than the " + std::to_string(pass.keep) +
                      " the decoder fed it: something else truncated it")));
          continue;
        }
        if (length > pass.keep) model.truncate(sequence, pass.keep);
      } catch (...) {
        fail(r, wrapped(describe() + ", rolling back"));
        continue;
      }
      batch_.push_back({sequence, pass.tokens, pass.rows});
      served_.push_back(i);
    }
    if (batch_.empty()) {
      statistics_.seconds_in_adapters += seconds_since(started);
      return;
    }
    auto& stats = statistics_.models[k];
    try {
      model.feed(std::span<const sequence_feed>(batch_));
    } catch (...) {
      const std::exception_ptr error =
          wrapped("model " + std::to_string(k) + ": a pass over " + std::to_string(batch_.size()) + " sequences");
      record_time(stats, seconds_since(started));
      for (std::size_t i : served_) fail(active_[i], error);
      return;
    }
    const double seconds = seconds_since(started);
    record_time(stats, seconds);
    ++stats.passes;
    stats.sequences += batch_.size();
    std::size_t tokens = 0;
    for (const sequence_feed& entry : batch_) {
      tokens += entry.tokens.size();
      stats.logit_rows += entry.rows.size();
    }
    stats.tokens_fed += tokens;
    if (!options_.pass_costs.empty()) {
      const double cost = options_.pass_costs[k].per_pass + options_.pass_costs[k].per_token * static_cast<double>(tokens);
      stats.virtual_time += cost;
      statistics_.virtual_time += cost;
    }
    // Each request is charged its share of the pass's time: an equal part of the pass's fixed
    // cost and the cost of its own tokens, from a fit of this model's passes as a + b * tokens
    // (in proportion to tokens until a fit exists). The requests' adapter_seconds add up to
    // the batch's, and a speculator that learns pass costs (adaptive with measure_pass_costs)
    // sees what a pass costs a request in this batch: on a compute-bound engine, the more
    // requests share a pass, the more a request's cost is its tokens.
    fits_[k].observe(tokens, seconds);
    const double fixed = fits_[k].per_pass() / static_cast<double>(batch_.size());
    const double per_token = fits_[k].per_token();
    const double fitted = fits_[k].per_pass() + per_token * static_cast<double>(tokens);
    // The gate prices decoding alone: until a request's first token it pays for its prompt,
    // the same whether the batch speculates or not, so neither its share of those passes nor
    // that first token is counted. (Counting the token for free, and charging a pass's whole
    // fixed cost whenever one request in it was past its prompt, moved the first epoch's
    // measurement of speculation by 5-20 % on the serving benchmark, in either direction.)
    const double gate_fixed =
        (options_.pass_costs.empty() ? fits_[k].per_pass() : options_.pass_costs[k].per_pass) /
        static_cast<double>(batch_.size());
    const double gate_per_token = options_.pass_costs.empty() ? fits_[k].per_token() : options_.pass_costs[k].per_token;
    for (std::size_t e = 0; e < served_.size(); ++e) {
      active_request& r = active_[served_[e]];
      r.served = true;
      r.waited = 0;
      const std::size_t fed = batch_[e].tokens.size();
      const auto own = static_cast<double>(fed);
      const double share = fitted > 0.0 ? (fixed + per_token * own) / fitted : own / static_cast<double>(tokens);
      const std::size_t committed_before = r.decoding.result().tokens.size();
      const bool decoding = committed_before > 0;
      r.decoding.pass_done(seconds * share);
      advance(r);
      const std::size_t committed_after =
          r.ended ? finished_.back().result.tokens.size() : r.decoding.result().tokens.size();
      if (gated_ && decoding) {
        // A request's passes are charged to the step of the commit they led to (or the step in
        // which it ended): an epoch is then charged for the proposals whose tokens it counts,
        // not for those still in flight at its end, whose tokens the next epoch counts.
        // (Charging each pass to its own step, a test policy proposing runs of 3 on 8 requests
        // measured its first 8-step epoch at 2.2 times the cost of scoring only, where its run
        // cost 0.7 of it, and the gate scored only from then on; tests/test_batch_decoder.cpp.)
        r.unsettled_cost += gate_fixed + gate_per_token * own;
        const std::size_t committed = committed_after - committed_before;
        if (committed > 0 || r.ended) {
          step_cost_ += r.unsettled_cost;
          step_tokens_ += committed;
          r.unsettled_cost = 0.0;
        }
      }
    }
  }

  /// What the running requests would pay per token decoding in lockstep without speculation:
  /// one pass of every model over one token each, sum_k (a_k + b_k S) / S on the gate's clock;
  /// +inf while a model's passes have no fit yet.
  [[nodiscard]] double score_only_cost_per_token() const noexcept {
    std::size_t running = 0;
    for (const active_request& r : active_) running += r.ended ? 0 : 1;
    if (running == 0) return std::numeric_limits<double>::infinity();
    const auto s = static_cast<double>(running);
    double cost = 0.0;
    for (std::size_t k = 0; k < models_.size(); ++k) {
      if (options_.pass_costs.empty()) {
        if (!fits_[k].measured()) return std::numeric_limits<double>::infinity();
        cost += fits_[k].per_pass() + fits_[k].per_token() * s;
      } else {
        cost += options_.pass_costs[k].per_pass + options_.pass_costs[k].per_token * s;
      }
    }
    return cost / s;
  }

  void record_time(batch_model_statistics& stats, double seconds) noexcept {
    stats.adapter_seconds += seconds;
    statistics_.seconds_in_adapters += seconds;
  }

  /// Asks r's session for its next pass; ends r if there is none or the session threw.
  void advance(active_request& r) {
    // Only a policy whose schedule already follows measured time takes the batch's advice (a
    // request's own policy may not, and then its reproducibility is kept).
    if constexpr (advisable_speculator<Speculator>)
      if (gated_ && r.decoding.speculator_policy().follows_timings()) r.decoding.speculator_policy().advise(gate_.advice());
    try {
      r.pass = r.decoding.next_pass();
    } catch (...) {
      r.pass = nullptr;
      end(r, std::current_exception());
      return;
    }
    if (r.pass == nullptr) end(r, nullptr);
  }

  /// r's outstanding pass failed (or could not be run): its request ends with `error`.
  void fail(active_request& r, std::exception_ptr error) {
    if (r.pass != nullptr) r.decoding.pass_failed();
    r.pass = nullptr;
    end(r, std::move(error));
  }

  /// Ends r (its session has ended): releases its sequences, which drops whatever they hold,
  /// and files its result.
  void end(active_request& r, std::exception_ptr error) {
    if (r.decoding.running()) r.decoding.cancel();
    r.ended = true;
    r.pass = nullptr;
    release(r.sequences);
    finished_request done{r.id, r.decoding.take_result(), std::move(error)};
    // A request whose start() threw has statistics of no shape yet.
    done.result.statistics.models.resize(models_.size());
    done.result.statistics.proposers.resize(models_.size());
    done.result.statistics.seconds_total = seconds_since(r.submitted);
    file(std::move(done));
  }

  void file(finished_request done) {
    ++statistics_.requests_finished;
    if (done.failed()) ++statistics_.requests_failed;
    statistics_.tokens += done.result.tokens.size();
    finished_.push_back(std::move(done));
  }

  /// A queued request that never started ends with `error` (or cancelled, when null).
  void end_unstarted(const waiting_request& w, std::exception_ptr error) {
    finished_request done;
    done.id = w.id;
    done.result.reason = finish_reason::cancelled;
    done.result.statistics.models.assign(models_.size(), model_statistics{});
    done.result.statistics.proposers.assign(models_.size(), proposer_statistics{});
    done.result.statistics.seconds_total = seconds_since(w.submitted);
    done.error = std::move(error);
    file(std::move(done));
  }

  /// Releases sequences (sequences[k] of model k). A release that throws breaks requirement 3:
  /// that sequence stays counted as alive, so the model's pool holds one fewer from then on.
  void release(const std::vector<sequence_id>& sequences) noexcept {
    for (std::size_t k = 0; k < sequences.size(); ++k) {
      try {
        models_[k]->release_sequence(sequences[k]);
        --alive_[k];
      } catch (...) {
        ++statistics_.sequences_lost;  // and it stays counted in alive_
      }
    }
  }

  /// Every queued request ends: model k has no free sequence and nothing running will free one.
  void fail_queued(std::size_t k) {
    while (!waiting_.empty()) {
      const waiting_request w = take_front();
      end_unstarted(w, std::make_exception_ptr(backend_failure(
                           "model " + std::to_string(k) + " has no free sequence and no request is running: " +
                           std::to_string(alive_[k]) + " of its " + std::to_string(capacities_[k]) +
                           " sequences were lost to releases that threw")));
    }
  }

  void apply_cancellations() {
    for (std::size_t c = 0; c < cancellations_.size(); ++c) {
      const request_id id = cancellations_[c];
      const auto queued = std::find_if(waiting_.begin(), waiting_.end(), [&](const waiting_request& w) {
        return w.id == id;
      });
      if (queued != waiting_.end()) {
        const waiting_request w = std::move(*queued);
        waiting_.erase(queued);
        end_unstarted(w, nullptr);
        continue;
      }
      for (active_request& r : active_)
        if (r.id == id && !r.ended) {
          r.decoding.cancel();
          end(r, nullptr);
        }
    }
    cancellations_.clear();
  }

  void compact() {
    active_.erase(std::remove_if(active_.begin(), active_.end(), [](const active_request& r) { return r.ended; }),
                  active_.end());
  }

  /// The exception being handled, wrapped as what cospec reports: context_overflow keeps its
  /// type, anything else becomes backend_failure; the original is nested.
  static std::exception_ptr wrapped(const std::string& what) {
    try {
      try {
        throw;
      } catch (const context_overflow& e) {
        std::throw_with_nested(context_overflow(what + ": " + e.what()));
      } catch (const std::exception& e) {
        std::throw_with_nested(backend_failure(what + " failed: " + e.what()));
      } catch (...) {
        std::throw_with_nested(backend_failure(what + " failed: an exception that is not a std::exception"));
      }
    } catch (...) {
      return std::current_exception();
    }
  }

  std::vector<Model*> models_;
  Combiner combiner_;
  Speculator speculator_;
  sampling_settings settings_;
  batch_options options_;
  std::vector<std::size_t> vocabularies_;
  std::size_t vocabulary_ = 0;

  request_id next_id_ = 1;
  std::deque<waiting_request> waiting_;
  std::vector<active_request> active_;
  std::vector<finished_request> finished_;
  std::vector<request_id> cancellations_;
  std::vector<std::size_t> capacities_;  // each model's max_sequences()
  std::vector<std::size_t> alive_;       // sequences of each model held by requests (or lost)
  bool stepping_ = false;

  std::vector<waiting_pass_group> groups_;
  std::vector<pass_cost_fit> fits_;  // each model's measured passes, for splitting their time
  bool gated_ = false;               // the speculation gate advises the requests' speculators
  speculation_gate gate_;
  double step_cost_ = 0.0;           // this step's pass on the gate's clock
  std::size_t step_tokens_ = 0;      // tokens this step committed
  std::vector<sequence_feed> batch_;
  std::vector<std::size_t> served_;  // indices into active_ of batch_'s entries
  batch_statistics statistics_;
};

template <class Model, class Combiner>
batch_decoder(std::vector<Model*>, Combiner) -> batch_decoder<Model, Combiner, automatic>;
template <class Model, class Combiner>
batch_decoder(std::vector<Model*>, Combiner, sampling_settings) -> batch_decoder<Model, Combiner, automatic>;
template <class Model, class Combiner>
batch_decoder(std::vector<Model*>, Combiner, sampling_settings, batch_options)
    -> batch_decoder<Model, Combiner, automatic>;
template <class Model, class Combiner, class Speculator>
batch_decoder(std::vector<Model*>, Combiner, Speculator) -> batch_decoder<Model, Combiner, Speculator>;
template <class Model, class Combiner, class Speculator>
batch_decoder(std::vector<Model*>, Combiner, Speculator, sampling_settings) -> batch_decoder<Model, Combiner, Speculator>;
template <class Model, class Combiner, class Speculator>
batch_decoder(std::vector<Model*>, Combiner, Speculator, sampling_settings, batch_options)
    -> batch_decoder<Model, Combiner, Speculator>;

}  // namespace cospec

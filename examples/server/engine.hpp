// cospec-server's scheduler: one thread owns the batch decoder; HTTP threads hand it jobs
// through a bounded queue and read back what it commits (docs/server.md, "How it serves").
#pragma once

#include <algorithm>           // std::max, std::min
#include <atomic>              // std::atomic
#include <chrono>              // std::chrono
#include <condition_variable>  // std::condition_variable
#include <cstddef>             // std::size_t
#include <cstdint>             // std::uint64_t
#include <deque>               // std::deque
#include <exception>           // std::exception_ptr
#include <map>                 // std::map
#include <memory>              // std::shared_ptr, std::make_shared
#include <mutex>               // std::mutex, std::lock_guard, std::unique_lock
#include <optional>            // std::optional
#include <set>                 // std::set
#include <sstream>             // std::ostringstream
#include <string>              // std::string
#include <thread>              // std::thread
#include <utility>             // std::move
#include <variant>             // std::variant
#include <vector>              // std::vector

#include <cospec/cospec.hpp>

#include "server/api_request.hpp"
#include "server/codec.hpp"

namespace cospec::server {

using clock = std::chrono::steady_clock;

/// One committed token as a stream sees it.
struct token_update {
  token_id token = 0;
  std::string text;  ///< what it releases to the stream (stop strings and UTF-8 held back)
  std::optional<float> logprob;
  std::vector<token_logprob> top;
};

/// What a job asks of the decoder.
struct job_spec {
  std::vector<token_id> prompt;        // or a scoring request's context
  std::vector<token_id> continuation;  // non-empty: score it instead of generating
  std::size_t top_logprobs = 0;        // scoring: alternatives per token
  sampling_settings settings;
  generation_limits limits;            // on_token is the engine's
  std::optional<any_combiner> combiner;
  std::optional<any_speculator> speculator;
  clock::time_point deadline = clock::time_point::max();
  bool stream_events = false;          // keep a token_update per token for the HTTP thread
};

/// A job in flight: the HTTP thread waits on it, the scheduler fills it.
class job {
 public:
  explicit job(job_spec spec) : spec_(std::move(spec)) {}

  /// The next update, waiting for it; false once the job has ended and every update was taken.
  bool next_update(token_update& out) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !updates_.empty() || done_; });
    if (updates_.empty()) return false;
    out = std::move(updates_.front());
    updates_.pop_front();
    return true;
  }
  /// Waits until the job has ended.
  void wait() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return done_; });
  }
  /// The client went away or gave up: the scheduler cancels the request at its next step.
  void cancel() noexcept { cancelled_.store(true); }
  [[nodiscard]] bool cancel_requested() const noexcept { return cancelled_.load(); }

  // After wait(): the result, and an error if the request failed.
  [[nodiscard]] const generation_result& result() const noexcept { return result_; }
  [[nodiscard]] const std::exception_ptr& error() const noexcept { return error_; }
  [[nodiscard]] bool timed_out() const noexcept { return timed_out_; }

  // The scheduler's side.
  job_spec& spec() noexcept { return spec_; }
  void push(token_update update) {
    {
      std::lock_guard lock(mutex_);
      updates_.push_back(std::move(update));
    }
    changed_.notify_all();
  }
  void finish(generation_result result, std::exception_ptr error, bool timed_out) {
    {
      std::lock_guard lock(mutex_);
      result_ = std::move(result);
      error_ = std::move(error);
      timed_out_ = timed_out;
      done_ = true;
    }
    changed_.notify_all();
  }

 private:
  job_spec spec_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<token_update> updates_;
  bool done_ = false;
  generation_result result_;
  std::exception_ptr error_;
  bool timed_out_ = false;
  std::atomic<bool> cancelled_{false};
};

/// What /v1/models and /health say about the ensemble.
struct engine_info {
  std::string model_id;
  std::vector<std::string> model_names;
  std::string combination;
  std::string default_method;
  std::size_t context = 0;      // tokens a request's text may hold
  std::size_t parallel = 0;     // requests decoded at once
  std::size_t max_queue = 0;    // requests that may wait beyond those
};

/// The HTTP side's view of the scheduler (a template over the adapter type behind it).
class engine {
 public:
  virtual ~engine() = default;
  /// Queues a job: the job, or 429 (queue full, with a retry hint) or 503 (draining).
  virtual std::variant<std::shared_ptr<job>, api_error> submit(job_spec spec) = 0;
  [[nodiscard]] virtual const codec& vocabulary() const = 0;
  [[nodiscard]] virtual const engine_info& info() const = 0;
  [[nodiscard]] virtual std::string metrics() const = 0;
  [[nodiscard]] virtual bool draining() const = 0;
  /// Stops taking jobs, lets the running ones finish for up to `grace`, cancels the rest, and
  /// stops the scheduler thread.
  virtual void drain(std::chrono::milliseconds grace) = 0;
};

/// The scheduler over a batch decoder of Model (a batched adapter): every request a session
/// of the decoder, any combiner and any policy per request.
template <class Model>
class batch_engine final : public engine {
 public:
  batch_engine(std::vector<Model*> models, any_combiner combiner, any_speculator policy, codec vocabulary,
               engine_info info, batch_options options)
      : vocabulary_(std::move(vocabulary)),
        info_(std::move(info)),
        decoder_(std::move(models), std::move(combiner), std::move(policy), sampling_settings{},
                 with_texts(std::move(options), vocabulary_)),
        passes_(decoder_.model_count(), 0) {
    thread_ = std::thread([this] { run(); });
  }

  ~batch_engine() override { drain(std::chrono::milliseconds(0)); }

  std::variant<std::shared_ptr<job>, api_error> submit(job_spec spec) override {
    std::shared_ptr<job> j;
    {
      std::lock_guard lock(mutex_);
      if (draining_) {
        ++rejected_;
        return api_error{503, "the server is shutting down", "server_error", "", "shutting_down"};
      }
      if (incoming_.size() + decoder_queued_ >= info_.max_queue) {
        ++rejected_;
        return api_error{429, "the queue is full (" + std::to_string(info_.max_queue) + " requests wait); retry shortly",
                         "rate_limit_error", "", "queue_full"};
      }
      j = std::make_shared<job>(std::move(spec));
      incoming_.push_back(j);
    }
    wake_.notify_all();
    return j;
  }

  [[nodiscard]] const codec& vocabulary() const override { return vocabulary_; }
  [[nodiscard]] const engine_info& info() const override { return info_; }
  [[nodiscard]] bool draining() const override {
    std::lock_guard lock(mutex_);
    return draining_;
  }

  void drain(std::chrono::milliseconds grace) override {
    {
      std::lock_guard lock(mutex_);
      if (stopped_) return;
      draining_ = true;
      drain_deadline_ = clock::now() + grace;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    std::lock_guard lock(mutex_);
    stopped_ = true;
  }

  [[nodiscard]] std::string metrics() const override {
    std::lock_guard lock(mutex_);
    std::ostringstream out;
    out << "# HELP cospec_requests_total Requests that ended, by outcome.\n# TYPE cospec_requests_total counter\n";
    for (const auto& [outcome, count] : outcomes_) out << "cospec_requests_total{outcome=\"" << outcome << "\"} " << count << "\n";
    out << "# HELP cospec_rejected_total Requests turned away before they were queued (queue full or shutting down).\n"
           "# TYPE cospec_rejected_total counter\ncospec_rejected_total " << rejected_ << "\n";
    out << "# HELP cospec_prompt_tokens_total Prompt tokens of ended requests.\n# TYPE cospec_prompt_tokens_total counter\n"
        << "cospec_prompt_tokens_total " << prompt_tokens_ << "\n";
    out << "# HELP cospec_generated_tokens_total Tokens committed by ended requests.\n# TYPE cospec_generated_tokens_total counter\n"
        << "cospec_generated_tokens_total " << generated_tokens_ << "\n";
    out << "# HELP cospec_tokens_per_second Tokens committed per second over the last 10 s.\n# TYPE cospec_tokens_per_second gauge\n"
        << "cospec_tokens_per_second " << recent_rate() << "\n";
    out << "# HELP cospec_queue_depth Requests waiting to start.\n# TYPE cospec_queue_depth gauge\ncospec_queue_depth "
        << incoming_.size() + decoder_queued_ << "\n";
    out << "# HELP cospec_requests_running Requests being decoded.\n# TYPE cospec_requests_running gauge\ncospec_requests_running "
        << running_ << "\n";
    out << "# HELP cospec_model_passes_total Batched forward passes, by model.\n# TYPE cospec_model_passes_total counter\n";
    for (std::size_t k = 0; k < passes_.size(); ++k)
      out << "cospec_model_passes_total{model=\"" << k << "\"} " << passes_[k] << "\n";
    out << "# HELP cospec_proposals_total Proposals verified, by proposer (a model, or the context).\n"
           "# TYPE cospec_proposals_total counter\n";
    for (const auto& [proposer, counts] : proposals_) out << "cospec_proposals_total{proposer=\"" << proposer << "\"} " << counts.first << "\n";
    out << "# HELP cospec_proposals_accepted_total Proposals accepted, by proposer.\n# TYPE cospec_proposals_accepted_total counter\n";
    for (const auto& [proposer, counts] : proposals_)
      out << "cospec_proposals_accepted_total{proposer=\"" << proposer << "\"} " << counts.second << "\n";
    out << "# HELP cospec_acceptance_rate Accepted over verified proposals, by proposer.\n# TYPE cospec_acceptance_rate gauge\n";
    for (const auto& [proposer, counts] : proposals_)
      out << "cospec_acceptance_rate{proposer=\"" << proposer << "\"} "
          << (counts.first == 0 ? 0.0 : static_cast<double>(counts.second) / static_cast<double>(counts.first)) << "\n";
    return out.str();
  }

 private:
  static batch_options with_texts(batch_options options, const codec& vocabulary) {
    options.token_text = [&vocabulary](token_id t) { return vocabulary.piece(t); };
    return options;
  }

  /// The scheduler: admit, cancel, step, deliver; sleep when there is nothing to do.
  void run() {
    std::vector<std::shared_ptr<job>> taken;
    while (true) {
      {
        std::unique_lock lock(mutex_);
        const auto idle = [&] { return incoming_.empty() && active_.empty(); };
        if (draining_ && idle()) break;
        if (idle()) wake_.wait(lock, [&] { return !incoming_.empty() || draining_; });
        taken.assign(incoming_.begin(), incoming_.end());
        incoming_.clear();
      }
      for (auto& j : taken) start(j);
      taken.clear();
      cancel_where_asked();
      if (decoder_.running() + decoder_.queued() > 0) {
        try {
          decoder_.step();
        } catch (const std::exception&) {
          // step() lets nothing of a request's own escape; a usage_error here would be ours.
          for (auto& [id, j] : active_) decoder_.cancel(id);
        }
      }
      deliver();
      std::lock_guard lock(mutex_);
      decoder_queued_ = decoder_.queued();
      running_ = decoder_.running();
      for (std::size_t k = 0; k < passes_.size(); ++k) passes_[k] = decoder_.statistics().models[k].passes;
    }
  }

  /// Submits a job to the decoder; a request the decoder refuses ends at once with the error.
  void start(const std::shared_ptr<job>& j) {
    job_spec& spec = j->spec();
    try {
      request_id id = 0;
      if (!spec.continuation.empty()) {
        scoring_options scoring;
        scoring.top = spec.top_logprobs;
        id = decoder_.submit_scoring(spec.prompt, spec.continuation, scoring, spec.combiner);
      } else {
        if (spec.stream_events) {
          std::weak_ptr<job> weak = j;
          spec.limits.on_token = [weak](const token_event& event) {
            const auto held = weak.lock();
            if (!held) return false;
            token_update update;
            update.token = event.token;
            update.text.assign(event.text);
            update.logprob = event.logprob;
            update.top.assign(event.top_logprobs.begin(), event.top_logprobs.end());
            held->push(std::move(update));
            return !held->cancel_requested();
          };
        }
        id = decoder_.submit(spec.prompt, spec.settings, spec.limits, spec.combiner, spec.speculator);
      }
      active_.emplace(id, j);
    } catch (...) {
      finish(j, generation_result{}, std::current_exception(), false);
    }
  }

  void cancel_where_asked() {
    const auto now = clock::now();
    bool drain_over = false;
    {
      std::lock_guard lock(mutex_);
      drain_over = draining_ && now >= drain_deadline_;
    }
    for (auto& [id, j] : active_) {
      const bool late = now >= j->spec().deadline;
      if (late) timed_out_.insert(id);
      if (late || j->cancel_requested() || drain_over) decoder_.cancel(id);
    }
  }

  void deliver() {
    for (finished_request& done : decoder_.take_finished()) {
      const auto found = active_.find(done.id);
      if (found == active_.end()) continue;
      const bool late = timed_out_.erase(done.id) > 0;
      finish(found->second, std::move(done.result), done.error, late);
      active_.erase(found);
    }
  }

  void finish(const std::shared_ptr<job>& j, generation_result result, std::exception_ptr error, bool timed_out) {
    {
      std::lock_guard lock(mutex_);
      const std::string outcome = error ? "error"
                                  : timed_out ? "timeout"
                                  // The token callback stops a request only when its client went away.
                                  : result.reason == finish_reason::cancelled ||
                                            result.reason == finish_reason::stopped_by_callback
                                        ? "cancelled"
                                        : "ok";
      ++outcomes_[outcome];
      prompt_tokens_ += j->spec().prompt.size();
      generated_tokens_ += result.statistics.tokens;
      const auto now = clock::now();
      recent_.emplace_back(now, result.statistics.tokens);
      while (!recent_.empty() && now - recent_.front().first > std::chrono::seconds(10)) recent_.pop_front();
      for (std::size_t k = 0; k < result.statistics.proposers.size(); ++k) {
        auto& counts = proposals_[std::to_string(k)];
        counts.first += result.statistics.proposers[k].proposed;
        counts.second += result.statistics.proposers[k].accepted;
      }
      auto& context = proposals_["context"];
      context.first += result.statistics.context.proposed;
      context.second += result.statistics.context.accepted;
    }
    j->finish(std::move(result), std::move(error), timed_out);
  }

  /// Tokens per second committed by requests that ended in the last 10 seconds.
  [[nodiscard]] double recent_rate() const {
    const auto now = clock::now();
    std::size_t tokens = 0;
    for (const auto& [when, count] : recent_)
      if (now - when <= std::chrono::seconds(10)) tokens += count;
    return static_cast<double>(tokens) / 10.0;
  }

  codec vocabulary_;
  engine_info info_;
  batch_decoder<Model, any_combiner, any_speculator> decoder_;  // the scheduler thread's alone
  std::map<request_id, std::shared_ptr<job>> active_;           // the scheduler thread's alone
  std::set<request_id> timed_out_;                              // the scheduler thread's alone

  mutable std::mutex mutex_;  // guards what follows
  std::condition_variable wake_;
  std::deque<std::shared_ptr<job>> incoming_;
  bool draining_ = false;
  bool stopped_ = false;
  clock::time_point drain_deadline_;
  std::size_t decoder_queued_ = 0;
  std::size_t running_ = 0;
  std::map<std::string, std::size_t> outcomes_;
  std::size_t rejected_ = 0;
  std::size_t prompt_tokens_ = 0;
  std::size_t generated_tokens_ = 0;
  std::vector<std::size_t> passes_;
  std::map<std::string, std::pair<std::size_t, std::size_t>> proposals_;  // proposer: verified, accepted
  mutable std::deque<std::pair<clock::time_point, std::size_t>> recent_;

  std::thread thread_;
};

}  // namespace cospec::server

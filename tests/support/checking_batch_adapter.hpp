// A batched adapter over synthetic models that checks the batch decoder's side of the
// batched adapter contract on every call, and can be told to misbehave: the batch decoder's
// protocol, failure and exactness tests drive it through this.
#pragma once

#include <algorithm>  // std::find, std::max, std::swap_ranges
#include <cstddef>    // std::size_t
#include <limits>     // std::numeric_limits
#include <optional>   // std::optional
#include <span>       // std::span
#include <stdexcept>  // std::runtime_error
#include <string>     // std::string, std::to_string
#include <vector>     // std::vector

#include <cospec/adapters/batched_model_adapter.hpp>
#include <cospec/errors.hpp>
#include <cospec/token.hpp>

#include "models/synthetic_model.hpp"

namespace cospec::testing {

/// Mistakes a batched backend could make, for the broken variants.
enum class batch_bug {
  none,
  /// in a pass of two or more sequences that want rows, the first entry's first row and the
  /// second's are swapped: one request's rows given to another
  rows_crossed,
};

/// One synthetic model per sequence (so a row never depends on the batch), from a pool of
/// `sequences`. Records every contract violation it sees:
/// - an empty batch, an entry with no tokens, more rows than tokens, rows of the wrong length;
/// - an unknown or released sequence, or one sequence twice in a batch;
/// - a context that grows past `limit` (the decoder must refuse first: context_overflow);
/// - truncate past what the context holds; a release of an unknown sequence.
/// For every lifetime of a sequence (create to release) it keeps the tokens of its first feed
/// and every context it held right after a truncate, to be checked against the text its
/// request finally committed. It misbehaves on request: `fail_feed_at` (n-th feed, 1-based:
/// every entry gets half of its tokens, then std::runtime_error), `overflow_feed_at` (the
/// same with cospec::context_overflow), `fail_truncate_at`, `fail_create_at`, `fail_release_at`
/// (throws although a release must not), and `bug`.
class checking_batch_adapter {
 public:
  struct lifetime {
    std::vector<token_id> first_feed;
    std::vector<std::vector<token_id>> after_truncate;
  };

  checking_batch_adapter(examples::synthetic_model_config config, std::size_t sequences)
      : config_(config), slots_(sequences) {}

  [[nodiscard]] std::size_t vocabulary_size() const { return config_.vocabulary_size; }
  [[nodiscard]] std::size_t max_sequences() const { return slots_.size(); }

  sequence_id create_sequence() {
    ++creates;
    if (fail_create_at != 0 && creates == fail_create_at) {
      failed_entries = 1;
      throw std::runtime_error("injected create failure");
    }
    for (std::size_t s = 0; s < slots_.size(); ++s)
      if (!slots_[s]) {
        slots_[s].emplace(config_);
        texts_[s].clear();
        ++alive;
        peak_alive = std::max(peak_alive, alive);
        lifetimes.emplace_back();
        lifetime_of_[s] = lifetimes.size() - 1;
        return s;
      }
    // The documented signal of an exhausted pool (batched_model_adapter, requirement 3): a batch
    // decoder that shares the pool queues the request instead of failing it.
    throw cospec::capacity_exceeded("checking_batch_adapter: all " + std::to_string(slots_.size()) +
                                    " sequences are in use");
  }

  void release_sequence(sequence_id s) {
    ++releases;
    if (fail_release_at != 0 && releases == fail_release_at) throw std::runtime_error("injected release failure");
    if (s >= slots_.size() || !slots_[s]) {
      violations.push_back("release of sequence " + std::to_string(s) + ", which does not exist");
      return;
    }
    slots_[s].reset();
    --alive;
  }

  [[nodiscard]] std::size_t context_length(sequence_id s) const { return model(s).context_length(); }
  [[nodiscard]] std::size_t context_limit(sequence_id) const { return limit; }

  void truncate(sequence_id s, std::size_t length) {
    ++truncates;
    if (fail_truncate_at != 0 && truncates == fail_truncate_at) {
      failed_entries = 1;
      throw std::runtime_error("injected truncate failure");
    }
    examples::synthetic_model& m = model(s);
    if (length > m.context_length()) {
      violations.push_back("truncate of sequence " + std::to_string(s) + " to " + std::to_string(length) +
                           " past its length " + std::to_string(m.context_length()));
      return;
    }
    m.truncate(length);
    texts_[s].resize(length);
    lifetimes[lifetime_of_[s]].after_truncate.push_back(texts_[s]);
  }

  void feed(std::span<const sequence_feed> batch) {
    ++feeds;
    largest_batch = std::max(largest_batch, batch.size());
    if (batch.empty()) violations.push_back("a pass with no sequences");
    std::vector<sequence_id> seen;
    for (const sequence_feed& entry : batch) {
      if (entry.sequence >= slots_.size() || !slots_[entry.sequence]) {
        violations.push_back("a pass for sequence " + std::to_string(entry.sequence) + ", which does not exist");
        return;
      }
      if (std::find(seen.begin(), seen.end(), entry.sequence) != seen.end())
        violations.push_back("sequence " + std::to_string(entry.sequence) + " twice in one pass");
      seen.push_back(entry.sequence);
      if (entry.tokens.empty()) violations.push_back("an entry with no tokens");
      if (entry.rows.size() > entry.tokens.size()) violations.push_back("more logit rows than fed tokens");
      for (const auto& row : entry.rows)
        if (row.size() != vocabulary_size()) violations.push_back("logit row of the wrong length");
      if (model(entry.sequence).context_length() + entry.tokens.size() > limit)
        violations.push_back("sequence " + std::to_string(entry.sequence) + " fed past its limit of " +
                             std::to_string(limit));
    }
    const bool fail = fail_feed_at != 0 && feeds == fail_feed_at;
    const bool overflow = overflow_feed_at != 0 && feeds == overflow_feed_at;
    if (fail || overflow) {
      failed_entries = batch.size();
      for (const sequence_feed& entry : batch) {
        const auto half = entry.tokens.first(entry.tokens.size() / 2);
        model(entry.sequence).feed(half, {});
        texts_[entry.sequence].insert(texts_[entry.sequence].end(), half.begin(), half.end());
      }
      if (overflow) throw context_overflow("injected: the backend's KV cache is full");
      throw std::runtime_error("injected feed failure");
    }
    for (const sequence_feed& entry : batch) {
      examples::synthetic_model& m = model(entry.sequence);
      if (m.context_length() == 0) lifetimes[lifetime_of_[entry.sequence]].first_feed.assign(entry.tokens.begin(), entry.tokens.end());
      m.feed(entry.tokens, entry.rows);
      texts_[entry.sequence].insert(texts_[entry.sequence].end(), entry.tokens.begin(), entry.tokens.end());
      tokens_fed += entry.tokens.size();
    }
    if (bug == batch_bug::rows_crossed) {
      std::vector<std::span<float>> first_rows;
      for (const sequence_feed& entry : batch)
        if (!entry.rows.empty()) first_rows.push_back(entry.rows[0]);
      if (first_rows.size() >= 2) std::swap_ranges(first_rows[0].begin(), first_rows[0].end(), first_rows[1].begin());
    }
  }

  std::size_t limit = std::numeric_limits<std::size_t>::max();
  std::size_t fail_feed_at = 0, overflow_feed_at = 0, fail_truncate_at = 0, fail_create_at = 0, fail_release_at = 0;
  batch_bug bug = batch_bug::none;

  std::size_t feeds = 0, truncates = 0, creates = 0, releases = 0, tokens_fed = 0;
  std::size_t alive = 0, peak_alive = 0, largest_batch = 0;
  std::size_t failed_entries = 0;  // sequences of the call that failed as asked
  std::vector<std::string> violations;
  std::vector<lifetime> lifetimes;

 private:
  examples::synthetic_model& model(sequence_id s) {
    if (s >= slots_.size() || !slots_[s]) throw std::runtime_error("checking_batch_adapter: no sequence " + std::to_string(s));
    return *slots_[s];
  }
  const examples::synthetic_model& model(sequence_id s) const {
    if (s >= slots_.size() || !slots_[s]) throw std::runtime_error("checking_batch_adapter: no sequence " + std::to_string(s));
    return *slots_[s];
  }

  examples::synthetic_model_config config_;
  std::vector<std::optional<examples::synthetic_model>> slots_;
  std::vector<std::vector<token_id>> texts_ = std::vector<std::vector<token_id>>(slots_.size());
  std::vector<std::size_t> lifetime_of_ = std::vector<std::size_t>(slots_.size(), 0);
};

}  // namespace cospec::testing

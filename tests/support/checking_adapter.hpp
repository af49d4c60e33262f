// A model adapter that checks the decoder's side of the adapter contract on every call, and
// can be told to misbehave: the protocol, failure and reliability tests drive the decoder
// through it.
#pragma once

#include <algorithm>  // std::equal, std::fill, std::min
#include <chrono>     // std::chrono::microseconds
#include <cmath>      // INFINITY, NAN
#include <cstddef>    // std::size_t
#include <limits>     // std::numeric_limits
#include <optional>   // std::optional
#include <stdexcept>  // std::runtime_error
#include <string>     // std::string, std::to_string
#include <thread>     // std::this_thread::sleep_for
#include <vector>     // std::vector

#include <cospec/adapters/model_adapter.hpp>
#include <cospec/errors.hpp>
#include <cospec/token.hpp>

#include "models/synthetic_model.hpp"

namespace cospec::testing {

/// What a poisoned logit row holds.
enum class poison_kind { nan, plus_infinity, all_masked };

/// Rows that predict the token at text position `position` (prompt included, counted from 0)
/// are spoilt: token `token` becomes NaN or +inf, or every token becomes -inf.
struct row_poison {
  std::size_t position;
  poison_kind kind;
  std::size_t token = 0;
};

/// Wraps a synthetic model. Records every contract violation it sees:
/// - feed with no tokens, or with more logit rows than tokens, or rows of the wrong length;
/// - a context that grows past `limit` (the decoder must refuse first: context_overflow);
/// - truncate past what the context holds;
/// and keeps every context it held right after a truncate, to be checked against the text
/// that was finally committed. It misbehaves on request:
/// - `fail_feed_at` / `overflow_feed_at`: the n-th feed (1-based) appends half of its tokens,
///   as a backend that dies mid-batch would, then throws std::runtime_error ("injected feed
///   failure") or cospec::context_overflow;
/// - `fail_truncate_at`: the n-th truncate throws std::runtime_error ("injected truncate
///   failure"); with `truncate_keeps_failing`, so does every later one;
/// - `delay`: every feed sleeps this long first (a slow backend);
/// - `poison`: rows predicting one position are spoilt (see row_poison).
class checking_adapter {
 public:
  explicit checking_adapter(examples::synthetic_model_config config) : model_(config) {}

  [[nodiscard]] std::size_t vocabulary_size() const { return model_.vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const { return context_.size(); }
  /// Optional requirement of cospec::model_adapter: the decoder checks it before every feed.
  [[nodiscard]] std::size_t context_limit() const { return limit; }

  void feed(std::span<const token_id> tokens, logit_outputs rows) {
    ++feeds;
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    if (tokens.empty()) violations.push_back("feed with no tokens");
    if (rows.size() > tokens.size()) violations.push_back("more logit rows than fed tokens");
    for (const auto& row : rows)
      if (row.size() != vocabulary_size()) violations.push_back("logit row of the wrong length");
    if (context_.size() + tokens.size() > limit)
      violations.push_back("fed " + std::to_string(tokens.size()) + " tokens to a context of " +
                           std::to_string(context_.size()) + " past its limit of " + std::to_string(limit));
    const bool fail = fail_feed_at != 0 && feeds == fail_feed_at;
    const bool overflow = overflow_feed_at != 0 && feeds == overflow_feed_at;
    if (fail || overflow) {
      const std::size_t half = tokens.size() / 2;
      model_.feed(tokens.first(half), {});
      context_.insert(context_.end(), tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(half));
      if (overflow) throw context_overflow("injected: the backend's KV cache is full");
      throw std::runtime_error("injected feed failure");
    }
    const std::size_t before = context_.size();
    model_.feed(tokens, rows);
    context_.insert(context_.end(), tokens.begin(), tokens.end());
    tokens_fed += tokens.size();
    if (poison) {
      // Row i predicts the token after fed token tokens.size() - rows.size() + i.
      for (std::size_t i = 0; i < rows.size(); ++i)
        if (before + tokens.size() - rows.size() + i + 1 == poison->position) spoil(rows[i]);
    }
  }

  void truncate(std::size_t length) {
    ++truncates;
    if (length > context_.size())
      violations.push_back("truncate to " + std::to_string(length) + " past the context of " +
                           std::to_string(context_.size()));
    const bool fail = fail_truncate_at != 0 && (truncates == fail_truncate_at ||
                                                (truncate_keeps_failing && truncates > fail_truncate_at));
    if (fail) {
      ++truncate_failures;
      throw std::runtime_error("injected truncate failure");
    }
    model_.truncate(length);
    context_.resize(std::min(length, context_.size()));
    after_truncate.push_back(context_);
  }

  [[nodiscard]] const std::vector<token_id>& context() const noexcept { return context_; }

  /// Whether the context is a prefix of `text`.
  [[nodiscard]] bool context_is_prefix_of(const std::vector<token_id>& text) const {
    return context_.size() <= text.size() && std::equal(context_.begin(), context_.end(), text.begin());
  }

  /// Stops every injected misbehaviour and lifts the context limit (counters keep counting).
  void behave() {
    fail_feed_at = overflow_feed_at = fail_truncate_at = 0;
    truncate_keeps_failing = false;
    limit = std::numeric_limits<std::size_t>::max();
    delay = std::chrono::microseconds(0);
    poison.reset();
  }

  std::vector<std::string> violations;
  std::vector<std::vector<token_id>> after_truncate;
  std::size_t feeds = 0;
  std::size_t truncates = 0;
  std::size_t truncate_failures = 0;  ///< injected truncate failures that fired
  std::size_t tokens_fed = 0;
  std::size_t fail_feed_at = 0;
  std::size_t overflow_feed_at = 0;
  std::size_t fail_truncate_at = 0;
  bool truncate_keeps_failing = false;
  std::size_t limit = std::numeric_limits<std::size_t>::max();
  std::chrono::microseconds delay{0};
  std::optional<row_poison> poison;

 private:
  void spoil(std::span<float> row) const {
    switch (poison->kind) {
      case poison_kind::nan: row[poison->token] = NAN; break;
      case poison_kind::plus_infinity: row[poison->token] = INFINITY; break;
      case poison_kind::all_masked: std::fill(row.begin(), row.end(), -INFINITY); break;
    }
  }

  examples::synthetic_model model_;
  std::vector<token_id> context_;
};

}  // namespace cospec::testing

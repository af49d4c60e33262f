// A model adapter that checks the decoder's side of the adapter contract on every call, and
// can be told to fail: the protocol and failure tests drive the decoder through it.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include <cospec/adapters/model_adapter.hpp>
#include <cospec/token.hpp>

#include "models/synthetic_model.hpp"

namespace cospec::testing {

/// Wraps a synthetic model. Records every contract violation it sees:
/// - feed with no tokens, or with more logit rows than tokens, or rows of the wrong length;
/// - truncate past what the context holds;
/// and keeps every context it held right after a truncate, to be checked against the text
/// that was finally committed. `fail_feed_at` / `fail_truncate_at` make the n-th call
/// (1-based) throw std::runtime_error, after (for feed) appending half of the tokens, as a
/// backend that dies mid-batch would.
class checking_adapter {
 public:
  explicit checking_adapter(examples::synthetic_model_config config) : model_(config) {}

  [[nodiscard]] std::size_t vocabulary_size() const { return model_.vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const { return context_.size(); }

  void feed(std::span<const token_id> tokens, logit_outputs rows) {
    ++feeds;
    if (tokens.empty()) violations.push_back("feed with no tokens");
    if (rows.size() > tokens.size()) violations.push_back("more logit rows than fed tokens");
    for (const auto& row : rows)
      if (row.size() != vocabulary_size()) violations.push_back("logit row of the wrong length");
    if (fail_feed_at != 0 && feeds == fail_feed_at) {
      const std::size_t half = tokens.size() / 2;
      model_.feed(tokens.first(half), {});
      context_.insert(context_.end(), tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(half));
      throw std::runtime_error("injected feed failure");
    }
    model_.feed(tokens, rows);
    context_.insert(context_.end(), tokens.begin(), tokens.end());
    tokens_fed += tokens.size();
  }

  void truncate(std::size_t length) {
    ++truncates;
    if (length > context_.size())
      violations.push_back("truncate to " + std::to_string(length) + " past the context of " +
                           std::to_string(context_.size()));
    if (fail_truncate_at != 0 && truncates == fail_truncate_at) throw std::runtime_error("injected truncate failure");
    model_.truncate(length);
    context_.resize(std::min(length, context_.size()));
    after_truncate.push_back(context_);
  }

  [[nodiscard]] const std::vector<token_id>& context() const noexcept { return context_; }

  /// Whether the context is a prefix of `text`.
  [[nodiscard]] bool context_is_prefix_of(const std::vector<token_id>& text) const {
    return context_.size() <= text.size() && std::equal(context_.begin(), context_.end(), text.begin());
  }

  std::vector<std::string> violations;
  std::vector<std::vector<token_id>> after_truncate;
  std::size_t feeds = 0;
  std::size_t truncates = 0;
  std::size_t tokens_fed = 0;
  std::size_t fail_feed_at = 0;
  std::size_t fail_truncate_at = 0;

 private:
  examples::synthetic_model model_;
  std::vector<token_id> context_;
};

}  // namespace cospec::testing

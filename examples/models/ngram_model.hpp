// Character-level n-gram language models with interpolated Kneser-Ney smoothing, trained at
// start-up on real text. Models of different orders, trained on the same text, play the
// small and large models of a collaboration: they agree on easy characters and disagree on
// hard ones, much as a small and a large real model do.
#pragma once

#include <algorithm>      // std::max
#include <array>          // std::array
#include <cmath>          // std::log
#include <cstddef>        // std::size_t
#include <cstdint>        // std::uint64_t, std::uint32_t
#include <memory>         // std::shared_ptr, std::make_shared
#include <span>           // std::span
#include <stdexcept>      // std::invalid_argument
#include <string>         // std::string
#include <string_view>    // std::string_view
#include <unordered_map>  // std::unordered_map
#include <utility>        // std::pair
#include <vector>         // std::vector

#include <cospec/adapters/model_adapter.hpp>
#include <cospec/token.hpp>

namespace cospec::examples {

/// The characters of a text, numbered in order of first appearance.
class character_vocabulary {
 public:
  explicit character_vocabulary(std::string_view text) {
    ids_.fill(-1);
    for (unsigned char c : text)
      if (ids_[c] < 0) {
        ids_[c] = static_cast<token_id>(characters_.size());
        characters_.push_back(static_cast<char>(c));
      }
  }
  [[nodiscard]] std::size_t size() const noexcept { return characters_.size(); }
  /// Characters not in the vocabulary are skipped.
  [[nodiscard]] std::vector<token_id> encode(std::string_view text) const {
    std::vector<token_id> tokens;
    for (unsigned char c : text)
      if (ids_[c] >= 0) tokens.push_back(ids_[c]);
    return tokens;
  }
  [[nodiscard]] std::string decode(std::span<const token_id> tokens) const {
    std::string text;
    for (token_id t : tokens) text.push_back(characters_.at(static_cast<std::size_t>(t)));
    return text;
  }

 private:
  std::array<token_id, 256> ids_{};
  std::vector<char> characters_;
};

/// Kneser-Ney statistics of one text for every order up to `max_order`.
class ngram_statistics {
 public:
  /// Counts every n-gram of the token sequence. Throws std::invalid_argument for an empty
  /// text, max_order 0, or a token outside [0, vocabulary_size).
  ngram_statistics(std::span<const token_id> text, std::size_t vocabulary_size, std::size_t max_order,
                   double discount = 0.75)
      : vocabulary_size_(vocabulary_size),
        max_order_(max_order),
        discount_(discount),
        plain_(max_order),
        continuation_(max_order) {
    if (text.empty() || max_order == 0 || vocabulary_size == 0)
      throw std::invalid_argument("ngram_statistics: needs a non-empty text, a vocabulary and max_order >= 1");
    // A discount above 1 frees less mass than the back-off weight assumes, and one <= 0 gives
    // zero or negative probabilities: only (0, 1] gives a distribution.
    if (!(discount > 0.0 && discount <= 1.0))
      throw std::invalid_argument("ngram_statistics: the discount must be in (0, 1]");
    for (token_id t : text)
      if (t < 0 || static_cast<std::size_t>(t) >= vocabulary_size)
        throw std::invalid_argument("ngram_statistics: token outside the vocabulary");
    // Every level keeps plain counts c(h w), used when it is a model's top level, and
    // continuation counts N1+(. h w), the number of distinct tokens seen before (h w), used
    // when a higher level interpolates with it: that is what makes the smoothing Kneser-Ney.
    std::unordered_map<std::uint64_t, bool> seen_extensions;
    for (std::size_t i = 0; i < text.size(); ++i) {
      for (std::size_t order = 1; order <= max_order && order <= i + 1; ++order) {
        const std::size_t history = order - 1;
        const std::uint64_t h = hash(text.subspan(i - history, history));
        add(plain_[order - 1], h, text[i]);
        // The text's first n-gram has no left neighbour: it counts as one continuation.
        const bool new_extension =
            i < order || seen_extensions.emplace(hash(text.subspan(i - order, order + 1)) ^ (order * 0x9e3779b97f4a7c15ULL), true).second;
        if (new_extension) add(continuation_[order - 1], h, text[i]);
      }
    }
  }

  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return vocabulary_size_; }
  [[nodiscard]] std::size_t max_order() const noexcept { return max_order_; }

  /// log P(w | history) for every w, under the interpolated Kneser-Ney model of `order`
  /// (<= max_order), using the last order - 1 tokens of `history`. Sums to 1 exactly up to
  /// rounding: every level mixes its discounted counts with the level below, weighted by the
  /// mass the discount freed.
  /// `scratch` is the caller's, so that models sharing these statistics can run on
  /// separate threads.
  void log_probabilities(std::span<const token_id> history, std::size_t order, std::span<float> out,
                         std::vector<double>& scratch) const {
    std::vector<double>& p = scratch;
    p.assign(vocabulary_size_, 1.0 / static_cast<double>(vocabulary_size_));
    for (std::size_t level = 1; level <= order; ++level) {
      const std::size_t length = level - 1;
      if (history.size() < length) break;
      const level_counts& counts = level == order ? plain_[level - 1] : continuation_[level - 1];
      const auto found = counts.find(hash(history.subspan(history.size() - length, length)));
      if (found == counts.end()) continue;  // unseen history: keep the lower-order estimate
      const successors& s = found->second;
      const double total = static_cast<double>(s.total);
      const double backoff = discount_ * static_cast<double>(s.entries.size()) / total;
      for (double& x : p) x *= backoff;
      for (const auto& [token, count] : s.entries)
        p[static_cast<std::size_t>(token)] += std::max(static_cast<double>(count) - discount_, 0.0) / total;
    }
    for (std::size_t w = 0; w < vocabulary_size_; ++w) out[w] = static_cast<float>(std::log(p[w]));
  }

 private:
  struct successors {
    std::uint64_t total = 0;
    std::vector<std::pair<token_id, std::uint32_t>> entries;
  };
  using level_counts = std::unordered_map<std::uint64_t, successors>;

  static void add(level_counts& level, std::uint64_t history, token_id token) {
    successors& s = level[history];
    ++s.total;
    for (auto& entry : s.entries)
      if (entry.first == token) {
        ++entry.second;
        return;
      }
    s.entries.emplace_back(token, 1u);
  }

  static std::uint64_t hash(std::span<const token_id> tokens) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ULL ^ tokens.size();
    for (token_id t : tokens) {
      h ^= static_cast<std::uint64_t>(t) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
      h *= 0x100000001b3ULL;
    }
    return h;
  }

  std::size_t vocabulary_size_;
  std::size_t max_order_;
  double discount_;
  std::vector<level_counts> plain_;
  std::vector<level_counts> continuation_;
};

/// A ModelAdapter over shared n-gram statistics: the interpolated Kneser-Ney model of one
/// order. Its logits are log-probabilities, so softmax gives back the model exactly.
class ngram_model {
 public:
  ngram_model(std::shared_ptr<const ngram_statistics> statistics, std::size_t order)
      : statistics_(std::move(statistics)), order_(order) {
    if (order_ == 0 || order_ > statistics_->max_order())
      throw std::invalid_argument("ngram_model: order must be in [1, the statistics' max order]");
  }

  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return statistics_->vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const noexcept { return context_.size(); }
  [[nodiscard]] std::size_t order() const noexcept { return order_; }

  void feed(std::span<const token_id> tokens, logit_outputs rows) {
    const std::size_t first_row = tokens.size() - rows.size();
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      context_.push_back(tokens[i]);
      if (i >= first_row) statistics_->log_probabilities(context_, order_, rows[i - first_row], scratch_);
    }
  }

  void truncate(std::size_t length) { context_.resize(length); }

 private:
  std::shared_ptr<const ngram_statistics> statistics_;
  std::size_t order_;
  std::vector<token_id> context_;
  std::vector<double> scratch_;
};

}  // namespace cospec::examples

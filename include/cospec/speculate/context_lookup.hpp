// Proposals from the context: the tokens that followed the most recent earlier occurrence of
// the text's last n tokens (prompt lookup decoding; docs/algorithm.md, "Proposals from the
// context").
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::min, std::fill
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint32_t, std::uint64_t
#include <span>       // std::span
#include <string>     // std::to_string
#include <vector>     // std::vector

#include "cospec/errors.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Settings of the context proposer.
struct context_lookup_options {
  /// The longest and shortest suffix of the text matched (llama.cpp's lookup and vLLM's
  /// ngram use up to 3-4 tokens down to 1-2): longer matches first, they predict better.
  std::size_t max_ngram = 4;
  std::size_t min_ngram = 2;
  /// log2 of the slots of each n's table: 2^15 slots of 12 bytes per n (1.2 MB for n = 2..4).
  /// A slot keeps the two most recent positions whose n tokens hash there, so the index never
  /// grows with the text: older positions are forgotten once others take their slots.
  std::size_t table_bits = 15;
};

/// An index of the committed text by its n-grams (n from max_ngram down to min_ngram), and
/// the lookup that proposes what followed the most recent earlier occurrence of the text's last
/// n tokens. Memory is fixed at construction (`(max_ngram - min_ngram + 1) << table_bits`
/// slots of 12 bytes), whatever the text's length; nothing allocates after it. Indexing a
/// token costs one hash and one store per n; a lookup, one hash, one load and a comparison of
/// n tokens per n tried, so a text that never repeats costs almost nothing. A new request
/// invalidates the whole index in O(1) (slots remember the request they were written in).
class context_lookup {
 public:
  explicit context_lookup(context_lookup_options options = {}) : options_(options) {
    if (options_.min_ngram == 0 || options_.max_ngram < options_.min_ngram)
      throw invalid_configuration("context_lookup: needs 1 <= min_ngram <= max_ngram, got " +
                                  std::to_string(options_.min_ngram) + " and " + std::to_string(options_.max_ngram));
    if (options_.table_bits < 4 || options_.table_bits > 24)
      throw invalid_configuration("context_lookup: table_bits must be in [4, 24], got " +
                                  std::to_string(options_.table_bits));
    slots_.assign((options_.max_ngram - options_.min_ngram + 1) << options_.table_bits, slot{});
  }

  [[nodiscard]] const context_lookup_options& options() const noexcept { return options_; }

  /// Forgets everything indexed (a new request).
  void clear() noexcept {
    ++generation_;
    if (generation_ == 0) {  // the counter wrapped: a slot might look current
      std::fill(slots_.begin(), slots_.end(), slot{});
      generation_ = 1;
    }
    indexed_ = 0;
  }

  /// Indexes text[0, end) (the committed text; call again as it grows, with the same text).
  void index(std::span<const token_id> text, std::size_t end) noexcept {
    for (; indexed_ < end; ++indexed_) {
      // The n-grams that end at position indexed_ predict position indexed_ + 1.
      for (std::size_t n = options_.min_ngram; n <= options_.max_ngram && n <= indexed_ + 1; ++n) {
        slot& s = table(n)[hash(text.subspan(indexed_ + 1 - n, n)) & mask()];
        // The text's own last n-gram is always the latest occurrence of itself: the one before
        // is the one a lookup wants, so a slot keeps both.
        s.previous = s.generation == generation_ ? s.latest : 0;
        s.latest = static_cast<std::uint32_t>(indexed_ + 1);
        s.generation = generation_;
      }
    }
  }

  /// Writes into `out` up to out.size() tokens that followed the most recent earlier
  /// occurrence of `text`'s last n tokens (n from max_ngram down to min_ngram, the first that
  /// matches), taken from text[0, indexed) only; returns how many. Only the committed text is
  /// indexed, but `text` may go on past it (pending proposals): the match is for its end.
  std::size_t propose(std::span<const token_id> text, std::span<token_id> out) const noexcept {
    if (out.empty()) return 0;
    for (std::size_t n = std::min(options_.max_ngram, text.size()); n >= options_.min_ngram; --n) {
      const std::span<const token_id> suffix = text.last(n);
      const slot& s = table(n)[hash(suffix) & mask()];
      if (s.generation != generation_) continue;
      for (const std::uint32_t follows : {s.latest, s.previous}) {
        // A slot is shared by every n-gram that hashes there: check the tokens, and that the
        // occurrence is an earlier one (not the text's own end) with indexed text after it.
        if (follows < n || follows >= indexed_ || follows + n > text.size()) continue;
        bool same = true;
        for (std::size_t i = 0; i < n && same; ++i) same = text[follows - n + i] == suffix[i];
        if (!same) continue;
        std::size_t count = 0;
        while (count < out.size() && follows + count < indexed_) {
          out[count] = text[follows + count];
          ++count;
        }
        return count;
      }
    }
    return 0;
  }

 private:
  struct slot {
    std::uint32_t latest = 0;      // the position after the most recent occurrence (0: none)
    std::uint32_t previous = 0;    // and after the one before it
    std::uint32_t generation = 0;  // the request they were written in
  };

  [[nodiscard]] std::size_t mask() const noexcept { return (std::size_t{1} << options_.table_bits) - 1; }
  [[nodiscard]] slot* table(std::size_t n) noexcept {
    return slots_.data() + ((n - options_.min_ngram) << options_.table_bits);
  }
  [[nodiscard]] const slot* table(std::size_t n) const noexcept {
    return slots_.data() + ((n - options_.min_ngram) << options_.table_bits);
  }

  /// FNV-1a over the tokens, then a final mix (the table's index takes the low bits).
  [[nodiscard]] static std::uint64_t hash(std::span<const token_id> tokens) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (token_id t : tokens) {
      h ^= static_cast<std::uint32_t>(t);
      h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
  }

  context_lookup_options options_;
  std::vector<slot> slots_;
  std::uint32_t generation_ = 1;
  std::size_t indexed_ = 0;
};

}  // namespace cospec

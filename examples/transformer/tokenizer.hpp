// The tokenizer of llama2.c: sentencepiece's llama vocabulary exported as tokenizer.bin, with
// the encoding run.c implements. Text is cut into UTF-8 characters, a character the
// vocabulary lacks becomes one token per byte ("<0xHH>", byte fallback), and adjacent tokens
// are then merged, the pair whose merged piece scores highest first, until no pair merges.
//
// tokenizer.bin: int32 max_token_length, then per token float32 score, int32 length and
// `length` bytes of piece, all little-endian. The file does not store the token count; the
// model's vocab_size gives it.
#pragma once

#include <algorithm>     // std::stable_sort, std::lower_bound
#include <bit>           // std::endian
#include <cmath>         // std::isnan
#include <cstddef>       // std::size_t, std::ptrdiff_t
#include <cstdint>       // std::int32_t, std::uint64_t, std::uintmax_t
#include <filesystem>    // std::filesystem::path, std::filesystem::file_size
#include <fstream>       // std::ifstream
#include <ios>           // std::ios, std::streamsize
#include <limits>        // std::numeric_limits
#include <optional>      // std::optional
#include <stdexcept>     // std::runtime_error
#include <string>        // std::string, std::to_string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code
#include <utility>       // std::pair, std::move
#include <vector>        // std::vector

#include <cospec/token.hpp>

namespace cospec::examples::llama {

static_assert(std::endian::native == std::endian::little,
              "tokenizer.bin is little-endian and is read without byte swapping");

/// A tokenizer file that cannot be read, a vocabulary that cannot be used, or a token id out
/// of range. The message says which.
struct tokenizer_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// llama2.c's tokenizer. Immutable after construction; every member is const and safe to
/// call from several threads.
class tokenizer {
 public:
  static constexpr token_id bos_id = 1;  ///< <s>, written before the text when asked
  static constexpr token_id eos_id = 2;  ///< </s>
  /// Byte b falls back to token b + first_byte_id (the pieces "<0x00>".."<0xFF>").
  static constexpr token_id first_byte_id = 3;

  /// A vocabulary of (piece, score) pairs, token id = position. Where a piece occurs twice,
  /// lookups find the lower id. Throws tokenizer_error when there are fewer than 3 tokens
  /// (BOS and EOS must exist), more than token_id can number, or a NaN score (it would make
  /// the merge order depend on where the NaN is).
  explicit tokenizer(std::vector<std::pair<std::string, float>> vocabulary) {
    if (vocabulary.size() < 3)
      throw tokenizer_error("llama tokenizer: " + std::to_string(vocabulary.size()) +
                            " tokens, at least 3 are needed (<unk>, <s>, </s>)");
    if (vocabulary.size() > static_cast<std::size_t>(std::numeric_limits<token_id>::max()))
      throw tokenizer_error("llama tokenizer: " + std::to_string(vocabulary.size()) +
                            " tokens are more than a token_id can number");
    pieces_.reserve(vocabulary.size());
    scores_.reserve(vocabulary.size());
    for (auto& [piece, score] : vocabulary) {
      if (std::isnan(score))
        throw tokenizer_error("llama tokenizer: token " + std::to_string(pieces_.size()) + " has a NaN score");
      pieces_.push_back(std::move(piece));
      scores_.push_back(score);
    }
    // Ids sorted by piece for binary search (what run.c does). Indices rather than
    // string_views into pieces_, so that copying a tokenizer leaves nothing dangling.
    sorted_ids_.resize(pieces_.size());
    for (std::size_t id = 0; id < sorted_ids_.size(); ++id) sorted_ids_[id] = static_cast<token_id>(id);
    std::stable_sort(sorted_ids_.begin(), sorted_ids_.end(),
                     [this](token_id a, token_id b) { return pieces_[index(a)] < pieces_[index(b)]; });
  }

  /// Reads the first `vocab_size` tokens of a tokenizer.bin; vocab_size is the model's.
  /// Throws tokenizer_error when the file cannot be opened, is truncated (holds fewer than
  /// vocab_size tokens), has a negative piece length, has bytes after the last token (it is
  /// then not the tokenizer of a model with this vocab_size), or holds an unusable vocabulary
  /// (see the constructor).
  [[nodiscard]] static tokenizer load(const std::filesystem::path& path, std::size_t vocab_size) {
    const std::string where = "llama2.c tokenizer " + path.string() + ": ";
    std::ifstream in(path, std::ios::binary);
    if (!in.is_open()) throw tokenizer_error(where + "cannot open the file for reading");
    std::error_code size_error;
    const std::uintmax_t file_bytes = std::filesystem::file_size(path, size_error);
    if (size_error) throw tokenizer_error(where + "cannot determine the file size (" + size_error.message() + ")");

    std::uint64_t offset = 0;
    const auto read = [&](void* data, std::size_t bytes) {
      in.read(static_cast<char*>(data), static_cast<std::streamsize>(bytes));
      offset += static_cast<std::uint64_t>(in.gcount());
      return static_cast<std::size_t>(in.gcount()) == bytes;
    };
    // max_token_length only sized run.c's merge buffer; std::string needs no such bound.
    std::int32_t max_token_length = 0;
    if (!read(&max_token_length, sizeof max_token_length))
      throw tokenizer_error(where + "truncated: the file ends inside the 4-byte header");
    // Every token takes at least 8 bytes (score and length), which bounds a believable
    // vocab_size before anything is reserved for it.
    constexpr std::uint64_t min_token_bytes = sizeof(float) + sizeof(std::int32_t);
    if (vocab_size > (file_bytes - offset) / min_token_bytes)
      throw tokenizer_error(where + "truncated: " + std::to_string(file_bytes) + " bytes cannot hold " +
                            std::to_string(vocab_size) + " tokens of at least " + std::to_string(min_token_bytes) +
                            " bytes each");

    std::vector<std::pair<std::string, float>> vocabulary(vocab_size);
    for (std::size_t id = 0; id < vocab_size; ++id) {
      const std::string token = "token " + std::to_string(id);
      auto& [piece, score] = vocabulary[id];
      std::int32_t length = 0;
      if (!read(&score, sizeof score) || !read(&length, sizeof length))
        throw tokenizer_error(where + "truncated: the file ends inside " + token + " (of " +
                              std::to_string(vocab_size) + ")");
      if (length < 0) throw tokenizer_error(where + token + " has a negative length " + std::to_string(length));
      // Checked against the bytes left, so a corrupt length cannot allocate more than the file.
      if (static_cast<std::uint64_t>(length) > file_bytes - offset)
        throw tokenizer_error(where + "truncated: " + token + " needs " + std::to_string(length) + " bytes, " +
                              std::to_string(file_bytes - offset) + " remain");
      piece.resize(static_cast<std::size_t>(length));
      if (!read(piece.data(), piece.size()))
        throw tokenizer_error(where + "truncated: the file ends inside " + token + "'s piece");
    }
    if (offset != file_bytes)
      throw tokenizer_error(where + "trailing bytes: " + std::to_string(vocab_size) + " tokens end at byte " +
                            std::to_string(offset) + " of " + std::to_string(file_bytes) +
                            " (is this the tokenizer of a model with this vocab_size?)");
    try {
      return tokenizer(std::move(vocabulary));
    } catch (const tokenizer_error& e) {
      throw tokenizer_error(where + e.what());
    }
  }

  /// The tokens of `text`, with BOS before and EOS after when asked. Non-empty text gets the
  /// token of " " in front (sentencepiece's dummy prefix, so that a text's first word is
  /// tokenized like a word after a space); BOS and EOS never merge with the text.
  /// Complexity: O(n^2 log V) for n characters (each merge rescans every pair), as in run.c.
  /// Throws tokenizer_error when a character needs a byte token the vocabulary lacks.
  [[nodiscard]] std::vector<token_id> encode(std::string_view text, bool bos, bool eos) const {
    std::vector<token_id> tokens;
    if (bos) tokens.push_back(bos_id);
    const std::size_t first_text_token = tokens.size();
    if (!text.empty()) append_character(" ", tokens);
    // A character is a byte and the continuation bytes (10xxxxxx) after it, at most 4 bytes
    // as in UTF-8; invalid sequences are not rejected, they fall back to bytes.
    for (std::size_t start = 0; start < text.size();) {
      std::size_t end = start + 1;
      while (end < text.size() && end - start < 4 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
      append_character(text.substr(start, end - start), tokens);
      start = end;
    }
    merge_by_score(tokens, first_text_token);
    if (eos) tokens.push_back(eos_id);
    return tokens;
  }

  /// The text of `token` when it follows `previous`: its piece, without the leading space
  /// when previous is BOS (the dummy prefix encode added), or the raw byte for a piece
  /// "<0xHH>". Throws tokenizer_error when either id is not in [0, vocab_size()).
  [[nodiscard]] std::string decode(token_id previous, token_id token) const {
    std::string_view text = piece(token);
    check_id(previous);
    if (previous == bos_id && !text.empty() && text.front() == ' ') text.remove_prefix(1);
    if (const std::optional<char> byte = byte_of_piece(text)) return std::string(1, *byte);
    return std::string(text);
  }

  [[nodiscard]] std::size_t vocab_size() const noexcept { return pieces_.size(); }

  /// The piece of `id` as stored. Throws tokenizer_error when id is not in [0, vocab_size()).
  [[nodiscard]] const std::string& piece(token_id id) const {
    check_id(id);
    return pieces_[index(id)];
  }

  /// The merge score of `id`. Throws tokenizer_error when id is not in [0, vocab_size()).
  [[nodiscard]] float score(token_id id) const {
    check_id(id);
    return scores_[index(id)];
  }

 private:
  static std::size_t index(token_id id) noexcept { return static_cast<std::size_t>(id); }

  void check_id(token_id id) const {
    if (id < 0 || index(id) >= pieces_.size())
      throw tokenizer_error("llama tokenizer: token id " + std::to_string(id) + " is not in [0, " +
                            std::to_string(pieces_.size()) + ")");
  }

  /// The lowest id whose piece is `text`, or nothing.
  [[nodiscard]] std::optional<token_id> find(std::string_view text) const {
    const auto it = std::lower_bound(sorted_ids_.begin(), sorted_ids_.end(), text,
                                     [this](token_id id, std::string_view t) { return pieces_[index(id)] < t; });
    if (it == sorted_ids_.end() || pieces_[index(*it)] != text) return std::nullopt;
    return *it;
  }

  /// The token of `character`, or one byte token per byte when it has none.
  void append_character(std::string_view character, std::vector<token_id>& tokens) const {
    if (const std::optional<token_id> id = find(character)) {
      tokens.push_back(*id);
      return;
    }
    for (const char c : character) {
      const auto byte = static_cast<unsigned char>(c);
      const auto id = static_cast<std::size_t>(first_byte_id) + byte;
      if (id >= pieces_.size())
        throw tokenizer_error("llama tokenizer: no byte token for 0x" + hex(byte) + " (needed for a character the " +
                              std::to_string(pieces_.size()) + "-token vocabulary has no piece for)");
      tokens.push_back(static_cast<token_id>(id));
    }
  }

  /// Merges tokens[first..] in place: while some adjacent pair's concatenated piece is in the
  /// vocabulary, replaces the pair whose merged piece scores highest (the leftmost on ties).
  void merge_by_score(std::vector<token_id>& tokens, std::size_t first) const {
    std::string merged;  // reused for every candidate pair
    for (;;) {
      std::optional<std::size_t> best_position;
      token_id best_id = 0;
      for (std::size_t i = first; i + 1 < tokens.size(); ++i) {
        merged.assign(pieces_[index(tokens[i])]);
        merged.append(pieces_[index(tokens[i + 1])]);
        const std::optional<token_id> id = find(merged);
        // Strictly greater, so that the leftmost of equal scores wins.
        if (id && (!best_position || scores_[index(*id)] > scores_[index(best_id)])) {
          best_position = i;
          best_id = *id;
        }
      }
      if (!best_position) return;
      tokens[*best_position] = best_id;
      tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(*best_position + 1));
    }
  }

  /// The byte a piece "<0xHH>" stands for (either case of hex digit), or nothing.
  static std::optional<char> byte_of_piece(std::string_view text) noexcept {
    if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return std::nullopt;
    const auto digit = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int high = digit(text[3]);
    const int low = digit(text[4]);
    if (high < 0 || low < 0) return std::nullopt;
    return static_cast<char>(static_cast<unsigned char>(high * 16 + low));
  }

  static std::string hex(unsigned char byte) {
    constexpr std::string_view digits = "0123456789ABCDEF";
    return {digits[byte >> 4], digits[byte & 0xF]};
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<token_id> sorted_ids_;  ///< every id, ordered by piece (ties by id)
};

}  // namespace cospec::examples::llama

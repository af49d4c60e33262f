// cospec-server's view of a vocabulary: tokens to text and back, the end-of-generation tokens
// and the chat template, the same for every backend (docs/server.md, "Backends").
#pragma once

#include <cstddef>      // std::size_t
#include <cstdint>      // std::uint64_t
#include <functional>   // std::function
#include <span>         // std::span
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <utility>      // std::move
#include <vector>       // std::vector

#include <cospec/token.hpp>

#include "server/api_request.hpp"

namespace cospec::server {

/// Every token's text, computed once at start (so that any thread may read it, and the views
/// the decoder streams stay valid), and what turns text into tokens.
class codec {
 public:
  using encoder = std::function<std::vector<token_id>(std::string_view text, bool add_special)>;
  using chat_formatter = std::function<std::string(const std::vector<chat_message>& messages)>;

  codec(std::vector<std::string> pieces, encoder encode, chat_formatter chat, std::vector<token_id> end_tokens,
        std::string description)
      : pieces_(std::move(pieces)),
        encode_(std::move(encode)),
        chat_(std::move(chat)),
        end_tokens_(std::move(end_tokens)),
        description_(std::move(description)) {}

  [[nodiscard]] std::size_t size() const noexcept { return pieces_.size(); }
  [[nodiscard]] std::string_view piece(token_id t) const noexcept {
    const auto i = static_cast<std::size_t>(t);
    return t >= 0 && i < pieces_.size() ? std::string_view(pieces_[i]) : std::string_view{};
  }
  [[nodiscard]] std::vector<token_id> encode(std::string_view text, bool add_special) const {
    return encode_(text, add_special);
  }
  [[nodiscard]] std::string decode(std::span<const token_id> tokens) const {
    std::string text;
    for (token_id t : tokens) text.append(piece(t));
    return text;
  }
  [[nodiscard]] std::string chat(const std::vector<chat_message>& messages) const { return chat_(messages); }
  /// The tokens that end a generation (EOS, end of turn); left out of the output text.
  [[nodiscard]] const std::vector<token_id>& end_tokens() const noexcept { return end_tokens_; }
  [[nodiscard]] const std::string& description() const noexcept { return description_; }

 private:
  std::vector<std::string> pieces_;
  encoder encode_;
  chat_formatter chat_;
  std::vector<token_id> end_tokens_;
  std::string description_;
};

/// A plain chat layout for models that bring no template of their own (llama2.c checkpoints,
/// the seed-built demo): each message as "<|role|>\ncontent\n", then "<|assistant|>\n".
inline std::string plain_chat(const std::vector<chat_message>& messages) {
  std::string text;
  for (const chat_message& m : messages) text += "<|" + m.role + "|>\n" + m.content + "\n";
  text += "<|assistant|>\n";
  return text;
}

/// The demo's vocabulary, for a model with no tokenizer file: ids 3 to 258 are the bytes 0-255
/// (llama's byte-fallback layout), 0-2 are <unk>, <s> and </s>, and every other id is a
/// syllable pair with a space before it, so that a seed-built model's output reads as words.
/// Text is encoded byte by byte.
inline codec demo_codec(std::size_t vocabulary) {
  static constexpr const char* syllables[] = {"ka", "lo", "mi", "ne", "ru", "ta", "vo", "si", "de", "pa", "zu", "fe",
                                              "go", "hi", "bu", "ri"};
  std::vector<std::string> pieces(vocabulary);
  for (std::size_t t = 0; t < vocabulary; ++t) {
    if (t == 0) pieces[t] = "<unk>";
    else if (t == 1) pieces[t] = "";
    else if (t == 2) pieces[t] = "";
    else if (t < 259) pieces[t] = std::string(1, static_cast<char>(t - 3));
    else {
      // Appended piece by piece: g++ 12 warns falsely (-Wrestrict) on `" " + std::string(..)`.
      std::string& piece = pieces[t];
      piece.reserve(5);
      piece.push_back(' ');
      piece.append(syllables[t % 16]).append(syllables[(t / 16) % 16]);
    }
  }
  auto encode = [vocabulary](std::string_view text, bool add_special) {
    std::vector<token_id> tokens;
    if (add_special) tokens.push_back(1);
    for (unsigned char c : text)
      if (static_cast<std::size_t>(c) + 3 < vocabulary) tokens.push_back(static_cast<token_id>(c + 3));
    return tokens;
  };
  return codec(std::move(pieces), encode, plain_chat, {2}, "the demo's byte vocabulary");
}

}  // namespace cospec::server

// llama2.c's tokenizer (examples/transformer/tokenizer.hpp) on a small vocabulary written to
// a tokenizer.bin by the test: merges follow scores, not position; characters without a piece
// fall back to bytes; BOS, EOS and the dummy prefix are where run.c puts them; decoding strips
// the prefix after BOS only and turns byte pieces into bytes; malformed files are rejected.
#include <catch2/catch.hpp>

#include <algorithm>     // std::max
#include <cstddef>       // std::size_t
#include <cstdint>       // std::int32_t
#include <cstdio>        // std::snprintf
#include <filesystem>    // std::filesystem::path, std::filesystem::resize_file, std::filesystem::file_size
#include <fstream>       // std::ofstream
#include <ios>           // std::ios, std::streamsize
#include <limits>        // std::numeric_limits
#include <random>        // std::mt19937_64, std::random_device
#include <string>        // std::string, std::to_string
#include <string_view>   // std::string_view
#include <utility>       // std::pair
#include <vector>        // std::vector

#include "support/temporary_file.hpp"
#include "transformer/tokenizer.hpp"

namespace {

using cospec::testing::temporary_file;

using Catch::Matchers::Contains;
using cospec::token_id;
using cospec::examples::llama::tokenizer;
using cospec::examples::llama::tokenizer_error;
using vocabulary = std::vector<std::pair<std::string, float>>;

/// llama's layout: <unk>, <s>, </s>, the 256 byte pieces, then the pieces proper.
vocabulary with_special_and_byte_pieces(const vocabulary& pieces) {
  vocabulary all = {{"<unk>", 0.0f}, {"<s>", 0.0f}, {"</s>", 0.0f}};
  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", byte);
    all.emplace_back(name, 0.0f);
  }
  all.insert(all.end(), pieces.begin(), pieces.end());
  return all;
}

// Scores chosen so that the highest-scoring merge is not the leftmost one: in " abc" the
// pairs " a", "ab" and "bc" all merge, and "bc" scores highest.
const vocabulary test_pieces = {
    {" ", -10.0f}, {"a", -10.0f}, {"b", -10.0f}, {"c", -10.0f}, {"ab", -3.0f},
    {"bc", -1.0f}, {"abc", -2.0f}, {" a", -5.0f}, {"é", -10.0f},
};
constexpr token_id space = 259, a = 260, b = 261, c = 262, ab = 263, bc = 264, abc = 265, space_a = 266, e_acute = 267;
constexpr std::size_t test_vocab_size = 268;

/// The byte token of `byte`.
constexpr token_id byte_token(unsigned char byte) { return static_cast<token_id>(byte) + 3; }

void write_tokenizer_file(const std::filesystem::path& path, const vocabulary& tokens) {
  std::ofstream out(path, std::ios::binary);
  std::int32_t max_token_length = 0;
  for (const auto& [piece, score] : tokens)
    max_token_length = std::max(max_token_length, static_cast<std::int32_t>(piece.size()));
  out.write(reinterpret_cast<const char*>(&max_token_length), sizeof max_token_length);
  for (const auto& [piece, score] : tokens) {
    const auto length = static_cast<std::int32_t>(piece.size());
    out.write(reinterpret_cast<const char*>(&score), sizeof score);
    out.write(reinterpret_cast<const char*>(&length), sizeof length);
    out.write(piece.data(), static_cast<std::streamsize>(piece.size()));
  }
  REQUIRE(out.good());
}

/// The test vocabulary, written to a tokenizer.bin and loaded back.
const tokenizer& loaded_tokenizer() {
  static const tokenizer loaded = [] {
    temporary_file file("tokenizer");
    write_tokenizer_file(file.path(), with_special_and_byte_pieces(test_pieces));
    return tokenizer::load(file.path(), test_vocab_size);
  }();
  return loaded;
}

using tokens = std::vector<token_id>;

}  // namespace

TEST_CASE("a tokenizer.bin loads back every piece and score in id order", "[llama][tokenizer]") {
  const tokenizer& loaded = loaded_tokenizer();
  const vocabulary expected = with_special_and_byte_pieces(test_pieces);
  REQUIRE(loaded.vocab_size() == expected.size());
  for (std::size_t id = 0; id < expected.size(); ++id) {
    INFO("token " << id);
    CHECK(loaded.piece(static_cast<token_id>(id)) == expected[id].first);
    CHECK(loaded.score(static_cast<token_id>(id)) == expected[id].second);
  }
  CHECK(loaded.piece(e_acute) == "é");
  CHECK(loaded.piece(byte_token(0x41)) == "<0x41>");
}

TEST_CASE("encoding merges the highest-scoring pair first, not the leftmost", "[llama][tokenizer]") {
  const tokenizer& t = loaded_tokenizer();
  // " a b c": "bc" (-1) beats "ab" (-3) and " a" (-5); then "abc" (-2) beats " a" (-5); " abc"
  // is no piece. Merging the leftmost mergeable pair first would give " a", "bc" instead.
  CHECK(t.encode("abc", false, false) == tokens{space, abc});
  CHECK(t.encode("abc", false, false) != tokens{space_a, bc});
  // " a b": "ab" (-3) beats " a" (-5).
  CHECK(t.encode("ab", false, false) == tokens{space, ab});
  // The dummy prefix merges with the first character when the pair is a piece.
  CHECK(t.encode("a", false, false) == tokens{space_a});
  CHECK(t.encode("c", false, false) == tokens{space, c});
  CHECK(t.encode("ba", false, false) == tokens{space, b, a});
}

TEST_CASE("encoding breaks a tie between equal scores in favour of the leftmost pair", "[llama][tokenizer]") {
  const tokenizer t(with_special_and_byte_pieces({{" ", 0.0f}, {"a", 0.0f}, {"b", 0.0f}, {"c", 0.0f}, {"ab", -2.0f},
                                                   {"bc", -2.0f}}));
  CHECK(t.encode("abc", false, false) == tokens{259, 263, 262});  // " ", "ab", "c"
}

TEST_CASE("a character without a piece falls back to one token per UTF-8 byte", "[llama][tokenizer]") {
  const tokenizer& t = loaded_tokenizer();
  // "€" is E2 82 AC and no piece; "é" (C3 A9) is one.
  CHECK(t.encode("€", false, false) == tokens{space, byte_token(0xE2), byte_token(0x82), byte_token(0xAC)});
  CHECK(t.encode("é", false, false) == tokens{space, e_acute});
  CHECK(t.encode("a€é", false, false) ==
        tokens{space_a, byte_token(0xE2), byte_token(0x82), byte_token(0xAC), e_acute});
  // An ASCII character without a piece is a single byte token.
  CHECK(t.encode("x", false, false) == tokens{space, byte_token('x')});
}

TEST_CASE("a vocabulary without byte pieces cannot encode a character it lacks", "[llama][tokenizer]") {
  const tokenizer t({{"<unk>", 0.0f}, {"<s>", 0.0f}, {"</s>", 0.0f}, {" ", 0.0f}});
  REQUIRE_THROWS_AS(t.encode("x", false, false), tokenizer_error);
  REQUIRE_THROWS_WITH(t.encode("x", false, false), Contains("no byte token for 0x78"));
}

TEST_CASE("BOS and EOS surround the text and the empty text gets no dummy prefix", "[llama][tokenizer]") {
  const tokenizer& t = loaded_tokenizer();
  CHECK(t.encode("a", true, true) == tokens{tokenizer::bos_id, space_a, tokenizer::eos_id});
  CHECK(t.encode("a", true, false) == tokens{tokenizer::bos_id, space_a});
  CHECK(t.encode("a", false, true) == tokens{space_a, tokenizer::eos_id});
  CHECK(t.encode("", false, false).empty());
  CHECK(t.encode("", true, true) == tokens{tokenizer::bos_id, tokenizer::eos_id});
  CHECK(t.encode("", true, false) == tokens{tokenizer::bos_id});
}

TEST_CASE("decoding strips the leading space after BOS only and turns byte pieces into bytes", "[llama][tokenizer]") {
  const tokenizer& t = loaded_tokenizer();
  CHECK(t.decode(tokenizer::bos_id, space_a) == "a");
  CHECK(t.decode(a, space_a) == " a");
  CHECK(t.decode(tokenizer::eos_id, space_a) == " a");
  CHECK(t.decode(tokenizer::bos_id, space).empty());
  CHECK(t.decode(c, space) == " ");
  CHECK(t.decode(c, ab) == "ab");
  CHECK(t.decode(a, byte_token(0x41)) == "A");
  CHECK(t.decode(tokenizer::bos_id, byte_token(0x20)) == " ");  // a byte piece has no leading space to strip
  CHECK(t.decode(a, byte_token(0xE2)) == "\xE2");
  CHECK(t.decode(a, byte_token(0x00)) == std::string(1, '\0'));
}

TEST_CASE("decoding what was encoded after BOS gives the text back", "[llama][tokenizer]") {
  const tokenizer& t = loaded_tokenizer();
  const std::string text = "abc ba€é x";
  const tokens encoded = t.encode(text, true, false);
  std::string decoded;
  for (std::size_t i = 1; i < encoded.size(); ++i) decoded += t.decode(encoded[i - 1], encoded[i]);
  CHECK(decoded == text);
}

TEST_CASE("token ids outside the vocabulary are rejected", "[llama][tokenizer]") {
  const tokenizer& t = loaded_tokenizer();
  const auto size = static_cast<token_id>(test_vocab_size);
  CHECK_THROWS_AS(t.decode(tokenizer::bos_id, size), tokenizer_error);
  CHECK_THROWS_AS(t.decode(tokenizer::bos_id, -1), tokenizer_error);
  CHECK_THROWS_AS(t.decode(size, a), tokenizer_error);
  CHECK_THROWS_AS(t.piece(size), tokenizer_error);
  CHECK_THROWS_WITH(t.score(-1), Contains("token id -1 is not in [0, 268)"));
}

TEST_CASE("a vocabulary that cannot work is rejected at construction", "[llama][tokenizer]") {
  CHECK_THROWS_WITH(tokenizer(vocabulary{{"<unk>", 0.0f}, {"<s>", 0.0f}}), Contains("at least 3"));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(tokenizer(with_special_and_byte_pieces({{"a", nan}})), Contains("token 259 has a NaN score"));
}

TEST_CASE("a malformed or mismatched tokenizer.bin is rejected", "[llama][tokenizer]") {
  temporary_file file("tokenizer_malformed");
  write_tokenizer_file(file.path(), with_special_and_byte_pieces(test_pieces));
  const std::uintmax_t size = std::filesystem::file_size(file.path());

  SECTION("the last piece cut short") {
    std::filesystem::resize_file(file.path(), size - 1);
    REQUIRE_THROWS_AS(tokenizer::load(file.path(), test_vocab_size), tokenizer_error);
    REQUIRE_THROWS_WITH(tokenizer::load(file.path(), test_vocab_size), Contains("truncated") && Contains("token 267"));
  }
  SECTION("the header cut short") {
    std::filesystem::resize_file(file.path(), 3);
    REQUIRE_THROWS_WITH(tokenizer::load(file.path(), test_vocab_size), Contains("truncated"));
  }
  SECTION("more tokens asked for than the file holds") {
    REQUIRE_THROWS_WITH(tokenizer::load(file.path(), test_vocab_size + 1), Contains("truncated"));
    REQUIRE_THROWS_WITH(tokenizer::load(file.path(), std::size_t{1} << 40), Contains("truncated"));
  }
  SECTION("fewer tokens asked for than the file holds") {
    REQUIRE_THROWS_WITH(tokenizer::load(file.path(), test_vocab_size - 1), Contains("trailing bytes"));
  }
  SECTION("a negative piece length") {
    std::ofstream out(file.path(), std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(4 + 4);  // the length of token 0, after max_token_length and its score
    const std::int32_t negative = -5;
    out.write(reinterpret_cast<const char*>(&negative), sizeof negative);
    out.close();
    REQUIRE_THROWS_WITH(tokenizer::load(file.path(), test_vocab_size), Contains("token 0 has a negative length"));
  }
  SECTION("no such file") {
    const std::filesystem::path missing = file.path().string() + ".missing";
    REQUIRE_THROWS_WITH(tokenizer::load(missing, test_vocab_size),
                        Contains("cannot open") && Contains(missing.string()));
  }
}

// Every input the fuzzers found a problem with, replayed through the harnesses' own decoding
// (tests/fuzz/verify_case.hpp for fuzz_verify, tests/fuzz/decoder_case.hpp for fuzz_decoder),
// and the fuzzers' seed corpora (tests/fuzz/corpus/), so that the normal test suite runs them on
// every build, sanitizers or not. An input passes if the library either handles it or rejects
// it with a cospec::error; an invariant_violation or any other exception fails the test.
//
// The byte formats of decode_verify_case and decode_decoder_case are frozen: changing one would
// silently turn these inputs into other cases. Each regression also checks that its input still
// decodes to the case that found the bug.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "fuzz/decoder_case.hpp"
#include "fuzz/verify_case.hpp"

namespace {

using cospec::fuzzing::verify_case;

using cospec::fuzzing::decoder_case;

/// The fuzz targets.
enum class target { verify, decoder };

/// Runs one input; returns "" if the library handled or rejected it, else what went wrong.
std::string replay(const std::vector<std::uint8_t>& bytes, target t = target::verify) {
  try {
    if (t == target::verify) cospec::fuzzing::run_verify_case(bytes);
    else cospec::fuzzing::run_decoder_case(bytes);
  } catch (const cospec::error&) {
    // Rejected as documented.
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
  return {};
}

}  // namespace

TEST_CASE("fuzz regression: a processor scaling every weight by the smallest subnormal leaves a distribution",
          "[fuzz][regression]") {
  // Found by fuzz_verify when the processor worked on weights: multiplying every weight by the
  // smallest subnormal left a target summing to ~7e-43, whose inverse overflows float;
  // normalising by it wrote +inf and NaN into the target. Fixed in target_evaluator (an exact
  // 2^64 rescale before normalising). The processor now works on logits, where the same factor
  // is log(denorm_min) ~ -103 added to every token: a shift, which the softmax undoes, so this
  // input no longer reaches the rescale (a logit_bias on every token still does: "a logit bias
  // that pushes every token far below float's range" in test_combiners.cpp). What is still
  // true, and checked: the case decodes as before and its target is a distribution.
  const std::vector<std::uint8_t> input{0x25, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x54, 0x48, 0x89, 0xe5, 0x26,
                                        0x26, 0x26, 0xff, 0xff, 0x00, 0x54, 0x48, 0x89, 0x1b, 0xd9, 0xd9, 0xd2};
  const verify_case c = cospec::fuzzing::decode_verify_case(input);
  REQUIRE(c.processor == cospec::fuzzing::processor_kind::scale_all);
  REQUIRE(c.processor_factor == std::numeric_limits<float>::denorm_min());
  REQUIRE_FALSE(c.settings.greedy());
  CHECK(replay(input).empty());
  CHECK_NOTHROW(cospec::fuzzing::run_verify_case(c));  // handled, not rejected: the shift is harmless
}

TEST_CASE("fuzz regression: the kernels' checks take only the inverse temperatures they are defined for",
          "[fuzz][regression]") {
  // Found by fuzz_verify, a harness bug: at temperature +inf the harness ran the kernels with
  // scale 1 / inf = 0, outside their precondition (scale > 0), and took the result for a
  // library bug. The harness now falls back to scale 1; the library rejects the temperature.
  const std::vector<std::uint8_t> input{0x25, 0x08, 0xff, 0x21, 0x21, 0xff, 0xff, 0x07,
                                        0x48, 0x89, 0xe5, 0xe1, 0x26, 0x26};
  const verify_case c = cospec::fuzzing::decode_verify_case(input);
  REQUIRE(c.settings.temperature == std::numeric_limits<float>::infinity());
  CHECK(replay(input).empty());
  CHECK_THROWS_AS(cospec::fuzzing::run_verify_case(c), cospec::invalid_configuration);
}

TEST_CASE("fuzz regression: a truncate failure while the prompt changes leaves no model believed to hold the new "
          "prompt",
          "[fuzz][regression]") {
  // Found by fuzz_decoder: a first call, then a call with an unrelated prompt during which model
  // 0's truncate keeps failing. decoder::start_text rolled the models back one by one, so when
  // model 0 threw, model 1 was never marked: the decoder believed it held the new prompt while
  // its cache held the old text, and later calls were no longer exact. Fixed in start_text
  // (every model's bookkeeping first, adapters second).
  const std::vector<std::uint8_t> input{0x5f, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00,
                                        0x07, 0x00, 0x00, 0x23, 0x5f, 0x30, 0x0a, 0x73, 0x01, 0x00, 0x00, 0x04,
                                        0xff, 0x78, 0x73, 0x73, 0x53, 0x08, 0x73, 0x5e, 0x0a, 0x5e, 0xf1, 0x87,
                                        0x87, 0x86, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x00,
                                        0x00, 0x15, 0x15, 0xc1, 0x5f, 0x5f, 0x0a, 0x15, 0x15};
  const decoder_case c = cospec::fuzzing::decode_decoder_case(input);
  REQUIRE(c.models == 3);
  REQUIRE(c.turns.size() >= 2);
  REQUIRE(c.turns[1].trouble == cospec::fuzzing::mishap::truncate_keeps_failing);
  REQUIRE(c.turns[1].model == 0);
  CHECK(replay(input, target::decoder).empty());
}

TEST_CASE("fuzz regression: a truncate that fails during the rollback after another failure may leave its model "
          "dirty until the next call",
          "[fuzz][regression]") {
  // Found by fuzz_decoder, a harness bug: invalid logits ended a call, and model 0's truncate
  // failed during the rollback that followed. The decoder then keeps the model marked and
  // truncates it first at the next call, as documented; the harness expected its cache to be
  // clean at once. The harness now allows that for a model whose truncate threw.
  const std::vector<std::uint8_t> input{0xff, 0x01, 0x00, 0xff, 0xc2, 0xff, 0x08, 0x00, 0x80, 0x00, 0x3d, 0x3d,
                                        0x3d, 0xd2, 0xc8, 0xbf, 0x00, 0xa8, 0x77, 0x77, 0x77, 0x77, 0x77, 0x00,
                                        0x00, 0x00, 0xff, 0x41, 0xff, 0xfe, 0xff, 0xfe, 0xc2, 0xc2, 0x00, 0x00,
                                        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe5};
  const decoder_case c = cospec::fuzzing::decode_decoder_case(input);
  REQUIRE(c.turns[0].trouble == cospec::fuzzing::mishap::truncate_throws);
  REQUIRE(c.ban_repeats);
  CHECK(replay(input, target::decoder).empty());
}

TEST_CASE("fuzz regression: a call that reaches a model's context limit is compared with a fresh decoder that has "
          "the same limit",
          "[fuzz][regression]") {
  // Found by fuzz_decoder in CI, a harness bug: one model with a context limit of one token and
  // a one-token prompt. Since the context limit ends a call with finish_reason::context_limit
  // and keeps its tokens (it used to throw), the call succeeded with no new token, and the
  // harness compared it with a fresh decoder that had no limit and generated 16. The fresh
  // decoder now gets the same limit, and the finish reasons are compared too.
  const std::vector<std::uint8_t> input{0xbf, 0xac, 0x3b, 0x00, 0x00, 0xbf, 0x09, 0x09, 0x09, 0x09,
                                        0x09, 0x09, 0x09, 0x09, 0x80, 0x29, 0x00, 0x00, 0xb0, 0x22,
                                        0x00, 0x00, 0xbf, 0x00, 0x50, 0x3b, 0x00, 0x3b};
  const decoder_case c = cospec::fuzzing::decode_decoder_case(input);
  REQUIRE(c.turns.size() == 1);
  REQUIRE(c.turns[0].trouble == cospec::fuzzing::mishap::context_limit);
  REQUIRE(c.turns[0].at == 1);
  REQUIRE(c.turns[0].fresh_tokens.size() == 1);
  CHECK(replay(input, target::decoder).empty());
}

TEST_CASE("fuzz regression: a prompt refused for a model's context limit leaves the models holding the text "
          "before it",
          "[fuzz][regression]") {
  // Found by fuzz_decoder, a harness bug: a two-token prompt for a model whose context limit is
  // one token is refused before any model is touched (the prompt does not fit), so the models
  // keep the previous call's text. The harness wanted every model to hold a prefix of the
  // refused call's text; it now also accepts a prefix of the text committed before the call.
  const std::vector<std::uint8_t> input{0x00, 0xcd, 0xcd, 0x7c, 0x02, 0xfb, 0xbc, 0xbe, 0x0a, 0xfc, 0x5a, 0x01,
                                        0xcd, 0xbc, 0x00, 0x00, 0xf9, 0x00, 0xbc, 0xbe, 0x0a, 0xfc, 0x5a, 0x01,
                                        0xcd, 0xbc, 0x02, 0xfb, 0xbc, 0xbe, 0x0a, 0xfc, 0x5a, 0x01, 0xcd, 0xbc,
                                        0x00, 0x00, 0x00, 0xf9, 0x00, 0x14, 0xfe, 0x7f, 0x00, 0x01, 0x00, 0x00,
                                        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3b};
  const decoder_case c = cospec::fuzzing::decode_decoder_case(input);
  REQUIRE(c.turns.size() >= 2);
  REQUIRE(c.turns[1].trouble == cospec::fuzzing::mishap::context_limit);
  REQUIRE(c.turns[1].at < c.turns[1].fresh_tokens.size());
  CHECK(replay(input, target::decoder).empty());
}

TEST_CASE("every input of the fuzzers' seed corpora is handled or rejected with a cospec::error", "[fuzz]") {
  for (const auto& [directory, fuzz_target] : {std::pair{"verify", target::verify}, std::pair{"decoder", target::decoder}}) {
    std::size_t inputs = 0;
    for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(COSPEC_FUZZ_CORPUS_DIR) / directory)) {
      // libFuzzer seeds from a directory recursively (.ci/run), this replay does not: a
      // subdirectory would hold inputs that only the fuzzer sees.
      REQUIRE(entry.is_regular_file());
      std::ifstream file(entry.path(), std::ios::binary);
      const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
      INFO(directory << "/" << entry.path().filename().string());
      CHECK(replay(bytes, fuzz_target).empty());
      ++inputs;
    }
    INFO(directory);
    CHECK(inputs >= 24);
  }
}

TEST_CASE("the fuzz harness's checks have teeth", "[fuzz]") {
  // A target that is not a distribution, and a token outside the vocabulary, are violations.
  const std::vector<float> not_normalised{0.5f, 0.7f};
  CHECK_THROWS_AS(cospec::fuzzing::detail::check_distribution(not_normalised, "target"),
                  cospec::fuzzing::invariant_violation);
  const std::vector<float> with_nan{0.5f, std::numeric_limits<float>::quiet_NaN()};
  CHECK_THROWS_AS(cospec::fuzzing::detail::check_distribution(with_nan, "target"), cospec::fuzzing::invariant_violation);
  CHECK_THROWS_AS(cospec::fuzzing::detail::check_token(7, 7, "token"), cospec::fuzzing::invariant_violation);
  CHECK_NOTHROW(cospec::fuzzing::detail::check_token(6, 7, "token"));
  // Every byte string is a case, the empty one included.
  CHECK(replay({}).empty());
  const verify_case empty = cospec::fuzzing::decode_verify_case({});
  CHECK(empty.vocabulary >= 1);
  CHECK(empty.logits.size() >= 1);
}

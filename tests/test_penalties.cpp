// The repetition, frequency and presence penalties (docs/combiners.md, "Penalties"). Every
// expected row is worked out by hand in the test, from llama.cpp's rule
//     l' = (l > 0 ? l / repeat : l * repeat) - count * frequency - presence
// for each token in the window, with values chosen so that every step is exact (the cases
// beyond float's range say how they round): rows are compared for equality, not within a
// tolerance.
#include <cmath>    // std::isnan
#include <cstdint>  // std::int64_t
#include <limits>   // std::numeric_limits
#include <vector>   // std::vector

#include <catch2/catch.hpp>

#include <cospec/combine/penalties.hpp>

// Checks both the documented exception type and that the message names the problem.
#define COSPEC_REQUIRE_THROWS_AS_WITH(expression, exception_type, message_matcher) \
  do {                                                                            \
    REQUIRE_THROWS_AS(expression, exception_type);                                \
    REQUIRE_THROWS_WITH(expression, message_matcher);                             \
  } while (false)

namespace {

using Catch::Matchers::Contains;
using cospec::penalty_settings;
using cospec::token_id;
using cospec::token_penalties;

constexpr float infinity = std::numeric_limits<float>::infinity();
constexpr float largest_float = std::numeric_limits<float>::max();

penalty_settings settings_with(float repeat, float frequency, float presence, std::int64_t last_n) {
  penalty_settings settings;
  settings.repeat = repeat;
  settings.frequency = frequency;
  settings.presence = presence;
  settings.last_n = last_n;
  return settings;
}

/// The row after one call with fresh penalties.
std::vector<float> penalised(const penalty_settings& settings, const std::vector<token_id>& text,
                             std::vector<float> logits) {
  token_penalties penalties(settings);
  penalties.apply(text, logits);
  return logits;
}

/// Whether a repetition rule lowers (or keeps) the logit of every repeated token for a
/// penalty > 1 — what a repetition penalty is for — on logits of both signs and zero.
template <typename Rule>
bool lowers_every_repeated_logit(Rule rule) {
  for (const float logit : {-8.0f, -1.5f, -0.25f, 0.0f, 0.25f, 3.0f, 40.0f})
    if (!(rule(logit) <= logit)) return false;
  return true;
}

}  // namespace

TEST_CASE("the repeat penalty divides positive logits and multiplies negative and zero ones", "[penalties]") {
  // Token 0 occurs twice: the repeat penalty applies once per token, whatever the count.
  const std::vector<token_id> text{0, 1, 2, 0, 3};
  const std::vector<float> logits{4.0f, -3.0f, 0.0f, 1.5f, 7.0f, -2.0f};
  // 4 / 2, -3 * 2, 0 * 2, 1.5 / 2; tokens 4 and 5 are not in the text.
  const std::vector<float> expected{2.0f, -6.0f, 0.0f, 0.75f, 7.0f, -2.0f};
  CHECK(penalised(settings_with(2.0f, 0.0f, 0.0f, 64), text, logits) == expected);

  // A penalty below 1 encourages repetition: 4 / 0.5, -3 * 0.5, 1.5 / 0.5.
  const std::vector<float> encouraged{8.0f, -1.5f, 0.0f, 3.0f, 7.0f, -2.0f};
  CHECK(penalised(settings_with(0.5f, 0.0f, 0.0f, 64), text, logits) == encouraged);
}

TEST_CASE("the repeat penalty makes repeated tokens less likely whatever the sign of their logit", "[penalties]") {
  const float repeat = 1.25f;
  auto library = [&](float logit) {
    std::vector<float> row{logit};
    token_penalties penalties(settings_with(repeat, 0.0f, 0.0f, -1));
    penalties.apply(std::vector<token_id>{0}, row);
    return row[0];
  };
  CHECK(lowers_every_repeated_logit(library));
  // The deliberately broken variant, the CTRL paper's rule as written (divide every logit),
  // raises negative logits (-8 / 1.25 = -6.4 > -8): the check above would catch it.
  auto divides_every_logit = [&](float logit) { return logit / repeat; };
  CHECK_FALSE(lowers_every_repeated_logit(divides_every_logit));
  // And so would the exact values: -8 * 1.25 = -10, not -6.4.
  CHECK(library(-8.0f) == -10.0f);
}

TEST_CASE("frequency counts every occurrence in the window and presence counts each token once", "[penalties]") {
  // Counts: token 0 once, token 1 twice, token 3 four times; tokens 2 and 4 absent.
  const std::vector<token_id> text{3, 3, 3, 1, 0, 3, 1};
  const std::vector<float> logits{1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
  // 1 - 1 * 0.5 - 0.25, 1 - 2 * 0.5 - 0.25, 1 - 4 * 0.5 - 0.25.
  const std::vector<float> expected{0.25f, -0.25f, 1.0f, -1.25f, 1.0f};
  CHECK(penalised(settings_with(1.0f, 0.5f, 0.25f, -1), text, logits) == expected);

  SECTION("a negative frequency or presence encourages repetition") {
    // 1 + 1 * 1 + 0.5, 1 + 2 * 1 + 0.5, 1 + 4 * 1 + 0.5.
    const std::vector<float> encouraged{2.5f, 3.5f, 1.0f, 5.5f, 1.0f};
    CHECK(penalised(settings_with(1.0f, -1.0f, -0.5f, -1), text, logits) == encouraged);
  }
}

TEST_CASE("the repeat penalty applies before the frequency and presence penalties are subtracted", "[penalties]") {
  // Token 0 (logit 3) twice, token 1 (logit -1) once; repeat 2, frequency 0.5, presence 0.25.
  const std::vector<token_id> text{0, 1, 0};
  const std::vector<float> logits{3.0f, -1.0f, 5.0f};
  // Token 0: 3 / 2 - 2 * 0.5 - 0.25 = 0.25 (subtracting first would give (3 - 1.25) / 2 = 0.875).
  // Token 1: -1 * 2 - 1 * 0.5 - 0.25 = -2.75.
  const std::vector<float> expected{0.25f, -2.75f, 5.0f};
  CHECK(penalised(settings_with(2.0f, 0.5f, 0.25f, 64), text, logits) == expected);
}

TEST_CASE("only the last last_n tokens of the text are counted", "[penalties]") {
  const std::vector<float> zeros(6, 0.0f);

  SECTION("a token just outside the window is not penalised") {
    // last_n = 3: the window is {1, 2, 3}; token 5 is the fourth token from the end.
    const std::vector<token_id> text{5, 1, 2, 3};
    const std::vector<float> expected{0.0f, -1.0f, -1.0f, -1.0f, 0.0f, 0.0f};
    CHECK(penalised(settings_with(1.0f, 1.0f, 0.0f, 3), text, zeros) == expected);
    // One more token of window and it is: last_n = 4.
    const std::vector<float> whole{0.0f, -1.0f, -1.0f, -1.0f, 0.0f, -1.0f};
    CHECK(penalised(settings_with(1.0f, 1.0f, 0.0f, 4), text, zeros) == whole);
  }
  SECTION("occurrences before the window do not count") {
    // Token 2 occurs four times in the text but once in the window {1, 2, 3}: -1, not -4.
    const std::vector<token_id> text{2, 2, 2, 1, 2, 3};
    const std::vector<float> expected{0.0f, -1.0f, -1.0f, -1.0f, 0.0f, 0.0f};
    CHECK(penalised(settings_with(1.0f, 1.0f, 0.0f, 3), text, zeros) == expected);
  }
  SECTION("a window longer than the text counts the whole text") {
    const std::vector<token_id> text{4, 0, 4};
    const std::vector<float> expected{-1.0f, 0.0f, 0.0f, 0.0f, -2.0f, 0.0f};
    CHECK(penalised(settings_with(1.0f, 1.0f, 0.0f, 1000), text, zeros) == expected);
  }
}

TEST_CASE("last_n = -1 counts the whole text and last_n = 0 disables every penalty", "[penalties]") {
  std::vector<token_id> text(500, 1);
  text.front() = 0;  // the first token of a long text
  const std::vector<float> logits{2.0f, 2.0f, 2.0f};

  // Token 0: 2 / 2 - 1 * 0.5 - 1 = -0.5; token 1: 2 / 2 - 499 * 0.5 - 1 = -249.5.
  const std::vector<float> whole{-0.5f, -249.5f, 2.0f};
  CHECK(penalised(settings_with(2.0f, 0.5f, 1.0f, -1), text, logits) == whole);

  const penalty_settings disabled = settings_with(2.0f, 0.5f, 1.0f, 0);
  CHECK_FALSE(disabled.active());
  CHECK(penalised(disabled, text, logits) == logits);
}

TEST_CASE("penalties are inactive exactly when they cannot change a logit", "[penalties]") {
  CHECK_FALSE(penalty_settings{}.active());  // llama.cpp's defaults
  CHECK_FALSE(settings_with(1.0f, 0.0f, 0.0f, -1).active());
  CHECK_FALSE(settings_with(3.0f, 1.0f, 1.0f, 0).active());
  CHECK(settings_with(1.1f, 0.0f, 0.0f, 64).active());
  CHECK(settings_with(1.0f, -0.5f, 0.0f, 64).active());
  CHECK(settings_with(1.0f, 0.0f, 0.25f, 1).active());

  SECTION("an empty text changes nothing") {
    const std::vector<float> logits{1.0f, -1.0f};
    CHECK(penalised(settings_with(2.0f, 1.0f, 1.0f, -1), {}, logits) == logits);
  }
}

TEST_CASE("repeated calls reuse the workspace and leave no counts behind", "[penalties]") {
  const penalty_settings settings = settings_with(2.0f, 0.5f, 0.25f, 4);
  const std::vector<float> logits{3.0f, -1.0f, 5.0f, 0.5f, 2.0f, 1.0f, -4.0f, 8.0f};
  const std::vector<token_id> text{7, 0, 1, 0, 6};  // window {0, 1, 0, 6}

  // 3 / 2 - 2 * 0.5 - 0.25, -1 * 2 - 0.5 - 0.25, -4 * 2 - 0.5 - 0.25; token 7 is outside.
  const std::vector<float> expected{0.25f, -2.75f, 5.0f, 0.5f, 2.0f, 1.0f, -8.75f, 8.0f};

  SECTION("sized at construction") {
    token_penalties penalties(settings, logits.size());
    REQUIRE(penalties.workspace_size() == logits.size());
    for (int call = 0; call < 5; ++call) {
      std::vector<float> row = logits;
      penalties.apply(text, row);
      CHECK(row == expected);  // a count left behind would double the frequency penalty
      CHECK(penalties.workspace_size() == logits.size());
    }
    // A different text afterwards sees none of the previous counts: window {3, 3, 4, 5}.
    // 0.5 / 2 - 2 * 0.5 - 0.25, 2 / 2 - 0.5 - 0.25, 1 / 2 - 0.5 - 0.25.
    std::vector<float> row = logits;
    penalties.apply(std::vector<token_id>{0, 3, 3, 4, 5}, row);
    const std::vector<float> other{3.0f, -1.0f, 5.0f, -1.0f, 0.25f, -0.25f, -4.0f, 8.0f};
    CHECK(row == other);
  }
  SECTION("sized by the first call") {
    token_penalties penalties(settings);
    CHECK(penalties.workspace_size() == 0);
    std::vector<float> row = logits;
    penalties.apply(text, row);
    CHECK(row == expected);
    CHECK(penalties.workspace_size() == logits.size());
    // A shorter row later neither shrinks nor grows the workspace.
    std::vector<float> short_row{1.0f, 1.0f};
    penalties.apply(std::vector<token_id>{1, 1}, short_row);
    CHECK(short_row == std::vector<float>{1.0f, 1.0f / 2.0f - 2 * 0.5f - 0.25f});
    CHECK(penalties.workspace_size() == logits.size());
  }
  SECTION("new settings keep the workspace") {
    token_penalties penalties(settings, logits.size());
    penalties.set_settings(settings_with(1.0f, 1.0f, 0.0f, -1));
    std::vector<float> row(8, 0.0f);
    penalties.apply(text, row);
    CHECK(row == std::vector<float>{-2.0f, -1.0f, 0.0f, 0.0f, 0.0f, 0.0f, -1.0f, -1.0f});
    CHECK(penalties.workspace_size() == logits.size());
  }
}

TEST_CASE("masked logits stay masked and non-finite ones are left for the caller's checks", "[penalties]") {
  const std::vector<token_id> text{0, 1, 2, 3};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const float frequency : {1.0f, -1.0f}) {  // penalising and encouraging
    std::vector<float> row{-infinity, 2.0f, nan, infinity};
    token_penalties penalties(settings_with(2.0f, frequency, frequency, -1));
    penalties.apply(text, row);
    CHECK(row[0] == -infinity);
    CHECK(row[1] == 2.0f / 2.0f - 2.0f * frequency);
    CHECK(std::isnan(row[2]));
    CHECK(row[3] == infinity);
  }
}

TEST_CASE("a finite logit stays finite however large the penalty", "[penalties]") {
  // The true results below are finite but beyond float's range: they are clamped to it. In
  // float arithmetic they would overflow to -inf (a mask no penalty means to set) or +inf (an
  // invalid logit).
  SECTION("repeat") {
    std::vector<float> row{-3e38f, 3e38f};
    token_penalties penalties(settings_with(2.0f, 0.0f, 0.0f, -1));
    penalties.apply(std::vector<token_id>{0, 1}, row);
    CHECK(row[0] == -largest_float);  // -3e38 * 2
    CHECK(row[1] == 3e38f / 2.0f);    // 1.5e38, in range
  }
  SECTION("frequency") {
    // Token 0 once, token 1 twice.
    const std::vector<token_id> text{0, 1, 1};
    std::vector<float> rewarded{-3e38f, 3e38f};
    token_penalties rewarding(settings_with(1.0f, -3e38f, 0.0f, -1));
    rewarding.apply(text, rewarded);
    CHECK(rewarded[0] == 0.0f);           // -3e38 + 1 * 3e38, exactly
    CHECK(rewarded[1] == largest_float);  // 3e38 + 2 * 3e38 (float: 2 * 3e38 is inf already)

    std::vector<float> penalised_row{1.0f, 1.0f};
    token_penalties penalising(settings_with(1.0f, 3e38f, 0.0f, -1));
    penalising.apply(text, penalised_row);
    CHECK(penalised_row[0] == 1.0f - 3e38f);     // in range: 1 is lost in the rounding
    CHECK(penalised_row[1] == -largest_float);  // 1 - 2 * 3e38, not a mask
  }
}

TEST_CASE("a token of the window outside the row is a usage error that changes nothing", "[penalties]") {
  const std::vector<float> logits{1.0f, 2.0f, 3.0f};
  token_penalties penalties(settings_with(1.0f, 1.0f, 0.0f, 3), logits.size());

  std::vector<float> row = logits;
  COSPEC_REQUIRE_THROWS_AS_WITH(penalties.apply(std::vector<token_id>{0, 1, 0, 3}, row), cospec::usage_error,
                                Contains("token 3 at index 3 of the text is outside the logit row of 3"));
  COSPEC_REQUIRE_THROWS_AS_WITH(penalties.apply(std::vector<token_id>{2, -1}, row), cospec::usage_error,
                                Contains("token -1 at index 1"));
  CHECK(row == logits);
  // The counts of the tokens seen before the bad one were cleared: the next call is exact.
  penalties.apply(std::vector<token_id>{0, 1, 0}, row);
  CHECK(row == std::vector<float>{-1.0f, 1.0f, 3.0f});

  SECTION("tokens before the window are not read") {
    std::vector<float> other = logits;
    penalties.apply(std::vector<token_id>{99, -5, 2, 2, 2}, other);
    CHECK(other == std::vector<float>{1.0f, 2.0f, 0.0f});
  }
  SECTION("inactive penalties read nothing") {
    token_penalties disabled(settings_with(2.0f, 1.0f, 1.0f, 0));
    std::vector<float> other = logits;
    CHECK_NOTHROW(disabled.apply(std::vector<token_id>{99}, other));
    CHECK(other == logits);
  }
}

TEST_CASE("settings that can never work are rejected with a message naming them", "[penalties]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  using cospec::invalid_configuration;
  for (const float repeat : {0.0f, -1.0f, nan, infinity})
    COSPEC_REQUIRE_THROWS_AS_WITH(validate(settings_with(repeat, 0.0f, 0.0f, 64)), invalid_configuration,
                                  Contains("penalties: repeat must be finite and > 0"));
  for (const float frequency : {nan, infinity, -infinity})
    COSPEC_REQUIRE_THROWS_AS_WITH(validate(settings_with(1.0f, frequency, 0.0f, 64)), invalid_configuration,
                                  Contains("penalties: frequency must be finite"));
  for (const float presence : {nan, infinity, -infinity})
    COSPEC_REQUIRE_THROWS_AS_WITH(validate(settings_with(1.0f, 0.0f, presence, 64)), invalid_configuration,
                                  Contains("penalties: presence must be finite"));
  COSPEC_REQUIRE_THROWS_AS_WITH(validate(settings_with(1.0f, 0.0f, 0.0f, -2)), invalid_configuration,
                                Contains("penalties: last_n must be >= -1") && Contains("got -2"));

  CHECK_NOTHROW(validate(penalty_settings{}));
  CHECK_NOTHROW(validate(settings_with(0.01f, -100.0f, 100.0f, -1)));

  SECTION("the constructor and set_settings validate too") {
    COSPEC_REQUIRE_THROWS_AS_WITH(token_penalties(settings_with(0.0f, 0.0f, 0.0f, 64)), invalid_configuration,
                                  Contains("got 0.000000"));
    token_penalties penalties(settings_with(2.0f, 0.0f, 0.0f, 8));
    COSPEC_REQUIRE_THROWS_AS_WITH(penalties.set_settings(settings_with(1.0f, 0.0f, 0.0f, -7)), invalid_configuration,
                                  Contains("last_n"));
    CHECK(penalties.settings().repeat == 2.0f);  // unchanged
    CHECK(penalties.settings().last_n == 8);
  }
}

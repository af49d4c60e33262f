// cospec-server's request handling in process (examples/server/api_request.hpp, prepare.hpp):
// the fuzz target's seed corpus replayed through its harness (tests/fuzz/server_request_case.hpp,
// so the normal suite runs every input the fuzzer was seeded with or found), and what
// preparation fills in where a request is silent or names cospec's own fields.
#include <catch2/catch.hpp>

#include <cstddef>     // std::size_t
#include <cstdint>     // std::uint8_t
#include <filesystem>  // std::filesystem
#include <fstream>     // std::ifstream
#include <iterator>    // std::istreambuf_iterator
#include <string>      // std::string
#include <variant>     // std::get, std::get_if
#include <vector>      // std::vector

#include "fuzz/server_request_case.hpp"

namespace {

using namespace cospec::server;

engine_info two_models(std::size_t context) {
  engine_info info;
  info.model_id = "m";
  info.model_names = {"small", "large"};
  info.context = context;
  return info;
}

http_settings with_combination(const std::string& combine) {
  http_settings settings;
  settings.combination = combination_spec::parse(combine, 2);
  return settings;
}

std::variant<prepared_request, api_error> prepared(const std::string& body, bool chat, const std::string& combine = "we",
                                                   std::size_t context = 64) {
  static const codec vocabulary = demo_codec(300);
  const http_settings settings = with_combination(combine);
  auto parsed = parse_request(body, chat, settings.limits);
  if (auto* error = std::get_if<api_error>(&parsed)) return *error;
  return prepare(std::get<completion_request>(parsed), two_models(context), vocabulary, settings);
}

api_error error_of(const std::variant<prepared_request, api_error>& outcome) {
  REQUIRE(std::holds_alternative<api_error>(outcome));
  return std::get<api_error>(outcome);
}

prepared_request request_of(const std::variant<prepared_request, api_error>& outcome) {
  if (const auto* error = std::get_if<api_error>(&outcome)) FAIL(error->message);
  return std::get<prepared_request>(outcome);
}

}  // namespace

TEST_CASE("every input of the server fuzzer's seed corpus is answered, run or refused, as the harness demands",
          "[server][fuzz]") {
  std::size_t inputs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(COSPEC_SERVER_FUZZ_CORPUS_DIR)) {
    REQUIRE(entry.is_regular_file());
    std::ifstream file(entry.path(), std::ios::binary);
    const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    INFO(entry.path().filename().string());
    CHECK_NOTHROW(cospec::fuzzing::run_server_request_case(bytes));
    ++inputs;
  }
  CHECK(inputs >= 19);
}

TEST_CASE("what preparation fills in where a request is silent", "[server]") {
  // Completions default to 16 tokens, chat to what the context leaves; the end token stops and
  // is left out of the text; the prompt starts with <s> (id 1).
  const prepared_request completion = request_of(prepared(R"({"prompt": "abc"})", false));
  CHECK(completion.max_tokens == 16);
  CHECK(completion.prompt_tokens.at(0) == std::vector<cospec::token_id>{1, 'a' + 3, 'b' + 3, 'c' + 3});
  CHECK(completion.spec.limits.stop_tokens == std::vector<cospec::token_id>{2});
  CHECK_FALSE(completion.spec.limits.include_stop_token);
  CHECK_FALSE(completion.spec.combiner.has_value());  // the server's own combination
  const prepared_request chat = request_of(prepared(R"({"messages": [{"role": "user", "content": "hi"}]})", true));
  CHECK(chat.max_tokens == 64 + 1 - chat.prompt_tokens.at(0).size());
  // Two requests without a seed get different seeds; a given seed is kept.
  CHECK(request_of(prepared(R"({"prompt": "a"})", false)).spec.settings.seed !=
        request_of(prepared(R"({"prompt": "a"})", false)).spec.settings.seed);
  CHECK(request_of(prepared(R"({"prompt": "a", "seed": 77})", false)).spec.settings.seed == 77u);
}

TEST_CASE("cospec's own fields: a request's weights, mu and method, checked against the server's recipe", "[server]") {
  const prepared_request weighted = request_of(prepared(R"({"prompt": "a", "weights": [0.2, 0.8]})", false));
  REQUIRE(weighted.spec.combiner.has_value());
  CHECK(weighted.spec.combiner->model_count() == 2);
  CHECK(error_of(prepared(R"({"prompt": "a", "weights": [1, 2, 3]})", false)).param == "weights");
  CHECK(error_of(prepared(R"({"prompt": "a", "mu": 0.5})", false)).param == "mu");
  CHECK(error_of(prepared(R"({"prompt": "a", "weights": [1, 1]})", false, "cd:0.5")).param == "weights");
  const prepared_request contrastive = request_of(prepared(R"({"prompt": "a", "mu": 0.3, "alpha": 0.1})", false, "cd:0.5"));
  CHECK(contrastive.spec.combiner.has_value());
  for (const char* method : {"auto", "standard", "sd", "cos", "adaptive", "mixture", "mixture+spec"}) {
    INFO(method);
    const prepared_request request =
        request_of(prepared(std::string(R"({"prompt": "a", "method": ")") + method + "\"}", false));
    REQUIRE(request.spec.speculator.has_value());
    CHECK_NOTHROW(request.spec.speculator->check(2));
  }
  CHECK(error_of(prepared(R"({"prompt": "a", "method": "fastest"})", false)).code == "unknown_method");
  // A prompt as long as the context fits only with max_tokens 0 (scoring), one longer never.
  std::string ids = "[1";
  for (int i = 1; i < 64; ++i) ids += ",299";
  ids += "]";
  CHECK(error_of(prepared(R"({"prompt": )" + ids + R"(, "max_tokens": 1})", false, "we", 63)).code ==
        "context_length_exceeded");
  CHECK(request_of(prepared(R"({"prompt": )" + ids + R"(, "max_tokens": 0, "echo": true})", false, "we", 64)).max_tokens == 0);
}

TEST_CASE("fuzz regression: a number beyond double's range is invalid JSON (400), not an escaping exception",
          "[server][fuzz][regression]") {
  // Found by fuzz_server_request: nlohmann_json reports 5e+600 with out_of_range, not
  // parse_error, and parse_request caught only the latter; the server answered 500.
  const auto outcome = prepared(R"({"prompt": "a", "ma_oxtkens": 5e+600})", false);
  CHECK(error_of(outcome).status == 400);
  CHECK(error_of(outcome).code == "invalid_json");
  CHECK(error_of(prepared(R"({"prompt": "a", "max_tokens": -5e+600})", true)).code == "invalid_json");
}

// One fuzz case for cospec-server's request handling (docs/server.md; docs/reliability.md,
// "Fuzzing"): the input is an HTTP body, parsed as a completion and as a chat completion
// request (examples/server/api_request.hpp), prepared against a two-model server of the demo's
// byte vocabulary (examples/server/prepare.hpp) under a weighted ensemble and under contrastive
// decoding, and, where accepted, run to its end by the server's scheduler
// (examples/server/engine.hpp) over two synthetic models.
//
// Shared by the libFuzzer target (tests/fuzz/fuzz_server_request.cpp) and the server's tests
// (tests/server/test_server.cpp replays tests/fuzz/corpus/server_request). A finding, thrown
// as server_request_violation or escaping as anything else: an exception out of parsing or
// preparing (bad input must come back as an api_error), an error status outside 400-413, an
// accepted prompt outside the vocabulary or the context, an accepted request that the decoder
// then refuses (what the client did wrong is answered before a job starts), an adapter misused;
// and a crash, a hang or a sanitizer report.
#pragma once

#include <algorithm>  // std::min
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint8_t
#include <memory>     // std::shared_ptr, std::unique_ptr
#include <span>       // std::span
#include <stdexcept>  // std::logic_error
#include <string>     // std::string
#include <variant>    // std::get_if, std::get
#include <vector>     // std::vector

#include <cospec/cospec.hpp>

#include "server/api_request.hpp"
#include "server/codec.hpp"
#include "server/engine.hpp"
#include "server/prepare.hpp"
#include "server/recipe.hpp"
#include "support/checking_batch_adapter.hpp"

namespace cospec::fuzzing {

/// A request went through somewhere it must not: always a bug.
class server_request_violation : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

namespace server_request_detail {

using namespace cospec::server;

constexpr std::size_t vocabulary_size = 300;
constexpr std::size_t context = 48;

inline void require(bool holds, const char* what) {
  if (!holds) throw server_request_violation(what);
}

inline engine_info server_info() {
  engine_info info;
  info.model_id = "fuzz";
  info.model_names = {"small", "large"};
  info.combination = "we";
  info.default_method = "auto";
  info.context = context;
  info.parallel = 2;
  info.max_queue = 8;
  return info;
}

inline http_settings settings_for(const std::string& combine) {
  http_settings settings;
  settings.combination = combination_spec::parse(combine, 2);
  return settings;
}

/// The server under test: its scheduler over two synthetic models, kept across inputs as a
/// server keeps running across requests.
struct fuzzed_server {
  codec vocabulary = demo_codec(vocabulary_size);
  engine_info info = server_info();
  std::vector<cospec::testing::checking_batch_adapter> models;
  std::unique_ptr<batch_engine<cospec::testing::checking_batch_adapter>> engine;

  fuzzed_server() {
    for (std::uint64_t seed : {3, 4})
      models.emplace_back(cospec::examples::synthetic_model_config{.vocabulary_size = vocabulary_size, .window = 2,
                                                                   .shared_seed = 1, .own_seed = seed,
                                                                   .agreement = 0.7, .sharpness = 1.0},
                          2);
    std::vector<cospec::testing::checking_batch_adapter*> pointers{&models[0], &models[1]};
    cospec::batch_options options;
    options.max_waiting = info.max_queue + 16;
    engine = std::make_unique<batch_engine<cospec::testing::checking_batch_adapter>>(
        pointers, settings_for("we").combination.combiner(std::nullopt, std::nullopt, std::nullopt),
        cospec::any_speculator(cospec::automatic(2)), vocabulary, info, options);
  }
};

inline void check_error(const api_error& error) {
  require(error.status >= 400 && error.status <= 413, "an error status outside 400-413");
  require(!error.message.empty(), "an error without a message");
  (void)dump(error.body());
}

inline void run(fuzzed_server& server, const prepared_request& prepared) {
  for (const auto& tokens : prepared.prompt_tokens) {
    require(!tokens.empty() && tokens.size() <= context, "an accepted prompt outside the context");
    for (cospec::token_id t : tokens)
      require(t >= 0 && static_cast<std::size_t>(t) < vocabulary_size, "an accepted prompt token outside the vocabulary");
  }
  job_spec spec = prepared.spec;
  spec.prompt = prepared.prompt_tokens.front();
  spec.limits.max_new_tokens = std::min<std::size_t>(spec.limits.max_new_tokens, 6);  // a few tokens suffice
  spec.stream_events = prepared.request.stream;
  const auto queued = server.engine->submit(std::move(spec));
  require(std::get_if<api_error>(&queued) == nullptr, "a single client found the queue full");
  const std::shared_ptr<job> running = std::get<std::shared_ptr<job>>(queued);
  token_update update;
  while (running->next_update(update)) {
  }
  running->wait();
  require(!running->error(), "the decoder refused a request that prepare() accepted");
  require(running->result().tokens.size() <= 6, "more tokens than asked");
  for (const auto& model : server.models) require(model.violations.empty(), "an adapter was misused");
}

}  // namespace server_request_detail

/// Runs one body through the server's request handling; throws server_request_violation on a
/// finding. The server under test lives as long as the process, as a real one would.
inline void run_server_request_case(std::span<const std::uint8_t> bytes) {
  using namespace server_request_detail;
  static fuzzed_server server;
  static const http_settings ensemble = settings_for("we");
  static const http_settings contrastive = settings_for("cd:0.5,0.1");
  const std::string body(bytes.begin(), bytes.end());
  for (const bool chat : {false, true}) {
    auto parsed = parse_request(body, chat, ensemble.limits);
    if (const auto* error = std::get_if<api_error>(&parsed)) {
      check_error(*error);
      continue;
    }
    const completion_request& request = std::get<completion_request>(parsed);
    auto as_contrastive = prepare(request, server.info, server.vocabulary, contrastive);
    if (const auto* error = std::get_if<api_error>(&as_contrastive)) check_error(*error);
    auto as_ensemble = prepare(request, server.info, server.vocabulary, ensemble);
    if (const auto* error = std::get_if<api_error>(&as_ensemble)) {
      check_error(*error);
      continue;
    }
    run(server, std::get<prepared_request>(as_ensemble));
  }
}

}  // namespace cospec::fuzzing

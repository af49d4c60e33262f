// cospec-server against concurrency, and what it costs over the batch decoder it drives
// (docs/benchmarks.md, "cospec-server"). The demo's models (the seed-built transformer and its
// early-exit draft, 2 of its layers), a 1:1 weighted ensemble sampled at T = 1 with a seed per
// request; C clients (range 0), each sending its requests one after another, streamed, 32 tokens
// from an 8-token prompt; the 200M network, or the 8M one (range 1 = 1) where the server's own
// work weighs most. Each iteration runs, for standard decoding and for `auto`, the same requests
// twice, at the same moment of the machine:
//   http:   through cospec-server's HTTP API on loopback (its http_api and engine, in this
//           process; the clients are httplib clients reading server-sent events);
//   direct: through one batch decoder driven by this thread, C requests in flight, the next
//           one submitted as one ends (what the clients do), token texts on (as the server).
// The pass costs are measured, as cospec-server does without --costs, so the batch's gate
// advises the policies and a schedule may follow timing: both paths decode the same
// distribution, not always the same tokens (the counts come from each run).
//   tps_<path>_<method>:  tokens per second of all requests;
//   http_vs_direct_<method>: http's tokens per second over direct's (1 = no overhead);
//   auto_vs_standard:     auto's over standard's, over HTTP;
//   ttft_ms_<method>, tpot_ms_<method>, tpot_p99_ms_<method>: over HTTP, the median time to
//           the first token, and the median and 99th percentile over requests of the time per
//           output token after the first (vLLM's TTFT and TPOT).
// Run with --benchmark_repetitions=3 --benchmark_report_aggregates_only=true; read medians.
#include <benchmark/benchmark.h>

#include <algorithm>  // std::sort, std::min
#include <chrono>     // std::chrono
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <map>        // std::map
#include <memory>     // std::make_shared, std::make_unique, std::unique_ptr
#include <mutex>      // std::mutex, std::lock_guard
#include <stdexcept>  // std::runtime_error
#include <string>     // std::string
#include <thread>     // std::thread
#include <vector>     // std::vector

#include <cospec/cospec.hpp>

// Eigen (the transformer's) before httplib.h: that pulls in <resolv.h>, whose `_res` breaks it.
#include "server/codec.hpp"
#include "server/engine.hpp"
#include "server/recipe.hpp"
#include "transformer/batched_transformer.hpp"
#include "transformer/demo_models.hpp"
#include "transformer/thread_team.hpp"

#include <httplib.h>

#include "server/http_api.hpp"

namespace {

using namespace cospec::server;
using namespace cospec::examples::llama;
using seconds = std::chrono::duration<double>;
using steady = std::chrono::steady_clock;

constexpr std::size_t tokens_per_request = 32;
constexpr std::size_t parallel = 16;
const std::vector<double> measured_costs{};  // as cospec-server runs without --costs

/// When one request's tokens came.
struct request_timing {
  double ttft = 0.0;   // seconds from sending to the first token
  double tpot = 0.0;   // seconds per token after the first
  std::size_t tokens = 0;
};

struct run_result {
  double seconds = 0.0;
  std::size_t tokens = 0;
  std::vector<request_timing> requests;
  [[nodiscard]] double tokens_per_second() const { return static_cast<double>(tokens) / seconds; }
  [[nodiscard]] double percentile(double request_timing::*field, double q) const {
    std::vector<double> values;
    for (const auto& r : requests) values.push_back(r.*field);
    std::sort(values.begin(), values.end());
    return values.empty() ? 0.0 : values[std::min(values.size() - 1, static_cast<std::size_t>(q * static_cast<double>(values.size())))];
  }
};

/// TTFT and TPOT from when the client saw text arrive; `tokens` counts the arrivals (the caller
/// sets the true count where it differs).
request_timing timing_of(steady::time_point sent, const std::vector<steady::time_point>& arrivals) {
  request_timing t;
  t.tokens = arrivals.size();
  if (arrivals.empty()) return t;
  t.ttft = seconds(arrivals.front() - sent).count();
  if (arrivals.size() > 1)
    t.tpot = seconds(arrivals.back() - arrivals.front()).count() / static_cast<double>(arrivals.size() - 1);
  return t;
}

/// The models, a server over them (its engine and HTTP API on a loopback port), and the pieces
/// a batch decoder driven directly needs: one per model size, built once.
class bench_setup {
 public:
  explicit bench_setup(bool quick) : team_(std::make_shared<thread_team>(2)) {
    model_source source;
    source.quick = quick;
    pair_ = load_models(source);
    const std::size_t context = 8 + tokens_per_request + 16;
    small_ = std::make_unique<batched_transformer>(
        pair_.small, team_, batched_transformer_options{.layers = pair_.small_layers, .context_limit = context, .max_sequences = parallel});
    large_ = std::make_unique<batched_transformer>(
        pair_.large, team_, batched_transformer_options{.layers = 0, .context_limit = context, .max_sequences = parallel});
    vocabulary_ = std::make_unique<codec>(demo_codec(pair_.large->config.vocab_size));
    engine_info info;
    info.model_id = "bench";
    info.model_names = {"draft", "large"};
    info.default_method = "auto";
    info.context = context;
    info.parallel = parallel;
    info.max_queue = 256;
    cospec::batch_options options;
    options.max_waiting = info.max_queue + 16;
    engine_ = std::make_unique<batch_engine<batched_transformer>>(
        models(), cospec::weighted_ensemble({1.0f, 1.0f}), policy("auto"), *vocabulary_, info, options);
    settings_.combination = combination_spec::parse("we", 2);
    settings_.costs = measured_costs;
    api_ = std::make_unique<http_api>(*engine_, settings_);
    server_.new_task_queue = [] { return new httplib::ThreadPool(24); };
    api_->install(server_);
    port_ = server_.bind_to_any_port("127.0.0.1");
    listener_ = std::thread([this] { server_.listen_after_bind(); });
    // Every sequence of the pool once (their KV caches are allocated on first use and kept),
    // and the HTTP threads and connections once, before anything is measured.
    const auto warm = random_prompts(parallel, vocabulary_size(), 5);
    direct(warm, parallel, "standard");
    over_http(warm, parallel, "standard");
  }

  ~bench_setup() {
    server_.stop();
    listener_.join();
    engine_->drain(std::chrono::milliseconds(0));
  }

  bench_setup(const bench_setup&) = delete;
  bench_setup& operator=(const bench_setup&) = delete;

  [[nodiscard]] std::size_t vocabulary_size() const { return pair_.large->config.vocab_size; }

  /// C clients over HTTP, `per_client` streamed requests each.
  run_result over_http(const std::vector<std::vector<cospec::token_id>>& prompts, std::size_t clients,
                       const std::string& method) {
    run_result result;
    std::mutex mutex;
    const std::size_t per_client = prompts.size() / clients;
    const auto started = steady::now();
    std::vector<std::thread> threads;
    for (std::size_t c = 0; c < clients; ++c)
      threads.emplace_back([&, c] {
        httplib::Client client("127.0.0.1", port_);
        client.set_read_timeout(600, 0);
        for (std::size_t r = 0; r < per_client; ++r) {
          const std::size_t index = c * per_client + r;
          const nlohmann::json body{{"prompt", prompts[index]}, {"max_tokens", tokens_per_request},
                                    {"temperature", 1.0},       {"seed", index},
                                    {"method", method},          {"stream", true},
                                    {"stream_options", {{"include_usage", true}}}};
          std::vector<steady::time_point> arrivals;
          std::size_t generated = 0;
          std::string pending;
          httplib::Request request;
          request.method = "POST";
          request.path = "/v1/completions";
          request.body = body.dump();
          request.set_header("Content-Type", "application/json");
          request.content_receiver = [&](const char* data, std::size_t length, std::uint64_t, std::uint64_t) {
            pending.append(data, length);
            std::size_t end;
            while ((end = pending.find("\n\n")) != std::string::npos) {
              // A chunk with text is when the client sees tokens (a token that ends inside a
              // character comes with the next one); the usage chunk says how many there were.
              const std::string event = pending.substr(0, end);
              pending.erase(0, end + 2);
              if (event.find("\"usage\"") != std::string::npos) {
                generated = nlohmann::json::parse(event.substr(6))["usage"]["completion_tokens"].get<std::size_t>();
              } else if (event.find("\"text\":\"") != std::string::npos && event.find("\"text\":\"\"") == std::string::npos) {
                arrivals.push_back(steady::now());
              }
            }
            return true;
          };
          httplib::Response response;
          httplib::Error error = httplib::Error::Success;
          const auto sent = steady::now();
          if (!client.send(request, response, error) || response.status != 200)
            throw std::runtime_error("bench_server: a request failed");
          request_timing timing = timing_of(sent, arrivals);
          timing.tokens = generated;
          std::lock_guard lock(mutex);
          result.requests.push_back(timing);
        }
      });
    for (auto& t : threads) t.join();
    result.seconds = seconds(steady::now() - started).count();
    for (const auto& r : result.requests) result.tokens += r.tokens;
    return result;
  }

  /// The same requests through one batch decoder driven here, C in flight.
  run_result direct(const std::vector<std::vector<cospec::token_id>>& prompts, std::size_t clients,
                    const std::string& method) {
    cospec::batch_options options;
    options.token_text = [this](cospec::token_id t) { return vocabulary_->piece(t); };
    cospec::batch_decoder decoder(models(), cospec::any_combiner(cospec::weighted_ensemble({1.0f, 1.0f})), policy(method),
                                  cospec::sampling_settings{}, options);
    run_result result;
    std::map<cospec::request_id, std::size_t> index_of;
    std::vector<steady::time_point> sent(prompts.size());
    std::vector<std::vector<steady::time_point>> arrivals(prompts.size());
    std::size_t next = 0;
    const auto submit = [&] {
      const std::size_t index = next++;
      cospec::sampling_settings settings;
      settings.temperature = 1.0f;
      settings.seed = index;
      cospec::generation_limits limits;
      limits.max_new_tokens = tokens_per_request;
      limits.stop_tokens = vocabulary_->end_tokens();
      limits.include_stop_token = false;
      limits.on_token = [&arrivals, index](const cospec::token_event&) {
        arrivals[index].push_back(steady::now());
        return true;
      };
      sent[index] = steady::now();
      index_of[decoder.submit(prompts[index], settings, limits)] = index;
    };
    const auto started = steady::now();
    for (std::size_t c = 0; c < clients && next < prompts.size(); ++c) submit();
    const auto collect = [&] {
      for (auto& done : decoder.take_finished()) {
        const std::size_t index = index_of.at(done.id);
        result.requests.push_back(timing_of(sent[index], arrivals[index]));
        if (next < prompts.size()) submit();
      }
    };
    while (decoder.step()) collect();
    collect();
    result.seconds = seconds(steady::now() - started).count();
    for (const auto& r : result.requests) result.tokens += r.tokens;
    return result;
  }

 private:
  std::vector<batched_transformer*> models() { return {small_.get(), large_.get()}; }
  static cospec::any_speculator policy(const std::string& method) {
    return std::get<cospec::any_speculator>(method_policy(method, 2, measured_costs));
  }

  std::shared_ptr<thread_team> team_;
  model_pair pair_;
  std::unique_ptr<batched_transformer> small_, large_;
  std::unique_ptr<codec> vocabulary_;
  std::unique_ptr<batch_engine<batched_transformer>> engine_;
  http_settings settings_;
  std::unique_ptr<http_api> api_;
  httplib::Server server_;
  int port_ = 0;
  std::thread listener_;
};

bench_setup& setup_for(bool quick) {
  static std::map<bool, std::unique_ptr<bench_setup>> setups;
  auto& setup = setups[quick];
  if (!setup) setup = std::make_unique<bench_setup>(quick);
  return *setup;
}

void BM_server(benchmark::State& state) {
  const auto clients = static_cast<std::size_t>(state.range(0));
  const bool quick = state.range(1) == 1;
  bench_setup& setup = setup_for(quick);
  const std::size_t requests = clients * std::max<std::size_t>(2, 16 / clients);
  const auto prompts = random_prompts(requests, setup.vocabulary_size(), 11 + clients);
  for (auto _ : state) {
    std::map<std::string, run_result> http;
    for (const char* method : {"standard", "auto"}) {
      const run_result direct = setup.direct(prompts, clients, method);
      const run_result served = setup.over_http(prompts, clients, method);
      const std::string name = method;
      state.counters["tps_direct_" + name] = direct.tokens_per_second();
      state.counters["tps_http_" + name] = served.tokens_per_second();
      state.counters["http_vs_direct_" + name] = served.tokens_per_second() / direct.tokens_per_second();
      state.counters["ttft_ms_" + name] = 1e3 * served.percentile(&request_timing::ttft, 0.5);
      state.counters["tpot_ms_" + name] = 1e3 * served.percentile(&request_timing::tpot, 0.5);
      state.counters["tpot_p99_ms_" + name] = 1e3 * served.percentile(&request_timing::tpot, 0.99);
      http[name] = served;
    }
    state.counters["auto_vs_standard"] = http["auto"].tokens_per_second() / http["standard"].tokens_per_second();
  }
}

}  // namespace

BENCHMARK(BM_server)
    ->ArgNames({"clients", "quick"})
    ->ArgsProduct({{1, 4, 16}, {0, 1}})
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(1);

BENCHMARK_MAIN();

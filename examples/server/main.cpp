// cospec-server: collaborative decoding of several models behind an OpenAI-compatible HTTP API
// (docs/server.md). The ensemble (models and combination) is set at start; each request may
// bring its own method and combination parameters. Backends: the project's transformer on
// llama2.c checkpoints or the seed-built demo (--demo), and llama.cpp GGUF files where CMake
// found llama.cpp.
#include <pthread.h>     // pthread_sigmask
#include <signal.h>      // sigemptyset, sigaddset, sigwait
#include <sys/socket.h>  // listen, setsockopt, SOMAXCONN

#include <chrono>     // std::chrono
#include <csignal>    // SIGINT, SIGTERM, sigset_t
#include <cstdio>     // std::printf, std::fprintf
#include <cstdlib>    // std::exit
#include <memory>     // std::unique_ptr, std::make_unique, std::shared_ptr
#include <stdexcept>  // std::invalid_argument
#include <string>     // std::string
#include <thread>     // std::thread
#include <utility>    // std::move
#include <vector>     // std::vector

#include <cospec/cospec.hpp>

// The backends include Eigen, which must come before httplib.h: that pulls in glibc's
// <resolv.h>, whose `_res` macro breaks Eigen's own headers.
#include "server/backends.hpp"
#include "server/engine.hpp"
#include "server/http_api.hpp"
#include "server/recipe.hpp"

#include <httplib.h>

namespace {

using namespace cospec::server;

const char* const usage = R"(usage: cospec-server [options]
Models (one backend):
  --demo                 the seed-built 200M transformer and its early-exit draft, no files
  --quick                with --demo: an 8M-parameter network instead (for tests)
  --model FILE           a model, repeated for each one (model 0 is taken as the cheapest):
                         llama2.c checkpoints (.bin) for the project's transformer, or GGUF files
                         (.gguf) where cospec was built with llama.cpp
  --tokenizer FILE       llama2.c tokenizer.bin for .bin models (default: a byte vocabulary)
Recipe:
  --combine SPEC         we:W0,W1,... (weighted ensemble, default equal weights), cd:MU[,ALPHA]
                         (contrastive decoding, model 0 the amateur, model 1 the expert),
                         la:W0,W1,... (logit arithmetic)
  --method M             the default method: auto (default), standard, sd, cos, adaptive,
                         mixture, mixture+spec
  --costs C0,C1,...      relative pass costs of the models (default: measured from the passes)
Serving:
  --ctx-size N           tokens a request's text may hold (default: the models' own, at most 2048)
  --parallel N           requests decoded at once (default 4)
  --max-queue N          requests that may wait beyond those; more get 429 (default 64)
  --timeout S            seconds a request may take, queueing included (default 600)
  --threads N            compute threads (default 2)
  --http-threads N       HTTP worker threads (default 8)
  --max-body BYTES       largest request body (default 1048576)
  --drain S              seconds in-flight requests get to finish on SIGTERM (default 10)
  --host H               bind address (default 127.0.0.1)
  --port P               port (default 8080; 0 picks a free one and prints it)
  --api-key K            require "Authorization: Bearer K" (all but /health)
  --seed S               the demo's weight seed (default 1)
)";

struct options {
  backend_options backend;
  std::string combine;
  std::string method = "auto";
  std::vector<double> costs;
  std::size_t max_queue = 64;
  double timeout = 600.0;
  std::size_t http_threads = 8;
  std::size_t max_body = std::size_t{1} << 20;
  double drain = 10.0;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
};

[[noreturn]] void refuse(const std::string& message) {
  std::fprintf(stderr, "cospec-server: %s\n%s", message.c_str(), usage);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (flag == "--demo") {
      o.backend.demo = true;
      continue;
    }
    if (flag == "--quick") {
      o.backend.quick = true;
      continue;
    }
    if (i + 1 >= argc) refuse(flag + " needs a value");
    const std::string value = argv[++i];
    try {
      if (flag == "--model") o.backend.models.push_back(value);
      else if (flag == "--tokenizer") o.backend.tokenizer = value;
      else if (flag == "--combine") o.combine = value;
      else if (flag == "--method") o.method = value;
      else if (flag == "--costs") {
        std::size_t start = 0;
        while (start <= value.size()) {
          const std::size_t comma = std::min(value.find(',', start), value.size());
          o.costs.push_back(std::stod(value.substr(start, comma - start)));
          start = comma + 1;
        }
      } else if (flag == "--ctx-size") o.backend.context = std::stoul(value);
      else if (flag == "--parallel") o.backend.parallel = std::stoul(value);
      else if (flag == "--max-queue") o.max_queue = std::stoul(value);
      else if (flag == "--timeout") o.timeout = std::stod(value);
      else if (flag == "--threads") o.backend.threads = std::stoul(value);
      else if (flag == "--http-threads") o.http_threads = std::stoul(value);
      else if (flag == "--max-body") o.max_body = std::stoul(value);
      else if (flag == "--drain") o.drain = std::stod(value);
      else if (flag == "--host") o.host = value;
      else if (flag == "--port") o.port = std::stoi(value);
      else if (flag == "--api-key") o.api_key = value;
      else if (flag == "--seed") o.backend.seed = std::stoull(value);
      else refuse("unknown option " + flag);
    } catch (const std::logic_error&) {
      refuse(flag + ": not a valid value: '" + value + "'");
    }
  }
  if (!o.backend.demo && o.backend.models.empty()) refuse("give --demo or at least one --model");
  if (o.backend.demo && !o.backend.models.empty()) refuse("--demo and --model exclude each other");
  if (o.backend.parallel == 0 || o.max_queue == 0 || o.http_threads == 0 || o.backend.threads == 0)
    refuse("--parallel, --max-queue, --http-threads and --threads must be at least 1");
  if (!(o.timeout > 0.0) || !(o.drain >= 0.0)) refuse("--timeout must be > 0 and --drain >= 0");
  bool known = false;
  for (const std::string& name : method_names()) known = known || name == o.method;
  if (!known) refuse("--method: unknown method " + o.method);
  return o;
}

/// SIGINT and SIGTERM are taken by a thread of their own (sigwait), blocked everywhere else.
sigset_t termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse(argc, argv);
  const sigset_t signals = termination_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any thread starts: they inherit it

  std::unique_ptr<loaded_backend> backend = load_backend(o.backend);
  const std::size_t models = backend->model_names().size();
  combination_spec combination =
      combination_spec::parse(o.combine.empty() ? "we" : o.combine, models);
  if (!o.costs.empty() && o.costs.size() != models)
    refuse("--costs: " + std::to_string(o.costs.size()) + " costs for " + std::to_string(models) + " models");
  auto policy = method_policy(o.method, models, o.costs);
  engine_info info;
  info.model_id = backend->id();
  info.model_names = backend->model_names();
  info.combination = combination.describe();
  info.default_method = o.method;
  info.context = backend->context();
  info.parallel = o.backend.parallel;
  info.max_queue = o.max_queue;
  std::unique_ptr<engine> serving =
      backend->make_engine(combination.combiner(std::nullopt, std::nullopt, std::nullopt),
                           std::get<cospec::any_speculator>(std::move(policy)), info);

  http_settings settings;
  settings.api_key = o.api_key;
  settings.max_body = o.max_body;
  settings.timeout = std::chrono::milliseconds(static_cast<long long>(o.timeout * 1000.0));
  settings.default_method = o.method;
  settings.costs = o.costs;
  settings.combination = combination;
  http_api api(*serving, settings);

  httplib::Server server;
  const std::size_t http_threads = o.http_threads;
  server.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  server.set_keep_alive_max_count(100);
  // Debian's httplib 0.11 listens with a backlog of 5, compiled in: more clients connecting at
  // once than that lose their connection. The listening socket is remembered here (this replaces
  // httplib's own socket options, so SO_REUSEADDR is set here too) and listens again, deeper.
  int listening_socket = -1;
  server.set_socket_options([&listening_socket](int socket) {
    int yes = 1;
    setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listening_socket = socket;
  });
  api.install(server);
  const int port = o.port == 0 ? server.bind_to_any_port(o.host) : (server.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0 || listening_socket < 0 || ::listen(listening_socket, SOMAXCONN) != 0) {
    std::fprintf(stderr, "cospec-server: cannot listen on %s:%d\n", o.host.c_str(), o.port);
    return 1;
  }
  std::printf("cospec-server: %s, %s, default method %s, context %zu, %zu requests at once; listening on http://%s:%d\n",
              info.model_id.c_str(), info.combination.c_str(), info.default_method.c_str(), info.context, info.parallel,
              o.host.c_str(), port);
  std::fflush(stdout);

  // On SIGTERM or SIGINT: no new requests (503), the running ones get --drain seconds, then the
  // listener closes and the program exits 0.
  std::thread stopper([&] {
    int received = 0;
    sigwait(&signals, &received);
    std::printf("cospec-server: signal %d, draining\n", received);
    std::fflush(stdout);
    serving->drain(std::chrono::milliseconds(static_cast<long long>(o.drain * 1000.0)));
    server.stop();
  });
  server.listen_after_bind();
  // The listener ended by itself (an error) or through the stopper: wake the stopper if it still
  // waits (it then drains what is left) and let it finish.
  pthread_kill(stopper.native_handle(), SIGTERM);
  stopper.join();
  std::printf("cospec-server: stopped\n");
  return 0;
} catch (const std::exception& error) {
  std::fprintf(stderr, "cospec-server: %s\n", error.what());
  return 1;
}

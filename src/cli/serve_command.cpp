#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include "backend/backend.h"
#include "backend/factory.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "pipeline/pipeline.h"
#include "server/engine.h"
#include "server/http_server.h"

namespace kvp {

namespace {

const std::vector<OptionSpec> kSpecs = {
    {"model", "PATH", "GGUF file or Hugging Face directory (default: the fetched SmolLM2-135M)"},
    {"host", "ADDR", "address to listen on (default 127.0.0.1: this machine only)"},
    {"port", "N", "port to listen on (default 8080; 0 picks a free one)"},
    {"api-key", "KEY",
     "require `Authorization: Bearer KEY` (default: $KVPRESS_API_KEY if set, else none)"},
    {"max-batch", "N", "requests decoding together (default 16)"},
    {"max-queue", "N", "requests waiting to start; more get 503 + Retry-After (default 64)"},
    {"context-budget-mib", "N",
     "bytes the stored contexts may hold; least recently used go first (default 2048)"},
    {"timeout-s", "S", "a request's time limit from arrival to its last token (default 600)"},
    {"read-timeout-s", "S", "a client that sends nothing for S seconds is cut off (default 10)"},
    {"max-body-kib", "N", "largest request body (default 1024)"},
    {"max-tokens-limit", "N", "largest max_tokens a request may ask for (default 1024)"},
    {"budget-rounding", "nearest|kvpress", "how presses round their budgets (default nearest)"},
    {"kv-dtype", "f32|f16|bf16", "how KV caches store rows (default f32)"},
    {"device", "NAME",
     "where the model runs: cpu (default; `kvpress --version` lists this build's)"},
    {"threads", "N", "CPU threads (default: all cores)"},
    {"help", "", "show this help"},
};

const char* kSummary =
    "Serves OpenAI's chat and completions API, with a KV press per request (the \"kv_press\" body\n"
    "field) and compressed contexts stored once for many questions (/v1/contexts). Prints\n"
    "`kvpress serve: listening on http://HOST:PORT` when ready. SIGINT or SIGTERM stops it\n"
    "gracefully: requests in flight finish, new ones get 503. See README.md, section Serving.";

}  // namespace

int cmd_serve(const std::vector<std::string>& argv) {
  const Args args = Args::parse(argv, kSpecs);
  if (args.has("help")) {
    std::cout << format_help("kvpress serve [options]", kSummary, kSpecs);
    return 0;
  }
  server::EngineOptions engine_options;
  engine_options.max_batch = args.get_int("max-batch", 16, 1, 256);
  engine_options.max_queue = static_cast<size_t>(args.get_int("max-queue", 64, 1, 4096));
  engine_options.context_budget_bytes =
      static_cast<size_t>(args.get_int("context-budget-mib", 2048, 1, 1 << 20)) << 20;
  engine_options.timeout_s = args.get_int("timeout-s", 600, 1, 86400);
  engine_options.rounding = parse_budget_rounding(args.get("budget-rounding", "nearest"));
  server::HttpOptions http;
  http.host = args.get("host", "127.0.0.1");
  http.port = args.get_int("port", 8080, 0, 65535);
  const char* env_key = std::getenv("KVPRESS_API_KEY");
  http.api_key = args.has("api-key") ? args.get("api-key") : (env_key ? env_key : "");
  http.read_timeout_s = args.get_int("read-timeout-s", 10, 1, 3600);
  http.limits.max_body_bytes = static_cast<size_t>(args.get_int("max-body-kib", 1024, 1, 1 << 20))
                               << 10;
  http.limits.max_tokens = args.get_int("max-tokens-limit", 1024, 1, 1 << 20);
  http.limits.default_tokens = std::min(http.limits.default_tokens, http.limits.max_tokens);
  const std::string model_path = args.has("model") ? args.get("model") : default_model_path();
  http.model_id = std::filesystem::path(model_path).stem().string();

  // Signals go to one waiting thread, not to whichever thread they interrupt.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that left is a failed write, not the end of the server

  auto backend =
      make_backend(args.get("device", "cpu"), args.get_int("threads", default_threads(), 1, 256));
  LoadedModel loaded = load(model_path, *backend);
  loaded.model->set_kv_dtype(parse_kv_dtype(args.get("kv-dtype", "f32")));
  server::Engine engine(loaded, engine_options);
  server::HttpServer server(engine, http);
  const int port = server.bind();
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::fprintf(stderr, "kvpress serve: signal %d, finishing the requests in flight\n", sig);
    server.shutdown();
  });
  std::printf("kvpress serve: listening on http://%s:%d\n", http.host.c_str(), port);
  std::fflush(stdout);
  server.serve();
  // serve() also returns when listening fails; wake the waiter so that it can be joined.
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  std::fprintf(stderr, "kvpress serve: stopped\n");
  return 0;
}

}  // namespace kvp

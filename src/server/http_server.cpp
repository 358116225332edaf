#include "server/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cctype>
#include <chrono>
#include <optional>
#include <sstream>
#include <string_view>

#include "core/error.h"
#include "server/responses.h"

namespace kvp::server {

namespace {

using std::chrono::milliseconds;

// While a job runs, the connection is probed this often: a write to a client that left
// fails, and the job is cancelled.
constexpr milliseconds kProbe{1000};

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(wire(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.status() == 503 || e.status() == 429) res.set_header("Retry-After", "1");
  send_json(res, e.status(), e.body());
}

bool equal_constant_time(const std::string& a, const std::string& b) {
  // Runs over the longer string whatever the contents, so the time reveals only lengths.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

// The metrics label for a path: known routes only, so that a scan of random paths cannot
// grow the label set.
std::string route_label(const std::string& path) {
  static const char* known[] = {"/health",         "/metrics",
                                "/v1/models",      "/v1/chat/completions",
                                "/v1/completions", "/v1/contexts"};
  for (const char* k : known) {
    if (path == k) return path;
  }
  if (path.rfind("/v1/contexts/", 0) == 0) return "/v1/contexts/{id}";
  return "other";
}

bool known_route(const std::string& path) {
  return route_label(path) != "other";
}

bool is_token(const std::string& name) {
  if (name.empty()) return false;
  for (const char c : name) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) ||
                    std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

// What RFC 9112 makes a 400 but cpp-httplib 0.11 reads leniently (a Content-Length of "+80"
// or "44.0", two differing ones, an unknown transfer coding, no Host): refused here, before
// the request can mean two things to two parsers.
std::optional<ApiError> framing_error(const httplib::Request& req) {
  for (const auto& [name, value] : req.headers) {
    if (!is_token(name)) return ApiError(400, "malformed header name");
  }
  const size_t lengths = req.get_header_value_count("Content-Length");
  if (lengths > 1) return ApiError(400, "more than one Content-Length");
  if (lengths == 1) {
    const std::string v = req.get_header_value("Content-Length");
    if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos)
      return ApiError(400, "malformed Content-Length");
  }
  const size_t codings = req.get_header_value_count("Transfer-Encoding");
  if (codings > 1 || (codings == 1 && req.get_header_value("Transfer-Encoding") != "chunked"))
    return ApiError(501, "only the chunked transfer coding is supported");
  if (codings == 1 && lengths == 1)
    return ApiError(400, "both Content-Length and Transfer-Encoding");
  if (req.version == "HTTP/1.1" && req.get_header_value_count("Host") != 1)
    return ApiError(400, "an HTTP/1.1 request needs exactly one Host header");
  if (req.method == "POST" && lengths == 0 && codings == 0)
    return ApiError(411, "a POST needs a Content-Length (or chunked transfer coding)");
  return std::nullopt;
}

std::string sse(const json& j) {
  return "data: " + wire(j) + "\n\n";
}

}  // namespace

HttpServer::HttpServer(Engine& engine, HttpOptions options)
    : engine_(engine), options_(std::move(options)), http_(std::make_unique<httplib::Server>()) {
  const size_t threads =
      engine_.options().max_queue + static_cast<size_t>(engine_.options().max_batch) + 8;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // The library's own options (address reuse), and a note of the socket for bind().
  http_->set_socket_options([this](int sock) {
    httplib::default_socket_options(sock);
    listen_socket_ = sock;
  });
  http_->set_payload_max_length(options_.limits.max_body_bytes);
  http_->set_read_timeout(options_.read_timeout_s, 0);
  http_->set_write_timeout(options_.read_timeout_s, 0);
  routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  int port = options_.port;
  if (port == 0) {
    port = http_->bind_to_any_port(options_.host);
  } else if (!http_->bind_to_port(options_.host, port)) {
    port = -1;
  }
  check(port > 0, "cannot listen on " + options_.host + ":" + std::to_string(options_.port));
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of clients overflows it and some
  // connections are reset. listen() again on a listening socket only resizes its backlog.
  if (listen_socket_ >= 0) ::listen(listen_socket_, SOMAXCONN);
  return port;
}

void HttpServer::serve() {
  http_->listen_after_bind();
}

void HttpServer::shutdown() {
  if (shutting_down_.exchange(true)) return;
  engine_.drain();
  {
    // Every job is done; their responses need at most a probe interval and a write each.
    std::unique_lock<std::mutex> lock(open_mutex_);
    open_changed_.wait_for(lock, std::chrono::seconds(options_.read_timeout_s + 5),
                           [&] { return open_responses_ == 0; });
  }
  http_->stop();
}

void HttpServer::response_opened() {
  std::lock_guard<std::mutex> lock(open_mutex_);
  ++open_responses_;
}

void HttpServer::response_closed() {
  {
    std::lock_guard<std::mutex> lock(open_mutex_);
    --open_responses_;
  }
  open_changed_.notify_all();
}

bool HttpServer::authorized(const httplib::Request& req) const {
  if (options_.api_key.empty()) return true;
  return equal_constant_time(req.get_header_value("Authorization"), "Bearer " + options_.api_key);
}

void HttpServer::count(const std::string& path, int status) {
  std::lock_guard<std::mutex> lock(count_mutex_);
  ++requests_[{route_label(path), status}];
}

void HttpServer::routes() {
  using httplib::Request;
  using httplib::Response;
  http_->set_pre_routing_handler([this](const Request& req, Response& res) {
    if (const auto error = framing_error(req)) {
      res.set_header("Connection", "close");
      send_error(res, *error);
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.path == "/health" || authorized(req))
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)", "",
                             "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors the library answers itself (no route, oversized body, unreadable request) get
  // OpenAI's error object too.
  http_->set_error_handler([](const Request& req, Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404 && known_route(req.path)) {
      send_error(res, ApiError(405, "method " + req.method + " is not allowed on " + req.path));
    } else if (res.status == 404) {
      send_error(res, ApiError(404, "no such endpoint", "", "unknown_url"));
    } else if (res.status == 413) {
      send_error(res, ApiError(413, "the request body is too large"));
    } else {
      send_error(res, ApiError(res.status, "the request could not be read (HTTP status " +
                                               std::to_string(res.status) + ")"));
    }
  });
  http_->set_exception_handler([](const Request&, Response& res, std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const std::exception& e) {
      send_error(res, ApiError(500, std::string("internal error: ") + e.what()));
    } catch (...) {
      send_error(res, ApiError(500, "internal error"));
    }
  });
  http_->set_logger(
      [this](const Request& req, const Response& res) { count(req.path, res.status); });

  http_->Get("/health", [this](const Request&, Response& res) {
    if (shutting_down_) return send_json(res, 503, {{"status", "draining"}});
    send_json(res, 200, {{"status", "ok"}});
  });
  http_->Get("/metrics", [this](const Request&, Response& res) {
    res.set_content(metrics(), "text/plain; version=0.0.4");
  });
  http_->Get("/v1/models", [this](const Request&, Response& res) {
    send_json(res, 200,
              {{"object", "list"},
               {"data", json::array({{{"id", options_.model_id},
                                      {"object", "model"},
                                      {"created", 0},
                                      {"owned_by", "kvpress"}}})}});
  });
  http_->Post("/v1/chat/completions",
              [this](const Request& req, Response& res) { generation(req, res, Endpoint::Chat); });
  http_->Post("/v1/completions", [this](const Request& req, Response& res) {
    generation(req, res, Endpoint::Completions);
  });
  http_->Post("/v1/contexts",
              [this](const Request& req, Response& res) { create_context(req, res); });
  http_->Get("/v1/contexts", [this](const Request&, Response& res) {
    json data = json::array();
    for (const auto& c : engine_.contexts().list()) data.push_back(context_json(*c));
    const auto t = engine_.contexts().totals();
    send_json(res, 200,
              {{"object", "list"},
               {"data", data},
               {"kv_bytes", t.bytes},
               {"kv_bytes_uncompressed", t.bytes_uncompressed},
               {"budget_bytes", t.budget},
               {"evictions", t.evictions}});
  });
  http_->Get(R"(/v1/contexts/([^/]+))", [this](const Request& req, Response& res) {
    const std::string id = req.matches[1];
    const auto c = valid_context_id(id) ? engine_.contexts().get(id) : nullptr;
    if (!c)
      return send_error(res, ApiError(404, "no context '" + id + "'", "", "context_not_found"));
    send_json(res, 200, context_json(*c));
  });
  http_->Delete(R"(/v1/contexts/([^/]+))", [this](const Request& req, Response& res) {
    const std::string id = req.matches[1];
    if (!valid_context_id(id) || !engine_.contexts().erase(id))
      return send_error(res, ApiError(404, "no context '" + id + "'", "", "context_not_found"));
    send_json(res, 200, {{"id", id}, {"object", "context.deleted"}, {"deleted", true}});
  });
}

void HttpServer::create_context(const httplib::Request& req, httplib::Response& res) {
  const ContextRequest r = parse_context(parse_body(req.body, options_.limits), options_.limits);
  const auto job = engine_.prepare(r);
  engine_.submit(job);
  const Job::State s = job->wait_done();
  if (s.error) throw *s.error;
  send_json(res, 200, context_json(*s.created));
}

void HttpServer::generation(const httplib::Request& req, httplib::Response& res,
                            Endpoint endpoint) {
  const GenerationRequest r =
      parse_generation(parse_body(req.body, options_.limits), endpoint, options_.limits);
  const auto job = engine_.prepare(r);
  // Counted from before the job queues, so that shutdown() cannot stop the server between
  // the job's end and its response; the content provider's releaser closes it from then on.
  response_opened();
  bool handed_over = false;
  struct Close {
    HttpServer* self;
    const bool* handed_over;
    ~Close() {
      if (!*handed_over) self->response_closed();
    }
  } close{this, &handed_over};
  engine_.submit(job);
  // The status line waits for the prefill: a request that fails there still gets its 4xx.
  Job::State s;
  do {
    s = job->wait(false, 0, false, kProbe);
  } while (!s.started && !s.done);
  if (s.error) throw *s.error;
  const ResponseMeta meta = make_meta(endpoint, r.model.empty() ? options_.model_id : r.model,
                                      r.press.has_value() || !r.context_id.empty());
  if (r.stream) {
    stream(res, job, meta, r.include_usage);
  } else {
    respond_when_done(res, job, meta);
  }
  handed_over = true;
}

// The answer as one JSON object, sent once the job is done. Until then the response is open
// (chunked) and gets a space every probe interval: JSON allows leading whitespace, and a
// failed write is how a client that left is noticed.
void HttpServer::respond_when_done(httplib::Response& res, std::shared_ptr<Job> job,
                                   const ResponseMeta& meta) {
  res.set_chunked_content_provider(
      "application/json",
      [job, meta](size_t, httplib::DataSink& sink) {
        const Job::State s = job->wait_done(kProbe);
        if (!s.done) {
          if (!sink.write(" ", 1)) job->cancel();
          return !job->cancelled();
        }
        const std::string body = s.error ? wire(s.error->body()) : wire(completion_json(meta, s));
        if (!sink.write(body.data(), body.size())) return false;
        sink.done();
        return true;
      },
      [this, job](bool) {
        job->cancel();  // a no-op once done; stops the work otherwise
        response_closed();
      });
}

// Server-sent events in OpenAI's chunk format; a comment line probes an idle connection.
void HttpServer::stream(httplib::Response& res, std::shared_ptr<Job> job, const ResponseMeta& meta,
                        bool include_usage) {
  auto sent = std::make_shared<size_t>(0);
  auto first = std::make_shared<bool>(true);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [job, meta, include_usage, sent, first](size_t, httplib::DataSink& sink) {
        const Job::State s = job->wait(true, *sent, false, kProbe);
        std::string out;
        if (s.error) {
          out = sse(s.error->body());
        } else {
          const std::string delta = s.text.size() > *sent ? s.text.substr(*sent) : "";
          if (!delta.empty() || *first || s.done) {
            if (!delta.empty() || *first) out += sse(chunk_json(meta, delta, "", *first));
            *first = false;
            *sent = s.text.size();
          }
          if (s.done) {
            json last = chunk_json(meta, "", s.finish_reason, false);
            if (meta.with_compression) last["kv_press"] = s.compression.to_json();
            out += sse(last);
            if (include_usage) out += sse(usage_chunk_json(meta, s));
          }
        }
        if (s.done) out += "data: [DONE]\n\n";
        if (out.empty()) out = ": keep-alive\n\n";
        if (!sink.write(out.data(), out.size())) {
          job->cancel();
          return false;
        }
        if (s.done) sink.done();
        return true;
      },
      [this, job](bool) {
        job->cancel();
        response_closed();
      });
}

std::string HttpServer::metrics() const {
  std::ostringstream m;
  const auto family = [&](const char* name, const char* type, const char* help) {
    m << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  family("kvpress_requests_total", "counter", "HTTP requests answered, by route and status.");
  {
    std::lock_guard<std::mutex> lock(count_mutex_);
    for (const auto& [key, n] : requests_)
      m << "kvpress_requests_total{route=\"" << key.first << "\",status=\"" << key.second << "\"} "
        << n << "\n";
  }
  const Engine::Counters c = engine_.counters();
  const auto value = [&](const char* name, const char* type, const char* help, auto v) {
    family(name, type, help);
    m << name << " " << v << "\n";
  };
  family("kvpress_jobs_total", "counter", "Generation and context jobs, by outcome.");
  m << "kvpress_jobs_total{outcome=\"done\"} " << c.jobs_done << "\n"
    << "kvpress_jobs_total{outcome=\"failed\"} " << c.jobs_failed << "\n"
    << "kvpress_jobs_total{outcome=\"cancelled\"} " << c.jobs_cancelled << "\n";
  value("kvpress_rejected_busy_total", "counter", "Requests refused with 503: queue full.",
        c.rejected_busy);
  value("kvpress_queue_length", "gauge", "Jobs waiting to start.", c.queued);
  value("kvpress_running_jobs", "gauge", "Jobs prefilling or decoding.", c.running);
  value("kvpress_prompt_tokens_total", "counter", "Prompt tokens of finished jobs.",
        c.prompt_tokens);
  value("kvpress_completion_tokens_total", "counter", "Tokens generated.", c.completion_tokens);
  value("kvpress_decode_steps_total", "counter", "Batched forward steps.", c.steps);
  const auto t = engine_.contexts().totals();
  value("kvpress_contexts_stored", "gauge", "Contexts in the store.", t.count);
  value("kvpress_context_kv_bytes", "gauge", "K and V bytes the stored contexts hold.", t.bytes);
  value("kvpress_context_kv_bytes_uncompressed", "gauge",
        "K and V bytes the stored contexts would hold uncompressed.", t.bytes_uncompressed);
  value("kvpress_context_budget_bytes", "gauge", "The store's budget.", t.budget);
  value("kvpress_context_evictions_total", "counter", "Contexts evicted to stay in budget.",
        t.evictions);
  return m.str();
}

}  // namespace kvp::server

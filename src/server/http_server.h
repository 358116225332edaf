#pragma once
// The HTTP face of the engine (cpp-httplib): OpenAI's routes, the contexts resource, health
// and Prometheus metrics, an optional bearer key, and OpenAI-style error objects for every
// failure, including the ones the HTTP library itself answers (oversized body, bad request).
#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "server/api.h"
#include "server/engine.h"
#include "server/responses.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace kvp::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;      // 0: any free port
  std::string api_key;  // "" : no authentication
  Limits limits;
  int read_timeout_s = 10;  // a client that sends nothing for this long is cut off
  std::string model_id;
};

class HttpServer {
 public:
  HttpServer(Engine& engine, HttpOptions options);
  ~HttpServer();
  // Binds the socket; returns the port (the chosen one for port 0). Throws Error on failure.
  int bind();
  // Serves until shutdown(); returns then.
  void serve();
  // Refuses new work, lets the requests in flight finish, then stops serving. Thread-safe.
  void shutdown();

 private:
  void routes();
  void generation(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  void create_context(const httplib::Request& req, httplib::Response& res);
  void stream(httplib::Response& res, std::shared_ptr<Job> job, const ResponseMeta& meta,
              bool include_usage);
  void respond_when_done(httplib::Response& res, std::shared_ptr<Job> job,
                         const ResponseMeta& meta);
  std::string metrics() const;
  bool authorized(const httplib::Request& req) const;
  void count(const std::string& path, int status);

  Engine& engine_;
  HttpOptions options_;
  std::unique_ptr<httplib::Server> http_;
  mutable std::mutex count_mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (route, status) -> count
  std::atomic<bool> shutting_down_{false};
  // Responses whose last byte is not written yet: shutdown() waits for them before stopping
  // the HTTP server, which would otherwise cut a stream short of its [DONE].
  std::mutex open_mutex_;
  std::condition_variable open_changed_;
  int open_responses_ = 0;
  void response_opened();
  void response_closed();
  int listen_socket_ = -1;  // the listening socket, seen through the socket-options hook
};

}  // namespace kvp::server

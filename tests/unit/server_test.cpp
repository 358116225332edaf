// The server's engine and HTTP routes on the default model: answers equal the pipeline's
// (kvpress generate's) for the same press and prompt, whether the context is stored once or
// sent with the request; stop strings, cancellation, the bounded queue and draining; and the
// routes' answers, errors and metrics over a real loopback socket.
#include <gtest/gtest.h>
#include <httplib.h>

#include <thread>

#include "backend/backend.h"
#include "backend/factory.h"
#include "pipeline/pipeline.h"
#include "presses/registry.h"
#include "server/engine.h"
#include "server/http_server.h"
#include "support/test_paths.h"

namespace kvp::server {

namespace {

const char* kContext =
    "The lighthouse keeper wrote in his notebook every evening. On Monday a fishing boat named "
    "Aurora sheltered in the bay. The secret code of the lighthouse is 4719. Remember the code.";
const char* kQuestion = "What is the secret code of the lighthouse?";

struct Fixture {
  std::unique_ptr<Backend> backend = make_backend("cpu", 2);
  LoadedModel loaded = load(test::default_model_path(), *backend);
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// The pipeline's answer, as `kvpress generate` gives it.
std::string pipeline_answer(const std::string& question, int max_tokens, const std::string& press,
                            double ratio) {
  PipelineOptions options;
  options.max_new_tokens = max_tokens;
  std::unique_ptr<Press> p;
  if (!press.empty()) p = make_press(press, ratio);
  return Pipeline(fixture().loaded).run(kContext, {question}, options, p.get()).answers[0].text;
}

Job::State run(Engine& engine, const GenerationRequest& r) {
  const auto job = engine.prepare(r);
  engine.submit(job);
  return job->wait_done();
}

GenerationRequest chat(const std::string& content, int max_tokens) {
  GenerationRequest r;
  r.messages = {{"user", content}};
  r.max_tokens = max_tokens;
  return r;
}

std::shared_ptr<StoredContext> store(Engine& engine, const std::string& press, double ratio) {
  ContextRequest c;
  c.text = kContext;
  if (!press.empty()) c.press = PressSpec{press, ratio, {}};
  const auto job = engine.prepare(c);
  engine.submit(job);
  const Job::State s = job->wait_done();
  EXPECT_FALSE(s.error.has_value()) << (s.error ? s.error->what() : "");
  return s.created;
}

}  // namespace

TEST(ServerEngine, StoredContextAnswersAsThePipeline) {
  KVP_REQUIRE_DEFAULT_MODEL();
  Engine engine(fixture().loaded, {});
  for (const auto& [press, ratio] : std::vector<std::pair<std::string, double>>{
           {"", 0.0}, {"snapkv", 0.5}, {"knorm", 0.25}, {"ada_snapkv", 0.5}}) {
    const auto ctx = store(engine, press, ratio);
    ASSERT_NE(ctx, nullptr);
    if (!press.empty()) {
      EXPECT_LT(ctx->bytes, ctx->bytes_uncompressed) << press;
    }
    GenerationRequest r = chat(kQuestion, 12);
    r.context_id = ctx->id;
    const Job::State s = run(engine, r);
    ASSERT_FALSE(s.error.has_value()) << s.error->what();
    EXPECT_EQ(s.text, pipeline_answer(kQuestion, 12, press, ratio)) << press;
    EXPECT_EQ(s.compression.context_id, ctx->id);
    EXPECT_GT(s.prompt_tokens, ctx->tokens);
  }
}

TEST(ServerEngine, PressPerRequestAnswersAsThePipeline) {
  KVP_REQUIRE_DEFAULT_MODEL();
  Engine engine(fixture().loaded, {});
  // The conversation up to the user's message is the pressed context; the assistant header
  // is the question: `kvpress generate --context C --question ""`.
  GenerationRequest r = chat(kContext, 10);
  r.press = PressSpec{"snapkv", 0.5, {"window_size=8"}};
  const Job::State s = run(engine, r);
  ASSERT_FALSE(s.error.has_value()) << s.error->what();
  PipelineOptions options;
  options.max_new_tokens = 10;
  auto press = make_press("snapkv", 0.5, {"window_size=8"});
  const PipelineResult p = Pipeline(fixture().loaded).run(kContext, {""}, options, press.get());
  EXPECT_EQ(s.text, p.answers[0].text);
  EXPECT_EQ(s.compression.press, "snapkv");
  EXPECT_NEAR(s.compression.achieved_ratio, p.achieved_ratio, 1e-9);
  EXPECT_EQ(s.compression.bytes_after, p.context_bytes_after);
  EXPECT_EQ(s.completion_tokens, static_cast<int64_t>(p.answers[0].tokens.size()));
}

TEST(ServerEngine, StopStringsEndTheAnswer) {
  KVP_REQUIRE_DEFAULT_MODEL();
  Engine engine(fixture().loaded, {});
  const Job::State full = run(engine, chat("Count from one to ten in words.", 24));
  ASSERT_GT(full.text.size(), 8u);
  const std::string stop = full.text.substr(full.text.size() / 2, 3);
  GenerationRequest r = chat("Count from one to ten in words.", 24);
  r.stop = {stop};
  const Job::State cut = run(engine, r);
  EXPECT_EQ(cut.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_EQ(cut.finish_reason, "stop");
  EXPECT_LT(cut.completion_tokens, full.completion_tokens);
}

TEST(ServerEngine, CancelledJobsStopEarly) {
  KVP_REQUIRE_DEFAULT_MODEL();
  Engine engine(fixture().loaded, {});
  GenerationRequest r = chat("Write a long story about a lighthouse.", 400);
  const auto job = engine.prepare(r);
  engine.submit(job);
  job->wait(false, 0, false, std::chrono::seconds(30));  // started
  job->cancel();
  const Job::State s = job->wait_done();
  EXPECT_EQ(s.finish_reason, "cancelled");
  EXPECT_LT(s.completion_tokens, 400);
  EXPECT_EQ(engine.counters().jobs_cancelled, 1u);
}

TEST(ServerEngine, FullQueueIs503AndDrainFinishesWork) {
  KVP_REQUIRE_DEFAULT_MODEL();
  EngineOptions o;
  o.max_batch = 1;
  o.max_queue = 1;
  Engine engine(fixture().loaded, o);
  std::vector<std::shared_ptr<Job>> accepted;
  int refused = 0;
  for (int i = 0; i < 3; ++i) {
    const auto job = engine.prepare(chat("Tell me about the sea.", 48));
    try {
      engine.submit(job);
      accepted.push_back(job);
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 503);
      ++refused;
    }
  }
  // One decoding and one waiting at most: the third cannot fit.
  EXPECT_GE(refused, 1);
  engine.drain();
  for (const auto& job : accepted) {
    const Job::State s = job->wait_done();
    EXPECT_FALSE(s.error.has_value());
    EXPECT_NE(s.finish_reason, "cancelled");
  }
  EXPECT_THROW(engine.submit(engine.prepare(chat("x", 2))), ApiError);
}

TEST(ServerEngine, BadRequestsFailBeforeQueueing) {
  KVP_REQUIRE_DEFAULT_MODEL();
  Engine engine(fixture().loaded, {});
  GenerationRequest r = chat("hi", 4);
  r.press = PressSpec{"no_such_press", 0.5, {}};
  EXPECT_THROW(engine.prepare(r), ApiError);
  r.press = PressSpec{"snapkv", 0.5, {"no_such_arg=1"}};
  EXPECT_THROW(engine.prepare(r), ApiError);
  r.press.reset();
  r.context_id = "ctx-0123456789abcdef01234567";
  try {
    engine.prepare(r);
    FAIL() << "an unknown context was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 404);
  }
  std::string words;
  for (int i = 0; i < 5000; ++i) words += " red blue";  // 10,000 tokens: past 8,192 positions
  try {
    engine.prepare(chat(words, 4));
    FAIL() << "a prompt longer than the model's positions was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.code(), "context_length_exceeded");
  }
}

namespace {

// A server on a loopback port for the duration of a test.
struct LiveServer {
  Engine engine{fixture().loaded, {}};
  HttpServer http;
  int port = 0;
  std::thread thread;
  explicit LiveServer(HttpOptions o) : http(engine, std::move(o)) {
    port = http.bind();
    thread = std::thread([this] { http.serve(); });
  }
  ~LiveServer() {
    http.shutdown();
    thread.join();
  }
  httplib::Client client(const std::string& key = "") const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    if (!key.empty()) c.set_bearer_token_auth(key);
    return c;
  }
};

HttpOptions options_with_key() {
  HttpOptions o;
  o.port = 0;
  o.api_key = "sesame";
  o.model_id = "smollm2";
  o.limits.max_body_bytes = 4096;
  return o;
}

json error_of(const httplib::Result& res, int status) {
  EXPECT_TRUE(res);
  if (!res) return {};
  EXPECT_EQ(res->status, status) << res->body;
  const json body = json::parse(res->body, nullptr, false);
  EXPECT_TRUE(body.contains("error") && body["error"]["message"].is_string()) << res->body;
  return body;
}

}  // namespace

TEST(ServerHttp, RoutesAnswerAndRefuseAsDocumented) {
  KVP_REQUIRE_DEFAULT_MODEL();
  LiveServer s(options_with_key());
  auto c = s.client("sesame");
  EXPECT_EQ(s.client().Get("/health")->status, 200);  // no key needed
  error_of(s.client().Get("/v1/models"), 401);
  error_of(s.client("wrong").Get("/v1/models"), 401);
  const auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "smollm2");
  error_of(c.Get("/nowhere"), 404);
  error_of(c.Get("/v1/chat/completions"), 405);
  error_of(c.Post("/v1/chat/completions", "{", "application/json"), 400);
  error_of(c.Post("/v1/chat/completions", std::string(5000, ' '), "application/json"), 413);
  error_of(c.Get("/v1/contexts/ctx-0123456789abcdef01234567"), 404);

  const std::string body =
      json{{"messages", {{{"role", "user"}, {"content", kQuestion}}}}, {"max_tokens", 6}}.dump();
  const auto res = c.Post("/v1/chat/completions", body, "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json answer = json::parse(res->body);
  EXPECT_EQ(answer["object"], "chat.completion");
  EXPECT_EQ(answer["choices"][0]["message"]["role"], "assistant");
  EXPECT_LE(answer["usage"]["completion_tokens"].get<int>(), 6);
  EXPECT_FALSE(answer.contains("kv_press"));

  // The same request streamed: the deltas join to the same text, then [DONE].
  json stream_body = json::parse(body);
  stream_body["stream"] = true;
  const auto streamed = c.Post("/v1/chat/completions", stream_body.dump(), "application/json");
  ASSERT_TRUE(streamed);
  ASSERT_EQ(streamed->status, 200);
  std::string joined;
  size_t at = 0;
  bool done = false;
  while ((at = streamed->body.find("data: ", at)) != std::string::npos) {
    const size_t end = streamed->body.find("\n\n", at);
    const std::string data = streamed->body.substr(at + 6, end - at - 6);
    at = end;
    if (data == "[DONE]") {
      done = true;
      break;
    }
    const json chunk = json::parse(data);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    joined += chunk["choices"][0]["delta"].value("content", "");
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(joined, answer["choices"][0]["message"]["content"].get<std::string>());
}

TEST(ServerHttp, ContextsResource) {
  KVP_REQUIRE_DEFAULT_MODEL();
  LiveServer s(options_with_key());
  auto c = s.client("sesame");
  const auto made =
      c.Post("/v1/contexts",
             json{{"text", kContext}, {"kv_press", {{"press", "knorm"}, {"ratio", 0.5}}}}.dump(),
             "application/json");
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 200) << made->body;
  const json ctx = json::parse(made->body);
  const std::string id = ctx["id"];
  EXPECT_LT(ctx["kv_bytes"].get<size_t>(), ctx["kv_bytes_uncompressed"].get<size_t>());
  EXPECT_EQ(json::parse(c.Get("/v1/contexts/" + id)->body)["id"], id);

  const auto asked =
      c.Post("/v1/completions",
             json{{"context_id", id}, {"prompt", " The code is"}, {"max_tokens", 4}}.dump(),
             "application/json");
  ASSERT_TRUE(asked);
  ASSERT_EQ(asked->status, 200) << asked->body;
  const json answer = json::parse(asked->body);
  EXPECT_EQ(answer["object"], "text_completion");
  EXPECT_EQ(answer["kv_press"]["context_id"], id);
  EXPECT_EQ(answer["kv_press"]["press"], "knorm");

  const std::string metrics = c.Get("/metrics")->body;
  EXPECT_NE(metrics.find("kvpress_contexts_stored 1\n"), std::string::npos) << metrics;
  EXPECT_NE(
      metrics.find("kvpress_context_kv_bytes " + std::to_string(ctx["kv_bytes"].get<size_t>())),
      std::string::npos);
  EXPECT_EQ(c.Delete("/v1/contexts/" + id)->status, 200);
  error_of(c.Get("/v1/contexts/" + id), 404);
  error_of(
      c.Post("/v1/chat/completions",
             json{{"context_id", id}, {"messages", {{{"role", "user"}, {"content", "q"}}}}}.dump(),
             "application/json"),
      404);
}

}  // namespace kvp::server

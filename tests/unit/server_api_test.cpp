// The server's request parsing, stop-string streaming and context store, without a model:
// every malformed field is a 4xx ApiError naming it, never a crash or a silent default.
#include <gtest/gtest.h>

#include <string>

#include "server/api.h"
#include "server/context_store.h"
#include "server/text_stream.h"

namespace kvp::server {

namespace {

int status_of(const std::string& body, Endpoint endpoint = Endpoint::Chat) {
  const Limits limits;
  try {
    parse_generation(parse_body(body, limits), endpoint, limits);
  } catch (const ApiError& e) {
    EXPECT_TRUE(e.body()["error"]["message"].is_string());
    return e.status();
  }
  return 200;
}

const char* kChat = R"({"messages":[{"role":"user","content":"hi"}]})";

}  // namespace

TEST(ServerApi, ParsesAChatRequest) {
  const Limits limits;
  const auto r = parse_generation(
      parse_body(R"({"model":"m","messages":[{"role":"system","content":"be brief"},
        {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
        "max_tokens":7,"stop":["x","yz"],"temperature":0.5,"top_p":0.9,"top_k":3,"seed":-4,
        "stream":true,"stream_options":{"include_usage":true},
        "kv_press":{"press":"snapkv","ratio":0.25,"args":{"window_size":8,"flag":true,"s":"v"}}})",
                 limits),
      Endpoint::Chat, limits);
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1].content, "ab");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"x", "yz"}));
  EXPECT_DOUBLE_EQ(r.sampling.temperature, 0.5);
  EXPECT_EQ(r.sampling.top_k, 3);
  EXPECT_EQ(r.sampling.seed, static_cast<uint64_t>(int64_t{-4}));
  EXPECT_TRUE(r.stream && r.include_usage);
  ASSERT_TRUE(r.press.has_value());
  EXPECT_EQ(r.press->name, "snapkv");
  EXPECT_DOUBLE_EQ(r.press->ratio, 0.25);
  EXPECT_EQ(r.press->args, (std::vector<std::string>{"flag=true", "s=v", "window_size=8"}));
}

TEST(ServerApi, DefaultsAreGreedyAndBounded) {
  const Limits limits;
  const auto r = parse_generation(parse_body(kChat, limits), Endpoint::Chat, limits);
  EXPECT_TRUE(r.sampling.greedy());
  EXPECT_EQ(r.max_tokens, limits.default_tokens);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.press.has_value());
}

TEST(ServerApi, MalformedBodiesAre400) {
  EXPECT_EQ(status_of(kChat), 200);
  for (const char* body :
       {"", "{", "[]", "3", "null", R"({"messages":[{"role":"user","content":"hi"}])",
        R"({"messages":"hi"})", R"({"messages":[]})", R"({"messages":[1]})",
        R"({"messages":[{"role":"robot","content":"x"}]})",
        R"({"messages":[{"role":"user","content":5}]})", R"({"messages":[{"role":"user"}]})",
        R"({"messages":[{"role":"assistant","content":"x"}]})",
        R"({"messages":[{"role":"user","content":"x","extra":1}]})"}) {
    EXPECT_EQ(status_of(body), 400) << body;
  }
}

TEST(ServerApi, WrongTypesAndRangesAre400) {
  const std::string head = R"({"messages":[{"role":"user","content":"hi"}],)";
  for (const char* field : {R"("max_tokens":0)",
                            R"("max_tokens":"5")",
                            R"("max_tokens":1e30)",
                            R"("max_tokens":99999999999999999999)",
                            R"("max_tokens":2.5)",
                            R"("temperature":-1)",
                            R"("temperature":1e308)",
                            R"("temperature":"hot")",
                            R"("top_p":2)",
                            R"("top_k":-1)",
                            R"("seed":1.5)",
                            R"("stop":5)",
                            R"("stop":[""])",
                            R"("stop":["a","b","c","d","e"])",
                            R"("stream":"yes")",
                            R"("stream_options":{"x":true})",
                            R"("n":2)",
                            R"("logprobs":true)",
                            R"("presence_penalty":1)",
                            R"("unknown":1)",
                            R"("kv_press":[])",
                            R"("kv_press":{})",
                            R"("kv_press":{"press":"snapkv","ratio":"half"})",
                            R"("kv_press":{"press":"snapkv","ratio":1})",
                            R"("kv_press":{"press":"snapkv","other":1})",
                            R"("kv_press":{"press":"snapkv","args":[1]})",
                            R"("kv_press":{"press":"snapkv","args":{"a=b":1}})",
                            R"("kv_press":{"press":"snapkv","args":{"w":{"x":1}}})",
                            R"("context_id":7)",
                            R"("context_id":"ctx-0","kv_press":{"press":"knorm"})"}) {
    EXPECT_EQ(status_of(head + field + "}"), 400) << field;
  }
  // Huge numbers overflow in the parser itself: still a 400.
  EXPECT_EQ(status_of(head + R"("max_tokens":1e999})"), 400);
}

TEST(ServerApi, DeepNestingIsRefusedBeforeParsing) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(status_of(deep), 400);
  // Brackets inside strings do not count.
  EXPECT_EQ(
      status_of(
          R"({"messages":[{"role":"user","content":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}]})"),
      200);
}

TEST(ServerApi, InvalidUtf8IsRefused) {
  const std::string body = "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}";
  EXPECT_EQ(status_of(body), 400);
}

TEST(ServerApi, NulBytesAreRefused) {
  // nlohmann would stop at the NUL and ignore the rest.
  const std::string body = std::string(kChat) + std::string(1, '\0') + "garbage";
  EXPECT_EQ(status_of(body), 400);
}

TEST(ServerApi, OversizedBodyIs413) {
  Limits limits;
  limits.max_body_bytes = 16;
  try {
    parse_body(kChat, limits);
    FAIL() << "no error";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 413);
  }
}

TEST(ServerApi, CompletionsTakeAPrompt) {
  EXPECT_EQ(status_of(R"({"prompt":"Once upon"})", Endpoint::Completions), 200);
  EXPECT_EQ(status_of(R"({"prompt":["Once upon"]})", Endpoint::Completions), 200);
  EXPECT_EQ(status_of(R"({"prompt":""})", Endpoint::Completions), 400);
  EXPECT_EQ(status_of(R"({"prompt":["a","b"]})", Endpoint::Completions), 400);
  EXPECT_EQ(status_of(R"({"prompt":[1,2]})", Endpoint::Completions), 400);
  EXPECT_EQ(status_of(kChat, Endpoint::Completions), 400);  // messages: unknown here
}

TEST(ServerApi, AQuestionOnAContextIsOneUserMessage) {
  EXPECT_EQ(status_of(R"({"context_id":"ctx-1","messages":[{"role":"user","content":"q"}]})"), 200);
  EXPECT_EQ(status_of(R"({"context_id":"ctx-1","messages":[{"role":"system","content":"s"},
    {"role":"user","content":"q"}]})"),
            400);
}

TEST(ServerApi, ContextRequests) {
  const Limits limits;
  EXPECT_EQ(parse_context(parse_body(R"({"text":"abc"})", limits), limits).text, "abc");
  for (const char* body :
       {R"({})", R"({"text":""})", R"({"text":"a","messages":[]})", R"({"text":1})",
        R"({"text":"a","x":1})", R"({"text":"a","model":true})"}) {
    EXPECT_THROW(parse_context(parse_body(body, limits), limits), ApiError) << body;
  }
}

TEST(ServerApi, ContextIds) {
  EXPECT_TRUE(valid_context_id("ctx-0123456789abcdef01234567"));
  EXPECT_FALSE(valid_context_id("ctx-0123456789abcdef0123456"));
  EXPECT_FALSE(valid_context_id("ctx-0123456789ABCDEF01234567"));
  EXPECT_FALSE(valid_context_id("../etc/passwd"));
}

TEST(ServerApi, ErrorObjectsAreOpenAIs) {
  const json body = ApiError(404, "gone", "context_id", "context_not_found").body();
  EXPECT_EQ(body["error"]["message"], "gone");
  EXPECT_EQ(body["error"]["type"], "not_found_error");
  EXPECT_EQ(body["error"]["param"], "context_id");
  EXPECT_EQ(body["error"]["code"], "context_not_found");
  EXPECT_TRUE(ApiError(400, "x").body()["error"]["param"].is_null());
}

TEST(TextStream, StopStringsCutAndHoldBack) {
  EXPECT_EQ(first_stop("hello world", {"wor", "lo"}), 3u);
  EXPECT_EQ(first_stop("hello", {"x"}), std::string::npos);
  // "wo" could begin "world": held back until the next token decides.
  EXPECT_EQ(safe_prefix("hello wo", {"world"}), 6u);
  EXPECT_EQ(safe_prefix("hello", {"world"}), 5u);
  EXPECT_EQ(safe_prefix("hello", {}), 5u);
}

TEST(TextStream, IncompleteUtf8IsHeldBack) {
  const std::string euro = "\xe2\x82\xac";  // U+20AC in three bytes
  EXPECT_EQ(safe_prefix("a" + euro, {}), 4u);
  EXPECT_EQ(safe_prefix("a" + euro.substr(0, 2), {}), 1u);
  EXPECT_EQ(safe_prefix("a" + euro.substr(0, 1), {}), 1u);
  EXPECT_EQ(safe_prefix("a\xf0\x9f\x98", {}), 1u);  // 3 of an emoji's 4 bytes
}

TEST(ContextStore, EvictsLeastRecentlyUsedWithinBudget) {
  ContextStore store(100);
  const auto make = [](const std::string& id, size_t bytes) {
    auto c = std::make_shared<StoredContext>();
    c->id = id;
    c->bytes = bytes;
    c->bytes_uncompressed = 2 * bytes;
    return c;
  };
  store.put(make("a", 40));
  store.put(make("b", 40));
  ASSERT_NE(store.get("a"), nullptr);  // a is now the most recent: b goes first
  store.put(make("c", 40));
  EXPECT_EQ(store.get("b"), nullptr);
  EXPECT_NE(store.get("a"), nullptr);
  EXPECT_NE(store.get("c"), nullptr);
  const auto t = store.totals();
  EXPECT_EQ(t.count, 2u);
  EXPECT_EQ(t.bytes, 80u);
  EXPECT_EQ(t.bytes_uncompressed, 160u);
  EXPECT_EQ(t.evictions, 1u);
  EXPECT_TRUE(store.erase("a"));
  EXPECT_FALSE(store.erase("a"));
  EXPECT_EQ(store.totals().bytes, 40u);
  try {
    store.put(make("huge", 101));
    FAIL() << "a context over the whole budget was stored";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 413);
  }
  EXPECT_EQ(store.totals().count, 1u);
}

}  // namespace kvp::server

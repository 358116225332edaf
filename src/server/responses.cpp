#include "server/responses.h"

#include <atomic>
#include <chrono>
#include <cstdio>

namespace kvp::server {

ResponseMeta make_meta(Endpoint endpoint, const std::string& model, bool with_compression) {
  static std::atomic<uint64_t> counter{0};
  ResponseMeta m;
  m.endpoint = endpoint;
  m.model = model;
  m.with_compression = with_compression;
  m.created = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s-%lld%06llu", endpoint == Endpoint::Chat ? "chatcmpl" : "cmpl",
                static_cast<long long>(m.created),
                static_cast<unsigned long long>(counter.fetch_add(1) % 1000000));
  m.id = buf;
  return m;
}

json usage_json(const Job::State& s) {
  return {{"prompt_tokens", s.prompt_tokens},
          {"completion_tokens", s.completion_tokens},
          {"total_tokens", s.prompt_tokens + s.completion_tokens}};
}

namespace {

json base(const ResponseMeta& meta, const char* chat_object, const char* text_object) {
  return {{"id", meta.id},
          {"object", meta.endpoint == Endpoint::Chat ? chat_object : text_object},
          {"created", meta.created},
          {"model", meta.model}};
}

}  // namespace

json completion_json(const ResponseMeta& meta, const Job::State& s) {
  json j = base(meta, "chat.completion", "text_completion");
  json choice = {{"index", 0}, {"finish_reason", s.finish_reason}, {"logprobs", nullptr}};
  if (meta.endpoint == Endpoint::Chat) {
    choice["message"] = {{"role", "assistant"}, {"content", s.text}};
  } else {
    choice["text"] = s.text;
  }
  j["choices"] = json::array({choice});
  j["usage"] = usage_json(s);
  if (meta.with_compression) j["kv_press"] = s.compression.to_json();
  return j;
}

json chunk_json(const ResponseMeta& meta, const std::string& text, const std::string& finish_reason,
                bool first) {
  json j = base(meta, "chat.completion.chunk", "text_completion");
  json choice = {{"index", 0},
                 {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)},
                 {"logprobs", nullptr}};
  if (meta.endpoint == Endpoint::Chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({choice});
  return j;
}

json usage_chunk_json(const ResponseMeta& meta, const Job::State& s) {
  json j = base(meta, "chat.completion.chunk", "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage_json(s);
  return j;
}

json context_json(const StoredContext& c) {
  return {{"id", c.id},
          {"object", "context"},
          {"created", c.created},
          {"context_tokens", c.tokens},
          {"kv_bytes", c.bytes},
          {"kv_bytes_uncompressed", c.bytes_uncompressed},
          {"achieved_ratio", c.achieved_ratio},
          {"press", c.press.empty() ? json(nullptr) : json(c.press)},
          {"ratio", c.ratio}};
}

std::string wire(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace kvp::server

#pragma once
// OpenAI's response objects for a finished (or streaming) job: chat.completion,
// text_completion and their stream chunks, with usage and the kv_press extension.
#include <string>

#include "server/api.h"
#include "server/engine.h"

namespace kvp::server {

// What every object of one response shares.
struct ResponseMeta {
  Endpoint endpoint = Endpoint::Chat;
  std::string id;  // chatcmpl-... / cmpl-...
  std::string model;
  int64_t created = 0;
  bool with_compression = false;  // a press or a stored context was used: add "kv_press"
};
ResponseMeta make_meta(Endpoint endpoint, const std::string& model, bool with_compression);

json usage_json(const Job::State& state);
// The whole answer, for a request that does not stream.
json completion_json(const ResponseMeta& meta, const Job::State& state);
// One stream chunk carrying `text`; with finish_reason set it is the last chunk of the choice.
json chunk_json(const ResponseMeta& meta, const std::string& text, const std::string& finish_reason,
                bool first);
// The usage chunk (stream_options.include_usage): no choices.
json usage_chunk_json(const ResponseMeta& meta, const Job::State& state);
json context_json(const StoredContext& context);

// JSON text for the wire: invalid UTF-8 (a token that split a character) becomes U+FFFD.
std::string wire(const json& j);

}  // namespace kvp::server

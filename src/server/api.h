#pragma once
// The server's requests as plain structs, parsed and checked from OpenAI-style JSON bodies,
// and its error objects. Nothing here touches the model: a request that passes these checks
// can still fail later (a prompt too long for the model), but never for its shape.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "pipeline/sampler.h"
#include "tokenizer/chat_template.h"

namespace kvp::server {

using json = nlohmann::json;

// An HTTP error with OpenAI's error object: {"error": {"message", "type", "param", "code"}}.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string code = "");
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  std::string type() const;  // from the status: invalid_request_error, not_found_error, ...
  json body() const;

 private:
  int status_;
  std::string param_, code_;
};

// What a server accepts; requests beyond them get a 4xx naming the limit.
struct Limits {
  size_t max_body_bytes = 1 << 20;
  int max_json_depth = 32;
  int max_tokens = 1024;     // largest max_tokens a request may ask for
  int default_tokens = 128;  // when a request does not say
  size_t max_messages = 256;
  size_t max_stops = 4;
  size_t max_stop_bytes = 256;
  size_t max_press_args = 16;
};

// The documented extension: "kv_press": {"press": NAME, "ratio": R, "args": {KEY: VALUE}}.
struct PressSpec {
  std::string name;
  double ratio = 0.5;
  std::vector<std::string> args;  // "key=value", as the command line passes them
};

enum class Endpoint { Chat, Completions };

struct GenerationRequest {
  Endpoint endpoint = Endpoint::Chat;
  std::string model;                  // echoed back; any value is accepted
  std::vector<ChatMessage> messages;  // chat
  std::string prompt;                 // completions
  int max_tokens = 0;
  std::vector<std::string> stop;
  SamplingParams sampling;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::optional<PressSpec> press;
  std::string context_id;  // "" : none
};

struct ContextRequest {
  std::string text;                   // either text ...
  std::vector<ChatMessage> messages;  // ... or a conversation ending with a user message
  std::optional<PressSpec> press;
};

// Parses a body as JSON, refusing nesting deeper than limits.max_json_depth before it is
// built (a deep body costs no stack) and any top level that is not an object.
json parse_body(const std::string& body, const Limits& limits);
GenerationRequest parse_generation(const json& body, Endpoint endpoint, const Limits& limits);
ContextRequest parse_context(const json& body, const Limits& limits);

// A context id as the server makes them ("ctx-" + 24 hex digits); anything else is a 404
// without a lookup.
bool valid_context_id(const std::string& id);

}  // namespace kvp::server

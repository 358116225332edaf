#include "server/api.h"

#include <cmath>
#include <set>

#include "core/error.h"

namespace kvp::server {

ApiError::ApiError(int status, std::string message, std::string param, std::string code)
    : std::runtime_error(std::move(message)),
      status_(status),
      param_(std::move(param)),
      code_(std::move(code)) {}

std::string ApiError::type() const {
  switch (status_) {
    case 401:
      return "authentication_error";
    case 404:
      return "not_found_error";
    case 429:
    case 503:
      return "server_busy_error";
    default:
      return status_ >= 500 ? "server_error" : "invalid_request_error";
  }
}

json ApiError::body() const {
  json e = {{"message", what()}, {"type", type()}, {"param", nullptr}, {"code", nullptr}};
  if (!param_.empty()) e["param"] = param_;
  if (!code_.empty()) e["code"] = code_;
  return {{"error", e}};
}

namespace {

// The deepest nesting of arrays and objects in a JSON text, counted without parsing (brackets
// inside strings do not count), stopping as soon as it passes `limit`.
int nesting_depth(const std::string& text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param);
}

// The field, or null when it is absent or JSON null (OpenAI's clients send null for "unset").
const json* given(const json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

const json& need(const json& body, const char* key) {
  const json* v = given(body, key);
  if (!v) bad(key, std::string("'") + key + "' is required");
  return *v;
}

std::string get_string(const json& v, const std::string& param) {
  if (!v.is_string()) bad(param, "'" + param + "' must be a string");
  return v.get<std::string>();
}

double get_number(const json& v, const std::string& param, double lo, double hi) {
  if (!v.is_number()) bad(param, "'" + param + "' must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad(param, "'" + param + "' must be in [" + json(lo).dump() + ", " + json(hi).dump() + "]");
  return x;
}

int64_t get_integer(const json& v, const std::string& param, int64_t lo, int64_t hi) {
  if (!v.is_number_integer())  // unsigned counts as integer too
    bad(param, "'" + param + "' must be an integer");
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
    bad(param, "'" + param + "' must be at most " + std::to_string(hi));
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    bad(param,
        "'" + param + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

std::string message_content(const json& content, const std::string& param) {
  if (content.is_string()) return content.get<std::string>();
  // OpenAI's content parts: only text parts are meaningful to a text model.
  if (!content.is_array()) bad(param, "'" + param + "' must be a string or an array of parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text"))
      bad(param, "'" + param + "' parts must be {\"type\": \"text\", \"text\": ...}");
    text += get_string(part["text"], param + ".text");
  }
  return text;
}

std::vector<ChatMessage> parse_messages(const json& v, const Limits& limits) {
  if (!v.is_array() || v.empty()) bad("messages", "'messages' must be a non-empty array");
  if (v.size() > limits.max_messages)
    bad("messages", "at most " + std::to_string(limits.max_messages) + " messages");
  static const std::set<std::string> roles = {"system", "user", "assistant"};
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string p = "messages[" + std::to_string(i) + "]";
    const json& m = v[i];
    if (!m.is_object()) bad(p, "'" + p + "' must be an object");
    for (const auto& [key, value] : m.items()) {
      if (key != "role" && key != "content" && key != "name") bad(p, "unknown field '" + key + "'");
    }
    ChatMessage msg;
    msg.role = get_string(need(m, "role"), p + ".role");
    if (!roles.count(msg.role)) bad(p + ".role", "role must be system, user or assistant");
    msg.content = message_content(need(m, "content"), p + ".content");
    messages.push_back(std::move(msg));
  }
  if (messages.back().role != "user") bad("messages", "the last message must be the user's");
  return messages;
}

// A press argument's JSON value as the command line's text.
std::string arg_text(const json& v, const std::string& param) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return v.dump();
  if (v.is_number_float()) {
    if (!std::isfinite(v.get<double>())) bad(param, "'" + param + "' must be finite");
    return v.dump();
  }
  bad(param, "'" + param + "' must be a string, number or boolean");
}

std::optional<PressSpec> parse_press(const json& body, const Limits& limits) {
  const json* press = given(body, "kv_press");
  if (!press) return std::nullopt;
  const json& v = *press;
  if (!v.is_object())
    bad("kv_press", "'kv_press' must be an object {\"press\", \"ratio\", \"args\"}");
  for (const auto& [key, value] : v.items()) {
    if (key != "press" && key != "ratio" && key != "args")
      bad("kv_press", "unknown field 'kv_press." + key + "'");
  }
  PressSpec spec;
  spec.name = get_string(need(v, "press"), "kv_press.press");
  if (v.contains("ratio")) spec.ratio = get_number(v["ratio"], "kv_press.ratio", 0, 0.999999);
  if (given(v, "args")) {
    const json& args = v["args"];
    if (!args.is_object()) bad("kv_press.args", "'kv_press.args' must be an object");
    if (args.size() > limits.max_press_args)
      bad("kv_press.args", "at most " + std::to_string(limits.max_press_args) + " press arguments");
    for (const auto& [key, value] : args.items()) {
      if (key.empty() || key.find('=') != std::string::npos)
        bad("kv_press.args", "bad press argument name '" + key + "'");
      spec.args.push_back(key + "=" + arg_text(value, "kv_press.args." + key));
    }
  }
  return spec;
}

std::vector<std::string> parse_stop(const json& v, const Limits& limits) {
  std::vector<std::string> stops;
  if (v.is_null()) return stops;
  if (v.is_string()) {
    stops.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    for (const json& s : v) stops.push_back(get_string(s, "stop"));
  } else {
    bad("stop", "'stop' must be a string or an array of strings");
  }
  if (stops.size() > limits.max_stops)
    bad("stop", "at most " + std::to_string(limits.max_stops) + " stop strings");
  for (const std::string& s : stops) {
    if (s.empty() || s.size() > limits.max_stop_bytes)
      bad("stop",
          "stop strings must have 1 to " + std::to_string(limits.max_stop_bytes) + " bytes");
  }
  return stops;
}

void parse_sampling(const json& body, GenerationRequest& r) {
  if (given(body, "temperature"))
    r.sampling.temperature = get_number(body["temperature"], "temperature", 0, 2);
  if (given(body, "top_p")) r.sampling.top_p = get_number(body["top_p"], "top_p", 0, 1);
  if (given(body, "top_k"))
    r.sampling.top_k = static_cast<int>(get_integer(body["top_k"], "top_k", 0, 1 << 30));
  if (given(body, "seed"))
    r.sampling.seed =
        static_cast<uint64_t>(get_integer(body["seed"], "seed", INT64_MIN, INT64_MAX));
  try {
    r.sampling.validate();
  } catch (const Error& e) {
    bad("temperature", e.what());
  }
}

// Fields OpenAI defines that change nothing here at their default values; any other value
// (or any unknown field) is refused rather than silently ignored.
void check_known_fields(const json& body, Endpoint endpoint) {
  static const std::set<std::string> shared = {
      "model",      "max_tokens", "stop",   "temperature",      "top_p",
      "top_k",      "seed",       "stream", "stream_options",   "kv_press",
      "context_id", "user",       "n",      "presence_penalty", "frequency_penalty",
      "logprobs"};
  static const std::set<std::string> chat_only = {"messages", "max_completion_tokens"};
  static const std::set<std::string> completions_only = {"prompt", "echo"};
  const auto& own = endpoint == Endpoint::Chat ? chat_only : completions_only;
  for (const auto& [key, value] : body.items()) {
    if (!shared.count(key) && !own.count(key)) bad(key, "unknown parameter '" + key + "'");
  }
  if (given(body, "user")) get_string(body["user"], "user");
  if (given(body, "n") && get_integer(body["n"], "n", 1, 1) != 1)
    bad("n", "only n = 1 is supported");
  for (const char* key : {"presence_penalty", "frequency_penalty"}) {
    if (given(body, key) && get_number(body[key], key, -2, 2) != 0)
      bad(key, std::string("'") + key + "' is not supported (only 0)");
  }
  for (const char* key : {"logprobs", "echo"}) {
    if (!body.contains(key) || body[key].is_null()) continue;
    if (!body[key].is_boolean() || body[key].get<bool>())
      bad(key, std::string("'") + key + "' is not supported (only false)");
  }
}

}  // namespace

json parse_body(const std::string& body, const Limits& limits) {
  if (body.size() > limits.max_body_bytes)
    throw ApiError(413, "the body exceeds " + std::to_string(limits.max_body_bytes) + " bytes");
  // nlohmann stops at a NUL byte: what follows would be ignored, not refused.
  if (body.find('\0') != std::string::npos) bad("", "the body holds a NUL byte");
  if (nesting_depth(body, limits.max_json_depth) > limits.max_json_depth)
    bad("", "JSON nested deeper than " + std::to_string(limits.max_json_depth) + " levels");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    bad("", std::string("invalid JSON: ") + e.what());
  }
  if (!j.is_object()) bad("", "the body must be a JSON object");
  return j;
}

GenerationRequest parse_generation(const json& body, Endpoint endpoint, const Limits& limits) {
  check_known_fields(body, endpoint);
  GenerationRequest r;
  r.endpoint = endpoint;
  if (given(body, "model")) r.model = get_string(body["model"], "model");
  if (endpoint == Endpoint::Chat) {
    r.messages = parse_messages(need(body, "messages"), limits);
  } else {
    const json& p = need(body, "prompt");
    if (p.is_array() && p.size() == 1) {
      r.prompt = get_string(p[0], "prompt");
    } else {
      r.prompt = get_string(p, "prompt");
    }
    if (r.prompt.empty()) bad("prompt", "'prompt' is empty");
  }
  r.max_tokens = limits.default_tokens;
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (given(body, key))
      r.max_tokens = static_cast<int>(get_integer(body[key], key, 1, limits.max_tokens));
  }
  if (body.contains("stop")) r.stop = parse_stop(body["stop"], limits);
  parse_sampling(body, r);
  if (given(body, "stream")) {
    if (!body["stream"].is_boolean()) bad("stream", "'stream' must be a boolean");
    r.stream = body["stream"].get<bool>();
  }
  if (given(body, "stream_options")) {
    const json& o = body["stream_options"];
    if (!o.is_object()) bad("stream_options", "'stream_options' must be an object");
    for (const auto& [key, value] : o.items()) {
      if (key != "include_usage")
        bad("stream_options", "unknown field 'stream_options." + key + "'");
      if (!value.is_boolean()) bad("stream_options", "'include_usage' must be a boolean");
      r.include_usage = value.get<bool>();
    }
  }
  r.press = parse_press(body, limits);
  if (given(body, "context_id")) {
    r.context_id = get_string(body["context_id"], "context_id");
    if (r.press) bad("kv_press", "a request on a stored context cannot take its own press");
    if (endpoint == Endpoint::Chat && (r.messages.size() != 1 || r.messages[0].role != "user"))
      bad("messages", "with 'context_id', 'messages' holds one user message: the question");
  }
  return r;
}

ContextRequest parse_context(const json& body, const Limits& limits) {
  for (const auto& [key, value] : body.items()) {
    if (key != "text" && key != "messages" && key != "kv_press" && key != "model")
      bad(key, "unknown parameter '" + key + "'");
  }
  ContextRequest r;
  if (given(body, "model")) get_string(body["model"], "model");
  const bool has_text = given(body, "text") != nullptr;
  const bool has_messages = given(body, "messages") != nullptr;
  if (has_text == has_messages) bad("text", "give either 'text' or 'messages'");
  if (has_text) {
    r.text = get_string(body["text"], "text");
    if (r.text.empty()) bad("text", "'text' is empty");
  } else {
    r.messages = parse_messages(body["messages"], limits);
  }
  r.press = parse_press(body, limits);
  return r;
}

bool valid_context_id(const std::string& id) {
  if (id.size() != 28 || id.rfind("ctx-", 0) != 0) return false;
  for (size_t i = 4; i < id.size(); ++i) {
    const char c = id[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace kvp::server

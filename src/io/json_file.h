#pragma once
// Reads a JSON file (config.json, tokenizer.json, goldens) with errors that name the file.
#include <nlohmann/json.hpp>
#include <string>

namespace kvp {

nlohmann::json read_json_file(const std::string& path);

// nlohmann's message for e, fit to quote in a one-line error: its parse errors end with the
// whole token read so far (for an unterminated string, the rest of the file), so that token
// is cut to its last few dozen bytes and escaped.
std::string json_error_message(const nlohmann::json::exception& e);

}  // namespace kvp

#pragma once
// Reads a JSON file (config.json, tokenizer.json, goldens) with errors that name the file.
#include <nlohmann/json.hpp>
#include <string>

namespace kvp {

nlohmann::json read_json_file(const std::string& path);

}  // namespace kvp

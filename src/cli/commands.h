#pragma once
// One function per sub-command; each returns the exit code and throws Error on bad input.
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace kvp {

int cmd_generate(const std::vector<std::string>& args);
int cmd_presses(const std::vector<std::string>& args);
int cmd_eval(const std::vector<std::string>& args);
int cmd_serve(const std::vector<std::string>& args);

// Shared helpers for commands.
std::string default_model_path();
// "@path" reads the file (at most kMaxTextFileBytes); anything else is the text itself.
constexpr uint64_t kMaxTextFileBytes = 16ull << 20;
std::string read_text_argument(const std::string& value, const std::string& what);
int default_threads();
// --kv-dtype: "f32", "f16" or "bf16"; anything else is an Error naming the value.
DType parse_kv_dtype(const std::string& name);
// "f32", "f16", "bf16": what --kv-dtype takes back.
std::string lowercase_dtype(DType dtype);

}  // namespace kvp

#pragma once
// One function per sub-command; each returns the exit code and throws Error on bad input.
#include <string>
#include <vector>

namespace kvp {

int cmd_generate(const std::vector<std::string>& args);
int cmd_presses(const std::vector<std::string>& args);
int cmd_eval(const std::vector<std::string>& args);

// Shared helpers for commands.
std::string default_model_path();
// "@path" reads the file; anything else is the text itself.
std::string read_text_argument(const std::string& value, const std::string& what);
int default_threads();

}  // namespace kvp

#pragma once
// A small command-line parser: --name VALUE, --name=VALUE, repeatable options and flags.
// Unknown options are errors that suggest the closest known name.
#include <map>
#include <string>
#include <vector>

namespace kvp {

struct OptionSpec {
  std::string name;        // without the leading dashes
  std::string value_name;  // empty for a flag
  std::string help;
  bool repeatable = false;
};

class Args {
 public:
  // Throws Error on unknown options, missing values, repeated non-repeatable options, and any
  // positional argument. "-h" means --help where the command has --help.
  static Args parse(const std::vector<std::string>& argv, const std::vector<OptionSpec>& specs);

  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const;
  const std::vector<std::string>& all(const std::string& name) const;
  int get_int(const std::string& name, int fallback, int min, int max) const;
  double get_double(const std::string& name, double fallback) const;

 private:
  std::map<std::string, std::vector<std::string>> values_;
};

std::string format_help(const std::string& usage, const std::string& summary,
                        const std::vector<OptionSpec>& specs);
// The candidate nearest to word by edit distance (core/text.h), or "" when none is near.
std::string closest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace kvp

#include "cli/args.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "core/error.h"
#include "core/text.h"

namespace kvp {

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best_d <= std::max<size_t>(2, word.size() / 2) ? best : "";
}

Args Args::parse(const std::vector<std::string>& argv, const std::vector<OptionSpec>& specs) {
  Args args;
  auto find = [&](const std::string& name) -> const OptionSpec* {
    for (const auto& s : specs) {
      if (s.name == name) return &s;
    }
    return nullptr;
  };
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "-h" && find("help")) {  // the short form every newcomer tries first
      args.values_["help"].push_back("1");
      continue;
    }
    // No command takes positional arguments: a stray word is a mistake (a missing --name, a
    // quoted value split by the shell), not something to ignore.
    check(a.size() >= 2 && a.compare(0, 2, "--") == 0,
          "unexpected argument '" + a + "' (options start with --; see --help)");
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    const OptionSpec* spec = find(name);
    if (!spec) {
      std::vector<std::string> names;
      for (const auto& s : specs) names.push_back(s.name);
      const std::string near = closest(name, names);
      throw Error("unknown option --" + name +
                  (near.empty() ? "" : " (did you mean --" + near + "?)"));
    }
    if (spec->value_name.empty()) {
      check(!inline_value, "option --" + name + " takes no value");
      value = "1";
    } else if (!inline_value) {
      check(i + 1 < argv.size(), "option --" + name + " needs a value (" + spec->value_name + ")");
      value = argv[++i];
    }
    check(spec->repeatable || !args.has(name), "option --" + name + " given more than once");
    args.values_[name].push_back(value);
  }
  return args;
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

const std::vector<std::string>& Args::all(const std::string& name) const {
  static const std::vector<std::string> none;
  auto it = values_.find(name);
  return it == values_.end() ? none : it->second;
}

int Args::get_int(const std::string& name, int fallback, int min, int max) const {
  if (!has(name)) return fallback;
  const std::string v = get(name);
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  check(!v.empty() && end && *end == '\0' && errno == 0,
        "option --" + name + " expects an integer, got '" + v + "'");
  check(x >= min && x <= max, "option --" + name + " must be between " + std::to_string(min) +
                                  " and " + std::to_string(max) + ", got " + v);
  return static_cast<int>(x);
}

double Args::get_double(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  const std::string v = get(name);
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  check(!v.empty() && end && *end == '\0' && errno == 0,
        "option --" + name + " expects a number, got '" + v + "'");
  return x;
}

std::string format_help(const std::string& usage, const std::string& summary,
                        const std::vector<OptionSpec>& specs) {
  std::string out = "usage: " + usage + "\n\n" + summary + "\n\noptions:\n";
  for (const auto& s : specs) {
    std::string left = "  --" + s.name + (s.value_name.empty() ? "" : " " + s.value_name);
    if (left.size() < 30)
      left.resize(30, ' ');
    else
      left += "\n" + std::string(30, ' ');
    out += left + s.help + (s.repeatable ? " (repeatable)" : "") + "\n";
  }
  return out;
}

}  // namespace kvp

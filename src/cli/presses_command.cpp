#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "presses/registry.h"

namespace kvp {

int cmd_presses(const std::vector<std::string>& argv) {
  const std::vector<OptionSpec> specs = {{"json", "", "print a JSON list"},
                                         {"help", "", "show this help"}};
  const Args args = Args::parse(argv, specs);
  if (args.has("help")) {
    std::cout << format_help("kvpress presses [--json]",
                             "Lists every press with its parameters and defaults.", specs);
    return 0;
  }
  if (args.has("json")) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& p : press_catalog()) {
      nlohmann::json params = nlohmann::json::array();
      for (const auto& q : p.params) {
        params.push_back(
            {{"name", q.name}, {"type", q.type}, {"default", q.default_value}, {"help", q.help}});
      }
      j.push_back({{"name", p.name}, {"description", p.description}, {"params", params}});
    }
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  for (const auto& p : press_catalog()) {
    std::printf("%-24s %s\n", p.name.c_str(), p.description.c_str());
    for (const auto& q : p.params) {
      std::printf("    %-20s %-8s default %-10s %s\n", q.name.c_str(), q.type.c_str(),
                  q.default_value.empty() ? "-" : q.default_value.c_str(), q.help.c_str());
    }
  }
  return 0;
}

}  // namespace kvp

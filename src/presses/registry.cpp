#include "presses/registry.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "core/text.h"

namespace kvp {

namespace {

std::vector<PressInfo>& catalog() {
  static std::vector<PressInfo> presses;
  return presses;
}

}  // namespace

PressArgs PressArgs::parse(const std::vector<std::string>& items) {
  std::map<std::string, std::string> values;
  for (const auto& item : items) {
    const size_t eq = item.find('=');
    check(eq != std::string::npos && eq > 0, "press parameter '" + item + "' is not key=value");
    const std::string key = item.substr(0, eq);
    check(values.count(key) == 0, "press parameter '" + key + "' given twice");
    values[key] = item.substr(eq + 1);
  }
  return PressArgs(std::move(values));
}

double PressArgs::get_double(const std::string& key, double fallback) {
  if (!has(key)) return fallback;
  used_.insert(key);
  const std::string& v = values_.at(key);
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(v.c_str(), &end);
  check(!v.empty() && *end == '\0' && errno == 0,
        "press parameter " + key + " expects a number, got '" + v + "'");
  return x;
}

int64_t PressArgs::get_int(const std::string& key, int64_t fallback) {
  if (!has(key)) return fallback;
  used_.insert(key);
  const std::string& v = values_.at(key);
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  check(!v.empty() && *end == '\0' && errno == 0,
        "press parameter " + key + " expects an integer, got '" + v + "'");
  return x;
}

int64_t PressArgs::get_int(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  const int64_t x = get_int(key, fallback);
  check(x >= min && x <= max, "press parameter " + key + " must be between " + std::to_string(min) +
                                  " and " + std::to_string(max) + ", got " + std::to_string(x));
  return x;
}

double PressArgs::get_finite(const std::string& key, double fallback) {
  const double x = get_double(key, fallback);
  check(std::isfinite(x), "press parameter " + key + " must be a finite number, got '" +
                              (has(key) ? values_.at(key) : std::to_string(x)) + "'");
  return x;
}

bool PressArgs::get_bool(const std::string& key, bool fallback) {
  if (!has(key)) return fallback;
  used_.insert(key);
  const std::string& v = values_.at(key);
  if (v == "true" || v == "1") return true;
  if (v == "false" || v == "0") return false;
  throw Error("press parameter " + key + " expects true or false, got '" + v + "'");
}

std::string PressArgs::get_string(const std::string& key, const std::string& fallback) {
  if (!has(key)) return fallback;
  used_.insert(key);
  return values_.at(key);
}

std::vector<double> PressArgs::get_doubles(const std::string& key) {
  std::vector<double> out;
  if (!has(key)) return out;
  const std::string v = get_string(key, "");
  size_t start = 0;
  while (start <= v.size()) {
    const size_t comma = std::min(v.find(',', start), v.size());
    PressArgs one(std::map<std::string, std::string>{{key, v.substr(start, comma - start)}});
    out.push_back(one.get_double(key, 0));
    start = comma + 1;
  }
  return out;
}

std::vector<std::string> PressArgs::unused() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : values_) {
    if (!used_.count(k)) out.push_back(k);
  }
  return out;
}

const std::vector<PressInfo>& press_catalog() {
  return catalog();
}

void register_press(PressInfo info) {
  for (const auto& p : catalog())
    check(p.name != info.name, "press '" + info.name + "' registered twice");
  auto& presses = catalog();
  // Keep the catalog sorted by name: registration order depends on link order.
  auto at = std::lower_bound(presses.begin(), presses.end(), info.name,
                             [](const PressInfo& p, const std::string& n) { return p.name < n; });
  presses.insert(at, std::move(info));
}

namespace {

// Presses build their inner presses through make_press; no chain the catalog allows is deeper
// than a few levels, and this bound turns any future cycle into an error, not a stack overflow.
constexpr int kMaxPressDepth = 4;
thread_local int press_depth = 0;

struct DepthGuard {
  DepthGuard() {
    check(press_depth < kMaxPressDepth, "presses nested more than 4 deep");
    ++press_depth;
  }
  ~DepthGuard() { --press_depth; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;
};

const PressInfo* find_press(const std::string& name) {
  for (const auto& info : catalog())
    if (info.name == name) return &info;
  return nullptr;
}

}  // namespace

bool is_wrapper_press(const std::string& name) {
  const PressInfo* info = find_press(name);
  if (!info) return false;
  return std::any_of(info->params.begin(), info->params.end(),
                     [](const PressParam& p) { return p.type == "press" || p.type == "presses"; });
}

std::unique_ptr<Press> make_inner_press(const std::string& wrapper, const std::string& inner,
                                        double ratio, PressArgs& args) {
  check(!inner.empty(), wrapper + ": needs an inner press (press=NAME)");
  check(inner != wrapper, wrapper + ": cannot wrap itself");
  check(!is_wrapper_press(inner), wrapper + ": the inner press '" + inner +
                                      "' is itself a wrapper; wrappers do not nest (they would "
                                      "share one press= parameter)");
  return make_press(inner, ratio, args);
}

std::unique_ptr<Press> make_press(const std::string& name, double ratio, PressArgs& args) {
  if (const PressInfo* info = find_press(name)) {
    DepthGuard depth;
    std::unique_ptr<Press> press = info->make(ratio, args);
    press->set_budget_rounding(args.rounding);
    return press;
  }
  std::vector<std::pair<size_t, std::string>> near;
  for (const auto& info : catalog()) near.emplace_back(edit_distance(name, info.name), info.name);
  std::sort(near.begin(), near.end());
  std::string hint;
  for (size_t i = 0; i < near.size() && i < 3; ++i) hint += (i ? ", " : "") + near[i].second;
  throw Error("unknown press '" + name + "' (closest: " + hint + "; `kvpress presses` lists all)");
}

std::unique_ptr<Press> make_press(const std::string& name, double ratio,
                                  const std::vector<std::string>& key_values,
                                  BudgetRounding rounding) {
  PressArgs args = PressArgs::parse(key_values);
  args.rounding = rounding;
  auto press = make_press(name, ratio, args);
  const auto unused = args.unused();
  if (!unused.empty()) {
    std::string valid;
    for (const auto& info : catalog()) {
      if (info.name != name) continue;
      for (const auto& p : info.params) valid += (valid.empty() ? "" : ", ") + p.name;
    }
    throw Error("unknown parameter '" + unused[0] + "' for press '" + name +
                "' (parameters: " + (valid.empty() ? "none" : valid) + ")");
  }
  return press;
}

}  // namespace kvp

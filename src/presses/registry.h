#pragma once
// Builds presses from a name and key=value parameters (for the command line, the eval grid
// and tests), and lists them with their parameters.
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "presses/press.h"

namespace kvp {

// key=value parameters of a press; every read is recorded so that unknown keys are errors.
class PressArgs {
 public:
  PressArgs() = default;
  explicit PressArgs(std::map<std::string, std::string> values) : values_(std::move(values)) {}
  // The budget rounding every press made from these arguments gets (not a key=value).
  BudgetRounding rounding = BudgetRounding::Nearest;
  // Parses "key=value" strings; throws Error on a malformed one or a repeated key.
  static PressArgs parse(const std::vector<std::string>& items);

  double get_double(const std::string& key, double fallback);
  int64_t get_int(const std::string& key, int64_t fallback);
  // For a parameter that scales work: a value outside [min, max] is an error naming the bounds.
  int64_t get_int(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  // A finite number (NaN and infinities are errors).
  double get_finite(const std::string& key, double fallback);
  bool get_bool(const std::string& key, bool fallback);
  std::string get_string(const std::string& key, const std::string& fallback);
  std::vector<double> get_doubles(const std::string& key);
  bool has(const std::string& key) const { return values_.count(key) != 0; }
  // Keys given but never read.
  std::vector<std::string> unused() const;
  const std::map<std::string, std::string>& values() const { return values_; }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> used_;
};

struct PressParam {
  std::string name;
  std::string type;  // "float", "int", "bool", "string", "press", "floats", "presses"
  std::string default_value;
  std::string help;
};

struct PressInfo {
  std::string name;
  std::string description;
  std::vector<PressParam> params;
  // Builds the press; wrappers build their inner press with make_press(args...) too.
  std::function<std::unique_ptr<Press>(double ratio, PressArgs& args)> make;
};

// Every registered press, sorted by name. Each press file registers itself with a static
// PressRegistration; the presses library is linked whole so none is dropped.
const std::vector<PressInfo>& press_catalog();
// Adds a press (for examples and user code); throws Error on a duplicate name.
void register_press(PressInfo info);
// Registers at static-initialisation time: `static PressRegistration r({...});`
struct PressRegistration {
  explicit PressRegistration(PressInfo info) { register_press(std::move(info)); }
};

// Builds a press. Unknown names get the closest known names suggested; unknown or ill-typed
// parameters are errors that list the valid ones.
std::unique_ptr<Press> make_press(const std::string& name, double ratio, PressArgs& args);
std::unique_ptr<Press> make_press(const std::string& name, double ratio,
                                  const std::vector<std::string>& key_values = {},
                                  BudgetRounding rounding = BudgetRounding::Nearest);

// True for a press that builds other presses (a parameter of type "press" or "presses").
bool is_wrapper_press(const std::string& name);
// Builds a wrapper's inner press. Wrappers read their inner press from the one shared press=
// (or presses=) parameter, so a wrapper inside a wrapper would read its own choice again and
// recurse without end: an inner wrapper is refused, naming both.
std::unique_ptr<Press> make_inner_press(const std::string& wrapper, const std::string& inner,
                                        double ratio, PressArgs& args);

}  // namespace kvp

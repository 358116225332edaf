// composed: several presses one after the other on each layer (kvpress's ComposedPress). Each
// stage sees the cache as the previous one left it: fewer rows, in the previous stage's
// top-k order, while the hidden states and queries are still the full context's.
#include <sstream>

#include "core/error.h"
#include "presses/press_util.h"

namespace kvp {

namespace {

std::vector<std::string> split_names(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  if (!list.empty() && list.back() == ',') out.emplace_back();
  return out;
}

class ComposedPress : public Press {
 public:
  explicit ComposedPress(std::vector<std::unique_ptr<Press>> stages) : stages_(std::move(stages)) {}
  std::string name() const override { return "composed"; }
  // 1 - prod(1 - r_i).
  double compression_ratio() const override {
    double kept = 1.0;
    for (const auto& p : stages_) kept *= 1.0 - p->compression_ratio();
    return 1.0 - kept;
  }
  nlohmann::json params() const override {
    nlohmann::json stages = nlohmann::json::array();
    for (const auto& p : stages_)
      stages.push_back(
          {{"name", p->name()}, {"ratio", p->compression_ratio()}, {"params", p->params()}});
    return {{"presses", stages}};
  }
  // Like kvpress's pipeline, which only checks for KeyRerotationPress itself: question
  // positions continue from the original length even if a stage re-rotates keys.
  bool rerotates_keys() const override { return false; }

  void compress(LayerView& view, int64_t reserve) override {
    for (size_t i = 0; i < stages_.size(); ++i)
      stages_[i]->compress(view, i + 1 == stages_.size() ? reserve : 0);
  }
  // Compacts the cache through every stage but the last, then returns the last stage's plan.
  KeepPlan plan(LayerView& view) override {
    for (size_t i = 0; i + 1 < stages_.size(); ++i) stages_[i]->compress(view, 0);
    return stages_.back()->plan(view);
  }

 private:
  std::vector<std::unique_ptr<Press>> stages_;
};

std::unique_ptr<Press> make_composed(double ratio, PressArgs& args) {
  check(args.has("presses"), "composed: needs presses=NAME,NAME,...");
  const std::vector<std::string> names = split_names(args.get_string("presses", ""));
  check(!names.empty(), "composed: presses= lists no press");
  std::vector<double> ratios = args.get_doubles("ratios");
  if (ratios.empty()) ratios.assign(names.size(), ratio);
  check(ratios.size() == names.size(), "composed: ratios= gives " + std::to_string(ratios.size()) +
                                           " ratios for " + std::to_string(names.size()) +
                                           " presses");
  std::vector<std::unique_ptr<Press>> stages;
  for (size_t i = 0; i < names.size(); ++i) {
    check(!names[i].empty(), "composed: empty press name in presses=");
    check(names[i] != "composed", "composed: cannot contain another composed press");
    std::unique_ptr<Press> p = make_press(names[i], ratios[i], args);
    check(!p->is_headwise(),
          "composed: the press '" + names[i] +
              "' is head-wise (kv heads keep different lengths); composed needs one "
              "length per layer");
    stages.push_back(std::move(p));
  }
  return std::make_unique<ComposedPress>(std::move(stages));
}

const PressRegistration registration(
    {"composed",
     "apply several presses one after the other (effective ratio 1 - prod(1 - r_i)); the "
     "stages' own parameters are given alongside",
     {{"presses", "presses", "", "comma-separated press names, applied in order"},
      {"ratios", "floats", "", "one ratio per stage (default: --ratio for every stage)"}},
     make_composed});

}  // namespace

}  // namespace kvp

// Fuzz target: the press-argument parser, make_press(name, ratio, key=value items), as the
// command line and the eval grid call it. The input's first line is the press name, the
// second the compression ratio, each further line one key=value item. A press that builds
// then compresses a 24-token prefill of the tiny Llama model (tests/models/tiny-llama), so a
// parameter that scales work without a bound shows up as a timeout (-timeout).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "backend/factory.h"
#include "core/error.h"
#include "model/model.h"
#include "presses/press.h"
#include "presses/registry.h"

namespace {

constexpr int64_t kTokens = 24;
constexpr int64_t kReserve = 4;

struct TinyModel {
  std::unique_ptr<kvp::Backend> backend = kvp::make_backend("cpu", 1);
  std::unique_ptr<kvp::Model> model =
      kvp::load_model(KVP_SOURCE_DIR "/tests/models/tiny-llama", *backend);
  std::vector<int32_t> ids, positions;
  TinyModel() : ids(kTokens), positions(kTokens) {
    std::iota(positions.begin(), positions.end(), 0);
    for (int64_t i = 0; i < kTokens; ++i) ids[static_cast<size_t>(i)] = (i * 37 + 11) % 256;
  }
};

std::vector<std::string> lines(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty() && out.size() < 64) {
    const size_t nl = s.find('\n');
    out.emplace_back(s.substr(0, nl));
    if (nl == std::string_view::npos) break;
    s.remove_prefix(nl + 1);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static TinyModel tiny;
  const std::vector<std::string> in = lines({reinterpret_cast<const char*>(data), size});
  if (in.size() < 2) return 0;
  char* end = nullptr;
  const double ratio = std::strtod(in[1].c_str(), &end);
  std::vector<std::string> items;
  for (size_t i = 2; i < in.size(); ++i) {
    // A file parameter (qfilter's filters=) must not reach /dev/stdin or /proc: only plain
    // names, which resolve in the fuzzer's working directory.
    if (in[i].find('/') != std::string::npos) return 0;
    items.push_back(in[i]);
  }
  try {
    std::unique_ptr<kvp::Press> press = kvp::make_press(in[0], ratio, items);
    press->name();
    press->params().dump();
    kvp::PressHook hook(*press, kReserve);
    kvp::KVCache cache = tiny.model->make_cache(kTokens + kReserve);
    tiny.model->forward(tiny.ids.data(), tiny.positions.data(), kTokens, cache, &hook);
  } catch (const kvp::Error&) {
  }
  return 0;
}

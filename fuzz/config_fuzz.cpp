// Fuzz target: a Hugging Face config.json (model hyper-parameters). A config that loads has
// passed validate(); kv_bytes_per_token() then runs on it as the cache sizing does.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "fuzz_util.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kvp::fuzz::TempDir dir;
  const std::string path = dir.write("config.json", {reinterpret_cast<const char*>(data), size});
  try {
    const kvp::ModelConfig config = kvp::config_from_hf_json(path);
    config.kv_bytes_per_token();
    config.group_size();
  } catch (const kvp::Error&) {
  }
  return 0;
}

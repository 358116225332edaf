// Fuzz target: safetensors files and a Hugging Face model directory.
//  - An input without a separator is one .safetensors file, parsed from an exact-size heap
//    copy (ASan flags any header read or tensor view past the end).
//  - An input with separators is a model directory: each part is "file name\ncontents"
//    (model.safetensors.index.json, its shards, config.json, ...). Each .safetensors part is
//    parsed from memory as above, then the directory is opened the way load_model opens it:
//    the shard index, every tensor it maps, and with a config.json the model's weights.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

namespace {

using kvp::Error;

void read_file(std::string_view name, std::string_view bytes) {
  const kvp::SafetensorsFile f = kvp::SafetensorsFile::open(
      kvp::MappedFile::from_bytes(std::string(name), bytes.data(), bytes.size()));
  for (const std::string& tensor : f.names()) {
    const kvp::Tensor t = f.tensor(tensor);
    kvp::fuzz::touch(t.data(), t.nbytes());
  }
}

void read_dir(const kvp::fuzz::TempDir& dir, bool has_config) {
  const std::string path = dir.path().string();
  const kvp::SafetensorsModel model = kvp::SafetensorsModel::open_dir(path);
  for (const std::string& name : model.names()) {
    const kvp::Tensor t = model.tensor(name);
    kvp::fuzz::touch(t.data(), t.nbytes());
  }
  if (!has_config) return;
  const kvp::ModelConfig config = kvp::config_from_hf_json(path + "/config.json");
  kvp::weights_from_safetensors(model, config);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kvp::fuzz::TempDir dir;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto parts = kvp::fuzz::split_parts(input, 8);
  if (parts.size() == 1) {
    try {
      read_file("fuzz.safetensors", input);
    } catch (const Error&) {
    }
    return 0;
  }
  dir.clear();
  bool has_config = false;
  for (std::string_view part : parts) {
    const size_t newline = part.find('\n');
    if (newline == std::string_view::npos) continue;
    const std::string_view name = part.substr(0, newline), bytes = part.substr(newline + 1);
    if (!kvp::fuzz::safe_file_name(name)) continue;
    dir.write(std::string(name), bytes);
    has_config = has_config || name == "config.json";
    if (ends_with(name, ".safetensors")) {
      try {
        read_file(name, bytes);
      } catch (const Error&) {
      }
    }
  }
  try {
    read_dir(dir, has_config);
  } catch (const Error&) {
  }
  return 0;
}

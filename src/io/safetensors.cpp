#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/text.h"
#include "io/json_file.h"

namespace kvp {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the limit of the reference implementation
constexpr int kMaxJsonDepth = 64;                  // a valid header nests 3 deep

bool dtype_from_name(const std::string& s, DType* out) {
  if (s == "F32")
    *out = DType::F32;
  else if (s == "F16")
    *out = DType::F16;
  else if (s == "BF16")
    *out = DType::BF16;
  else
    return false;
  return true;
}

// Bracket depth of a JSON text, strings skipped; the parser never sees absurd nesting.
int max_json_depth(const char* p, size_t n) {
  int depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < n; ++i) {
    const char c = p[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) max_depth = depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

// A non-negative JSON integer that fits in int64.
bool as_count(const json& j, uint64_t* out) {
  if (!j.is_number_unsigned()) return false;
  const uint64_t v = j.get<uint64_t>();
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *out = v;
  return true;
}

// A tensor's bytes, as its header entry gives them.
struct DataRange {
  const std::string* name;
  uint64_t begin, end;
};

// Two tensors over the same bytes: at least one of them is not what its writer stored. Empty
// tensors hold no byte; the others, sorted by offset, overlap only if neighbours do.
void check_no_overlap(std::vector<DataRange> ranges, const std::string& path) {
  std::erase_if(ranges, [](const DataRange& r) { return r.begin == r.end; });
  std::sort(ranges.begin(), ranges.end(), [](const DataRange& a, const DataRange& b) {
    return a.begin != b.begin ? a.begin < b.begin : *a.name < *b.name;
  });
  auto span = [](const DataRange& r) {
    return "'" + printable(*r.name) + "' (data_offsets [" + std::to_string(r.begin) + ", " +
           std::to_string(r.end) + "])";
  };
  for (size_t k = 1; k < ranges.size(); ++k) {
    if (ranges[k - 1].end > ranges[k].begin)
      throw Error(path + ": tensors " + span(ranges[k - 1]) + " and " + span(ranges[k]) +
                  " overlap");
  }
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  return open(MappedFile::open(path));
}

SafetensorsFile SafetensorsFile::open(std::shared_ptr<const MappedFile> file) {
  SafetensorsFile f;
  f.file_ = std::move(file);
  const std::string& path = f.file_->path();
  auto fail = [&](const std::string& message) { throw Error(path + ": " + message); };
  const uint8_t* bytes = f.file_->data();
  const uint64_t size = f.file_->size();

  if (size < 8) fail("too small to be a safetensors file (" + std::to_string(size) + " bytes)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian on the hosts we build for
  if (header_len > kMaxHeaderBytes)
    fail("header length " + std::to_string(header_len) + " exceeds the limit of " +
         std::to_string(kMaxHeaderBytes) + " bytes");
  if (header_len > size - 8)
    fail("header length " + std::to_string(header_len) + " runs past the end of the file (" +
         std::to_string(size) + " bytes)");
  const char* text = reinterpret_cast<const char*>(bytes + 8);
  if (max_json_depth(text, header_len) > kMaxJsonDepth)
    fail("header JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");

  json header;
  std::string duplicate;
  try {
    // Top-level keys are checked for duplicates (plain parsing would keep the last one).
    std::set<std::string> keys;
    header = json::parse(
        text, text + header_len, [&](int depth, json::parse_event_t event, json& parsed) {
          if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
            if (!keys.insert(parsed.get<std::string>()).second && duplicate.empty())
              duplicate = parsed.get<std::string>();
          }
          return true;
        });
  } catch (const json::exception& e) {
    fail("invalid header JSON: " + json_error_message(e));
  }
  if (!duplicate.empty()) fail("header lists tensor '" + printable(duplicate) + "' twice");
  if (!header.is_object()) fail("header is not a JSON object");

  const uint64_t data_begin = 8 + header_len;
  const uint64_t data_size = size - data_begin;
  std::vector<DataRange> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string tn = "tensor '" + printable(name) + "'";
    if (!entry.is_object()) fail(tn + ": header entry is not a JSON object");
    auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) fail(tn + ": missing or non-string \"dtype\"");
    const std::string dtype_str = dt->get<std::string>();
    DType dtype = DType::F32;
    if (!dtype_from_name(dtype_str, &dtype))
      fail(tn + " has unsupported dtype " + printable(dtype_str) + " (supported: F32, F16, BF16)");

    auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array()) fail(tn + ": missing or non-array \"shape\"");
    if (sh->size() > 4)
      fail(tn + " has " + std::to_string(sh->size()) + " dims (at most 4 are supported)");
    std::array<int64_t, 4> shape{0, 0, 0, 0};
    int ndim = static_cast<int>(sh->size());
    uint64_t numel = 1;
    for (size_t d = 0; d < sh->size(); ++d) {
      uint64_t v = 0;
      if (!as_count((*sh)[d], &v))
        fail(tn + ": shape[" + std::to_string(d) + "] is not a non-negative integer");
      shape[d] = static_cast<int64_t>(v);
      if (__builtin_mul_overflow(numel, v, &numel) ||
          numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(tn + ": element count overflows");
    }
    if (ndim == 0) {  // a scalar: one element, viewed as shape [1]
      ndim = 1;
      shape[0] = 1;
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(block_bytes(dtype)), &nbytes))
      fail(tn + ": byte size overflows");

    auto off = entry.find("data_offsets");
    uint64_t begin = 0, end = 0;
    if (off == entry.end() || !off->is_array() || off->size() != 2 ||
        !as_count((*off)[0], &begin) || !as_count((*off)[1], &end))
      fail(tn + ": \"data_offsets\" must be [begin, end] with non-negative integers");
    if (begin > end)
      fail(tn + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
           "] are reversed");
    if (end > data_size)
      fail(tn + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
           "] run past the end of the data (" + std::to_string(data_size) + " bytes)");
    if (end - begin != nbytes)
      fail(tn + ": data_offsets span " + std::to_string(end - begin) +
           " bytes but shape and dtype " + dtype_str + " need " + std::to_string(nbytes));
    if (nbytes != 0 && (data_begin + begin) % block_bytes(dtype) != 0)
      fail(tn + ": data at file offset " + std::to_string(data_begin + begin) +
           " is not aligned to its " + std::to_string(block_bytes(dtype)) + "-byte elements");
    const auto entry_it =
        f.index_
            .emplace(name, Tensor::view(dtype, shape, ndim, bytes + data_begin + begin, f.file_))
            .first;
    ranges.push_back({&entry_it->first, begin, end});
  }
  check_no_overlap(std::move(ranges), path);
  return f;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(file_->path() + ": no tensor named '" + name + "'");
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, t] : index_) out.push_back(name);
  return out;
}

SafetensorsModel SafetensorsModel::open_dir(const std::string& dir) {
  SafetensorsModel m;
  m.dir_ = dir;
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error(dir + ": model directory does not exist");
  if (!fs::is_directory(dir, ec)) throw Error(dir + ": is not a directory");
  const fs::path root(dir);
  const std::string index_path = (root / "model.safetensors.index.json").string();
  const std::string single_path = (root / "model.safetensors").string();

  if (fs::exists(index_path, ec)) {
    const json index = read_json_file(index_path);
    auto wm = index.is_object() ? index.find("weight_map") : index.end();
    if (!index.is_object() || wm == index.end() || !wm->is_object())
      throw Error(index_path + ": no \"weight_map\" object");
    if (wm->empty()) throw Error(index_path + ": \"weight_map\" is empty");
    std::map<std::string, size_t> shard_ids;
    std::vector<std::string> shard_names;
    std::vector<std::pair<std::string, size_t>> entries;
    for (const auto& [name, file] : wm->items()) {
      if (!file.is_string())
        throw Error(index_path + ": weight_map entry for '" + printable(name) +
                    "' is not a string");
      const std::string shard = file.get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos ||
          shard.find('\\') != std::string::npos || shard.find("..") != std::string::npos ||
          shard.find('\0') != std::string::npos)
        throw Error(index_path + ": tensor '" + printable(name) + "' maps to shard '" +
                    printable(shard) +
                    "', which is not a plain file name inside the model directory");
      auto [it, inserted] = shard_ids.emplace(shard, shard_names.size());
      if (inserted) shard_names.push_back(shard);
      entries.emplace_back(name, it->second);
    }
    for (const std::string& shard : shard_names) {
      try {
        m.shards_.push_back(SafetensorsFile::open((root / shard).string()));
      } catch (const Error& e) {
        throw Error(std::string(e.what()) + " (a shard listed in " + index_path + ")");
      }
    }
    for (const auto& [name, id] : entries) {
      if (!m.shards_[id].has(name))
        throw Error((root / shard_names[id]).string() + ": has no tensor '" + printable(name) +
                    "', which " + index_path + " places there");
      m.where_.emplace(name, id);
    }
    return m;
  }
  if (fs::exists(single_path, ec)) {
    m.shards_.push_back(SafetensorsFile::open(single_path));
    for (const std::string& name : m.shards_[0].names()) m.where_.emplace(name, 0);
    return m;
  }
  throw Error(dir + ": no model.safetensors or model.safetensors.index.json in this directory");
}

bool SafetensorsModel::has(const std::string& name) const {
  return where_.count(name) != 0;
}

Tensor SafetensorsModel::tensor(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(dir_ + ": no tensor named '" + name + "' in the model");
  return shards_[it->second].tensor(name);
}

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, id] : where_) out.push_back(name);
  return out;
}

}  // namespace kvp

#pragma once
// Helpers shared by the fuzz targets (one header, so that each target stays one .cpp file).
//  - One fuzz input can hold several files, separated by kPartSeparator: the shard index and
//    its shards, tokenizer.json and tokenizer_config.json, a template and its messages.
//  - Readers that only take a path read the input from a directory private to the process.
//  - touch() reads every byte of a view, so AddressSanitizer checks it lies inside the input.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace kvp::fuzz {

// The fuzz/*.dict dictionaries list it, so mutations insert it whole.
inline constexpr std::string_view kPartSeparator = "\n--8<--\n";

// The input cut at each separator (at most max_parts; the last part keeps the rest).
inline std::vector<std::string_view> split_parts(std::string_view input, size_t max_parts) {
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const size_t at = input.find(kPartSeparator);
    if (at == std::string_view::npos) break;
    parts.push_back(input.substr(0, at));
    input.remove_prefix(at + kPartSeparator.size());
  }
  parts.push_back(input);
  return parts;
}

// A directory of this process's own (several fuzzers may run at once), emptied before each
// input and removed at exit.
class TempDir {
 public:
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    path_ = std::filesystem::path(tmp && *tmp ? tmp : "/tmp") /
            ("kvp-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

  void clear() const {
    for (const auto& entry : std::filesystem::directory_iterator(path_))
      std::filesystem::remove_all(entry.path());
  }

  // Writes bytes to name inside the directory; returns the full path. A new file each time:
  // on ext4, truncating a file that holds data makes close() flush it to disk (auto_da_alloc),
  // which cut the fuzzers to a few hundred inputs a second.
  std::string write(const std::string& name, std::string_view bytes) const {
    const std::filesystem::path p = path_ / name;
    std::error_code ec;
    std::filesystem::remove(p, ec);
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

// A plain file name the fuzzer may create: no path separators, no "." or "..", short.
inline bool safe_file_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name == "." || name == "..") return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// Reads every byte of [p, p + n); the sum goes to a volatile so the loop is not removed.
inline volatile uint64_t touch_sink = 0;
inline void touch(const void* p, size_t n) {
  const auto* bytes = static_cast<const uint8_t*>(p);
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += bytes[i];
  touch_sink = sum;
}

}  // namespace kvp::fuzz

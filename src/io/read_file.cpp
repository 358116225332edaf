#include "io/read_file.h"

#include <filesystem>
#include <fstream>
#include <utility>

#include "core/error.h"

namespace kvp {

std::string format_byte_size(uint64_t bytes) {
  for (const auto& [unit, shift] :
       {std::pair{"GiB", 30}, std::pair{"MiB", 20}, std::pair{"KiB", 10}})
    if (bytes >= (uint64_t{1} << shift) && bytes % (uint64_t{1} << shift) == 0)
      return std::to_string(bytes >> shift) + " " + unit;
  return std::to_string(bytes) + " bytes";
}

namespace {

void check_kind(const std::string& path, const std::string& what, bool regular_only) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  check(fs::exists(st), "cannot read " + what + " '" + path + "': no such file");
  check(!fs::is_directory(st), what + " '" + path + "' is a directory, not a file");
  check(!regular_only || fs::is_regular_file(st),
        what + " '" + path + "' is not a regular file (a device, pipe or socket)");
}

}  // namespace

std::string read_file_capped(const std::string& path, const std::string& what,
                             const ReadFileOptions& options) {
  check(!path.empty(), what + ": the file name is empty");
  check_kind(path, what, options.regular_only);
  std::ifstream in(path, std::ios::binary);
  check(static_cast<bool>(in), "cannot open " + what + " '" + path + "'");
  // Chunked reads: a device or pipe has no size to ask for, so the cap is enforced as we go.
  std::string out;
  char chunk[1 << 16];
  while (in) {
    in.read(chunk, sizeof chunk);
    const auto got = static_cast<size_t>(in.gcount());
    check(out.size() + got <= options.max_bytes, what + " '" + path + "' is larger than the " +
                                                     format_byte_size(options.max_bytes) + " cap");
    out.append(chunk, got);
  }
  check(in.eof(), "error while reading " + what + " '" + path + "'");
  return out;
}

}  // namespace kvp

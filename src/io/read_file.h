#pragma once
// Reads a whole user-named file (a context, a haystack, a press's data file) with a size cap,
// so that `@/dev/zero` or a mistaken multi-gigabyte path fails at once with a message that
// says the cap instead of growing until memory runs out.
#include <cstdint>
#include <string>

namespace kvp {

struct ReadFileOptions {
  uint64_t max_bytes = 16ull << 20;
  // Refuse devices, pipes and sockets (for data files whose size must be known). When false,
  // a pipe such as /dev/stdin is read up to the cap.
  bool regular_only = false;
};

// Throws Error naming `what` and the path: no such file, a directory, not a regular file
// (when asked), unreadable, or larger than max_bytes.
std::string read_file_capped(const std::string& path, const std::string& what,
                             const ReadFileOptions& options = {});

// "1 GiB", "16 MiB", "512 KiB", "100 bytes": a cap as a person reads it.
std::string format_byte_size(uint64_t bytes);

}  // namespace kvp

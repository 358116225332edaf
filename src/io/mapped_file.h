#pragma once
// A read-only memory mapping of a whole file. Tensors viewing model weights hold a
// shared_ptr to it, so the mapping lives as long as any weight does.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace kvp {

class MappedFile {
 public:
  // Throws Error naming the path when the file is missing, unreadable or not a regular file.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  // A heap copy of bytes named `name` (for fuzzing: an exact-size heap buffer lets
  // AddressSanitizer catch a read one byte past the end, which a page-rounded mapping hides).
  static std::shared_ptr<const MappedFile> from_bytes(const std::string& name, const void* data,
                                                      size_t size);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
  std::unique_ptr<uint8_t[]> owned_;  // from_bytes: the copy (data_ points into it)
};

}  // namespace kvp

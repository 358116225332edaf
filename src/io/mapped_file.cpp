#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace kvp {

namespace {

std::string os_reason(int err) {
  return std::strerror(err);
}

// Closes a file descriptor when it goes out of scope (the mapping outlives it).
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  check(!path.empty(), "cannot open a file with an empty path");
  FdGuard guard;
  do {
    guard.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (guard.fd < 0 && errno == EINTR);
  if (guard.fd < 0) {
    const int err = errno;
    throw Error(path + ": cannot open: " + os_reason(err));
  }
  struct stat st {};
  if (::fstat(guard.fd, &st) != 0) {
    const int err = errno;
    throw Error(path + ": cannot stat: " + os_reason(err));
  }
  if (S_ISDIR(st.st_mode)) throw Error(path + ": is a directory, not a file");
  if (!S_ISREG(st.st_mode)) throw Error(path + ": is not a regular file");
  if (st.st_size <= 0) throw Error(path + ": file is empty");
  const size_t size = static_cast<size_t>(st.st_size);

  std::shared_ptr<MappedFile> file(new MappedFile());  // before mmap: nothing leaks if this throws
  file->path_ = path;
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, guard.fd, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    throw Error(path + ": cannot map " + std::to_string(size) + " bytes: " + os_reason(err));
  }
  file->data_ = static_cast<const uint8_t*>(p);
  file->size_ = size;
  return file;
}

std::shared_ptr<const MappedFile> MappedFile::from_bytes(const std::string& name, const void* data,
                                                         size_t size) {
  if (size == 0) throw Error(name + ": file is empty");  // as open() says for an empty file
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = name;
  file->owned_.reset(new uint8_t[size]);
  std::memcpy(file->owned_.get(), data, size);
  file->data_ = file->owned_.get();
  file->size_ = size;
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr && !owned_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace kvp

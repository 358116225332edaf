#pragma once
// GGUF reader (versions 2 and 3). Parses the header, every metadata type (nested arrays
// included), tensor infos and alignment; checks every count, length, offset and product
// against the file size and against overflow. Tensor data is viewed in place (mmap).
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/mapped_file.h"

namespace kvp {

struct GgufValue {
  enum class Type : uint32_t {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    BOOL = 7,
    STRING = 8,
    ARRAY = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
  };
  Type type = Type::U8;
  // Scalars are widened: integers and bools to int64 or uint64, floats to double.
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  std::string s;
  Type array_type = Type::U8;
  std::vector<GgufValue> array;

  bool is_integer() const;
  bool is_float() const;
};

struct GgufTensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the contiguous (row) dimension
  uint64_t offset = 0;      // relative to the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
};

class GgufFile {
 public:
  // Throws Error with the path and the problem for any malformed or unsupported file.
  static GgufFile open(const std::string& path);
  // The same from an open file or an in-memory copy (MappedFile::from_bytes; the fuzzer's).
  static GgufFile open(std::shared_ptr<const MappedFile> file);

  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }
  // Typed getters: throw Error naming the key when it is missing or of the wrong type.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;  // accepts integers too
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;
  // Getters with a default for optional keys (still throw on a wrong type).
  int64_t get_int_or(const std::string& key, int64_t fallback) const;
  double get_float_or(const std::string& key, double fallback) const;
  std::string get_string_or(const std::string& key, const std::string& fallback) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  // A view of the tensor's data, shape reversed to row-major ([ne1, ne0] for a matrix),
  // keeping the mapping alive. Throws Error when the tensor is missing.
  Tensor tensor(const std::string& name) const;
  const std::string& path() const { return file_->path(); }

 private:
  std::shared_ptr<const MappedFile> file_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace kvp

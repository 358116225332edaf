#pragma once
// Safetensors reader: one file, or a Hugging Face model directory with either
// model.safetensors or a sharded model.safetensors.index.json. F32, F16 and BF16.
// Every header length, offset and shape product is checked against the file size.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/mapped_file.h"

namespace kvp {

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);
  // The same from an open file or an in-memory copy (MappedFile::from_bytes; the fuzzer's).
  static SafetensorsFile open(std::shared_ptr<const MappedFile> file);
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // A view (row-major, the file's shape) keeping the mapping alive; throws when missing.
  Tensor tensor(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::shared_ptr<const MappedFile> file_;
  std::map<std::string, Tensor> index_;
};

// All tensors of a model directory, across shards.
class SafetensorsModel {
 public:
  // dir holds model.safetensors, or model.safetensors.index.json and its shards.
  static SafetensorsModel open_dir(const std::string& dir);
  bool has(const std::string& name) const;
  Tensor tensor(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, size_t> where_;
};

}  // namespace kvp

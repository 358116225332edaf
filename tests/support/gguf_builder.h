#pragma once
// Writes GGUF files for tests: every field can be bent, so the same builder makes valid
// files and the hostile variants the reader must refuse.
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/gguf.h"

namespace kvp::test {

using VT = GgufValue::Type;
using Bytes = std::vector<uint8_t>;

// ---- encoding helpers -------------------------------------------------------------------

template <typename T>
inline void put(Bytes& b, T v) {
  // resize + memcpy: GCC 12 reports a false -Wstringop-overflow for insert into an empty vector.
  const size_t at = b.size();
  b.resize(at + sizeof(T));
  std::memcpy(b.data() + at, &v, sizeof(T));
}
inline void put_str(Bytes& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}
inline void append(Bytes& b, const Bytes& more) {
  b.insert(b.end(), more.begin(), more.end());
}

template <typename T>
inline Bytes enc(T v) {
  Bytes b;
  put(b, v);
  return b;
}
inline Bytes enc_str(const std::string& s) {
  Bytes b;
  put_str(b, s);
  return b;
}
// An array value: element type, count, then the already-encoded elements.
inline Bytes enc_array(VT elem, uint64_t count, const Bytes& elements) {
  Bytes b;
  put<uint32_t>(b, static_cast<uint32_t>(elem));
  put<uint64_t>(b, count);
  append(b, elements);
  return b;
}

// ggml types used by the tests, with their block geometry.
inline constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_1 = 3, kQ8_0 = 8;
inline uint64_t test_nbytes(uint32_t type, const std::vector<uint64_t>& ne) {
  uint64_t n = 1;
  for (uint64_t x : ne) n *= x;
  switch (type) {
    case kF32:
      return n * 4;
    case kF16:
      return n * 2;
    case kQ8_0:
      return n / 32 * 34;
    case kQ4_1:
      return n / 32 * 20;
  }
  return n;  // other types: tests give explicit data
}

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type = kF32;
  Bytes data;                      // placed in the data section
  std::optional<uint64_t> offset;  // written instead of the real offset
};

// Builds a GGUF file. Every field can be bent for the hostile cases.
struct GgufBuilder {
  std::string magic = "GGUF";
  uint32_t version = 3;
  std::optional<uint64_t> tensor_count, kv_count;
  uint64_t alignment = 32;  // layout only; add general.alignment yourself to declare it
  std::vector<std::pair<std::string, Bytes>> kvs;  // key -> type + value bytes
  std::vector<TensorSpec> tensors;
  size_t header_end = 0;  // set by build(): end of the tensor infos
  size_t data_start = 0;  // set by build()

  GgufBuilder& kv(const std::string& key, VT type, const Bytes& value) {
    Bytes b = enc<uint32_t>(static_cast<uint32_t>(type));
    append(b, value);
    kvs.emplace_back(key, b);
    return *this;
  }
  GgufBuilder& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
                      Bytes data = {}) {
    if (data.empty()) {
      data.resize(test_nbytes(type, ne));
      for (size_t i = 0; i < data.size(); ++i)
        data[i] = static_cast<uint8_t>(i * 7 + name.size() * 13 + 1);
    }
    tensors.push_back({name, std::move(ne), type, std::move(data), std::nullopt});
    return *this;
  }

  Bytes build() {
    Bytes b(magic.begin(), magic.end());
    put<uint32_t>(b, version);
    put<uint64_t>(b, tensor_count.value_or(tensors.size()));
    put<uint64_t>(b, kv_count.value_or(kvs.size()));
    for (const auto& [key, value] : kvs) {
      put_str(b, key);
      append(b, value);
    }
    std::vector<uint64_t> offsets;
    uint64_t cursor = 0;
    for (const TensorSpec& t : tensors) {
      cursor = (cursor + alignment - 1) / alignment * alignment;
      offsets.push_back(cursor);
      cursor += t.data.size();
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      const TensorSpec& t = tensors[i];
      put_str(b, t.name);
      put<uint32_t>(b, static_cast<uint32_t>(t.ne.size()));
      for (uint64_t x : t.ne) put<uint64_t>(b, x);
      put<uint32_t>(b, t.type);
      put<uint64_t>(b, t.offset.value_or(offsets[i]));
    }
    header_end = b.size();
    if (!tensors.empty()) {
      b.resize((b.size() + alignment - 1) / alignment * alignment, 0);
      data_start = b.size();
      for (size_t i = 0; i < tensors.size(); ++i) {
        b.resize(data_start + offsets[i], 0);
        append(b, tensors[i].data);
      }
    } else {
      data_start = b.size();
    }
    return b;
  }
};

}  // namespace kvp::test

#pragma once
// Element and block types of tensors. Values of the GGUF types equal ggml's type ids, so a
// GGUF tensor's type field converts directly.
#include <cstddef>
#include <cstdint>
#include <string>

namespace kvp {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q8_0 = 8,
  Q4_K = 12,
  Q6_K = 14,
  I32 = 26,
  BF16 = 30,
};

// Number of elements in one block (1 for plain types).
size_t block_elements(DType t);
// Bytes of one block (the element size for plain types).
size_t block_bytes(DType t);
// Bytes of a row of n elements; throws Error when n is not a multiple of the block size.
size_t row_bytes(DType t, int64_t n);
bool is_quantized(DType t);
std::string dtype_name(DType t);
// Returns false for type ids this engine does not support.
bool dtype_from_ggml(uint32_t ggml_type, DType* out);

}  // namespace kvp

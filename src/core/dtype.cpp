#include "core/dtype.h"

#include "core/error.h"

namespace kvp {

size_t block_elements(DType t) {
  switch (t) {
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q8_0:
      return 32;
    case DType::Q4_K:
    case DType::Q6_K:
      return 256;
    default:
      return 1;
  }
}

size_t block_bytes(DType t) {
  switch (t) {
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
      return 2;
    case DType::Q4_0:
      return 2 + 16;
    case DType::Q4_1:
      return 2 + 2 + 16;
    case DType::Q8_0:
      return 2 + 32;
    case DType::Q4_K:
      return 2 + 2 + 12 + 128;
    case DType::Q6_K:
      return 128 + 64 + 16 + 2;
  }
  return 0;
}

size_t row_bytes(DType t, int64_t n) {
  const int64_t be = static_cast<int64_t>(block_elements(t));
  if (n < 0 || n % be != 0) {  // no message built on the hot path
    throw Error("row of " + std::to_string(n) + " elements is not a multiple of the " +
                dtype_name(t) + " block size " + std::to_string(be));
  }
  return static_cast<size_t>(n / be) * block_bytes(t);
}

bool is_quantized(DType t) {
  return block_elements(t) > 1;
}

std::string dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I32:
      return "I32";
    case DType::Q4_0:
      return "Q4_0";
    case DType::Q4_1:
      return "Q4_1";
    case DType::Q8_0:
      return "Q8_0";
    case DType::Q4_K:
      return "Q4_K";
    case DType::Q6_K:
      return "Q6_K";
  }
  return "unknown";
}

bool dtype_from_ggml(uint32_t ggml_type, DType* out) {
  switch (ggml_type) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 8:
    case 12:
    case 14:
    case 26:
    case 30:
      *out = static_cast<DType>(ggml_type);
      return true;
    default:
      return false;
  }
}

}  // namespace kvp

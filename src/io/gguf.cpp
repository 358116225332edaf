#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <utility>

#include "core/error.h"
#include "core/text.h"

namespace kvp {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader assumes a little-endian host");

namespace {

using VT = GgufValue::Type;

// Limits on what a header may ask for. Real models stay far below them (a 256k-token
// vocabulary with its merges is about 1M array elements); they bound the memory a hostile
// file can make us allocate (each parsed value is about 100 bytes).
constexpr int kMaxArrayDepth = 16;                         // nesting of arrays in arrays
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 22;  // all metadata arrays together
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
// Smallest possible encodings, used to bound counts by the bytes that remain.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;  // key length, type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes =
    8 + 4 + 8 + 4 + 8;  // name length, n_dims, ne[0], type, offset

// ggml type ids, for error messages about types this engine does not read.
const char* ggml_type_name(uint32_t t) {
  static const char* const names[] = {
      "F32",   "F16",        "Q4_0",       "Q4_1",       "Q4_2",     "Q4_3",     "Q5_0",
      "Q5_1",  "Q8_0",       "Q8_1",       "Q2_K",       "Q3_K",     "Q4_K",     "Q5_K",
      "Q6_K",  "Q8_K",       "IQ2_XXS",    "IQ2_XS",     "IQ3_XXS",  "IQ1_S",    "IQ4_NL",
      "IQ3_S", "IQ2_S",      "IQ4_XS",     "I8",         "I16",      "I32",      "I64",
      "F64",   "IQ1_M",      "BF16",       "Q4_0_4_4",   "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",
      "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",
  };
  return t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}

const char* value_type_name(VT t) {
  switch (t) {
    case VT::U8:
      return "U8";
    case VT::I8:
      return "I8";
    case VT::U16:
      return "U16";
    case VT::I16:
      return "I16";
    case VT::U32:
      return "U32";
    case VT::I32:
      return "I32";
    case VT::F32:
      return "F32";
    case VT::BOOL:
      return "BOOL";
    case VT::STRING:
      return "STRING";
    case VT::ARRAY:
      return "ARRAY";
    case VT::U64:
      return "U64";
    case VT::I64:
      return "I64";
    case VT::F64:
      return "F64";
  }
  return "unknown";
}

std::string type_description(const GgufValue& v) {
  if (v.type != VT::ARRAY) return value_type_name(v.type);
  return std::string("ARRAY of ") + value_type_name(v.array_type);
}

bool is_integer_type(VT t) {
  switch (t) {
    case VT::U8:
    case VT::I8:
    case VT::U16:
    case VT::I16:
    case VT::U32:
    case VT::I32:
    case VT::U64:
    case VT::I64:
      return true;
    default:
      return false;
  }
}

bool is_unsigned_type(VT t) {
  return t == VT::U8 || t == VT::U16 || t == VT::U32 || t == VT::U64;
}

bool is_float_type(VT t) {
  return t == VT::F32 || t == VT::F64;
}

uint64_t min_value_bytes(VT t) {
  switch (t) {
    case VT::U8:
    case VT::I8:
    case VT::BOOL:
      return 1;
    case VT::U16:
    case VT::I16:
      return 2;
    case VT::U32:
    case VT::I32:
    case VT::F32:
      return 4;
    case VT::U64:
    case VT::I64:
    case VT::F64:
      return 8;
    case VT::STRING:
      return 8;  // the length
    case VT::ARRAY:
      return 4 + 8;  // element type and count
  }
  return 1;
}

class Parser {
 public:
  explicit Parser(const MappedFile& f) : data_(f.data()), size_(f.size()), path_(f.path()) {}

  [[noreturn]] void fail(const std::string& message) const { throw Error(path_ + ": " + message); }

  size_t pos() const { return pos_; }
  size_t size() const { return size_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > remaining())
      fail("truncated file: " + what + " needs " + std::to_string(n) + " bytes at offset " +
           std::to_string(pos_) + " but the file has " + std::to_string(size_) + " bytes");
  }

  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " length");
    if (n > remaining())
      fail(what + " has length " + std::to_string(n) + " but only " + std::to_string(remaining()) +
           " bytes remain at offset " + std::to_string(pos_));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }

  VT read_value_type(const std::string& what) {
    const uint32_t t = read<uint32_t>(what);
    if (t > static_cast<uint32_t>(VT::F64))
      fail(what + " is " + std::to_string(t) + ", not a GGUF value type (0..12)");
    return static_cast<VT>(t);
  }

  GgufValue read_value(VT type, const std::string& key, int depth) {
    GgufValue v;
    v.type = type;
    const std::string what = "value of metadata key '" + printable(key) + "'";
    switch (type) {
      case VT::U8:
        set_unsigned(v, read<uint8_t>(what));
        break;
      case VT::U16:
        set_unsigned(v, read<uint16_t>(what));
        break;
      case VT::U32:
        set_unsigned(v, read<uint32_t>(what));
        break;
      case VT::U64:
        set_unsigned(v, read<uint64_t>(what));
        break;
      case VT::I8:
        set_signed(v, read<int8_t>(what));
        break;
      case VT::I16:
        set_signed(v, read<int16_t>(what));
        break;
      case VT::I32:
        set_signed(v, read<int32_t>(what));
        break;
      case VT::I64:
        set_signed(v, read<int64_t>(what));
        break;
      case VT::F32:
        v.f = static_cast<double>(read<float>(what));
        break;
      case VT::F64:
        v.f = read<double>(what);
        break;
      case VT::BOOL: {
        const uint8_t b = read<uint8_t>(what);
        if (b > 1)
          fail(what + " is a BOOL with byte value " + std::to_string(b) + " (must be 0 or 1)");
        set_unsigned(v, b);
        break;
      }
      case VT::STRING:
        v.s = read_string(what);
        break;
      case VT::ARRAY: {
        v.array_type = read_value_type("element type of array '" + printable(key) + "'");
        if (v.array_type == VT::ARRAY && depth + 1 >= kMaxArrayDepth)
          fail("metadata key '" + printable(key) + "' nests arrays deeper than " +
               std::to_string(kMaxArrayDepth) + " levels");
        const uint64_t count = read<uint64_t>("element count of array '" + printable(key) + "'");
        const uint64_t min_bytes = min_value_bytes(v.array_type);
        if (count > remaining() / min_bytes)
          fail("array '" + printable(key) + "' claims " + std::to_string(count) +
               " elements of type " + value_type_name(v.array_type) + " but only " +
               std::to_string(remaining()) + " bytes remain");
        array_elements_ += count;  // cannot overflow: each count is bounded by the file size
        if (array_elements_ > kMaxArrayElements)
          fail("metadata arrays hold more than " + std::to_string(kMaxArrayElements) +
               " elements in total (at key '" + printable(key) + "')");
        v.array.reserve(static_cast<size_t>(count));
        for (uint64_t k = 0; k < count; ++k)
          v.array.push_back(read_value(v.array_type, key, depth + 1));
        break;
      }
    }
    return v;
  }

  const uint8_t* at(size_t offset) const { return data_ + offset; }

 private:
  static void set_unsigned(GgufValue& v, uint64_t x) {
    v.u = x;
    v.i = x <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? static_cast<int64_t>(x)
                                                                          : 0;
  }
  static void set_signed(GgufValue& v, int64_t x) {
    v.i = x;
    v.u = x >= 0 ? static_cast<uint64_t>(x) : 0;
  }

  const uint8_t* data_;
  size_t size_;
  const std::string& path_;
  size_t pos_ = 0;
  uint64_t array_elements_ = 0;
};

// Two tensors over the same bytes: at least one of them is not what its writer stored. Every
// tensor holds at least one byte, so sorted by offset any overlap shows between neighbours.
void check_no_overlap(const Parser& p, const std::vector<GgufTensorInfo>& tensors) {
  std::vector<const GgufTensorInfo*> order;
  order.reserve(tensors.size());
  for (const GgufTensorInfo& t : tensors) order.push_back(&t);
  std::stable_sort(
      order.begin(), order.end(),
      [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  auto span = [](const GgufTensorInfo& t) {
    return printable(t.name) + " (data bytes [" + std::to_string(t.offset) + ", " +
           std::to_string(t.offset + t.nbytes) + "))";
  };
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensorInfo& a = *order[k - 1];
    const GgufTensorInfo& b = *order[k];
    if (a.offset + a.nbytes > b.offset)
      p.fail("tensors " + span(a) + " and " + span(b) + " overlap");
  }
}

std::string hex_bytes(const uint8_t* p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

}  // namespace

bool GgufValue::is_integer() const {
  return is_integer_type(type);
}
bool GgufValue::is_float() const {
  return is_float_type(type);
}

GgufFile GgufFile::open(const std::string& path) {
  return open(MappedFile::open(path));
}

GgufFile GgufFile::open(std::shared_ptr<const MappedFile> file) {
  GgufFile g;
  g.file_ = std::move(file);
  Parser p(*g.file_);

  // Header: magic, version, counts.
  if (p.size() < 4) p.fail("too small to be a GGUF file (" + std::to_string(p.size()) + " bytes)");
  if (std::memcmp(p.at(0), "GGUF", 4) != 0)
    p.fail("not a GGUF file: magic bytes are " + hex_bytes(p.at(0), 4) +
           ", expected 47 47 55 46 (\"GGUF\")");
  p.read<uint32_t>("magic");
  const uint32_t version = p.read<uint32_t>("version");
  if (version == 1) p.fail("GGUF version 1 is not supported (only versions 2 and 3 are)");
  if (version != 2 && version != 3) {
    const uint32_t swapped = __builtin_bswap32(version);
    p.fail("unsupported GGUF version " + std::to_string(version) +
           " (only versions 2 and 3 are supported)" +
           (swapped == 2 || swapped == 3
                ? "; this looks like a big-endian GGUF file, which is not supported"
                : ""));
  }
  g.version_ = version;
  const uint64_t tensor_count = p.read<uint64_t>("tensor count");
  const uint64_t kv_count = p.read<uint64_t>("metadata count");
  if (tensor_count > p.remaining() / kMinTensorInfoBytes)
    p.fail("tensor count " + std::to_string(tensor_count) + " is impossible for a file of " +
           std::to_string(p.size()) + " bytes");
  if (kv_count > p.remaining() / kMinKvBytes)
    p.fail("metadata count " + std::to_string(kv_count) + " is impossible for a file of " +
           std::to_string(p.size()) + " bytes");
  if (tensor_count * kMinTensorInfoBytes + kv_count * kMinKvBytes > p.remaining())
    p.fail("tensor count " + std::to_string(tensor_count) + " and metadata count " +
           std::to_string(kv_count) + " are impossible for a file of " + std::to_string(p.size()) +
           " bytes");

  // Metadata.
  for (uint64_t k = 0; k < kv_count; ++k) {
    const std::string entry = "metadata entry " + std::to_string(k);
    std::string key = p.read_string("key of " + entry);
    if (key.empty()) p.fail("key of " + entry + " is empty");
    const VT type = p.read_value_type("type of metadata key '" + printable(key) + "'");
    GgufValue value = p.read_value(type, key, 0);
    if (g.metadata_.count(key)) p.fail("duplicate metadata key '" + printable(key) + "'");
    g.metadata_.emplace(std::move(key), std::move(value));
  }

  uint64_t alignment = kDefaultAlignment;
  if (const GgufValue* a = g.find("general.alignment")) {
    if (!a->is_integer())
      p.fail("general.alignment has type " + type_description(*a) + ", expected an integer");
    if (!is_unsigned_type(a->type) && a->i < 0)
      p.fail("general.alignment is negative (" + std::to_string(a->i) + ")");
    alignment = a->u;
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
      p.fail("general.alignment " + std::to_string(alignment) + " is not a nonzero power of two");
  }

  // Tensor infos.
  g.tensors_.reserve(static_cast<size_t>(tensor_count));
  for (uint64_t t = 0; t < tensor_count; ++t) {
    GgufTensorInfo info;
    info.name = p.read_string("name of tensor " + std::to_string(t));
    if (info.name.empty()) p.fail("name of tensor " + std::to_string(t) + " is empty");
    const std::string tn = "tensor " + printable(info.name);
    const uint32_t n_dims = p.read<uint32_t>("n_dims of " + tn);
    if (n_dims < 1 || n_dims > kMaxDims)
      p.fail(tn + " has " + std::to_string(n_dims) + " dims (supported: 1 to " +
             std::to_string(kMaxDims) + ")");
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = p.read<uint64_t>("ne[" + std::to_string(d) + "] of " + tn);
      if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        p.fail(tn + " has invalid ne[" + std::to_string(d) + "] = " + std::to_string(ne));
      info.ne.push_back(static_cast<int64_t>(ne));
      if (__builtin_mul_overflow(numel, static_cast<int64_t>(ne), &numel))
        p.fail(tn + ": element count overflows (ne[0.." + std::to_string(d) + "])");
    }
    const uint32_t ggml_type = p.read<uint32_t>("type of " + tn);
    if (!dtype_from_ggml(ggml_type, &info.dtype))
      p.fail(tn + " has unsupported type " + ggml_type_name(ggml_type) + " (" +
             std::to_string(ggml_type) + ")");
    info.offset = p.read<uint64_t>("data offset of " + tn);

    const uint64_t be = block_elements(info.dtype);
    const uint64_t ne0 = static_cast<uint64_t>(info.ne[0]);
    if (ne0 % be != 0)
      p.fail(tn + ": row of " + std::to_string(ne0) + " elements is not a multiple of the " +
             dtype_name(info.dtype) + " block size " + std::to_string(be));
    uint64_t row_bytes = 0, nbytes = 0;
    const uint64_t rows = static_cast<uint64_t>(numel) / ne0;
    if (__builtin_mul_overflow(ne0 / be, static_cast<uint64_t>(block_bytes(info.dtype)),
                               &row_bytes) ||
        __builtin_mul_overflow(row_bytes, rows, &nbytes))
      p.fail(tn + ": byte size overflows");
    info.nbytes = static_cast<size_t>(nbytes);

    if (g.tensor_index_.count(info.name))
      p.fail("duplicate tensor name '" + printable(info.name) + "'");
    g.tensor_index_.emplace(info.name, g.tensors_.size());
    g.tensors_.push_back(std::move(info));
  }

  // Data section: starts at the aligned end of the header.
  const uint64_t header_end = p.pos();
  const uint64_t pad = (alignment - header_end % alignment) % alignment;
  uint64_t data_start = 0;
  if (__builtin_add_overflow(header_end, pad, &data_start)) p.fail("data section offset overflows");
  if (!g.tensors_.empty() && data_start > p.size())
    p.fail("data section starts at offset " + std::to_string(data_start) +
           ", past the end of the file (" + std::to_string(p.size()) + " bytes)");
  const uint64_t data_size = data_start <= p.size() ? p.size() - data_start : 0;
  for (GgufTensorInfo& info : g.tensors_) {
    const std::string tn = "tensor " + printable(info.name);
    if (info.offset % alignment != 0)
      p.fail(tn + " has data offset " + std::to_string(info.offset) +
             ", not a multiple of the alignment " + std::to_string(alignment));
    if (info.offset > data_size || info.nbytes > data_size - info.offset)
      p.fail(tn + " has data at offset " + std::to_string(info.offset) + " of " +
             std::to_string(info.nbytes) + " bytes, past the end of the data section (" +
             std::to_string(data_size) + " bytes)");
    info.data = p.at(static_cast<size_t>(data_start + info.offset));
  }
  check_no_overlap(p, g.tensors_);  // offset + nbytes cannot overflow: both are within the file
  return g;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {

[[noreturn]] void key_error(const std::string& path, const std::string& key,
                            const std::string& problem) {
  throw Error(path + ": metadata key '" + key + "' " + problem);
}

[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GgufValue& v,
                             const char* expected) {
  key_error(path, key, "has type " + type_description(v) + ", expected " + expected);
}

int64_t to_int(const std::string& path, const std::string& key, const GgufValue& v) {
  if (is_unsigned_type(v.type)) {
    if (v.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      key_error(path, key,
                "holds " + std::to_string(v.u) + ", which does not fit in a signed 64-bit integer");
    return static_cast<int64_t>(v.u);
  }
  return v.i;
}

double to_double(const GgufValue& v) {
  if (is_float_type(v.type)) return v.f;
  if (is_unsigned_type(v.type)) return static_cast<double>(v.u);
  return static_cast<double>(v.i);
}

}  // namespace

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) key_error(path(), key, "is missing");
  if (v->type != VT::STRING) wrong_type(path(), key, *v, "STRING");
  return v->s;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) key_error(path(), key, "is missing");
  if (!v->is_integer()) wrong_type(path(), key, *v, "an integer");
  return to_int(path(), key, *v);
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) key_error(path(), key, "is missing");
  if (!v->is_integer() && !v->is_float()) wrong_type(path(), key, *v, "a number");
  return to_double(*v);
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) key_error(path(), key, "is missing");
  if (v->type != VT::BOOL) wrong_type(path(), key, *v, "BOOL");
  return v->u != 0;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) key_error(path(), key, "is missing");
  if (v->type != VT::ARRAY || v->array_type != VT::STRING)
    wrong_type(path(), key, *v, "ARRAY of STRING");
  std::vector<std::string> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) out.push_back(e.s);
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) key_error(path(), key, "is missing");
  if (v->type != VT::ARRAY || !is_integer_type(v->array_type))
    wrong_type(path(), key, *v, "an ARRAY of integers");
  std::vector<int64_t> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) out.push_back(to_int(path(), key, e));
  return out;
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) key_error(path(), key, "is missing");
  if (v->type != VT::ARRAY || !(is_integer_type(v->array_type) || is_float_type(v->array_type)))
    wrong_type(path(), key, *v, "an ARRAY of numbers");
  std::vector<double> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) out.push_back(to_double(e));
  return out;
}

int64_t GgufFile::get_int_or(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double GgufFile::get_float_or(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

std::string GgufFile::get_string_or(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Tensor GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* info = find_tensor(name);
  if (!info) throw Error(path() + ": no tensor named '" + name + "'");
  std::array<int64_t, 4> shape{0, 0, 0, 0};
  const size_t n = info->ne.size();
  for (size_t d = 0; d < n; ++d) shape[d] = info->ne[n - 1 - d];
  return Tensor::view(info->dtype, shape, static_cast<int>(n), info->data, file_);
}

}  // namespace kvp

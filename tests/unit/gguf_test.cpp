// GGUF reader tests. The GGUF writer of support/gguf_builder.h builds valid v2/v3 files (every
// metadata type, a few tensors) and hostile variants of them; the reader must round-trip the valid
// ones exactly and reject every broken one with a kvp::Error that starts with the path.
#include "io/gguf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/tensor.h"
#include "support/gguf_builder.h"
#include "support/temp_dir.h"
#include "support/test_paths.h"

namespace kvp {
namespace {

namespace fs = std::filesystem;
using namespace test;  // the GGUF builder

// A file with one metadata entry of every type (arrays of every type, a nested array, empty
// array and string) and tensors of F32, F16, Q8_0 and Q4_1.
GgufBuilder full_builder(uint32_t version) {
  GgufBuilder g;
  g.version = version;
  g.kv("general.architecture", VT::STRING, enc_str("llama"));
  g.kv("t.u8", VT::U8, enc<uint8_t>(250));
  g.kv("t.i8", VT::I8, enc<int8_t>(-100));
  g.kv("t.u16", VT::U16, enc<uint16_t>(65000));
  g.kv("t.i16", VT::I16, enc<int16_t>(-32000));
  g.kv("t.u32", VT::U32, enc<uint32_t>(4000000000u));
  g.kv("t.i32", VT::I32, enc<int32_t>(-2000000000));
  g.kv("t.f32", VT::F32, enc<float>(0.15625f));
  g.kv("t.bool_true", VT::BOOL, enc<uint8_t>(1));
  g.kv("t.bool_false", VT::BOOL, enc<uint8_t>(0));
  g.kv("t.string", VT::STRING, enc_str(std::string("h\xc3\xa9llo w\0rld", 12)));
  g.kv("t.empty_string", VT::STRING, enc_str(""));
  g.kv("t.u64", VT::U64, enc<uint64_t>(18000000000000000000ull));
  g.kv("t.u64_small", VT::U64, enc<uint64_t>(123456789012345ull));
  g.kv("t.i64", VT::I64, enc<int64_t>(-9000000000000000000ll));
  g.kv("t.f64", VT::F64, enc<double>(-2.718281828459045));
  {
    Bytes e;
    for (uint8_t v : {1, 2, 255}) put(e, v);
    g.kv("a.u8", VT::ARRAY, enc_array(VT::U8, 3, e));
  }
  {
    Bytes e;
    for (int8_t v : {-1, 0, 127}) put(e, v);
    g.kv("a.i8", VT::ARRAY, enc_array(VT::I8, 3, e));
  }
  {
    Bytes e;
    for (uint16_t v : {7, 65535}) put(e, v);
    g.kv("a.u16", VT::ARRAY, enc_array(VT::U16, 2, e));
  }
  {
    Bytes e;
    for (int16_t v : {-7, 300}) put(e, v);
    g.kv("a.i16", VT::ARRAY, enc_array(VT::I16, 2, e));
  }
  {
    Bytes e;
    for (uint32_t v : {0u, 4294967295u}) put(e, v);
    g.kv("a.u32", VT::ARRAY, enc_array(VT::U32, 2, e));
  }
  {
    Bytes e;
    for (int32_t v : {-5, 5, 1 << 30}) put(e, v);
    g.kv("a.i32", VT::ARRAY, enc_array(VT::I32, 3, e));
  }
  {
    Bytes e;
    for (float v : {-1.5f, 0.0f, 3.25f, -1000.0f}) put(e, v);
    g.kv("a.f32", VT::ARRAY, enc_array(VT::F32, 4, e));
  }
  {
    Bytes e;
    for (uint8_t v : {1, 0, 1}) put(e, v);
    g.kv("a.bool", VT::ARRAY, enc_array(VT::BOOL, 3, e));
  }
  {
    Bytes e;
    for (const char* s : {"<s>", "", "\xe2\x96\x81the", "</s>"}) put_str(e, s);
    g.kv("a.string", VT::ARRAY, enc_array(VT::STRING, 4, e));
  }
  {
    Bytes e;
    for (uint64_t v : {uint64_t{1}, uint64_t{1} << 40}) put(e, v);
    g.kv("a.u64", VT::ARRAY, enc_array(VT::U64, 2, e));
  }
  {
    Bytes e;
    for (uint64_t v : {uint64_t{1}, ~uint64_t{0}}) put(e, v);
    g.kv("a.u64_big", VT::ARRAY, enc_array(VT::U64, 2, e));
  }
  {
    Bytes e;
    for (int64_t v : {std::numeric_limits<int64_t>::min(), int64_t{42}}) put(e, v);
    g.kv("a.i64", VT::ARRAY, enc_array(VT::I64, 2, e));
  }
  {
    Bytes e;
    for (double v : {1e300, -0.5}) put(e, v);
    g.kv("a.f64", VT::ARRAY, enc_array(VT::F64, 2, e));
  }
  g.kv("a.empty", VT::ARRAY, enc_array(VT::I32, 0, {}));
  {
    // [[1, 2], [], [3]] as an array of arrays of I32.
    Bytes e;
    Bytes a1, a3;
    put<int32_t>(a1, 1);
    put<int32_t>(a1, 2);
    put<int32_t>(a3, 3);
    append(e, enc_array(VT::I32, 2, a1));
    append(e, enc_array(VT::I32, 0, {}));
    append(e, enc_array(VT::I32, 1, a3));
    g.kv("a.nested", VT::ARRAY, enc_array(VT::ARRAY, 3, e));
  }
  {
    Bytes f32;
    for (int i = 0; i < 24; ++i) put<float>(f32, static_cast<float>(i) * 0.5f - 3.0f);
    g.tensor("f32.matrix", {8, 3}, kF32, f32);  // Tensor [3, 8]
  }
  {
    Bytes f16;
    for (int i = 0; i < 16; ++i) put<uint16_t>(f16, f32_to_f16(static_cast<float>(i) - 8.0f));
    g.tensor("f16.vector", {16}, kF16, f16);
  }
  g.tensor("q8.matrix", {64, 2}, kQ8_0);      // Tensor [2, 64], 2 blocks of 34 bytes per row
  g.tensor("q41.tensor", {32, 3, 2}, kQ4_1);  // Tensor [2, 3, 32]
  g.tensor("f32.4d", {2, 3, 1, 2}, kF32);     // Tensor [2, 1, 3, 2]
  return g;
}

// A smaller valid file for the byte-by-byte truncation and mutation tests.
GgufBuilder small_builder() {
  GgufBuilder g;
  g.kv("general.architecture", VT::STRING, enc_str("llama"));
  g.kv("general.alignment", VT::U32, enc<uint32_t>(32));
  g.kv("llama.block_count", VT::U32, enc<uint32_t>(2));
  g.kv("llama.rope.freq_base", VT::F32, enc<float>(10000.f));
  {
    Bytes e;
    for (const char* s : {"a", "bc", "def"}) put_str(e, s);
    g.kv("tokenizer.ggml.tokens", VT::ARRAY, enc_array(VT::STRING, 3, e));
  }
  {
    Bytes e, inner;
    put<uint16_t>(inner, 9);
    append(e, enc_array(VT::U16, 1, inner));
    g.kv("x.nested", VT::ARRAY, enc_array(VT::ARRAY, 1, e));
  }
  g.kv("x.flag", VT::BOOL, enc<uint8_t>(1));
  g.kv("x.i64", VT::I64, enc<int64_t>(-3));
  g.tensor("token_embd.weight", {32, 2}, kQ8_0);
  g.tensor("blk.0.attn_k.weight", {32, 2}, kQ4_1);
  g.tensor("output_norm.weight", {4}, kF32);
  g.tensor("x.f16", {3}, kF16);
  return g;
}

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_test_dir("kvp_gguf_test_"); }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes a new file (a fresh name each time: rewriting a file in place is slow on some
  // file systems) and returns its path.
  std::string write(const Bytes& bytes, const std::string& name = "") {
    const std::string path =
        (dir_ / (name.empty() ? "model" + std::to_string(counter_++) + ".gguf" : name)).string();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    out.close();
    EXPECT_TRUE(out.good());
    return path;
  }

  // Opening must fail with a kvp::Error that starts with the path and contains `needle`.
  void expect_error(const Bytes& bytes, const std::string& needle) {
    const std::string path = write(bytes);
    try {
      GgufFile g = GgufFile::open(path);
      ADD_FAILURE() << "expected an error containing \"" << needle << "\", but the file opened";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path, 0), 0u) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos)
          << "message: " << msg << "\nexpected: " << needle;
    }
  }

  // Opens a possibly broken file: it must either parse (and then every tensor view must lie
  // inside the file) or throw kvp::Error starting with the path. Returns whether it parsed.
  bool open_or_error(const std::string& path, size_t file_size) {
    try {
      GgufFile g = GgufFile::open(path);
      for (const auto& [key, value] : g.metadata()) {
        (void)key;
        (void)value;
      }
      for (const GgufTensorInfo& info : g.tensors()) {
        Tensor t = g.tensor(info.name);
        EXPECT_EQ(t.nbytes(), info.nbytes);
        EXPECT_GT(info.nbytes, 0u);
        const auto* p = static_cast<const uint8_t*>(t.data());
        volatile uint8_t sink = p[0];
        sink = p[info.nbytes - 1];  // ASan would flag a view past the mapping
        (void)sink;
        EXPECT_LE(info.nbytes, file_size);
      }
      return true;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path, 0), 0u) << msg;
      return false;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "non-kvp exception: " << e.what();
      return false;
    }
  }

  fs::path dir_;
  int counter_ = 0;
};

Bytes header(uint64_t tensor_count, uint64_t kv_count, uint32_t version = 3) {
  Bytes b{'G', 'G', 'U', 'F'};
  put<uint32_t>(b, version);
  put<uint64_t>(b, tensor_count);
  put<uint64_t>(b, kv_count);
  return b;
}

// ---- valid files --------------------------------------------------------------------------

class GgufRoundTrip : public GgufTest, public ::testing::WithParamInterface<uint32_t> {};

TEST_P(GgufRoundTrip, EveryMetadataTypeAndTensor) {
  GgufBuilder b = full_builder(GetParam());
  const Bytes bytes = b.build();
  const std::string path = write(bytes);
  GgufFile g = GgufFile::open(path);
  EXPECT_EQ(g.version(), GetParam());
  EXPECT_EQ(g.path(), path);
  EXPECT_EQ(g.metadata().size(), b.kvs.size());

  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_int("t.u8"), 250);
  EXPECT_EQ(g.get_int("t.i8"), -100);
  EXPECT_EQ(g.get_int("t.u16"), 65000);
  EXPECT_EQ(g.get_int("t.i16"), -32000);
  EXPECT_EQ(g.get_int("t.u32"), 4000000000ll);
  EXPECT_EQ(g.get_int("t.i32"), -2000000000);
  EXPECT_EQ(g.get_float("t.f32"), 0.15625);
  EXPECT_TRUE(g.get_bool("t.bool_true"));
  EXPECT_FALSE(g.get_bool("t.bool_false"));
  EXPECT_EQ(g.get_string("t.string"), std::string("h\xc3\xa9llo w\0rld", 12));
  EXPECT_EQ(g.get_string("t.empty_string"), "");
  EXPECT_EQ(g.find("t.u64")->u, 18000000000000000000ull);
  EXPECT_EQ(g.find("t.u64")->type, VT::U64);
  EXPECT_EQ(g.get_int("t.u64_small"), 123456789012345ll);
  EXPECT_EQ(g.get_int("t.i64"), -9000000000000000000ll);
  EXPECT_EQ(g.get_float("t.f64"), -2.718281828459045);

  // Value types as stored.
  EXPECT_EQ(g.find("t.u8")->type, VT::U8);
  EXPECT_EQ(g.find("t.i16")->type, VT::I16);
  EXPECT_EQ(g.find("t.f32")->type, VT::F32);
  EXPECT_EQ(g.find("t.bool_true")->type, VT::BOOL);
  EXPECT_TRUE(g.find("t.i8")->is_integer());
  EXPECT_FALSE(g.find("t.i8")->is_float());
  EXPECT_TRUE(g.find("t.f64")->is_float());
  EXPECT_FALSE(g.find("t.bool_true")->is_integer());
  EXPECT_FALSE(g.find("t.string")->is_integer());

  EXPECT_EQ(g.get_int_array("a.u8"), (std::vector<int64_t>{1, 2, 255}));
  EXPECT_EQ(g.get_int_array("a.i8"), (std::vector<int64_t>{-1, 0, 127}));
  EXPECT_EQ(g.get_int_array("a.u16"), (std::vector<int64_t>{7, 65535}));
  EXPECT_EQ(g.get_int_array("a.i16"), (std::vector<int64_t>{-7, 300}));
  EXPECT_EQ(g.get_int_array("a.u32"), (std::vector<int64_t>{0, 4294967295ll}));
  EXPECT_EQ(g.get_int_array("a.i32"), (std::vector<int64_t>{-5, 5, 1 << 30}));
  EXPECT_EQ(g.get_float_array("a.f32"), (std::vector<double>{-1.5, 0.0, 3.25, -1000.0}));
  EXPECT_EQ(g.get_float_array("a.i32"), (std::vector<double>{-5, 5, 1 << 30}));
  EXPECT_EQ(g.get_string_array("a.string"),
            (std::vector<std::string>{"<s>", "", "\xe2\x96\x81the", "</s>"}));
  EXPECT_EQ(g.get_int_array("a.u64"), (std::vector<int64_t>{1, int64_t{1} << 40}));
  EXPECT_EQ(g.get_int_array("a.i64"),
            (std::vector<int64_t>{std::numeric_limits<int64_t>::min(), 42}));
  EXPECT_EQ(g.get_float_array("a.f64"), (std::vector<double>{1e300, -0.5}));
  EXPECT_EQ(g.get_float_array("a.u64_big")[1], 18446744073709551615.0);
  EXPECT_TRUE(g.get_int_array("a.empty").empty());
  const GgufValue* bools = g.find("a.bool");
  ASSERT_NE(bools, nullptr);
  ASSERT_EQ(bools->array.size(), 3u);
  EXPECT_EQ(bools->array_type, VT::BOOL);
  EXPECT_EQ(bools->array[0].u, 1u);
  EXPECT_EQ(bools->array[1].u, 0u);

  const GgufValue* nested = g.find("a.nested");
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->type, VT::ARRAY);
  EXPECT_EQ(nested->array_type, VT::ARRAY);
  ASSERT_EQ(nested->array.size(), 3u);
  EXPECT_EQ(nested->array[0].array_type, VT::I32);
  ASSERT_EQ(nested->array[0].array.size(), 2u);
  EXPECT_EQ(nested->array[0].array[1].i, 2);
  EXPECT_TRUE(nested->array[1].array.empty());
  ASSERT_EQ(nested->array[2].array.size(), 1u);
  EXPECT_EQ(nested->array[2].array[0].i, 3);
  EXPECT_THROW(g.get_int_array("a.nested"), Error);

  // Tensors: infos in file order, data in place, shape reversed to row-major.
  ASSERT_EQ(g.tensors().size(), 5u);
  EXPECT_EQ(g.tensors()[0].name, "f32.matrix");
  EXPECT_EQ(g.tensors()[3].name, "q41.tensor");
  for (size_t i = 0; i < b.tensors.size(); ++i) {
    const TensorSpec& spec = b.tensors[i];
    const GgufTensorInfo* info = g.find_tensor(spec.name);
    ASSERT_NE(info, nullptr) << spec.name;
    EXPECT_EQ(info->nbytes, spec.data.size()) << spec.name;
    ASSERT_EQ(info->ne.size(), spec.ne.size());
    for (size_t d = 0; d < spec.ne.size(); ++d)
      EXPECT_EQ(static_cast<uint64_t>(info->ne[d]), spec.ne[d]);
    EXPECT_EQ(info->offset % 32, 0u);
    Tensor t = g.tensor(spec.name);
    EXPECT_EQ(t.dtype(), static_cast<DType>(spec.type));
    ASSERT_EQ(t.ndim(), static_cast<int>(spec.ne.size()));
    for (size_t d = 0; d < spec.ne.size(); ++d)
      EXPECT_EQ(static_cast<uint64_t>(t.dim(static_cast<int>(d))), spec.ne[spec.ne.size() - 1 - d]);
    EXPECT_EQ(t.nbytes(), spec.data.size());
    EXPECT_EQ(std::memcmp(t.data(), spec.data.data(), spec.data.size()), 0) << spec.name;
    const size_t file_offset =
        static_cast<size_t>(static_cast<const uint8_t*>(t.data()) - g.tensors()[0].data) +
        b.data_start;
    EXPECT_EQ(file_offset % 32, 0u) << spec.name;
  }
  Tensor m = g.tensor("f32.matrix");
  EXPECT_EQ(m.shape_string(), "[3, 8]");
  EXPECT_EQ(m.ptr<float>()[9], 1.5f);  // row 1, col 1: element 9
  EXPECT_EQ(g.tensor("q8.matrix").shape_string(), "[2, 64]");
  EXPECT_EQ(g.tensor("q8.matrix").row_bytes(), 68u);
  EXPECT_EQ(g.tensor("q41.tensor").shape_string(), "[2, 3, 32]");
  EXPECT_EQ(g.tensor("f32.4d").shape_string(), "[2, 1, 3, 2]");
  Tensor h = g.tensor("f16.vector");
  EXPECT_EQ(h.dtype(), DType::F16);
  EXPECT_EQ(f16_to_f32(h.ptr<uint16_t>()[3]), -5.0f);
}

INSTANTIATE_TEST_SUITE_P(Versions, GgufRoundTrip, ::testing::Values(2u, 3u));

TEST_F(GgufTest, TypedGetterErrorsNameTheKeyAndFile) {
  const std::string path = write(full_builder(3).build());
  GgufFile g = GgufFile::open(path);
  auto message = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  std::string m = message([&] { g.get_int("t.u64"); });  // 1.8e19 > INT64_MAX
  EXPECT_EQ(m.rfind(path, 0), 0u) << m;
  EXPECT_NE(m.find("t.u64"), std::string::npos) << m;
  EXPECT_NE(m.find("18000000000000000000"), std::string::npos) << m;
  m = message([&] { g.get_int("t.f32"); });
  EXPECT_NE(m.find("t.f32"), std::string::npos) << m;
  EXPECT_NE(m.find("F32"), std::string::npos) << m;
  m = message([&] { g.get_string("no.such.key"); });
  EXPECT_EQ(m.rfind(path, 0), 0u) << m;
  EXPECT_NE(m.find("no.such.key"), std::string::npos) << m;
  EXPECT_NE(m.find("missing"), std::string::npos) << m;
  m = message([&] { g.get_string_array("a.i32"); });
  EXPECT_NE(m.find("ARRAY of I32"), std::string::npos) << m;

  EXPECT_THROW(g.get_string("t.u8"), Error);
  EXPECT_THROW(g.get_bool("t.u8"), Error);
  EXPECT_THROW(g.get_int("t.bool_true"), Error);
  EXPECT_THROW(g.get_int("t.string"), Error);
  EXPECT_THROW(g.get_int("a.i32"), Error);
  EXPECT_THROW(g.get_float("t.string"), Error);
  EXPECT_THROW(g.get_int_array("a.f32"), Error);
  EXPECT_THROW(g.get_int_array("a.u64_big"), Error);  // element > INT64_MAX
  EXPECT_THROW(g.get_float_array("a.string"), Error);
  EXPECT_THROW(g.get_int_array("t.i32"), Error);

  EXPECT_EQ(g.get_float("t.i32"), -2000000000.0);
  EXPECT_EQ(g.get_float("t.u64"), 18000000000000000000.0);
  EXPECT_EQ(g.get_int_or("missing", 7), 7);
  EXPECT_EQ(g.get_int_or("t.u16", 7), 65000);
  EXPECT_THROW(g.get_int_or("t.string", 7), Error);
  EXPECT_EQ(g.get_float_or("missing", 0.25), 0.25);
  EXPECT_EQ(g.get_float_or("t.u8", 0.25), 250.0);
  EXPECT_THROW(g.get_float_or("t.bool_true", 0.25), Error);
  EXPECT_EQ(g.get_string_or("missing", "x"), "x");
  EXPECT_EQ(g.get_string_or("general.architecture", "x"), "llama");
  EXPECT_THROW(g.get_string_or("t.i8", "x"), Error);
  EXPECT_TRUE(g.has("t.i8"));
  EXPECT_FALSE(g.has("t.i9"));
  EXPECT_EQ(g.find("t.i9"), nullptr);

  m = message([&] { g.tensor("blk.99.ffn_up.weight"); });
  EXPECT_EQ(m.rfind(path, 0), 0u) << m;
  EXPECT_NE(m.find("blk.99.ffn_up.weight"), std::string::npos) << m;
  EXPECT_EQ(g.find_tensor("blk.99.ffn_up.weight"), nullptr);
}

TEST_F(GgufTest, Alignment64) {
  GgufBuilder b = full_builder(3);
  b.alignment = 64;
  b.kv("general.alignment", VT::U32, enc<uint32_t>(64));
  const Bytes bytes = b.build();
  ASSERT_EQ(b.data_start % 64, 0u);
  ASSERT_NE(b.header_end % 64, 0u) << "test layout should need padding";
  GgufFile g = GgufFile::open(write(bytes));
  const uint8_t* base = g.tensors()[0].data - b.data_start;
  for (size_t i = 0; i < b.tensors.size(); ++i) {
    const GgufTensorInfo& info = g.tensors()[i];
    EXPECT_EQ(info.offset % 64, 0u) << info.name;
    EXPECT_EQ(static_cast<size_t>(info.data - base) % 64, 0u) << info.name;
    EXPECT_EQ(std::memcmp(info.data, b.tensors[i].data.data(), info.nbytes), 0) << info.name;
  }
  // Offsets that are multiples of 32 but not 64 are rejected under alignment 64.
  GgufBuilder bad = full_builder(3);
  bad.alignment = 64;
  bad.kv("general.alignment", VT::U32, enc<uint32_t>(64));
  bad.tensors[1].offset = 64 * 2 + 32;
  expect_error(bad.build(), "not a multiple of the alignment 64");
}

TEST_F(GgufTest, AlignmentOtherIntegerTypesAccepted) {
  GgufBuilder b = small_builder();
  b.kvs.erase(b.kvs.begin() + 1);
  b.alignment = 128;
  b.kv("general.alignment", VT::U64, enc<uint64_t>(128));
  GgufFile g = GgufFile::open(write(b.build()));
  EXPECT_EQ(g.tensors()[1].offset % 128, 0u);
}

TEST_F(GgufTest, InvalidAlignments) {
  auto with_alignment = [](VT type, const Bytes& value) {
    GgufBuilder b = small_builder();
    b.kvs.erase(b.kvs.begin() + 1);  // drop the valid general.alignment
    b.kv("general.alignment", type, value);
    return b.build();
  };
  expect_error(with_alignment(VT::U32, enc<uint32_t>(0)), "not a nonzero power of two");
  expect_error(with_alignment(VT::U32, enc<uint32_t>(48)), "not a nonzero power of two");
  expect_error(with_alignment(VT::I32, enc<int32_t>(-32)), "negative");
  expect_error(with_alignment(VT::STRING, enc_str("32")), "general.alignment has type STRING");
  expect_error(with_alignment(VT::F32, enc<float>(32.f)), "general.alignment has type F32");
  // A power of two far larger than the file puts the data section past the end.
  expect_error(with_alignment(VT::U64, enc<uint64_t>(uint64_t{1} << 63)), "past the end");
}

TEST_F(GgufTest, ViewKeepsMappingAlive) {
  GgufBuilder b = small_builder();
  const Bytes bytes = b.build();
  Tensor t;
  {
    GgufFile g = GgufFile::open(write(bytes));
    t = g.tensor("output_norm.weight");
  }
  fs::remove_all(dir_);  // the mapping outlives both the GgufFile and the file's name
  ASSERT_EQ(t.numel(), 4);
  EXPECT_EQ(std::memcmp(t.data(), b.tensors[2].data.data(), 16), 0);
}

TEST_F(GgufTest, NoTensorsAndNoDataSection) {
  GgufBuilder b;
  b.kv("general.architecture", VT::STRING, enc_str("llama"));
  GgufFile g = GgufFile::open(write(b.build()));
  EXPECT_TRUE(g.tensors().empty());
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
}

TEST_F(GgufTest, FileSystemErrors) {
  auto message = [&](const std::string& path) -> std::string {
    try {
      GgufFile::open(path);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  const std::string missing = (dir_ / "missing.gguf").string();
  std::string m = message(missing);
  EXPECT_EQ(m.rfind(missing, 0), 0u) << m;
  EXPECT_NE(m.find("No such file"), std::string::npos) << m;
  m = message(dir_.string());
  EXPECT_EQ(m.rfind(dir_.string(), 0), 0u) << m;
  EXPECT_NE(m.find("directory"), std::string::npos) << m;
  const std::string empty = write({}, "empty.gguf");
  m = message(empty);
  EXPECT_EQ(m.rfind(empty, 0), 0u) << m;
  EXPECT_NE(m.find("empty"), std::string::npos) << m;
}

// ---- hostile files --------------------------------------------------------------------------

TEST_F(GgufTest, TruncationAtEveryOffsetThrows) {
  const Bytes bytes = small_builder().build();
  ASSERT_LT(bytes.size(), 4096u);
  const std::string path = write(bytes);
  ASSERT_TRUE(open_or_error(path, bytes.size()));
  for (size_t n = 0; n < bytes.size(); ++n) {
    const std::string p =
        write(Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)));
    try {
      GgufFile::open(p);
      ADD_FAILURE() << "file truncated to " << n << " of " << bytes.size() << " bytes opened";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind(p, 0), 0u) << e.what();
    } catch (...) {
      ADD_FAILURE() << "non-kvp exception at truncation " << n;
    }
    fs::remove(p);
  }
}

TEST_F(GgufTest, RandomMutationsParseOrThrow) {
  GgufBuilder b = small_builder();
  const Bytes bytes = b.build();
  const size_t header_end = b.header_end;
  std::mt19937_64 rng(20240601);
  const uint8_t interesting[] = {0x00, 0x01, 0x02, 0x04, 0x05, 0x0d, 0x1f,
                                 0x20, 0x3f, 0x40, 0x7f, 0x80, 0xfe, 0xff};
  const uint64_t interesting64[] = {0,
                                    1,
                                    5,
                                    31,
                                    32,
                                    33,
                                    0x7fffffffffffffffull,
                                    0x8000000000000000ull,
                                    ~uint64_t{0},
                                    uint64_t{1} << 32,
                                    uint64_t{1} << 60,
                                    4096};
  int parsed = 0, rejected = 0;
  const int iterations = 4000;
  for (int it = 0; it < iterations; ++it) {
    Bytes m = bytes;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      // Mostly inside the header, where the parser looks; sometimes anywhere.
      const size_t limit = (rng() % 5 == 0) ? m.size() : header_end;
      const size_t pos = rng() % limit;
      switch (rng() % 4) {
        case 0:
          m[pos] = static_cast<uint8_t>(rng());
          break;
        case 1:
          m[pos] = interesting[rng() % sizeof(interesting)];
          break;
        case 2:
          m[pos] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 3: {
          const uint64_t v = interesting64[rng() % (sizeof(interesting64) / sizeof(uint64_t))];
          for (size_t k = 0; k < 8 && pos + k < m.size(); ++k)
            m[pos + k] = static_cast<uint8_t>(v >> (8 * k));
          break;
        }
      }
    }
    if (rng() % 8 == 0) m.resize(rng() % m.size());  // and sometimes truncated too
    const std::string path = write(m);
    if (open_or_error(path, m.size()))
      ++parsed;
    else
      ++rejected;
    fs::remove(path);
    if (HasFailure()) {
      ADD_FAILURE() << "at mutation iteration " << it;
      break;
    }
  }
  // Both outcomes must occur, or the mutations are not exercising the parser.
  EXPECT_GT(parsed, 50);
  EXPECT_GT(rejected, 500);
  std::cout << "[          ] mutations: " << parsed << " parsed, " << rejected << " rejected\n";
}

TEST_F(GgufTest, BadMagic) {
  GgufBuilder b = small_builder();
  b.magic = "GGUX";
  expect_error(b.build(), "not a GGUF file");
  expect_error(Bytes{'G', 'G'}, "too small");
}

TEST_F(GgufTest, UnsupportedVersions) {
  GgufBuilder b = small_builder();
  b.version = 1;
  expect_error(b.build(), "GGUF version 1 is not supported");
  b.version = 4;
  expect_error(b.build(), "unsupported GGUF version 4");
  b.version = 0;
  expect_error(b.build(), "unsupported GGUF version 0");
  b.version = 0x03000000;  // version 3 written big-endian
  expect_error(b.build(), "big-endian");
}

TEST_F(GgufTest, HugeKeyLength) {
  Bytes b = header(0, 1);
  put<uint64_t>(b, uint64_t{1} << 62);
  b.resize(b.size() + 64, 'k');
  expect_error(b, "key of metadata entry 0 has length 4611686018427387904");
}

TEST_F(GgufTest, HugeStringValueLength) {
  GgufBuilder b = small_builder();
  Bytes v;
  put<uint64_t>(v, ~uint64_t{0});
  v.resize(v.size() + 16, 'x');
  b.kv("general.name", VT::STRING, v);
  expect_error(b.build(), "value of metadata key 'general.name' has length 18446744073709551615");
}

TEST_F(GgufTest, HugeArrayCounts) {
  {
    GgufBuilder b = small_builder();
    b.kv("tokenizer.ggml.scores", VT::ARRAY, enc_array(VT::F32, uint64_t{1} << 62, {}));
    expect_error(b.build(), "array 'tokenizer.ggml.scores' claims 4611686018427387904 elements");
  }
  {
    // Strings take at least 8 bytes each: 200 of them cannot fit in what is left.
    GgufBuilder b;
    Bytes e;
    for (int i = 0; i < 100; ++i) put_str(e, "");
    b.kv("tokenizer.ggml.tokens", VT::ARRAY, enc_array(VT::STRING, 200, e));
    expect_error(b.build(), "claims 200 elements of type STRING");
  }
  {
    // Within the remaining bytes, but over the total element budget.
    GgufBuilder b;
    b.kv("big", VT::ARRAY,
         enc_array(VT::U8, (uint64_t{1} << 22) + 1, Bytes((size_t{1} << 22) + 1, 0)));
    expect_error(b.build(), "more than 4194304 elements");
  }
}

TEST_F(GgufTest, DeeplyNestedArrays) {
  auto nested = [](int depth) {  // `depth` arrays, each the only element of the one outside it
    Bytes v;
    for (int d = 1; d < depth; ++d) {
      put<uint32_t>(v, static_cast<uint32_t>(VT::ARRAY));
      put<uint64_t>(v, 1);
    }
    append(v, enc_array(VT::U8, 0, {}));
    GgufBuilder b;
    b.kv("deep", VT::ARRAY, v);
    return b.build();
  };
  expect_error(nested(100000), "nests arrays deeper than");
  expect_error(nested(17), "nests arrays deeper than");
  const std::string path = write(nested(16));
  EXPECT_NO_THROW(GgufFile::open(path));
}

TEST_F(GgufTest, ImpossibleCounts) {
  {
    Bytes b = header(uint64_t{1} << 60, 0);
    b.resize(b.size() + 256, 0);
    expect_error(b, "tensor count 1152921504606846976 is impossible");
  }
  {
    Bytes b = header(0, uint64_t{1} << 60);
    b.resize(b.size() + 256, 0);
    expect_error(b, "metadata count 1152921504606846976 is impossible");
  }
  {
    // Each plausible alone, impossible together.
    Bytes b = header(8, 20);
    b.resize(b.size() + 8 * 32 + 10 * 13, 0);
    expect_error(b, "are impossible");
  }
}

TEST_F(GgufTest, BadValueTypes) {
  {
    GgufBuilder b = small_builder();
    b.kv("x.bad", static_cast<VT>(13), enc<uint32_t>(0));
    expect_error(b.build(), "type of metadata key 'x.bad' is 13, not a GGUF value type");
  }
  {
    GgufBuilder b = small_builder();
    b.kv("x.bad", VT::ARRAY, enc_array(static_cast<VT>(99), 1, enc<uint32_t>(0)));
    expect_error(b.build(), "element type of array 'x.bad' is 99");
  }
  {
    GgufBuilder b = small_builder();
    b.kv("x.bool", VT::BOOL, enc<uint8_t>(2));
    expect_error(b.build(), "BOOL with byte value 2");
  }
}

TEST_F(GgufTest, DuplicateKeyAndEmptyKey) {
  GgufBuilder b = small_builder();
  b.kv("llama.block_count", VT::U32, enc<uint32_t>(3));
  expect_error(b.build(), "duplicate metadata key 'llama.block_count'");
  GgufBuilder e = small_builder();
  e.kv("", VT::U32, enc<uint32_t>(3));
  expect_error(e.build(), "is empty");
}

TEST_F(GgufTest, TensorDims) {
  {
    GgufBuilder b = small_builder();
    b.tensor("five", {2, 2, 2, 2, 2}, kF32);
    expect_error(b.build(), "tensor five has 5 dims");
  }
  {
    GgufBuilder b = small_builder();
    b.tensor("zero", {}, kF32, Bytes(4, 0));
    expect_error(b.build(), "tensor zero has 0 dims");
  }
  {
    GgufBuilder b = small_builder();
    b.tensor("empty", {4, 0}, kF32, Bytes(4, 0));
    expect_error(b.build(), "tensor empty has invalid ne[1] = 0");
  }
  {
    GgufBuilder b = small_builder();
    b.tensor("neg", {4, ~uint64_t{0}}, kF32, Bytes(4, 0));
    expect_error(b.build(), "tensor neg has invalid ne[1] = 18446744073709551615");
  }
}

TEST_F(GgufTest, ShapeProductOverflow) {
  {
    GgufBuilder b = small_builder();
    b.tensor("big", {uint64_t{1} << 32, uint64_t{1} << 32, 4}, kF32, Bytes(4, 0));
    expect_error(b.build(), "tensor big: element count overflows");
  }
  {
    GgufBuilder b = small_builder();
    b.tensor("bytes", {uint64_t{1} << 62}, kF32,
             Bytes(4, 0));  // 2^62 elements fit, 2^64 bytes do not
    expect_error(b.build(), "tensor bytes: byte size overflows");
  }
  {
    GgufBuilder b = small_builder();
    b.tensor("large", {uint64_t{1} << 40, 2}, kF32, Bytes(4, 0));  // fits, but not in this file
    expect_error(b.build(), "tensor large has data at offset");
  }
}

TEST_F(GgufTest, RowNotAMultipleOfTheBlock) {
  GgufBuilder b = small_builder();
  b.tensor("blk.0.ffn_down.weight", {48, 2}, kQ8_0, Bytes(136, 0));
  expect_error(b.build(),
               "tensor blk.0.ffn_down.weight: row of 48 elements is not a multiple of the Q8_0 "
               "block size 32");
}

TEST_F(GgufTest, MisalignedOffset) {
  GgufBuilder b = small_builder();
  b.tensors[1].offset = 68 + 4;
  expect_error(b.build(),
               "tensor blk.0.attn_k.weight has data offset 72, not a multiple of the alignment 32");
}

TEST_F(GgufTest, OffsetPastEnd) {
  {
    GgufBuilder b = small_builder();
    b.tensors[2].offset = 1 << 20;
    expect_error(b.build(), "tensor output_norm.weight has data at offset 1048576");
  }
  {
    GgufBuilder b = small_builder();
    b.tensors[3].offset = 0x8000000000000000ull;  // aligned, but offset + size wraps
    expect_error(b.build(), "past the end of the data section");
  }
  {
    GgufBuilder b = small_builder();
    Bytes bytes = b.build();
    bytes.pop_back();  // the last tensor loses its last byte
    expect_error(bytes, "tensor x.f16 has data at offset");
  }
}

TEST_F(GgufTest, UnsupportedTensorTypesAreNamed) {
  {
    GgufBuilder b = small_builder();
    b.tensor("blk.0.attn_q.weight", {256, 2}, 13, Bytes(352, 0));
    expect_error(b.build(), "tensor blk.0.attn_q.weight has unsupported type Q5_K (13)");
  }
  {
    GgufBuilder b = small_builder();
    b.tensor("w", {4}, 1000, Bytes(16, 0));
    expect_error(b.build(), "tensor w has unsupported type unknown (1000)");
  }
  {
    GgufBuilder b = small_builder();
    b.tensor("w", {4}, 28, Bytes(32, 0));
    expect_error(b.build(), "tensor w has unsupported type F64 (28)");
  }
}

TEST_F(GgufTest, DuplicateTensorName) {
  GgufBuilder b = small_builder();
  b.tensor("output_norm.weight", {4}, kF32);
  expect_error(b.build(), "duplicate tensor name 'output_norm.weight'");
}

TEST_F(GgufTest, EmptyTensorName) {
  GgufBuilder b = small_builder();
  b.tensor("", {4}, kF32);
  expect_error(b.build(), "name of tensor 4 is empty");
}

TEST_F(GgufTest, UnprintableNamesAreEscapedInMessages) {
  GgufBuilder b = small_builder();
  b.tensor(std::string("bad\x1b[2J\xff", 8), {4}, 13, Bytes(16, 0));
  expect_error(b.build(), "tensor bad\\x1b[2J\\xff has unsupported type");
}

TEST_F(GgufTest, LongNamesAreCutInMessages) {
  GgufBuilder b = small_builder();
  b.tensor(std::string(5000, 'n'), {4}, 13, Bytes(16, 0));
  expect_error(b.build(), "tensor " + std::string(80, 'n') + "... has unsupported type");
}

// Two tensors whose bytes overlap: at least one of them is not what its writer stored.
TEST_F(GgufTest, OverlappingTensorData) {
  {  // output_norm.weight (16 bytes) placed inside blk.0.attn_k.weight
    GgufBuilder b = small_builder();
    b.tensors[2].offset = 96;
    expect_error(b.build(),
                 "tensors blk.0.attn_k.weight (data bytes [96, 136)) and output_norm.weight (data "
                 "bytes [96, 112)) overlap");
  }
  {  // a tensor inside one listed two entries before it
    GgufBuilder b;
    b.tensor("big", {64}, kF32).tensor("a", {4}, kF32).tensor("c", {4}, kF32);
    b.tensors[1].offset = 288;
    b.tensors[2].offset = 64;
    expect_error(b.build(),
                 "tensors big (data bytes [0, 256)) and c (data bytes [64, 80)) overlap");
  }
  {  // the same bytes under two names
    GgufBuilder b = small_builder();
    b.tensors[3].offset = 160;
    expect_error(b.build(), "tensors output_norm.weight (data bytes [160, 176)) and x.f16");
  }
}

// ---- the default model --------------------------------------------------------------------

TEST(GgufDefaultModel, SmolLM2Q4_1) {
  KVP_REQUIRE_DEFAULT_MODEL();
  const std::string path = KVP_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  const auto start = std::chrono::steady_clock::now();
  GgufFile g = GgufFile::open(path);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_int("llama.block_count"), 30);
  EXPECT_EQ(g.get_int("llama.embedding_length"), 576);
  EXPECT_EQ(g.tensors().size(), 272u);
  Tensor emb = g.tensor("token_embd.weight");
  EXPECT_EQ(emb.dtype(), DType::Q8_0);
  EXPECT_EQ(emb.shape_string(), "[49152, 576]");
  Tensor k = g.tensor("blk.0.attn_k.weight");
  EXPECT_EQ(k.dtype(), DType::Q4_1);
  EXPECT_EQ(k.shape_string(), "[192, 576]");
  EXPECT_EQ(k.nbytes(), 192u * 576 / 32 * 20);
  const auto tokens = g.get_string_array("tokenizer.ggml.tokens");
  EXPECT_EQ(tokens.size(), 49152u);
  // Tensor data lies inside the file, aligned.
  const uint64_t alignment = static_cast<uint64_t>(g.get_int_or("general.alignment", 32));
  const uintptr_t first = reinterpret_cast<uintptr_t>(g.tensors()[0].data);
  for (const GgufTensorInfo& info : g.tensors()) {
    EXPECT_EQ((reinterpret_cast<uintptr_t>(info.data) - first + g.tensors()[0].offset) % alignment,
              0u);
  }
  std::cout << "[          ] opened the default model in " << ms << " ms\n";
}

}  // namespace
}  // namespace kvp

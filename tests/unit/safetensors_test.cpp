// Safetensors reader tests: valid single files and sharded model directories round-trip;
// every broken header, offset, size and index is rejected with a kvp::Error that names the
// file; truncations and random mutations never crash.
#include "io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/tensor.h"
#include "support/temp_dir.h"

namespace kvp {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Bytes = std::vector<uint8_t>;

size_t elem_size(const std::string& dtype) {
  return dtype == "F32" ? 4 : 2;
}

struct StTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  Bytes data;  // filled with a pattern when empty and the shape is non-empty
};

StTensor make(const std::string& name, const std::string& dtype, std::vector<int64_t> shape) {
  StTensor t{name, dtype, std::move(shape), {}};
  size_t n = 1;
  for (int64_t d : t.shape) n *= static_cast<size_t>(d);
  t.data.resize(n * elem_size(dtype));
  for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<uint8_t>(i * 11 + name.size());
  return t;
}

// A file from a header text (padded with spaces to a multiple of 8 when pad is set) and data.
Bytes raw_file(std::string header, const Bytes& data, bool pad = true) {
  if (pad)
    while ((8 + header.size()) % 8 != 0) header += ' ';
  const uint64_t n = header.size();
  Bytes b(8 + header.size() + data.size());
  std::memcpy(b.data(), &n, 8);
  std::copy(header.begin(), header.end(), b.begin() + 8);
  std::copy(data.begin(), data.end(), b.begin() + 8 + static_cast<std::ptrdiff_t>(header.size()));
  return b;
}

// A valid file: tensors laid out back to back in the given order. Returns the header too.
Bytes build(const std::vector<StTensor>& ts, json* header_out = nullptr, bool metadata = true) {
  json h = json::object();
  if (metadata) h["__metadata__"] = {{"format", "pt"}};
  Bytes data;
  for (const StTensor& t : ts) {
    const uint64_t begin = data.size();
    data.insert(data.end(), t.data.begin(), t.data.end());
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  if (header_out) *header_out = h;
  return raw_file(h.dump(), data);
}

std::vector<StTensor> sample_tensors() {
  std::vector<StTensor> ts;
  StTensor f32 = make("model.embed_tokens.weight", "F32", {3, 4});
  for (int i = 0; i < 12; ++i) {
    const float v = static_cast<float>(i) - 5.5f;
    std::memcpy(f32.data.data() + 4 * i, &v, 4);
  }
  ts.push_back(f32);
  StTensor f16 = make("model.norm.weight", "F16", {4});
  for (int i = 0; i < 4; ++i) {
    const uint16_t h = f32_to_f16(static_cast<float>(i) * 0.25f);
    std::memcpy(f16.data.data() + 2 * i, &h, 2);
  }
  ts.push_back(f16);
  ts.push_back(make("model.layers.0.self_attn.q_proj.weight", "BF16", {2, 2, 2}));
  ts.push_back(make("four.dims", "F32", {1, 2, 1, 3}));
  ts.push_back(make("scalar", "F32", {}));
  ts.push_back(make("empty", "F16", {0, 4}));
  return ts;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_test_dir("kvp_st_test_"); }
  void TearDown() override { fs::remove_all(dir_); }

  // A fresh file name each time (rewriting in place is slow on some file systems).
  std::string write(const Bytes& bytes, const std::string& name = "") {
    const std::string path =
        (dir_ / (name.empty() ? "t" + std::to_string(counter_++) + ".safetensors" : name)).string();
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    out.close();
    EXPECT_TRUE(out.good());
    return path;
  }
  std::string write_text(const std::string& text, const std::string& name) {
    return write(Bytes(text.begin(), text.end()), name);
  }

  static std::string error_of(const std::function<void()>& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }

  void expect_error(const Bytes& bytes, const std::string& needle) {
    const std::string path = write(bytes);
    const std::string msg = error_of([&] { SafetensorsFile::open(path); });
    EXPECT_EQ(msg.rfind(path, 0), 0u) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos)
        << "message: " << msg << "\nexpected: " << needle;
  }
  void expect_header_error(const std::string& header, const Bytes& data,
                           const std::string& needle) {
    expect_error(raw_file(header, data), needle);
  }

  bool open_or_error(const std::string& path, size_t file_size) {
    try {
      SafetensorsFile f = SafetensorsFile::open(path);
      for (const std::string& name : f.names()) {
        Tensor t = f.tensor(name);
        EXPECT_LE(t.nbytes(), file_size);
        if (t.nbytes() > 0) {
          const auto* p = static_cast<const uint8_t*>(t.data());
          volatile uint8_t sink = p[0];
          sink = p[t.nbytes() - 1];
          (void)sink;
        }
      }
      return true;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind(path, 0), 0u) << e.what();
      return false;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "non-kvp exception: " << e.what();
      return false;
    }
  }

  fs::path dir_;
  int counter_ = 0;
};

// ---- valid files --------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTrip) {
  const auto ts = sample_tensors();
  SafetensorsFile f = SafetensorsFile::open(write(build(ts)));
  std::vector<std::string> expected;
  for (const StTensor& t : ts) expected.push_back(t.name);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(f.names(), expected);  // __metadata__ is not a tensor
  EXPECT_FALSE(f.has("__metadata__"));
  for (const StTensor& t : ts) {
    ASSERT_TRUE(f.has(t.name));
    Tensor x = f.tensor(t.name);
    EXPECT_EQ(dtype_name(x.dtype()), t.dtype) << t.name;
    if (t.shape.empty()) {
      EXPECT_EQ(x.shape_string(), "[1]");
    } else {
      ASSERT_EQ(x.ndim(), static_cast<int>(t.shape.size()));
      for (size_t d = 0; d < t.shape.size(); ++d)
        EXPECT_EQ(x.dim(static_cast<int>(d)), t.shape[d]) << t.name;
    }
    EXPECT_EQ(x.nbytes(), t.data.size()) << t.name;
    if (!t.data.empty()) {
      EXPECT_EQ(std::memcmp(x.data(), t.data.data(), t.data.size()), 0) << t.name;
    }
    EXPECT_EQ(reinterpret_cast<uintptr_t>(x.data()) % elem_size(t.dtype), 0u) << t.name;
  }
  Tensor e = f.tensor("model.embed_tokens.weight");
  EXPECT_EQ(e.shape_string(), "[3, 4]");
  EXPECT_EQ(e.ptr<float>()[5], -0.5f);
  EXPECT_EQ(f16_to_f32(f.tensor("model.norm.weight").ptr<uint16_t>()[3]), 0.75f);
  EXPECT_EQ(f.tensor("empty").numel(), 0);
}

TEST_F(SafetensorsTest, HeaderWithoutMetadataAndUnpaddedF16) {
  // No __metadata__, no padding: F16/BF16 data only needs 2-byte alignment.
  const StTensor t = make("w", "BF16", {3});
  json h = {{"w", {{"dtype", "BF16"}, {"shape", {3}}, {"data_offsets", {0, 6}}}}};
  std::string text = h.dump();
  if (text.size() % 2) text += ' ';
  SafetensorsFile f = SafetensorsFile::open(write(raw_file(text, t.data, false)));
  EXPECT_EQ(f.tensor("w").dtype(), DType::BF16);
  EXPECT_EQ(std::memcmp(f.tensor("w").data(), t.data.data(), 6), 0);
}

TEST_F(SafetensorsTest, MissingTensorAndViewLifetime) {
  const auto ts = sample_tensors();
  const std::string path = write(build(ts));
  Tensor kept;
  {
    SafetensorsFile f = SafetensorsFile::open(path);
    const std::string msg = error_of([&] { f.tensor("lm_head.weight"); });
    EXPECT_EQ(msg.rfind(path, 0), 0u) << msg;
    EXPECT_NE(msg.find("lm_head.weight"), std::string::npos) << msg;
    kept = f.tensor("model.embed_tokens.weight");
  }
  fs::remove_all(dir_);
  EXPECT_EQ(std::memcmp(kept.data(), ts[0].data.data(), ts[0].data.size()), 0);
}

// ---- hostile files --------------------------------------------------------------------------

TEST_F(SafetensorsTest, TooSmallAndBadHeaderLength) {
  expect_error(Bytes{1, 0, 0}, "too small");
  {
    Bytes b = raw_file("{}", {});
    const uint64_t n = 1000;
    std::memcpy(b.data(), &n, 8);
    expect_error(b, "header length 1000 runs past the end of the file");
  }
  {
    Bytes b = raw_file("{}", Bytes(64, 0));
    const uint64_t n = 200'000'000;
    std::memcpy(b.data(), &n, 8);
    expect_error(b, "header length 200000000 exceeds the limit");
  }
  {
    Bytes b = raw_file("{}", {});
    const uint64_t n = ~uint64_t{0};
    std::memcpy(b.data(), &n, 8);
    expect_error(b, "exceeds the limit");
  }
}

TEST_F(SafetensorsTest, BadJson) {
  const std::string path =
      write(raw_file("{\"a\": {\"dtype\": \"F32\",\n  \"shape\": [1,}", Bytes(4, 0)));
  const std::string msg = error_of([&] { SafetensorsFile::open(path); });
  EXPECT_EQ(msg.rfind(path, 0), 0u) << msg;
  EXPECT_NE(msg.find("invalid header JSON"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
  expect_header_error("", {}, "invalid header JSON");
  expect_header_error("[1, 2]", {}, "header is not a JSON object");
  expect_header_error(std::string(100, '[') + std::string(100, ']'), {}, "nests deeper than 64");
  expect_header_error("{\"a\": \"[[[[\"}", {},
                      "header entry is not a JSON object");  // brackets in strings don't count
}

TEST_F(SafetensorsTest, BadEntries) {
  const Bytes d16(16, 0);
  auto entry = [](const std::string& body) { return "{\"w\": {" + body + "}}"; };
  expect_header_error(entry("\"shape\": [4], \"data_offsets\": [0, 16]"), d16,
                      "tensor 'w': missing or non-string \"dtype\"");
  expect_header_error(entry("\"dtype\": 5, \"shape\": [4], \"data_offsets\": [0, 16]"), d16,
                      "non-string \"dtype\"");
  expect_header_error(entry("\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [0, 16]"), d16,
                      "tensor 'w' has unsupported dtype I64");
  expect_header_error(entry("\"dtype\": \"F8_E4M3\", \"shape\": [16], \"data_offsets\": [0, 16]"),
                      d16, "tensor 'w' has unsupported dtype F8_E4M3");
  expect_header_error(entry("\"dtype\": \"F32\", \"data_offsets\": [0, 16]"), d16,
                      "missing or non-array \"shape\"");
  expect_header_error(
      entry("\"dtype\": \"F32\", \"shape\": [1,1,1,1,4], \"data_offsets\": [0, 16]"), d16,
      "tensor 'w' has 5 dims");
  expect_header_error(entry("\"dtype\": \"F32\", \"shape\": [-4], \"data_offsets\": [0, 16]"), d16,
                      "shape[0] is not a non-negative integer");
  expect_header_error(entry("\"dtype\": \"F32\", \"shape\": [4.0], \"data_offsets\": [0, 16]"), d16,
                      "shape[0] is not a non-negative integer");
  expect_header_error(entry("\"dtype\": \"F32\", \"shape\": [\"4\"], \"data_offsets\": [0, 16]"),
                      d16, "shape[0] is not a non-negative integer");
  expect_header_error(
      entry("\"dtype\": \"F32\", \"shape\": [1, 99999999999999999999], \"data_offsets\": [0, 16]"),
      d16, "shape[1] is not a non-negative integer");
  expect_header_error(
      entry("\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 16]"),
      d16, "element count overflows");
  expect_header_error(
      entry("\"dtype\": \"F32\", \"shape\": [4611686018427387904], \"data_offsets\": [0, 16]"), d16,
      "byte size overflows");
  expect_header_error(entry("\"dtype\": \"F32\", \"shape\": [4]"), d16,
                      "\"data_offsets\" must be [begin, end]");
  expect_header_error(entry("\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0]"), d16,
                      "\"data_offsets\" must be");
  expect_header_error(entry("\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16, 32]"),
                      d16, "\"data_offsets\" must be");
  expect_header_error(entry("\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [-16, 0]"), d16,
                      "\"data_offsets\" must be");
  expect_header_error(entry("\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [16, 0]"), d16,
                      "are reversed");
  expect_header_error(entry("\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]"), d16,
                      "data_offsets [8, 24] run past the end of the data (16 bytes)");
  expect_header_error(
      entry("\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 18446744073709551615]"), d16,
      "\"data_offsets\" must be");
  expect_header_error(entry("\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 16]"), d16,
                      "data_offsets span 16 bytes but shape and dtype F32 need 12");
  expect_header_error(entry("\"dtype\": \"F16\", \"shape\": [2, 4], \"data_offsets\": [0, 8]"), d16,
                      "data_offsets span 8 bytes but shape and dtype F16 need 16");
  expect_header_error(entry("\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [2, 14]"), d16,
                      "is not aligned");
  expect_header_error(
      "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
      "\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
      d16, "header lists tensor 'w' twice");
  expect_header_error("{\"w\": [1, 2]}", d16, "tensor 'w': header entry is not a JSON object");
}

// Two tensors over the same bytes: at least one of them is not what its writer stored.
TEST_F(SafetensorsTest, OverlappingDataOffsets) {
  const Bytes d32(32, 0);
  auto two = [](const std::string& a, const std::string& b) {
    return "{\"x\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": " + a +
           "}, \"y\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": " + b + "}}";
  };
  expect_header_error(two("[0, 16]", "[8, 24]"), d32,
                      "tensors 'x' (data_offsets [0, 16]) and 'y' (data_offsets [8, 24]) overlap");
  expect_header_error(two("[8, 24]", "[0, 16]"), d32,
                      "tensors 'y' (data_offsets [0, 16]) and 'x' (data_offsets [8, 24]) overlap");
  expect_header_error(two("[4, 20]", "[4, 20]"), d32, "overlap");
  // Touching ranges and an empty tensor inside another's bytes share no byte.
  EXPECT_NO_THROW(SafetensorsFile::open(write(raw_file(two("[0, 16]", "[16, 32]"), d32))));
  const std::string with_empty =
      "{\"x\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}, "
      "\"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 8]}}";
  EXPECT_NO_THROW(SafetensorsFile::open(write(raw_file(with_empty, d32))));
}

// An unterminated string in a long header: the message quotes a short excerpt, not the header.
TEST_F(SafetensorsTest, InvalidHeaderJsonIsQuotedShort) {
  const std::string header = "{\"w\": \"" + std::string(1 << 20, 'x') + "\x1b";
  const std::string path = write(raw_file(header, {}, false));
  const std::string msg = error_of([&] { SafetensorsFile::open(path); });
  EXPECT_NE(msg.find("invalid header JSON"), std::string::npos) << msg.substr(0, 400);
  EXPECT_LT(msg.size(), 500u) << msg.substr(0, 400);
  EXPECT_EQ(msg.find('\x1b'), std::string::npos) << msg.substr(0, 400);
}

TEST_F(SafetensorsTest, UnprintableNamesAreEscapedInMessages) {
  expect_header_error(
      "{\"w\\u001b[2J\\u202e\": {\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [0, 16]}}",
      Bytes(16, 0), "tensor 'w\\x1b[2J\\xe2\\x80\\xae' has unsupported dtype I64");
}

TEST_F(SafetensorsTest, TruncationAtEveryOffsetThrows) {
  const Bytes bytes = build(sample_tensors());
  for (size_t n = 0; n < bytes.size(); ++n) {
    const std::string p =
        write(Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)));
    try {
      SafetensorsFile::open(p);
      ADD_FAILURE() << "file truncated to " << n << " of " << bytes.size() << " bytes opened";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind(p, 0), 0u) << e.what();
    } catch (...) {
      ADD_FAILURE() << "non-kvp exception at truncation " << n;
    }
    fs::remove(p);
  }
}

TEST_F(SafetensorsTest, RandomMutationsParseOrThrow) {
  const Bytes bytes = build(sample_tensors());
  uint64_t header_end = 0;
  std::memcpy(&header_end, bytes.data(), 8);
  header_end += 8;
  std::mt19937_64 rng(7);
  const char tokens[] = "{}[]\",:0123456789-.eE \\ntfx";
  int parsed = 0, rejected = 0;
  for (int it = 0; it < 3000; ++it) {
    Bytes m = bytes;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t limit = (rng() % 6 == 0) ? m.size() : header_end;  // mostly the header
      const size_t pos = rng() % limit;
      switch (rng() % 3) {
        case 0:
          m[pos] = static_cast<uint8_t>(rng());
          break;
        case 1:
          m[pos] = static_cast<uint8_t>(tokens[rng() % (sizeof(tokens) - 1)]);
          break;
        case 2:
          m[pos] = static_cast<uint8_t>('0' + rng() % 10);
          break;  // digits: offsets and shapes change
      }
    }
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
  EXPECT_GT(parsed, 100);
  EXPECT_GT(rejected, 500);
  std::cout << "[          ] mutations: " << parsed << " parsed, " << rejected << " rejected\n";
}

// ---- model directories --------------------------------------------------------------------

TEST_F(SafetensorsTest, OpenDirSingleFile) {
  const auto ts = sample_tensors();
  write(build(ts), "m/model.safetensors");
  write_text("{\"architectures\": [\"LlamaForCausalLM\"]}", "m/config.json");
  SafetensorsModel m = SafetensorsModel::open_dir((dir_ / "m").string());
  EXPECT_EQ(m.names().size(), ts.size());
  EXPECT_TRUE(m.has("model.norm.weight"));
  EXPECT_FALSE(m.has("lm_head.weight"));
  EXPECT_EQ(m.tensor("model.embed_tokens.weight").shape_string(), "[3, 4]");
  const std::string msg = error_of([&] { m.tensor("lm_head.weight"); });
  EXPECT_EQ(msg.rfind((dir_ / "m").string(), 0), 0u) << msg;
  EXPECT_NE(msg.find("lm_head.weight"), std::string::npos) << msg;
}

TEST_F(SafetensorsTest, OpenDirSharded) {
  const auto ts = sample_tensors();
  const std::vector<StTensor> a(ts.begin(), ts.begin() + 3), b(ts.begin() + 3, ts.end());
  write(build(a), "m/model-00001-of-00002.safetensors");
  write(build(b), "m/model-00002-of-00002.safetensors");
  json index = {{"metadata", {{"total_size", 1234}}}, {"weight_map", json::object()}};
  for (const auto& t : a) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : b) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  write_text(index.dump(2), "m/model.safetensors.index.json");
  // A stray model.safetensors is ignored when the index exists.
  write(build({make("stray", "F32", {1})}), "m/model.safetensors");
  SafetensorsModel m = SafetensorsModel::open_dir((dir_ / "m").string());
  EXPECT_EQ(m.names().size(), ts.size());
  EXPECT_FALSE(m.has("stray"));
  for (const auto& t : ts) {
    ASSERT_TRUE(m.has(t.name)) << t.name;
    Tensor x = m.tensor(t.name);
    EXPECT_EQ(x.nbytes(), t.data.size());
    if (!t.data.empty()) {
      EXPECT_EQ(std::memcmp(x.data(), t.data.data(), t.data.size()), 0) << t.name;
    }
  }
}

TEST_F(SafetensorsTest, OpenDirErrors) {
  const std::string m = (dir_ / "m").string();
  const std::string index = m + "/model.safetensors.index.json";
  auto open_msg = [&] { return error_of([&] { SafetensorsModel::open_dir(m); }); };

  std::string msg = open_msg();
  EXPECT_EQ(msg.rfind(m, 0), 0u) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;

  fs::create_directories(m);
  msg = open_msg();
  EXPECT_NE(msg.find("no model.safetensors or model.safetensors.index.json"), std::string::npos)
      << msg;

  write_text("x", "m/file");
  msg = error_of([&] { SafetensorsModel::open_dir(m + "/file"); });
  EXPECT_NE(msg.find("not a directory"), std::string::npos) << msg;

  write(build({make("a", "F32", {2})}), "m/model-1.safetensors");
  auto with_index = [&](const std::string& text) {
    write_text(text, "m/model.safetensors.index.json");
    return open_msg();
  };
  msg = with_index("{\"weight_map\": {\"a\": \"model-2.safetensors\"}}");
  EXPECT_EQ(msg.rfind(m + "/model-2.safetensors", 0), 0u) << msg;
  EXPECT_NE(msg.find("No such file"), std::string::npos) << msg;
  EXPECT_NE(msg.find(index), std::string::npos) << msg;

  msg = with_index("{\"weight_map\": {\"a\": \"../model-1.safetensors\"}}");
  EXPECT_EQ(msg.rfind(index, 0), 0u) << msg;
  EXPECT_NE(msg.find("maps to shard '../model-1.safetensors', which is not a plain file name"),
            std::string::npos)
      << msg;
  msg = with_index("{\"weight_map\": {\"a\": \"..\"}}");
  EXPECT_NE(msg.find("not a plain file name"), std::string::npos) << msg;
  msg = with_index("{\"weight_map\": {\"a\": \"/etc/passwd\"}}");
  EXPECT_NE(msg.find("not a plain file name"), std::string::npos) << msg;
  msg = with_index("{\"weight_map\": {\"a\": \"sub/model-1.safetensors\"}}");
  EXPECT_NE(msg.find("not a plain file name"), std::string::npos) << msg;
  msg = with_index("{\"weight_map\": {\"a\": \"\"}}");
  EXPECT_NE(msg.find("not a plain file name"), std::string::npos) << msg;
  msg = with_index("{\"weight_map\": {\"a\": 3}}");
  EXPECT_NE(msg.find("weight_map entry for 'a' is not a string"), std::string::npos) << msg;
  msg = with_index("{\"metadata\": {}}");
  EXPECT_EQ(msg.rfind(index, 0), 0u) << msg;
  EXPECT_NE(msg.find("no \"weight_map\" object"), std::string::npos) << msg;
  msg = with_index("[]");
  EXPECT_NE(msg.find("no \"weight_map\" object"), std::string::npos) << msg;
  msg = with_index("{\"weight_map\": {}}");
  EXPECT_NE(msg.find("\"weight_map\" is empty"), std::string::npos) << msg;
  msg = with_index("{\"weight_map\": {\"a\": ");
  EXPECT_EQ(msg.rfind(index, 0), 0u) << msg;
  EXPECT_NE(msg.find("invalid JSON"), std::string::npos) << msg;
  msg = with_index(
      "{\"weight_map\": {\"a\": \"model-1.safetensors\", \"b\": \"model-1.safetensors\"}}");
  EXPECT_EQ(msg.rfind(m + "/model-1.safetensors", 0), 0u) << msg;
  EXPECT_NE(msg.find("has no tensor 'b'"), std::string::npos) << msg;
  // A corrupt shard: its own error, plus which index listed it.
  write(Bytes{1, 2, 3}, "m/model-1.safetensors");
  msg = with_index("{\"weight_map\": {\"a\": \"model-1.safetensors\"}}");
  EXPECT_EQ(msg.rfind(m + "/model-1.safetensors", 0), 0u) << msg;
  EXPECT_NE(msg.find("too small"), std::string::npos) << msg;
}

// ---- the tiny test models (tests/models, made by tools/reference) ---------------------------

namespace tiny {

// Every tensor's bytes, read independently of the reader (plain stream reads and the header).
void expect_bytes_match_file(const SafetensorsModel& m, const fs::path& dir) {
  size_t checked = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const json h = json::parse(bytes.substr(8, n));
    for (const auto& [name, e] : h.items()) {
      if (name == "__metadata__") continue;
      ASSERT_TRUE(m.has(name)) << name;
      const Tensor t = m.tensor(name);
      const size_t begin = e["data_offsets"][0], end = e["data_offsets"][1];
      ASSERT_EQ(t.nbytes(), end - begin) << name;
      EXPECT_EQ(std::memcmp(t.data(), bytes.data() + 8 + n + begin, end - begin), 0) << name;
      EXPECT_EQ(dtype_name(t.dtype()), e["dtype"].get<std::string>()) << name;
      ++checked;
    }
  }
  EXPECT_EQ(checked, m.names().size());
}

struct Dims {
  int64_t hidden, inter, layers, heads, kv_heads, head_dim, vocab;
};
Dims dims_of(const fs::path& dir) {
  std::ifstream in(dir / "config.json");
  const json c = json::parse(in);
  Dims d{};
  d.hidden = c.at("hidden_size");
  d.inter = c.at("intermediate_size");
  d.layers = c.at("num_hidden_layers");
  d.heads = c.at("num_attention_heads");
  d.kv_heads = c.at("num_key_value_heads");
  d.vocab = c.at("vocab_size");
  d.head_dim = c.contains("head_dim") && c["head_dim"].is_number() ? c["head_dim"].get<int64_t>()
                                                                   : d.hidden / d.heads;
  return d;
}

std::string shape(std::initializer_list<int64_t> s) {
  std::string out = "[";
  for (int64_t x : s) out += (out.size() > 1 ? ", " : "") + std::to_string(x);
  return out + "]";
}

fs::path model_dir(const char* name) {
  return fs::path(KVP_SOURCE_DIR) / "tests/models" / name;
}

}  // namespace tiny

TEST(TinyModels, LlamaShardedF32) {
  const fs::path dir = tiny::model_dir("tiny-llama");
  if (!fs::exists(dir / "model.safetensors.index.json"))
    GTEST_FAIL() << "tests/models/tiny-llama is missing (committed fixture)";
  const auto d = tiny::dims_of(dir);
  SafetensorsModel m = SafetensorsModel::open_dir(dir.string());
  EXPECT_EQ(static_cast<int64_t>(m.names().size()), 9 * d.layers + 3);  // untied: lm_head too
  const Tensor emb = m.tensor("model.embed_tokens.weight");
  EXPECT_EQ(emb.dtype(), DType::F32);
  EXPECT_EQ(emb.shape_string(), tiny::shape({d.vocab, d.hidden}));
  EXPECT_EQ(m.tensor("lm_head.weight").shape_string(), tiny::shape({d.vocab, d.hidden}));
  EXPECT_EQ(m.tensor("model.layers.0.self_attn.k_proj.weight").shape_string(),
            tiny::shape({d.kv_heads * d.head_dim, d.hidden}));
  EXPECT_EQ(m.tensor("model.layers.1.mlp.down_proj.weight").shape_string(),
            tiny::shape({d.hidden, d.inter}));
  EXPECT_EQ(m.tensor("model.norm.weight").shape_string(), tiny::shape({d.hidden}));
  tiny::expect_bytes_match_file(m, dir);
}

TEST(TinyModels, Qwen2F16) {
  const fs::path dir = tiny::model_dir("tiny-qwen2");
  if (!fs::exists(dir / "model.safetensors"))
    GTEST_FAIL() << "tests/models/tiny-qwen2 is missing (committed fixture)";
  const auto d = tiny::dims_of(dir);
  SafetensorsModel m = SafetensorsModel::open_dir(dir.string());
  EXPECT_EQ(static_cast<int64_t>(m.names().size()), 12 * d.layers + 2);  // tied, qkv biases
  EXPECT_FALSE(m.has("lm_head.weight"));
  const Tensor bias = m.tensor("model.layers.1.self_attn.q_proj.bias");
  EXPECT_EQ(bias.dtype(), DType::F16);
  EXPECT_EQ(bias.shape_string(), tiny::shape({d.heads * d.head_dim}));
  EXPECT_EQ(m.tensor("model.layers.0.self_attn.v_proj.weight").shape_string(),
            tiny::shape({d.kv_heads * d.head_dim, d.hidden}));
  tiny::expect_bytes_match_file(m, dir);
}

TEST(TinyModels, Qwen3BF16) {
  const fs::path dir = tiny::model_dir("tiny-qwen3");
  if (!fs::exists(dir / "model.safetensors"))
    GTEST_FAIL() << "tests/models/tiny-qwen3 is missing (committed fixture)";
  const auto d = tiny::dims_of(dir);
  SafetensorsModel m = SafetensorsModel::open_dir(dir.string());
  EXPECT_EQ(static_cast<int64_t>(m.names().size()), 11 * d.layers + 2);  // tied, q/k norms
  const Tensor qn = m.tensor("model.layers.0.self_attn.q_norm.weight");
  EXPECT_EQ(qn.dtype(), DType::BF16);
  EXPECT_EQ(qn.shape_string(), tiny::shape({d.head_dim}));
  EXPECT_EQ(m.tensor("model.layers.1.self_attn.q_proj.weight").shape_string(),
            tiny::shape({d.heads * d.head_dim, d.hidden}));
  EXPECT_EQ(m.tensor("model.layers.1.self_attn.o_proj.weight").shape_string(),
            tiny::shape({d.hidden, d.heads * d.head_dim}));
  tiny::expect_bytes_match_file(m, dir);
}

}  // namespace
}  // namespace kvp

// The memory half of the backend interface, on every backend this build has
// (backend_names()): allocation, host transfers, copies and the row moves the KV cache is
// made of. A new backend is tested here by registering its name in the factory.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "backend/factory.h"
#include "core/error.h"
#include "core/half.h"
#include "support/backend_ops.h"

namespace kvp {
namespace {

class BackendMemory : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    KVP_SKIP_WITHOUT_DEVICE(GetParam());
    be_ = make_backend(GetParam(), 2);
  }
  std::vector<float> download_f32(const Tensor& t) {
    std::vector<float> out(static_cast<size_t>(t.numel()));
    be_->download(t, 0, out.data(), t.nbytes());
    return out;
  }
  std::unique_ptr<Backend> be_;
};

TEST_P(BackendMemory, AllocIsZeroedAndOwnedByTheBackend) {
  const Tensor t = be_->alloc(DType::F32, {3, 5});
  EXPECT_EQ(t.backend(), be_.get());
  EXPECT_EQ(t.device(), be_->device());
  EXPECT_EQ(t.nbytes(), 60u);
  for (float x : download_f32(t)) EXPECT_EQ(x, 0.f);
  const Tensor empty = be_->alloc(DType::F32, {0, 4});
  EXPECT_EQ(empty.nbytes(), 0u);
}

TEST_P(BackendMemory, UploadDownloadAndCopyRoundTripAtOffsets) {
  Tensor a = be_->alloc(DType::F32, {4, 4}), b = be_->alloc(DType::F32, {4, 4});
  std::vector<float> host(16);
  std::iota(host.begin(), host.end(), 1.f);
  be_->upload(host.data(), a, 0, a.nbytes());
  be_->copy(a, 4 * sizeof(float), b, 8 * sizeof(float), 8 * sizeof(float));  // row 1..2 -> 2..3
  be_->synchronize();
  const std::vector<float> got = download_f32(b);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], 0.f);
  for (int i = 8; i < 16; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], static_cast<float>(i - 3));
  float one = 0;
  be_->download(a, 15 * sizeof(float), &one, sizeof(float));
  EXPECT_EQ(one, 16.f);
}

TEST_P(BackendMemory, OutOfRangeTransfersAreErrors) {
  Tensor a = be_->alloc(DType::F32, {2, 2});
  float buf[8] = {};
  EXPECT_THROW(be_->upload(buf, a, 4, a.nbytes()), Error);
  EXPECT_THROW(be_->download(a, 0, buf, a.nbytes() + 1), Error);
  EXPECT_THROW(be_->copy(a, 8, a, 0, 9), Error);
  EXPECT_THROW(be_->download(a, SIZE_MAX, buf, 2), Error);  // offset + bytes overflows
}

TEST_P(BackendMemory, CopyRowsMovesListedRows) {
  Tensor src = be_->alloc(DType::F32, {5, 3}), dst = be_->alloc(DType::F32, {4, 3});
  std::vector<float> host(15);
  std::iota(host.begin(), host.end(), 0.f);
  be_->upload(host.data(), src, 0, src.nbytes());
  const std::vector<int64_t> from = {4, 0, 2}, to = {0, 3, 1};
  be_->copy_rows(src, from.data(), dst, to.data(), 3);
  const std::vector<float> got = download_f32(dst);
  const std::vector<float> want = {12, 13, 14, 6, 7, 8, 0, 0, 0, 0, 1, 2};
  EXPECT_EQ(got, want);
  be_->copy_rows(src, from.data(), dst, to.data(), 0);  // nothing to move is fine
}

TEST_P(BackendMemory, CopyRowsRefusesBadIndicesAndShapes) {
  Tensor src = be_->alloc(DType::F32, {5, 3}), dst = be_->alloc(DType::F32, {4, 3});
  Tensor wide = be_->alloc(DType::F32, {4, 4});
  const std::vector<int64_t> bad_src = {5}, bad_dst = {4}, neg = {-1}, ok = {0};
  EXPECT_THROW(be_->copy_rows(src, bad_src.data(), dst, ok.data(), 1), Error);
  EXPECT_THROW(be_->copy_rows(src, ok.data(), dst, bad_dst.data(), 1), Error);
  EXPECT_THROW(be_->copy_rows(src, neg.data(), dst, ok.data(), 1), Error);
  EXPECT_THROW(be_->copy_rows(src, ok.data(), wide, ok.data(), 1), Error);
  Tensor q8 = be_->alloc(DType::Q8_0, {1, 32});
  Tensor f32 = be_->alloc(DType::F32, {1, 32});
  EXPECT_THROW(be_->copy_rows(q8, ok.data(), f32, ok.data(), 1), Error);
}

// gather_rows re-packs K and V segment by segment, from row lists or whole runs, in every
// cache row type (BF16 rows of 8 values take the device's 16-byte path, F32 rows of 3 the
// fallback), and refuses rows outside either tensor.
TEST_P(BackendMemory, GatherRowsRepacksSegments) {
  for (const auto& [t, cols] :
       {std::pair{DType::BF16, int64_t{8}}, std::pair{DType::F32, int64_t{3}},
        std::pair{DType::F16, int64_t{16}}}) {
    const int64_t n_src = 9, n_dst = 7;
    std::vector<float> host(static_cast<size_t>(n_src * cols));
    std::iota(host.begin(), host.end(), 1.f);  // small integers: exact in every type
    Tensor f = be_->alloc(DType::F32, {n_src, cols});
    be_->upload(host.data(), f, 0, f.nbytes());
    std::vector<int64_t> all(static_cast<size_t>(n_src));
    std::iota(all.begin(), all.end(), 0);
    Tensor k = be_->alloc(t, {n_src, cols}), v = be_->alloc(t, {n_src, cols});
    be_->copy_rows(f, all.data(), k, all.data(), n_src);
    be_->copy_rows(f, all.data(), v, all.data(), n_src);
    Tensor k2 = be_->alloc(t, {n_dst, cols}), v2 = be_->alloc(t, {n_dst, cols});
    // Segment 0: rows 0..3 of the source keep rows {3, 1}; segment 1 (rows 4..8) keeps its
    // first three in order (no list) at dst rows 4..6.
    const std::vector<int32_t> keep0 = {3, 1};
    const Backend::SegmentRows segs[] = {{0, 0, 2, keep0.data()}, {4, 4, 3, nullptr}};
    be_->gather_rows(k, v, segs, k2, v2);
    Tensor out = be_->alloc(DType::F32, {n_dst, cols});
    std::vector<int64_t> dst_all(static_cast<size_t>(n_dst));
    std::iota(dst_all.begin(), dst_all.end(), 0);
    const int64_t want_rows[] = {3, 1, -1, -1, 4, 5, 6};  // -1: never written (zero)
    for (Tensor* kv : {&k2, &v2}) {
      be_->copy_rows(*kv, dst_all.data(), out, dst_all.data(), n_dst);
      const std::vector<float> got = download_f32(out);
      for (int64_t r = 0; r < n_dst; ++r)
        for (int64_t c = 0; c < cols; ++c)
          EXPECT_EQ(got[static_cast<size_t>(r * cols + c)],
                    want_rows[r] < 0 ? 0.f : host[static_cast<size_t>(want_rows[r] * cols + c)])
              << dtype_name(t) << " row " << r << " col " << c;
    }
    const std::vector<int32_t> past = {5};
    const Backend::SegmentRows bad_src[] = {{4, 0, 1, past.data()}};  // source row 9 of 9
    const Backend::SegmentRows bad_dst[] = {{0, 5, 3, nullptr}};      // dst rows 5..7 of 7
    EXPECT_THROW(be_->gather_rows(k, v, bad_src, k2, v2), Error);
    EXPECT_THROW(be_->gather_rows(k, v, bad_dst, k2, v2), Error);
  }
}

// F32 -> F16/BF16 -> F32 against the scalar conversions of core/half.h: rounding to nearest
// even, infinities, NaN, values past F16's range and F16 subnormals.
TEST_P(BackendMemory, CopyRowsConvertsHalfTypesLikeTheScalarReference) {
  const std::vector<float> values = {0.f,     -0.f,           1.f,   -2.5f, 1e-3f,    3.14159265f,
                                     65504.f, 70000.f,        1e-6f, 6e-8f, INFINITY, -INFINITY,
                                     NAN,     1.00048828125f, 0.1f,  -1e30f};
  const auto n = static_cast<int64_t>(values.size());
  Tensor src = be_->alloc(DType::F32, {1, n});
  be_->upload(values.data(), src, 0, src.nbytes());
  const int64_t zero = 0;
  for (DType half : {DType::F16, DType::BF16}) {
    Tensor mid = be_->alloc(half, {1, n}), back = be_->alloc(DType::F32, {1, n});
    be_->copy_rows(src, &zero, mid, &zero, 1);
    be_->copy_rows(mid, &zero, back, &zero, 1);
    const std::vector<float> got = download_f32(back);
    for (size_t i = 0; i < values.size(); ++i) {
      const float want = half == DType::F16 ? f16_to_f32(f32_to_f16(values[i]))
                                            : bf16_to_f32(f32_to_bf16(values[i]));
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got[i])) << "value " << values[i];
      } else {
        EXPECT_EQ(got[i], want) << "value " << values[i] << " through " << dtype_name(half);
      }
    }
  }
  // Spot checks of the reference itself.
  EXPECT_EQ(f16_to_f32(f32_to_f16(70000.f)), INFINITY);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.00390625f)), 1.f);        // halfway: to even
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.01171875f)), 1.015625f);  // halfway: to even (up)
}

INSTANTIATE_TEST_SUITE_P(EveryBackend, BackendMemory, ::testing::ValuesIn(backend_names()),
                         [](const auto& info) { return info.param; });

TEST(BackendFactory, UnknownDevicesAreClearErrors) {
  try {
    make_backend("tpu", 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown device 'tpu'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cpu"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_backend("cpu", -1), Error);
}

}  // namespace
}  // namespace kvp

#pragma once
// One op suite for every backend (in the spirit of llama.cpp's test-backend-ops): a test
// parameterised by BackendCase runs on each backend the build has (backend_names()), the CPU
// with 1 and 2 threads. Inputs are made on the host and uploaded; outputs are downloaded and
// compared with the scalar references in kvp::ref, which run on host tensors. A new backend
// that registers in the factory is tested with no new test code.
#include <gtest/gtest.h>

#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/factory.h"
#include "core/half.h"

namespace kvp::test {

struct BackendCase {
  std::string device;
  int threads = 1;
};

inline void PrintTo(const BackendCase& c, std::ostream* os) {
  *os << c.device << " with " << c.threads << " threads";
}

inline std::vector<BackendCase> all_backend_cases() {
  std::vector<BackendCase> cases;
  for (const std::string& name : backend_names()) {
    if (name == "cpu") {
      cases.push_back({name, 1});
      cases.push_back({name, 2});
    } else {
      cases.push_back({name, 1});
    }
  }
  return cases;
}

inline std::string backend_case_name(const ::testing::TestParamInfo<BackendCase>& info) {
  return info.param.device + std::to_string(info.param.threads) + "threads";
}

// A host F32 tensor stored as F32, F16 or BF16 (the cache's row types), rounded to nearest.
inline Tensor as_dtype(const Tensor& f32, DType t) {
  if (t == DType::F32) return f32;
  Tensor out = Tensor::empty(t, f32.shape(), f32.ndim());
  auto* dst = static_cast<uint16_t*>(out.data());
  for (int64_t i = 0; i < f32.numel(); ++i) {
    const float v = f32.ptr<float>()[i];
    dst[i] = t == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
  }
  return out;
}

// Skips (with the reason) a case for a backend this build has but this machine cannot run:
// the CUDA cases on a machine without a GPU, such as CI's.
#define KVP_SKIP_WITHOUT_DEVICE(device)                                                     \
  do {                                                                                      \
    if ((device) == "cuda" && ::kvp::cuda_gpus() == 0)                                      \
      GTEST_SKIP() << "no CUDA GPU on this machine: the cuda cases run where there is one"; \
  } while (0)

class BackendOps : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override {
    KVP_SKIP_WITHOUT_DEVICE(GetParam().device);
    be_ = make_backend(GetParam().device, GetParam().threads);
  }

  bool gpu() const { return GetParam().device == "cuda"; }
  // A test's stated bound for this backend: the CPU's, or the GPU's where the test says why
  // it differs (f32 sums in another order, weights held as BF16).
  float bound(float cpu, float gpu_bound) const { return gpu() ? gpu_bound : cpu; }
  // A model weight as the backend holds it (Backend::load_weight: BF16 on the GPU).
  Tensor weight(const Tensor& host) { return be_->load_weight(host); }

  // A copy of a host tensor in the backend's memory.
  Tensor dev(const Tensor& host) {
    Tensor t = be_->alloc(host.dtype(), host.shape(), host.ndim());
    if (host.nbytes() > 0) be_->upload(host.data(), t, 0, host.nbytes());
    return t;
  }
  // A zeroed tensor in the backend's memory.
  Tensor dev_zeros(DType dtype, std::initializer_list<int64_t> shape) {
    return be_->alloc(dtype, shape);
  }
  // A host copy of a backend tensor.
  Tensor host(const Tensor& t) {
    Tensor h = Tensor::empty(t.dtype(), t.shape(), t.ndim());
    if (t.nbytes() > 0) be_->download(t, 0, h.data(), t.nbytes());
    return h;
  }

  std::unique_ptr<Backend> be_;
  std::mt19937 rng_{1234};
};

}  // namespace kvp::test

#define KVP_INSTANTIATE_BACKEND_OPS(suite)                                                         \
  INSTANTIATE_TEST_SUITE_P(Backends, suite, ::testing::ValuesIn(::kvp::test::all_backend_cases()), \
                           ::kvp::test::backend_case_name)

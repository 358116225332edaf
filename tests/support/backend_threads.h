#pragma once
// A test parameterised by the CPU backend's thread count (instantiate with Values(1, 2)):
// every op must give the same answers on one thread and on several.
#include <gtest/gtest.h>

#include <memory>
#include <random>

#include "backend/backend.h"
#include "backend/factory.h"

namespace kvp {

class CpuBackendThreads : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { be_ = make_backend("cpu", GetParam()); }
  std::unique_ptr<Backend> be_;
  std::mt19937 rng_{1234};
};

}  // namespace kvp

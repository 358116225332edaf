#pragma once
// Data the CPU backend derives from a weight once and keeps while the weight lives (the argmax
// screen's repacked copy of a Q8_0 table, argmax_projection_cpu.cpp). Each backend owns its
// caches: nothing is process-global.
//
// An entry is found by the weight's storage owner (Tensor::owner, held weakly, so that new
// storage at a freed address is never taken for the old: the weak reference keeps the old
// owner's identity from being reused), data pointer, dtype and shape; the weight's bytes must
// not change while it is in use (weights are read-only views of the model file). Entries are
// handed out with shared ownership: when a weight's storage is gone its entry leaves the
// cache at the next get(), and a handle another thread still holds stays valid until it lets
// go. Thread-safe.
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "core/tensor.h"

namespace kvp::cpu {

class WeightCache {
 public:
  using Entry = std::shared_ptr<const void>;

  // The entry for w, made by make() on its first use (under the cache's lock, so it is made
  // once). A weight without an owner (a view of memory the caller keeps alive) cannot be told
  // from a later one at its address: its entry is made on every call and not kept.
  Entry get(const Tensor& w, const std::function<Entry()>& make);

  template <typename T, typename Make>
  std::shared_ptr<const T> get(const Tensor& w, const Make& make) {
    return std::static_pointer_cast<const T>(get(w, [&]() -> Entry { return make(); }));
  }

  // Entries kept (of live weights, and of weights gone since the last get()).
  size_t size() const;

 private:
  struct Slot {
    std::weak_ptr<const void> owner;
    const void* data = nullptr;
    DType dtype = DType::F32;
    std::array<int64_t, 4> shape{};
    Entry entry;
  };
  mutable std::mutex mutex_;
  std::vector<Slot> slots_;
};

}  // namespace kvp::cpu

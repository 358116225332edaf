#pragma once
// Compressed contexts kept for many questions: each is a prefilled (and pressed) KV cache
// with its bookkeeping. The store holds them up to a byte budget and evicts the least
// recently used first. A question borrows a context's rows in place (KVCache::borrow_kept),
// holding a shared_ptr, so an evicted or deleted context lives on until its last question
// ends; the store counts only what it holds.
#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cache/kv_cache.h"

namespace kvp::server {

struct StoredContext {
  std::string id;
  std::unique_ptr<KVCache> cache;
  int64_t tokens = 0;           // the context's tokens as prefilled
  int64_t first_position = 0;   // where a question's positions start
  std::string question_suffix;  // the chat template's text after a question
  std::string press;            // "" : none
  double ratio = 0;             // the press's requested ratio
  double achieved_ratio = 0;
  size_t bytes_uncompressed = 0;  // its K and V rows before the press
  size_t bytes = 0;               // what its cache holds now
  int64_t created = 0;            // Unix seconds
};

class ContextStore {
 public:
  explicit ContextStore(size_t budget_bytes) : budget_(budget_bytes) {}
  // Stores a context, evicting the least recently used ones until it fits; throws ApiError 413
  // when it alone exceeds the budget.
  void put(std::shared_ptr<StoredContext> context);
  // The context, marked as just used; null when unknown.
  std::shared_ptr<StoredContext> get(const std::string& id);
  bool erase(const std::string& id);
  // Most recently used first.
  std::vector<std::shared_ptr<StoredContext>> list() const;

  struct Totals {
    size_t count = 0, bytes = 0, bytes_uncompressed = 0, budget = 0;
    uint64_t evictions = 0;
  };
  Totals totals() const;

 private:
  mutable std::mutex mutex_;
  size_t budget_;
  size_t bytes_ = 0, bytes_uncompressed_ = 0;
  uint64_t evictions_ = 0;
  std::list<std::shared_ptr<StoredContext>> lru_;  // front: most recently used
  std::map<std::string, std::list<std::shared_ptr<StoredContext>>::iterator> by_id_;
  void drop(std::list<std::shared_ptr<StoredContext>>::iterator it);
};

}  // namespace kvp::server

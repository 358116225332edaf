#include "server/context_store.h"

#include "server/api.h"

namespace kvp::server {

void ContextStore::put(std::shared_ptr<StoredContext> context) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (context->bytes > budget_) {
    throw ApiError(
        413,
        "the context's KV cache takes " + std::to_string(context->bytes) +
            " bytes, more than the store's whole budget of " + std::to_string(budget_) +
            " (compress it more, or start the server with a larger --context-budget-mib)",
        "", "context_budget_exceeded");
  }
  while (!lru_.empty() && bytes_ + context->bytes > budget_) {
    drop(std::prev(lru_.end()));
    ++evictions_;
  }
  bytes_ += context->bytes;
  bytes_uncompressed_ += context->bytes_uncompressed;
  lru_.push_front(context);
  by_id_[context->id] = lru_.begin();
}

std::shared_ptr<StoredContext> ContextStore::get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = by_id_.find(id);
  if (it == by_id_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return *it->second;
}

bool ContextStore::erase(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  drop(it->second);
  return true;
}

void ContextStore::drop(std::list<std::shared_ptr<StoredContext>>::iterator it) {
  bytes_ -= (*it)->bytes;
  bytes_uncompressed_ -= (*it)->bytes_uncompressed;
  by_id_.erase((*it)->id);
  lru_.erase(it);
}

std::vector<std::shared_ptr<StoredContext>> ContextStore::list() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {lru_.begin(), lru_.end()};
}

ContextStore::Totals ContextStore::totals() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {lru_.size(), bytes_, bytes_uncompressed_, budget_, evictions_};
}

}  // namespace kvp::server

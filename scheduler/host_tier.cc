#include "scheduler/host_tier.h"

namespace gantry::scheduler {

std::vector<std::string> HostTier::Put(const std::string& model, std::shared_ptr<const runtime::HostWeights> weights,
                                       bool* kept) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> dropped;
  *kept = false;
  if (auto it = items_.find(model); it != items_.end()) {
    used_ -= it->second.weights->bytes();
    items_.erase(it);
  }
  const uint64_t bytes = weights ? weights->bytes() : 0;
  if (!weights || bytes > budget_) return dropped;
  while (used_ + bytes > budget_) {
    auto oldest = items_.begin();
    for (auto it = items_.begin(); it != items_.end(); ++it) {
      if (it->second.last_used < oldest->second.last_used) oldest = it;
    }
    used_ -= oldest->second.weights->bytes();
    dropped.push_back(oldest->first);
    items_.erase(oldest);
  }
  items_[model] = Item{std::move(weights), clock_->Now()};
  used_ += bytes;
  *kept = true;
  return dropped;
}

std::shared_ptr<const runtime::HostWeights> HostTier::Get(const std::string& model) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = items_.find(model);
  if (it == items_.end()) return nullptr;
  it->second.last_used = clock_->Now();
  return it->second.weights;
}

bool HostTier::Contains(const std::string& model) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return items_.count(model) > 0;
}

void HostTier::Drop(const std::string& model) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = items_.find(model);
  if (it == items_.end()) return;
  used_ -= it->second.weights->bytes();
  items_.erase(it);
}

uint64_t HostTier::used_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return used_;
}

}  // namespace gantry::scheduler

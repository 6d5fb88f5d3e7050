// The host-memory tier: weights of models that left their device, kept in
// (pinned) host memory under one byte budget for the whole server, so that
// bringing a model back is one copy at PCIe speed instead of a file read.
// Least recently used first out; a model whose weights alone exceed the
// budget is not kept. Thread-safe (the registry puts while unlocked).
#ifndef GANTRY_SCHEDULER_HOST_TIER_H_
#define GANTRY_SCHEDULER_HOST_TIER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "runtime/model_runner.h"
#include "scheduler/clock.h"

namespace gantry::scheduler {

class HostTier {
 public:
  HostTier(uint64_t budget_bytes, const Clock* clock) : budget_(budget_bytes), clock_(clock) {}

  // Keeps `weights` for `model` (replacing what it had), dropping the least
  // recently used others to make room. Returns the models dropped; `kept`
  // says whether `model` now has weights here.
  std::vector<std::string> Put(const std::string& model, std::shared_ptr<const runtime::HostWeights> weights,
                               bool* kept);
  // The model's weights, or null; marks them used.
  std::shared_ptr<const runtime::HostWeights> Get(const std::string& model);
  bool Contains(const std::string& model) const;
  void Drop(const std::string& model);

  uint64_t budget_bytes() const { return budget_; }
  uint64_t used_bytes() const;

 private:
  struct Item {
    std::shared_ptr<const runtime::HostWeights> weights;
    absl::Time last_used;
  };
  const uint64_t budget_;
  const Clock* clock_;
  mutable std::mutex mutex_;
  std::map<std::string, Item> items_;
  uint64_t used_ = 0;
};

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_HOST_TIER_H_

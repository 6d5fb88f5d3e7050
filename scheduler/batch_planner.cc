#include "scheduler/batch_planner.h"

#include <algorithm>

namespace gantry::scheduler {

StepPlan PlanStep(const std::vector<RunningSequence>& running, const std::vector<WaitingSequence>& waiting,
                  const KvCacheManager& kv, const PlannerLimits& limits) {
  StepPlan plan;
  int64_t free_blocks = kv.NumFreeBlocks();
  int64_t budget = limits.max_step_tokens;
  // Sequences still in the batch; the newest sit at the back and go first
  // when blocks run short.
  std::vector<const RunningSequence*> active;
  for (const auto& r : running) active.push_back(&r);
  size_t next = 0;  // index in `active` of the next sequence to schedule
  while (next < active.size()) {
    const RunningSequence& seq = *active[next];
    const int64_t tokens = std::min(seq.num_pending, budget);
    if (tokens <= 0) {  // no token budget left this step: it waits, keeping its blocks
      ++next;
      continue;
    }
    const int64_t need = kv.BlocksToGrow(seq.key, seq.num_computed + tokens);
    if (need > free_blocks) {
      // Free the newest running sequence's blocks: it sits at or after
      // `next`, so it has not been scheduled; it may be this one.
      const RunningSequence* victim = active.back();
      active.pop_back();
      plan.preempted.push_back(victim->key);
      free_blocks += kv.BlocksFreedByRelease(victim->key);
      continue;  // retry this sequence, unless it was the victim
    }
    free_blocks -= need;
    budget -= tokens;
    plan.scheduled.push_back({seq.key, tokens});
    ++next;
  }
  int64_t batch = static_cast<int64_t>(active.size());
  if (plan.preempted.empty()) {
    for (const auto& w : waiting) {
      if (batch >= limits.max_batch || budget <= 0) break;
      const int64_t tokens = std::min(w.num_tokens - w.cached.num_tokens, budget);
      const int64_t need = kv.BlocksToStart(w.cached, w.cached.num_tokens + tokens);
      if (need > free_blocks) break;  // first come, first served: no overtaking
      free_blocks -= need;
      budget -= tokens;
      plan.scheduled.push_back({w.key, tokens});
      plan.admitted.push_back(w.key);
      ++batch;
    }
  }
  return plan;
}

int64_t PlanEncodeStep(const std::vector<int64_t>& lengths, const PlannerLimits& limits) {
  int64_t taken = 0, longest = 0;
  for (int64_t length : lengths) {
    const int64_t padded_longest = std::max(longest, length);
    if (taken > 0 && (taken + 1 > limits.max_batch || (taken + 1) * padded_longest > limits.max_step_tokens)) break;
    longest = padded_longest;
    ++taken;
  }
  return taken;
}

}  // namespace gantry::scheduler

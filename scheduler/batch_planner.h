// One continuous-batching decision as a pure function, as TensorRT-LLM's
// capacity scheduler and vLLM's SchedulerOutput: from the running and waiting
// sequences and the KV cache's state to the tokens each sequence processes
// this step, which waiting requests join, and which running ones are
// preempted. Block arithmetic is the KV cache manager's: the planner only
// asks it what each choice costs.
#ifndef GANTRY_SCHEDULER_BATCH_PLANNER_H_
#define GANTRY_SCHEDULER_BATCH_PLANNER_H_

#include <cstdint>
#include <vector>

#include "scheduler/kv_cache_manager.h"

namespace gantry::scheduler {

struct PlannerLimits {
  int64_t max_batch = 32;         // sequences in one step
  int64_t max_step_tokens = 2048; // tokens in one step (prompt chunks and decodes)
};

struct RunningSequence {
  int64_t key = 0;
  int64_t num_computed = 0;  // tokens in the KV cache
  int64_t num_pending = 0;   // tokens known but not computed (1 when decoding)
};

struct WaitingSequence {
  int64_t key = 0;
  int64_t num_tokens = 0;  // its whole prompt (and, after preemption, its generated tokens)
  PrefixHit cached;        // what the KV cache already holds of them
};

struct ScheduledSequence {
  int64_t key = 0;
  int64_t num_tokens = 0;  // tokens computed this step (after the cached prefix, for one just admitted)
};

struct StepPlan {
  std::vector<ScheduledSequence> scheduled;  // running ones first (oldest first), then admitted
  std::vector<int64_t> admitted;             // waiting keys that start this step, in order
  std::vector<int64_t> preempted;            // running keys to drop and recompute later, newest first
};

// `running` and `waiting` are in arrival order (oldest first). Running
// sequences are served oldest first; when blocks run out the newest running
// ones are preempted (never failed). Waiting ones are admitted first come,
// first served: admission stops at the first that does not fit.
StepPlan PlanStep(const std::vector<RunningSequence>& running, const std::vector<WaitingSequence>& waiting,
                  const KvCacheManager& kv, const PlannerLimits& limits);

// Encoder models (embeddings, rerank) have no KV cache: a step runs whole
// inputs, padded to the longest. Of the pending inputs (their lengths, queue
// order) the step takes the longest prefix within max_batch inputs and
// max_step_tokens padded tokens (inputs x the longest of them); always at
// least one, so an input longer than the budget still runs, alone.
int64_t PlanEncodeStep(const std::vector<int64_t>& lengths, const PlannerLimits& limits);

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_BATCH_PLANNER_H_

// One continuous-batching decision as a pure function, as TensorRT-LLM's
// capacity scheduler and vLLM's SchedulerOutput: from the running and waiting
// sequences and the free KV blocks to the tokens each sequence processes this
// step, which waiting requests join, and which running ones are preempted.
#ifndef GANTRY_SCHEDULER_BATCH_PLANNER_H_
#define GANTRY_SCHEDULER_BATCH_PLANNER_H_

#include <cstdint>
#include <vector>

namespace gantry::scheduler {

struct PlannerLimits {
  int64_t max_batch = 32;         // sequences in one step
  int64_t max_step_tokens = 2048; // tokens in one step (prompt chunks and decodes)
  int64_t block_size = 16;        // tokens per KV block
};

struct RunningSequence {
  int64_t key = 0;
  int64_t num_computed = 0;  // tokens in the KV cache
  int64_t num_pending = 0;   // tokens known but not computed (1 when decoding)
  int64_t blocks_held = 0;
};

struct WaitingSequence {
  int64_t key = 0;
  int64_t num_pending = 0;  // its whole prompt (and, after preemption, its generated tokens)
};

struct ScheduledSequence {
  int64_t key = 0;
  int64_t num_tokens = 0;
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
                  int64_t free_blocks, const PlannerLimits& limits);

inline int64_t BlocksFor(int64_t tokens, int64_t block_size) { return (tokens + block_size - 1) / block_size; }

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_BATCH_PLANNER_H_

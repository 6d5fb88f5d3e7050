// Drives a ModelRunner step by step without the engine's queue: sequences
// with their token histories, blocks from a KvCacheManager, the steps the
// caller chooses. The runtime's tests and benchmark use it; ModelEngine keeps
// the same books for its requests (and adds queueing, planning, streaming).
#ifndef GANTRY_SCHEDULER_RUNNER_SESSION_H_
#define GANTRY_SCHEDULER_RUNNER_SESSION_H_

#include <cstdint>
#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/model_runner.h"
#include "scheduler/kv_cache_manager.h"

namespace gantry::scheduler {

// The step entry of sequence `key`: its history, what is cached, what to
// compute now, and its block table as `kv` holds it.
runtime::StepSequence MakeStepSequence(const KvCacheManager& kv, int64_t key, absl::Span<const int32_t> tokens,
                                       int64_t num_prompt, int64_t num_computed, int64_t num_tokens,
                                       const runtime::SamplingParams* sampling);

struct SessionItem {
  runtime::SequenceId id = 0;
  int64_t num_tokens = 1;
  bool return_logits = false;
  absl::Span<const uint32_t> allowed_tokens;  // runtime::StepSequence::allowed_tokens
};

class RunnerSession {
 public:
  explicit RunnerSession(runtime::ModelRunner* runner, bool prefix_caching = false);
  ~RunnerSession();  // releases what is left

  // A sequence of `prompt` followed by `generated` (tokens of an earlier,
  // preempted run: they count as generated). With prefix caching it starts
  // on its longest cached prefix. INVALID_ARGUMENT for an empty prompt or
  // bad sampling parameters.
  absl::StatusOr<runtime::SequenceId> Add(std::vector<int32_t> prompt, std::vector<int32_t> generated,
                                          runtime::SamplingParams sampling);
  absl::Status Remove(runtime::SequenceId id);

  int64_t NumTokens(runtime::SequenceId id) const { return static_cast<int64_t>(sequences_.at(id).tokens.size()); }
  int64_t NumComputed(runtime::SequenceId id) const { return sequences_.at(id).num_computed; }
  const std::vector<int32_t>& Tokens(runtime::SequenceId id) const { return sequences_.at(id).tokens; }
  const KvCacheManager& kv() const { return kv_; }

  // Gives each listed sequence the blocks it needs (RESOURCE_EXHAUSTED,
  // changing nothing, when the pool is short), runs the step, and appends
  // the sampled tokens. NOT_FOUND for an unknown id.
  absl::StatusOr<runtime::StepResult> Step(absl::Span<const SessionItem> items);

 private:
  struct Sequence {
    std::vector<int32_t> tokens;
    int64_t num_prompt = 0;
    int64_t num_computed = 0;
    runtime::SamplingParams sampling;
  };

  runtime::ModelRunner* runner_;
  KvCacheManager kv_;
  std::map<runtime::SequenceId, Sequence> sequences_;
  runtime::SequenceId next_id_ = 1;
};

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_RUNNER_SESSION_H_

// What the scheduler reports as it works, for metrics. The server implements
// it with Prometheus types; the scheduler sees only this interface. Calls come
// from engine threads and request threads, outside the scheduler's locks, so
// implementations must be thread-safe and quick.
#ifndef GANTRY_SCHEDULER_OBSERVER_H_
#define GANTRY_SCHEDULER_OBSERVER_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace gantry::scheduler {

enum class ModelState { kUnloaded, kLoading, kReady, kUnloading, kFailed };
const char* ModelStateName(ModelState state);

enum class UnloadReason { kRequested, kIdle, kMemory };
const char* UnloadReasonName(UnloadReason reason);

// One engine step.
struct StepReport {
  int64_t sequences = 0;       // sequences in the batch
  int64_t prompt_tokens = 0;   // prompt (or recomputed) tokens processed
  int64_t decode_tokens = 0;   // single-token decodes
  int64_t preempted = 0;       // sequences preempted before the step
  int64_t prefix_query_tokens = 0;  // tokens of sequences started this step, looked up in the prefix cache
  int64_t prefix_hit_tokens = 0;    // of those, tokens found cached
  absl::Time start;            // when the runtime was handed the step (Launch)
  absl::Duration duration;     // from then until its results were back (Collect)
  // Of `duration`, from the step being enqueued on the device until its
  // results were on the host (runtime::StepTiming::device_seconds): the
  // device's time, plus whatever the engine did before collecting a step
  // that had already finished.
  absl::Duration device_wait;
};

class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;
  virtual void OnStateChange(const std::string& model, ModelState state) {}
  // After a load attempt: how long it took and whether it succeeded.
  virtual void OnLoad(const std::string& model, absl::Duration took, bool ok) {}
  // Where a successful load read the weights: "disk" or "host" (the host
  // tier), how many bytes of weights it put on its devices and how long it
  // took (so its rate: weight_bytes / took).
  virtual void OnLoadSource(const std::string& model, const std::string& source, uint64_t weight_bytes,
                            absl::Duration took) {}
  virtual void OnUnload(const std::string& model, UnloadReason reason) {}
  virtual void OnStep(const std::string& model, const StepReport& report) {}
};

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_OBSERVER_H_

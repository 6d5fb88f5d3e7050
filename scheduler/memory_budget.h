// What a model costs on its device before it is loaded: its weights in the
// dtype it will run in (element counts from the safetensors headers) plus its
// KV-cache pool.
#ifndef GANTRY_SCHEDULER_MEMORY_BUDGET_H_
#define GANTRY_SCHEDULER_MEMORY_BUDGET_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace gantry::scheduler {

struct ModelSpec;

absl::StatusOr<uint64_t> EstimateModelBytes(const ModelSpec& spec);

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_MEMORY_BUDGET_H_

// Loads a model folder for the registry: the LibTorch runner and, when the
// folder has tokenizer.json, the tokenizer and chat template. Separate from
// the scheduler library so that stays free of LibTorch.
#ifndef GANTRY_SCHEDULER_MODEL_LOADER_H_
#define GANTRY_SCHEDULER_MODEL_LOADER_H_

#include "absl/status/statusor.h"
#include "scheduler/model_registry.h"

namespace gantry::scheduler {

// A chat template that does not parse, or a tokenizer larger than the
// model's vocabulary, fails the load.
absl::StatusOr<LoadedModel> LoadModelFolder(const ModelSpec& spec);

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_MODEL_LOADER_H_

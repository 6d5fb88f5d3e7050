#include "scheduler/memory_budget.h"

#include "runtime/checkpoint.h"
#include "runtime/model_config.h"
#include "runtime/safetensors.h"
#include "scheduler/model_registry.h"

namespace gantry::scheduler {

absl::StatusOr<uint64_t> EstimateModelBytes(const ModelSpec& spec) {
  auto config = runtime::LoadModelConfig(spec.path);
  if (!config.ok()) return config.status();
  // The dtype rule of runtime::LoadModel: the config's, float16 on the CPU as float32.
  std::string dtype = spec.dtype.empty() ? config->dtype : spec.dtype;
  if (spec.dtype.empty() && spec.device == "cpu" && dtype == "float16") dtype = "float32";
  const uint64_t element = dtype == "float32" ? 4 : 2;
  auto files = runtime::ListCheckpointFiles(spec.path);
  if (!files.ok()) return files.status();
  uint64_t elements = 0;
  for (const auto& path : *files) {
    auto header = runtime::ReadSafetensorsHeader(path);
    if (!header.ok()) return header.status();
    for (const auto& tensor : header->tensors) elements += static_cast<uint64_t>(tensor.NumElements());
  }
  return elements * element + spec.kv_cache_bytes;
}

}  // namespace gantry::scheduler

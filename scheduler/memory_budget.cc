#include "scheduler/memory_budget.h"

#include <algorithm>

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
  // Tensor parallelism: each rank holds the embeddings and norms whole and
  // 1/N of everything else (runtime/internal/weights.h), and a KV pool of
  // kv_cache_bytes: the charge on each of its devices.
  const uint64_t ranks = spec.devices.empty() ? std::max<int32_t>(1, spec.tensor_parallel) : spec.devices.size();
  uint64_t split = 0, whole = 0;
  for (const auto& path : *files) {
    auto header = runtime::ReadSafetensorsHeader(path);
    if (!header.ok()) return header.status();
    for (const auto& tensor : header->tensors) {
      const uint64_t n = static_cast<uint64_t>(tensor.NumElements());
      const bool repeated = ranks > 1 && (tensor.shape.size() < 2 || tensor.name == "model.embed_tokens.weight");
      (repeated ? whole : split) += n;
    }
  }
  return (whole + (split + ranks - 1) / ranks) * element + spec.kv_cache_bytes;
}

}  // namespace gantry::scheduler

#include "scheduler/memory_budget.h"

#include <algorithm>

#include "runtime/checkpoint.h"
#include "runtime/encoder_config.h"
#include "runtime/encoder_runner.h"
#include "runtime/model_config.h"
#include "runtime/model_task.h"
#include "runtime/safetensors.h"
#include "scheduler/model_registry.h"

namespace gantry::scheduler {

namespace {

uint64_t ElementBytes(const std::string& requested, const std::string& config_dtype, const std::string& device) {
  // The dtype rule of the runtime: the config's, float16 on the CPU as float32.
  std::string dtype = requested.empty() ? config_dtype : requested;
  if (requested.empty() && device == "cpu" && dtype == "float16") dtype = "float32";
  return dtype == "float32" ? 4 : 2;
}

// Encoders hold their weights and, instead of a KV pool, the activations of
// one step of max_encode_tokens padded tokens: about six hidden-wide and two
// intermediate-wide tensors live at once in a layer. 16-bit ones on a GPU
// also hold LtGemm's workspace (runtime::EncoderLoadOptions::cuda_lt_gemm).
absl::StatusOr<uint64_t> EstimateEncoderBytes(const ModelSpec& spec) {
  auto config = runtime::LoadEncoderConfig(spec.path);
  if (!config.ok()) return config.status();
  const uint64_t element = ElementBytes(spec.dtype, config->dtype, spec.device);
  auto files = runtime::ListCheckpointFiles(spec.path);
  if (!files.ok()) return files.status();
  uint64_t elements = 0;
  for (const auto& path : *files) {
    auto header = runtime::ReadSafetensorsHeader(path);
    if (!header.ok()) return header.status();
    for (const auto& tensor : header->tensors) elements += static_cast<uint64_t>(tensor.NumElements());
  }
  const uint64_t tokens = static_cast<uint64_t>(std::max<int64_t>(1, spec.engine.max_encode_tokens));
  const uint64_t activations =
      tokens * static_cast<uint64_t>(6 * config->hidden_size + 2 * config->intermediate_size) * element;
  const uint64_t workspace = element == 2 && spec.device != "cpu" ? runtime::kEncoderLtGemmWorkspaceBytes : 0;
  return elements * element + activations + workspace;
}

}  // namespace

absl::StatusOr<uint64_t> EstimateModelBytes(const ModelSpec& spec) {
  auto task = runtime::DetectModelTask(spec.path, spec.task);
  if (!task.ok()) return task.status();
  if (task->encoder()) return EstimateEncoderBytes(spec);
  auto config = runtime::LoadModelConfig(spec.path);
  if (!config.ok()) return config.status();
  const uint64_t element = ElementBytes(spec.dtype, config->dtype, spec.device);
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

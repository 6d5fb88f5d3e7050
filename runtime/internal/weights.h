// Llama-family weights on the device, with q/k/v and gate/up fused at load.
#ifndef GANTRY_RUNTIME_INTERNAL_WEIGHTS_H_
#define GANTRY_RUNTIME_INTERNAL_WEIGHTS_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/checkpoint.h"
#include "runtime/internal/tensor_loader.h"
#include "runtime/model_config.h"

namespace gantry::runtime {

struct LayerWeights {
  at::Tensor input_norm;    // [hidden]
  at::Tensor qkv_proj;      // [(heads + 2 * kv_heads) * head_dim, hidden]
  at::Tensor qkv_bias;      // [(heads + 2 * kv_heads) * head_dim], or undefined
  at::Tensor q_norm;        // [head_dim], or undefined (Qwen3 only)
  at::Tensor k_norm;        // [head_dim], or undefined (Qwen3 only)
  at::Tensor o_proj;        // [hidden, heads * head_dim]
  at::Tensor o_bias;        // [hidden], or undefined
  at::Tensor post_norm;     // [hidden]
  at::Tensor gate_up_proj;  // [2 * intermediate, hidden]: gate rows, then up rows
  at::Tensor gate_up_bias;  // [2 * intermediate], or undefined
  at::Tensor down_proj;     // [hidden, intermediate]
  at::Tensor down_bias;     // [hidden], or undefined
};

struct ModelWeights {
  at::Tensor embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  at::Tensor final_norm;    // [hidden]
  at::Tensor lm_head;       // [vocab, hidden] (the same storage as embed_tokens when tied); a
                            // tensor-parallel rank's [ceil(vocab / ranks), hidden] slice, zero rows past vocab
  uint64_t device_bytes = 0;
};

// The slice of a model that rank `rank` of a tensor-parallel group of
// `size` holds (Megatron-style): q/k/v and gate/up by output rows (heads,
// intermediate features), o and down by input columns, lm_head by vocabulary
// rows; norms and embeddings whole; o and down biases on rank 0 only (they
// are added once, before the sum over ranks). KV heads are divided among
// the ranks, or each rank holds the one its query heads use when there are
// fewer KV heads than ranks.
struct Shard {
  int rank = 0;
  int size = 1;
};

// The config one rank runs: its query heads, KV heads and intermediate
// features (vocab_size stays the model's). Errors name what does not divide.
absl::StatusOr<ModelConfig> ShardConfig(const ModelConfig& config, int size);

// Checks names and shapes against `config` (listing every missing and
// unexpected tensor) and copies each tensor (its shard's slice of it) to
// `device` in `dtype`, one tensor at a time: host memory never holds a second
// copy of the model, and a rank reads only its slice of the mapped files.
// With `sink`, contiguous tensors of the file's dtype go through it
// (TensorLoader); the weights are complete when this returns.
absl::StatusOr<ModelWeights> LoadWeights(const Checkpoint& checkpoint, const ModelConfig& config,
                                         const at::Device& device, at::ScalarType dtype, const Shard& shard = {},
                                         ByteSink* sink = nullptr);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_WEIGHTS_H_

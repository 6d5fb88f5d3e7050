// The Llama-family decoder (Llama 2/3, Mistral, Qwen2, Qwen3) over a paged
// KV cache: one forward call for a whole mixed prefill/decode batch.
#ifndef GANTRY_RUNTIME_INTERNAL_LLAMA_MODEL_H_
#define GANTRY_RUNTIME_INTERNAL_LLAMA_MODEL_H_

#include <ATen/ATen.h>

#include "runtime/internal/attention.h"
#include "runtime/internal/communicator.h"
#include "runtime/internal/weights.h"
#include "runtime/model_config.h"

namespace gantry::runtime {

// Inverse rotary frequencies as transformers computes them (float32),
// including `linear` and `llama3` scaling. [head_dim / 2]
at::Tensor RopeInverseFrequencies(const ModelConfig& config, const at::Device& device);

class LlamaModel {
 public:
  // A tensor-parallel rank gets its shard's config (ShardConfig) and weights
  // and its communicator; the forward sums o and down over the ranks and
  // gathers the vocabulary slices of the logits.
  LlamaModel(ModelConfig config, ModelWeights weights, at::Device device, at::ScalarType dtype,
             int64_t num_blocks, int64_t block_size, Communicator* communicator = nullptr);

  // token_ids: [num_tokens] int64, laid out as `batch` describes.
  // logit_rows: [rows] int64 token rows whose next-token logits are wanted.
  // Writes the new tokens' keys and values into the cache; returns
  // [rows, vocab] float32 logits.
  at::Tensor Forward(const at::Tensor& token_ids, const AttentionBatch& batch,
                     const at::Tensor& logit_rows);

  uint64_t kv_cache_bytes() const;
  const ModelWeights& weights() const { return weights_; }
  const ModelConfig& config() const { return config_; }
  const at::Device& device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  // [layers, 2, num_blocks, block_size, kv_heads, head_dim]: layer l's keys
  // are kv_cache()[l][0], its values kv_cache()[l][1].
  const at::Tensor& kv_cache() const { return kv_cache_; }
  const at::Tensor& inv_freq() const { return inv_freq_; }  // [head_dim / 2] float32
  Communicator* communicator() const { return communicator_; }  // nullptr: not tensor-parallel

  // Tensor parallelism: the sum over the ranks of a row-parallel product's
  // partial output (o, down), in place; nothing on a single rank.
  void SumOverRanks(at::Tensor& partial) const;
  // [rows, vocab] float32 from this rank's [rows, vocab share] lm_head output.
  at::Tensor FullLogits(const at::Tensor& local) const;

 private:
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;

  ModelConfig config_;
  ModelWeights weights_;
  at::Device device_;
  at::ScalarType dtype_;
  at::Tensor kv_cache_;  // [layers, 2, num_blocks, block_size, kv_heads, head_dim]
  at::Tensor inv_freq_;  // [head_dim / 2] float32
  Communicator* communicator_;
};

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_LLAMA_MODEL_H_

// How a step's batch reaches the model: the host-side description of one
// forward pass, and the two ways to run it. TorchForward builds LibTorch
// attention metadata and runs LlamaModel::Forward (CPU, and CUDA builds
// without Gantry's kernels). CudaForward (cuda_forward.cc, CUDA builds only)
// packs the metadata into one upload, runs the fused kernels, and replays a
// CUDA graph for decode steps whose batch fits a captured size.
#ifndef GANTRY_RUNTIME_INTERNAL_FORWARD_H_
#define GANTRY_RUNTIME_INTERNAL_FORWARD_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/internal/attention.h"
#include "runtime/internal/llama_model.h"

namespace gantry::runtime {

struct ForwardBatch {
  // Sequence after sequence: num_computed tokens cached, num_new processed now.
  std::vector<BatchSequence> sequences;
  std::vector<int64_t> token_ids;   // [sum of num_new]
  std::vector<int64_t> logit_rows;  // token rows whose next-token logits are wanted
  // Uploaded with the step's inputs when the path packs them (the sampler's
  // parameters): one host-to-device copy per step.
  const std::vector<float>* extra = nullptr;
  // Run-ahead tokens, sampled by the step before and still on the device:
  // token_ids[pending_rows[i]] (a placeholder here) is
  // pending_source[pending_source_rows[i]].
  std::vector<int64_t> pending_rows;
  std::vector<int64_t> pending_source_rows;
  at::Tensor pending_source;  // [rows] int64 on the model's device
};

// Writes the run-ahead tokens into `ids` ([tokens], the step's uploaded
// token ids, any integer type, on the device) in stream order, before the
// forward reads them: one small upload of the indices and two kernels.
void FillPendingTokens(const ForwardBatch& batch, at::Tensor ids);

struct ForwardOutput {
  at::Tensor logits;  // [logit_rows, vocab] float32 on the model's device
  at::Tensor extra;   // the device copy of ForwardBatch::extra, or undefined if not uploaded
};

class Forward {
 public:
  virtual ~Forward() = default;
  // Writes the new tokens' keys and values into the cache and returns the
  // logits of the requested rows.
  virtual ForwardOutput Run(const ForwardBatch& batch) = 0;
  // "torch", "cuda kernels", "cuda kernels + graphs for batches up to N".
  virtual std::string Describe() const = 0;
};

std::unique_ptr<Forward> MakeTorchForward(LlamaModel* model, int64_t block_size);

struct CudaForwardOptions {
  int64_t block_size = 16;
  int64_t max_context = 0;      // longest sequence: sizes the graphs' block tables
  int64_t max_graph_batch = 0;  // 0: no CUDA graphs; else graphs for decode batches up to this
  int64_t warm_step_tokens = 0; // prompt steps of 16, 32, ... up to this many tokens run once at load
  bool skinny_gemm = false;      // Gantry's kernel for projections of up to 8 rows (false: cuBLAS)
  bool decode_gemv = true;       // decode steps of up to 4 rows through DecodeGemv, norms and SiLU fused (16-bit dtypes)
  bool decode_gemv_rope = true;  // and their rotary embedding and cache write fused into qkv's (no q/k norm)
  int decode_gemv_l2_prefetch_units = 0;  // and o's first units a block asked into L2 during attention (0..64)
  bool decode_attention_early_loads = true;  // steps of 1-2 sequences: attention reads lengths, tables, older keys before its wait
};
// Captures the decode graphs and runs the prompt shapes once (part of the
// load, so the first request is already warm). Only in builds with CUDA LibTorch and Gantry's kernels;
// elsewhere UNIMPLEMENTED.
absl::StatusOr<std::unique_ptr<Forward>> MakeCudaForward(LlamaModel* model, const CudaForwardOptions& options);
// True when this build has the fused CUDA path.
bool HaveCudaKernels();

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_FORWARD_H_

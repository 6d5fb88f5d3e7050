// The runtime's API for encoder models (embeddings and cross-encoder rerank).
// Torch-free, as model_runner.h: the scheduler sees only this.
//
// An encoder has no KV cache and no sampling: each call takes whole inputs
// (token ids and token types) and returns one row of floats per input, the
// pooled (and, when set up so, unit-length) hidden state of an embedding
// model, or the classifier logits of a cross-encoder.
#ifndef GANTRY_RUNTIME_ENCODER_RUNNER_H_
#define GANTRY_RUNTIME_ENCODER_RUNNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/encoder_config.h"
#include "runtime/model_task.h"

namespace gantry::runtime {

// Device memory LtGemm's workspace takes beside a 16-bit encoder's weights on
// a GPU (EncoderLoadOptions::cuda_lt_gemm): cuBLAS's suggestion for Hopper.
// The scheduler's memory estimate counts it.
inline constexpr uint64_t kEncoderLtGemmWorkspaceBytes = uint64_t{32} << 20;

struct EncoderLoadOptions {
  std::string model_dir;
  std::string device = "cpu";  // "cpu", "cuda" or "cuda:N"
  std::string dtype;           // "" = the config's (float16 runs as float32 on the CPU)
  // Embedding models: how token states become the input's vector (ignored
  // by classifiers, whose head reads the first token).
  Pooling pooling = Pooling::kCls;
  bool normalize = true;
  // CUDA: weights through pinned staging buffers (LoadOptions::cuda_staged_upload).
  bool cuda_staged_upload = true;
  // CUDA: each sublayer's residual add and LayerNorm in one kernel
  // (cuda::AddLayerNorm) instead of an add and at::layer_norm, and the
  // embeddings' gathers, sums and LayerNorm in one (cuda::EmbedLayerNorm)
  // instead of five LibTorch kernels (false: for comparison).
  bool cuda_kernels = true;
  // CUDA, 16-bit dtypes: the intermediate projection's GELU computed in
  // cuBLASLt's epilogue (at::_addmm_activation) instead of a separate pass
  // over the [tokens, intermediate] activations. cuBLASLt's GELU is the tanh
  // form; for "gelu" (erf) models it differs from the erf form by at most
  // 4.7e-4 absolute (1.8e-4 relative), below half a bf16 or fp16 rounding
  // step of the value. false: LibTorch's erf GELU, for comparison.
  bool cuda_gelu_epilogue = true;
  // CUDA, 16-bit dtypes: the layers' four products through cuda::LtGemm
  // (cuBLASLt with the fastest of its candidate algorithms, timed the first
  // time a shape runs, m bucketed by powers of two) instead of at::linear
  // (the heuristic's first algorithm). Costs kEncoderLtGemmWorkspaceBytes on
  // the device and, on each shape's first run, about 32 timed products and a
  // wait. On by default: bge-m3-shaped, 512-token inputs, H100, 1,510 and
  // 1,505 against 1,440 sequences/s at batch 32, 1,569 and 1,576 against
  // 1,521 at 256 (bench/encoder_bench --lt_gemm=true/false, 2026-12-07);
  // builds without cuBLASLt ignore it.
  bool cuda_lt_gemm = true;
  // CUDA, with cuda_lt_gemm: each sublayer's residual add made in the
  // product's cuBLASLt epilogue (beta = 1, the residual stream as C), so the
  // LayerNorm after it reads one [tokens, hidden] tensor instead of two; the
  // sum is rounded to the dtype once instead of twice (bge-m3-shaped, H100:
  // +0.4-1.1% sequences/s at batch 256, +0.6-0.9% at 32). false: the
  // product, then the add in the LayerNorm's kernel (cuda_kernels), for
  // comparison.
  bool cuda_residual_epilogue = true;
  // Where the output reads one row of each input (classifier heads, CLS or
  // last-token pooling), the last layer computes only that row's query,
  // attention output, MLP and LayerNorms (keys and values still of every
  // token): the same result with about a layer's products less, 1/24 of a
  // bge-m3-shaped forward's (H100, 512-token inputs: +3.5% sequences/s at
  // batch 32, +3.0% at 256). false: every row, for comparison.
  bool last_layer_output_rows_only = true;
  // A batch of inputs of unlike lengths runs as several padded forwards
  // (GroupInputsByLength), each costed as this many tokens on top of its
  // padded ones. On the H100 a bge-m3-shaped forward costs
  // about 2.8 ms plus 1.27 us a padded token (3.44 ms for one 512-token
  // input, 22.2 ms for 32), so about 2,048 tokens; on the CPU a forward's
  // fixed cost is small against its tokens' (64).
  int64_t group_overhead_tokens = 0;  // <= 0: by device
};

struct EncoderInfo {
  EncoderConfig config;
  std::string device;  // as resolved, e.g. "cuda:0"
  std::string dtype;   // as resolved
  int64_t max_tokens = 0;   // longest input, special tokens included
  int64_t output_size = 0;  // floats per input: hidden size or the classifier's labels
  uint64_t weight_bytes = 0;
  std::string execution;  // how batches run, e.g. "torch, padded batches"
};

struct EncoderInput {
  absl::Span<const int32_t> tokens;       // special tokens included, as the tokenizer's post-processor adds them
  absl::Span<const int32_t> token_types;  // empty: all 0; else one per token
};

// Not thread-safe: one caller (the model's engine thread) drives it.
class EncoderRunner {
 public:
  virtual ~EncoderRunner() = default;
  virtual const EncoderInfo& info() const = 0;
  // One row of info().output_size floats per input, in order. INVALID_ARGUMENT
  // naming the input's index for an empty input, one over max_tokens, a token
  // id outside the vocabulary or a token type outside type_vocab_size;
  // RESOURCE_EXHAUSTED when the device ran out of memory (the runner stays usable).
  virtual absl::StatusOr<std::vector<std::vector<float>>> Encode(absl::Span<const EncoderInput> batch) = 0;
};

absl::StatusOr<std::unique_ptr<EncoderRunner>> LoadEncoder(const EncoderLoadOptions& options);

// What an input may hold: at most max_tokens ids in [0, vocab_size), token
// types (if any) one per id in [0, type_vocab_size).
struct EncoderLimits {
  int64_t max_tokens = 0;
  int64_t vocab_size = 0;
  int64_t type_vocab_size = 1;
};
// INVALID_ARGUMENT naming the input's index for an empty input, a token id
// or type out of range, or a token type count unlike the token count;
// OUT_OF_RANGE for an input longer than max_tokens.
absl::Status CheckEncoderInput(const EncoderInput& input, size_t index, const EncoderLimits& limits);

// How a batch of inputs with these lengths runs: groups of input indices,
// each one padded forward, shortest inputs first. The groups cut the inputs
// sorted by length into runs that minimise the sum over groups of
// overhead_tokens + inputs x longest (an exact split by dynamic programming,
// O(n^2) for n inputs), so a few long inputs do not pad many short ones to
// their length unless a separate forward would cost more. Every index is in
// exactly one group; inputs of one length stay together.
std::vector<std::vector<size_t>> GroupInputsByLength(absl::Span<const int64_t> lengths, int64_t overhead_tokens);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_ENCODER_RUNNER_H_

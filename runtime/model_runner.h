// The runtime's public step API. Torch-free: the scheduler and its tests
// (with a fake implementation) include only this.
//
// A sequence is a token list (prompt, then sampled tokens) plus its KV-cache
// block table, both owned by the scheduler. Each Step processes, for every
// listed sequence, the next `num_tokens` tokens not yet in the cache: a prompt
// chunk (prefill) or the one token sampled last step (decode). When a step
// reaches the end of a sequence's known tokens it samples the next token.
#ifndef GANTRY_RUNTIME_MODEL_RUNNER_H_
#define GANTRY_RUNTIME_MODEL_RUNNER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/model_config.h"

namespace gantry::runtime {

using SequenceId = int64_t;

inline constexpr int kMaxTopLogprobs = 20;
// OpenAI's logit_bias: at most this many tokens a request, each biased by a
// value in [-kMaxLogitBias, kMaxLogitBias] (-100 bans a token in effect).
inline constexpr int kMaxLogitBiasTokens = 1024;
inline constexpr float kMaxLogitBias = 100.0f;

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy
  int32_t top_k = 0;                // 0 = off
  float top_p = 1.0f;               // 1 = off
  float min_p = 0.0f;               // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off; prompt and generated tokens
  float presence_penalty = 0.0f;    // generated tokens only
  float frequency_penalty = 0.0f;   // generated tokens only
  uint64_t seed = 0;                // the same seed and inputs give the same tokens
  bool logprobs = false;            // report the chosen token's log-probability
  int32_t top_logprobs = 0;         // and this many alternatives (0..kMaxTopLogprobs)
  // (token, bias) pairs added to the logits after the penalties, before the
  // temperature and filters; each token once. Logprobs stay the model's own.
  std::vector<std::pair<int32_t, float>> logit_bias;
};

// Checks ranges; the message names the field and its allowed range.
absl::Status ValidateSamplingParams(const SamplingParams& params, int64_t vocab_size);

// A model's weights in host memory (pinned where the model ran on a GPU),
// which the scheduler's host tier keeps after the model leaves its device:
// loading it again from them is one copy per tensor, not a file read, and
// gives bit-identical weights. Opaque outside the runtime.
class HostWeights {
 public:
  virtual ~HostWeights() = default;
  virtual uint64_t bytes() const = 0;
};

struct LoadOptions {
  std::string model_dir;
  std::string device = "cpu";  // "cpu", "cuda" or "cuda:N"
  // "", "float32", "bfloat16" or "float16". Empty: the config's dtype, except
  // float16 on CPU, which runs as float32 (CPUs lack fast half GEMMs).
  std::string dtype;
  uint64_t kv_cache_bytes = 256ull << 20;  // the KV pool's size; blocks = bytes / block bytes
  int32_t block_size = 16;                 // tokens per KV block
  int64_t max_context = 0;                 // 0 = the model's max_position_embeddings
  // CUDA: Gantry's fused kernels (false: LibTorch operators only, for
  // comparison), and CUDA graphs captured at load for decode batches of up
  // to this many sequences (0: none).
  bool cuda_kernels = true;
  int64_t cuda_graph_max_batch = 32;
  // CUDA: prompt steps of up to this many tokens are run once at load (cuBLAS
  // picks and loads its kernels per shape), so the first request is as fast
  // as later ones.
  int64_t warm_step_tokens = 2048;
  // CUDA: projections of steps with up to 8 tokens through Gantry's
  // SkinnyGemm kernel instead of cuBLAS. Off: on the H200 the 8B-shaped
  // model decodes slower with it (177 against 190 tokens/s at batch 1).
  bool cuda_skinny_gemm = false;
  // CUDA: decode steps of up to 4 sequences through Gantry's DecodeGemv
  // (tensor cores; every projection, with the RMSNorms, residual adds and
  // SiLU fused in) instead of cuBLAS and the separate kernels; bf16/fp16
  // models only (others ignore it). Those steps are batch-invariant bit for
  // bit, so a seeded sequence samples the same tokens alone or beside up to
  // 3 others (cuBLAS picks its kernels and split-K by batch shape). H100,
  // 8B-shaped bf16 model, same machine: 174.5 against 169.1 tokens/s at
  // batch 1, 344 against 332 at 2, 670 against 658 at 4 (runtime_bench
  // --decode_gemv=true/false, 2026-12-06).
  bool cuda_decode_gemv = true;
  // CUDA, with cuda_decode_gemv: those steps' rotary embedding and KV-cache
  // write happen in the qkv product's epilogue (GemvOutput::kRopeCache), a
  // kernel a layer fewer, the same bits. Models with a per-head q/k norm
  // (Qwen3) keep the separate kernel. On by default since 2026-12-07 (#12):
  // once a warp counted its weight requests instead of dividing (ncu had
  // traced a first, slower version to 64-bit divisions in every request), it
  // won on two H100s (8B-shaped bf16, runtime_bench --gemv_rope=true/false,
  // alternating): batch 1 even (175.3, 174.7, 174.7 against 175.5, 175.5,
  // 173.7) and 169.5-169.6 against 168.9-169.0; batch 4 +1.0% and +1.4%
  // (650.1-650.9 against 640.9-641.7).
  bool cuda_decode_gemv_rope = true;
  // CUDA, with cuda_decode_gemv: each block of the o projection (the product
  // after attention) asks this many of its units (16 weight rows) into L2
  // before its dependency wait, while attention still runs and leaves the
  // memory bandwidth mostly idle (DecodeGemvArgs::l2_prefetch_units). 0..64;
  // 0: off. The same bits either way. Off by default: it gained nothing
  // measurable (H100, 8B-shaped bf16, batch 1: 168.9-169.1 tokens/s with 2
  // units against 168.9-169.0 without; with the rotary fused 169.6-169.9
  // against 169.5-169.6; runtime_bench --gemv_l2_prefetch 2, 2026-12-07).
  int cuda_decode_gemv_l2_prefetch_units = 0;
  // CUDA: under programmatic dependent launch, decode steps of 1 or 2
  // sequences read attention's sequence lengths, block tables and every key
  // but the new one before it waits for the projection just before it,
  // which writes only q and the new key
  // (PagedAttentionArgs::prior_writes_last_key_only), so at a short context
  // those round trips overlap the projection's tail. The same bits either
  // way. H100, 8B-shaped bf16: batch 1 +0.4% to +1.0%, batch 2 +0.5%; from
  // 4 sequences the keys' reads compete with the projection (-0.2% to -0.7%),
  // so larger steps read after the wait.
  bool cuda_decode_attention_early_loads = true;
  // CUDA: weights whose bytes are contiguous in the file and already in the
  // load dtype go from the safetensors files to the GPU through pinned
  // staging buffers, several reader threads and overlapping copies
  // (runtime/cuda/staged_upload.h: 15.9-27 GB/s from the page cache on the
  // H100 in its own test, against 6.25 GB/s for per-tensor pageable copies).
  bool cuda_staged_upload = true;
  // Tensor parallelism: every layer split over this many ranks (Megatron
  // style), which sum their partial results after o and down. On CUDA the
  // ranks are GPUs device, device + 1, ... (or `devices`) joined by NCCL; on
  // the CPU they are threads (for tests). 1: off.
  int32_t tensor_parallel = 1;
  // Explicit devices for the ranks, e.g. {"cuda:0", "cuda:2"}; overrides
  // `device` and sets tensor_parallel to its size.
  std::vector<std::string> devices;
  // Weights copied to the host by an earlier load of the same model
  // (ModelRunner::CopyWeightsToHost): loaded from there instead of the
  // files when they match (same dtype and ranks), else ignored.
  std::shared_ptr<const HostWeights> host_weights;
};

struct ModelInfo {
  ModelConfig config;
  std::string device;  // as resolved, e.g. "cuda:0" (a tensor-parallel model's rank 0)
  std::vector<std::string> devices;  // every device the model holds, rank order (one unless tensor-parallel)
  std::string dtype;   // as resolved
  int32_t block_size = 0;
  int64_t num_blocks = 0;
  int64_t max_context = 0;
  uint64_t weight_bytes = 0;    // device bytes held by weights (all ranks)
  uint64_t kv_cache_bytes = 0;  // device bytes held by the KV pool (all ranks; each holds its KV heads' share)
  std::string execution;        // how steps run, e.g. "cuda kernels, CUDA graphs for decode batches up to 32"
  std::string weights_source;   // where this load read the weights: "disk" or "host" (the host tier)
  // Where the load's time went: bringing the weights onto the device(s), and
  // what follows (KV pool, kernels' warm-up, CUDA graph capture).
  double weights_seconds = 0;
  double setup_seconds = 0;
};

// One sequence of a step. The scheduler owns the token history and the KV
// block table (scheduler/kv_cache_manager.h); the runtime reads them for the
// step's duration and keeps nothing of them.
struct StepSequence {
  // The runtime keeps a sequence's sampler state (penalty counts) under its
  // id from its first step until ReleaseSequence.
  SequenceId id = 0;
  absl::Span<const int32_t> tokens;  // prompt, then generated tokens: the whole history
  int64_t num_prompt = 0;            // leading tokens of `tokens` that are the prompt
  int64_t num_computed = 0;          // tokens whose keys and values are in the cache (a cached prefix too)
  int64_t num_tokens = 1;            // tokens processed now: tokens[num_computed, num_computed + num_tokens)
  // KV blocks of tokens [0, num_computed + num_tokens): token p lives in slot
  // p % block_size of block block_table[p / block_size].
  absl::Span<const int32_t> block_table;
  const SamplingParams* sampling = nullptr;  // used when the step reaches the end of `tokens`
  bool return_logits = false;  // copy the raw logits of the last processed position
  // Guided decoding: when not empty, [ceil(vocab_size / 32)] words, bit
  // (t % 32) of word t / 32 set when token t may be sampled; the others get
  // probability 0 (logprobs stay those of the model's own distribution).
  absl::Span<const uint32_t> allowed_tokens;
  // Running ahead (MaxStepsInFlight() > 1): tokens.back() is a placeholder
  // for the token that the launched, not yet collected step samples for this
  // same id; the runner takes it from that step's output where it lies (the
  // device), so this step can be launched before that one is collected.
  // That step must sample for the id, and this one must process the
  // placeholder (num_computed + num_tokens == tokens.size()).
  bool last_token_pending = false;
};

// Words of an allowed_tokens mask for a vocabulary (logits width).
inline int64_t AllowedTokenWords(int64_t vocab_size) { return (vocab_size + 31) / 32; }

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct SequenceStepResult {
  SequenceId id = 0;
  bool sampled = false;  // false for a prompt chunk that did not reach the end of its tokens
  int32_t token = -1;
  float logprob = 0.0f;                     // when params.logprobs
  std::vector<TokenLogprob> top_logprobs;   // params.top_logprobs entries, best first
  std::vector<float> logits;                // when StepSequence::return_logits
};

// Where a step's host time went (steady clock, seconds), so benchmarks can
// tell the device's time from the host's: checks and input packing until the
// forward pass is enqueued; from then until the sampled ids (and logits) are
// back on the host; building the result. On a GPU the device is busy about
// `device_seconds` of each step when the caller collects at once (Step); a
// caller that works between Launch and Collect adds its own time to it. The
// rest of the step, and whatever the caller does between steps, leaves the
// device idle. A step that neither samples nor returns logits does not wait
// for the device: its device time falls into the next waiting step's.
struct StepTiming {
  double prepare_seconds = 0;
  double device_seconds = 0;
  double finish_seconds = 0;
};

struct StepResult {
  std::vector<SequenceStepResult> sequences;  // in the order of the step's sequences
  StepTiming timing;
};

// Not thread-safe: one caller (a model's scheduling loop) drives a runner.
class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  virtual const ModelInfo& info() const = 0;

  // Forgets the sampler state kept for `id` (no-op for an unknown id). The
  // scheduler calls it when a sequence ends or is preempted: a sequence that
  // comes back starts afresh from its tokens.
  virtual void ReleaseSequence(SequenceId id) = 0;

  // Runs one batched forward step: writes the keys and values of each
  // sequence's new tokens into its blocks and, for each sequence whose step
  // reaches the end of its tokens, samples the next token (the caller appends
  // it). On error nothing is sampled and the runner stays usable; INVALID_ARGUMENT
  // for a malformed step (block tables that do not cover the tokens, block ids
  // outside the pool, token ids outside the vocabulary), RESOURCE_EXHAUSTED when the
  // device ran out of memory (the message names the step's size).
  virtual absl::StatusOr<StepResult> Step(absl::Span<const StepSequence> batch) = 0;

  // Step in two halves, so the caller can work while the device runs the
  // step: Launch checks the batch and enqueues it, Collect waits for the
  // oldest launched step and returns what Step would have. At most
  // MaxStepsInFlight() steps are launched and not yet collected. The batch
  // (its spans and sampling parameters) need stay valid only during Launch.
  // An error can come from either half (Step's errors); after a Launch error
  // there is nothing more to collect. The default runs the whole Step in
  // Launch.
  virtual absl::Status Launch(absl::Span<const StepSequence> batch) {
    if (launched_) return absl::FailedPreconditionError("Launch while the launched step is not collected");
    launched_ = Step(batch);
    if (launched_->ok()) return absl::OkStatus();
    absl::Status error = launched_->status();
    launched_.reset();
    return error;
  }
  virtual absl::StatusOr<StepResult> Collect() {
    if (!launched_) return absl::FailedPreconditionError("Collect without a launched step");
    absl::StatusOr<StepResult> result = std::move(*launched_);
    launched_.reset();
    return result;
  }
  // 2 when a step may be launched while the one before it is uncollected,
  // with StepSequence::last_token_pending for the tokens that one samples
  // (the caller plans step N + 1 while the device runs step N, so the device
  // never waits for the host between steps); 1 otherwise.
  virtual int MaxStepsInFlight() const { return 1; }

  // A host copy of the weights for a later load (LoadOptions::host_weights).
  // Not while a step runs.
  virtual absl::StatusOr<std::shared_ptr<const HostWeights>> CopyWeightsToHost() const {
    return absl::UnimplementedError("this runner cannot copy its weights to the host");
  }

 private:
  std::optional<absl::StatusOr<StepResult>> launched_;  // the default Launch's result
};

// CUDA devices usable by this build (0 with a CPU-only LibTorch or no driver).
int CudaDeviceCount();

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  uint64_t total_memory = 0;
  int major = 0, minor = 0;  // compute capability
};
// Each usable CUDA device; empty without CUDA.
std::vector<CudaDeviceInfo> DescribeCudaDevices();
struct CudaAllocatorStats {
  int device = 0;
  uint64_t allocated_bytes = 0;  // held by live tensors
  uint64_t reserved_bytes = 0;   // taken from the driver by the caching allocator
};
// The LibTorch CUDA caching allocator's current figures per usable device;
// empty without CUDA.
std::vector<CudaAllocatorStats> DescribeCudaAllocators();
// Device-to-device copy bandwidth of a CUDA device in bytes per second,
// counting bytes read plus bytes written (1 GiB copied 20 times): the ceiling
// that memory-bound decode is measured against. FAILED_PRECONDITION on the CPU.
absl::StatusOr<double> MeasureCopyBandwidth(const std::string& device);
// "LibTorch 2.11.0, CUDA 13.0" or "LibTorch 1.13.0, CPU only".
std::string DescribeBuild();

// Loads a Hugging Face model folder onto the device named in `options`.
absl::StatusOr<std::unique_ptr<ModelRunner>> LoadModel(const LoadOptions& options);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_MODEL_RUNNER_H_

// Batched next-token sampling on the device.
//
// Randomness is counter-based: the Gumbel noise for token v of a row is a
// hash of (seed, position, v). A row's draw therefore does not depend on the
// other rows of the batch, on the device, or on any generator state, so the
// same seed and inputs give the same tokens, and a preempted sequence that is
// recomputed resumes exactly. Torch generators are per device and stateful,
// which would tie a sequence's tokens to its batch neighbours.
#ifndef GANTRY_RUNTIME_INTERNAL_SAMPLER_H_
#define GANTRY_RUNTIME_INTERNAL_SAMPLER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "runtime/internal/penalty_state.h"
#include "runtime/internal/torch_util.h"
#include "runtime/model_runner.h"

namespace gantry::runtime {

struct SamplerRow {
  const SamplingParams* params = nullptr;
  int64_t position = 0;     // position the sampled token will take
  int64_t penalty_row = 0;  // the sequence's PenaltyState row; 0 without penalties
  absl::Span<const uint32_t> allowed_tokens;  // empty: every token; else StepSequence::allowed_tokens
};

// A step's draws still on the device: Sampler::Choose enqueues them and
// their copy to the host (the step's one device-to-host copy), Sampler::Read
// waits for that copy.
struct SampleChoice {
  at::Tensor ids;     // [rows] int64 token ids on the device (the next step's inputs when it runs ahead)
  at::Tensor packed;  // [rows] int64 token ids, or [rows, 2 + 2 * max_top_logprobs] float32 with logprobs
  HostCopy host;      // of packed
  bool with_logprobs = false;
  int64_t max_top_logprobs = 0;
  std::vector<int32_t> top_logprobs;  // per row: how many alternatives it asked for
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;
};

// Temperature, top-k, top-p and min-p draws run in Gantry's sampling kernel
// on CUDA builds with it (no sort of the vocabulary; kernels.h gives the
// kept-set rule), and through LibTorch's sort elsewhere; both use the same
// noise, so they agree except where tied logits sit on a top-k or top-p edge.
class Sampler {
 public:
  // Packs the rows' parameters on the host; `penalties` holds the rows'
  // state and is updated by Sample.
  Sampler(const std::vector<SamplerRow>& rows, int64_t vocab_size, const at::Device& device,
          PenaltyState* penalties);

  // The parameters to upload ([kFields, rows] float32, integers bit for
  // bit); empty when every row is greedy without penalties.
  const std::vector<float>& host_params() const { return host_params_; }
  // Takes the device copy of host_params() that the forward pass uploaded
  // with its own inputs, or uploads them itself when `uploaded` is undefined.
  // Call before Sample.
  void Bind(const at::Tensor& uploaded);

  // logits: [rows, vocab] float32. Enqueues the draws (and updates the
  // penalty state) without waiting for the device.
  SampleChoice Choose(const at::Tensor& logits) const;
  // The host side of `choice`; waits for its copy (not for work enqueued after it).
  static std::vector<SampledToken> Read(const SampleChoice& choice);

 private:
  at::Tensor ApplyPenalties(const at::Tensor& logits) const;
  // -inf for the tokens the rows' allowed_tokens masks leave out.
  at::Tensor ApplyAllowedTokens(const at::Tensor& logits) const;
  // Adds the rows' SamplingParams::logit_bias.
  at::Tensor ApplyLogitBias(const at::Tensor& logits) const;
  at::Tensor GumbelNoise() const;  // [rows, vocab] float32
  at::Tensor Draw(const at::Tensor& logits) const;  // [rows] int64 for rows with temperature > 0
  at::Tensor Greedy(const at::Tensor& logits) const;  // [rows] int64: each row's argmax
  // SampleTokens (CUDA builds only): every row as its parameters say, or
  // (greedy_only) each row's argmax without them.
  at::Tensor KernelDraw(const at::Tensor& logits, bool greedy_only) const;

  std::vector<SamplerRow> rows_;
  int64_t vocab_size_;
  at::Device device_;
  PenaltyState* penalties_;
  bool use_kernel_ = false;
  bool any_random_ = false, any_filter_ = false, any_penalty_ = false;
  int64_t max_top_logprobs_ = 0;
  bool any_logprobs_ = false;
  bool any_allowed_ = false;  // some row has an allowed_tokens mask
  bool any_bias_ = false;     // some row has a logit_bias
  // Every per-row value: [kFields, rows] float32, integer fields stored bit
  // for bit; on the host, then on the device.
  std::vector<float> host_params_;
  at::Tensor params_;
  at::Tensor temperature_;    // [rows] float32
  at::Tensor top_k_;          // [rows] int32, 0 when off
  at::Tensor top_p_;          // [rows] float32
  at::Tensor min_p_;          // [rows] float32
  at::Tensor keys_;           // [rows] int32 holding the 32-bit hash keys
  at::Tensor repetition_;     // [rows, 1] float32
  at::Tensor presence_;       // [rows, 1] float32
  at::Tensor frequency_;      // [rows, 1] float32
  at::Tensor penalty_rows_;   // [rows] int64 PenaltyState rows
};

// runtime/cuda/hash32.h's hash on int64 tensors holding values in
// [0, 2^32), with products split so nothing overflows int64.
at::Tensor Hash32(const at::Tensor& x);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_SAMPLER_H_

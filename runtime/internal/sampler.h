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

#include "runtime/model_runner.h"

namespace gantry::runtime {

struct SamplerRow {
  const SamplingParams* params = nullptr;
  int64_t position = 0;  // position the sampled token will take
  const std::vector<int32_t>* tokens = nullptr;  // prompt then generated tokens
  int64_t num_prompt = 0;
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;
};

class Sampler {
 public:
  // Uploads the rows' parameters; call before the forward pass so the
  // uploads overlap it.
  Sampler(const std::vector<SamplerRow>& rows, int64_t vocab_size, const at::Device& device);

  // logits: [rows, vocab] float32. One device-to-host copy.
  std::vector<SampledToken> Sample(const at::Tensor& logits) const;

 private:
  at::Tensor ApplyPenalties(const at::Tensor& logits) const;
  at::Tensor GumbelNoise() const;  // [rows, vocab] float32

  std::vector<SamplerRow> rows_;
  int64_t vocab_size_;
  at::Device device_;
  bool any_random_ = false, any_filter_ = false, any_penalty_ = false;
  int64_t max_top_logprobs_ = 0;
  bool any_logprobs_ = false;
  at::Tensor temperature_;    // [rows] float32
  at::Tensor top_k_;          // [rows] int64, vocab when off
  at::Tensor top_p_;          // [rows] float32
  at::Tensor min_p_;          // [rows] float32
  at::Tensor repetition_;     // [rows, 1] float32
  at::Tensor presence_;       // [rows, 1] float32
  at::Tensor frequency_;      // [rows, 1] float32
  at::Tensor seen_ids_;       // [rows, max_tokens] int64 prompt+generated ids, padded with vocab
  at::Tensor generated_ids_;  // [rows, max_generated] int64 generated ids, padded with vocab
  at::Tensor row_keys_;       // [rows, 1] int64, 32-bit hash keys
};

// 32-bit integer hash (Chris Wellons' lowbias32) on int64 tensors holding
// values in [0, 2^32), with products split so nothing overflows int64.
at::Tensor Hash32(const at::Tensor& x);
uint32_t Hash32(uint32_t x);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_SAMPLER_H_

#include "runtime/internal/llama_model.h"

#include <cmath>

namespace gantry::runtime {

at::Tensor RopeInverseFrequencies(const ModelConfig& config, const at::Device& device) {
  const RopeConfig& rope = config.rope;
  const int64_t dim = config.head_dim;
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor exponents = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) / dim;
  at::Tensor inv_freq = 1.0 / at::pow(at::scalar_tensor(rope.theta, f32), exponents);
  if (rope.type == "linear") {
    inv_freq = inv_freq / rope.factor;
  } else if (rope.type == "llama3") {
    // Meta's Llama 3.1 scaling: long wavelengths are divided by `factor`,
    // short ones kept, and the band between them interpolated.
    const double old_context = static_cast<double>(rope.original_max_position_embeddings);
    const double low_freq_wavelen = old_context / rope.low_freq_factor;
    const double high_freq_wavelen = old_context / rope.high_freq_factor;
    at::Tensor wavelen = 2 * M_PI / inv_freq;
    at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
    at::Tensor smooth = (old_context / wavelen - rope.low_freq_factor) /
                        (rope.high_freq_factor - rope.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
    at::Tensor medium = wavelen.ge(high_freq_wavelen).logical_and(wavelen.le(low_freq_wavelen));
    inv_freq = at::where(medium, smoothed, scaled);
  }
  return inv_freq.to(device);
}

LlamaModel::LlamaModel(ModelConfig config, ModelWeights weights, at::Device device,
                       at::ScalarType dtype, int64_t num_blocks, int64_t block_size, Communicator* communicator)
    : config_(std::move(config)), weights_(std::move(weights)), device_(device), dtype_(dtype),
      communicator_(communicator) {
  kv_cache_ = at::zeros({config_.num_layers, 2, num_blocks, block_size, config_.num_kv_heads,
                         config_.head_dim},
                        at::TensorOptions().device(device_).dtype(dtype_));
  inv_freq_ = RopeInverseFrequencies(config_, device_);
}

void LlamaModel::SumOverRanks(at::Tensor& partial) const {
  if (communicator_ != nullptr) communicator_->AllReduceSum(partial);
}

at::Tensor LlamaModel::FullLogits(const at::Tensor& local) const {
  if (communicator_ == nullptr) return local.to(at::kFloat);
  // Gathered along dim 0, so the vocabulary goes first: [ranks * share, rows].
  at::Tensor gathered = communicator_->AllGather(local.t().contiguous());
  return gathered.narrow(0, 0, config_.vocab_size).t().to(at::kFloat).contiguous();
}

uint64_t LlamaModel::kv_cache_bytes() const {
  return static_cast<uint64_t>(kv_cache_.numel()) * kv_cache_.element_size();
}

at::Tensor LlamaModel::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  // As transformers: normalise in float32, cast back, then scale.
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x32 * at::rsqrt(variance + config_.rms_norm_eps)).to(x.scalar_type());
}

at::Tensor LlamaModel::ApplyRope(const at::Tensor& x, const at::Tensor& cos,
                                 const at::Tensor& sin) const {
  // x: [tokens, heads, head_dim]; cos/sin: [tokens, 1, head_dim]. The halves
  // layout ("rotate_half") of Hugging Face checkpoints.
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

at::Tensor LlamaModel::Forward(const at::Tensor& token_ids, const AttentionBatch& batch,
                               const at::Tensor& logit_rows) {
  const int64_t tokens = token_ids.size(0);
  const int64_t heads = config_.num_heads, kv_heads = config_.num_kv_heads;
  const int64_t head_dim = config_.head_dim;
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));

  at::Tensor freqs = batch.positions.to(at::kFloat).unsqueeze(1) * inv_freq_.unsqueeze(0);
  at::Tensor angles = at::cat({freqs, freqs}, -1);  // [tokens, head_dim]
  at::Tensor cos = angles.cos().to(dtype_).unsqueeze(1);
  at::Tensor sin = angles.sin().to(dtype_).unsqueeze(1);

  at::Tensor hidden = weights_.embed_tokens.index_select(0, token_ids);  // [tokens, hidden]
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    at::Tensor x = RmsNorm(hidden, w.input_norm);
    at::Tensor qkv = at::linear(x, w.qkv_proj, w.qkv_bias);
    at::Tensor q = qkv.narrow(1, 0, heads * head_dim).view({tokens, heads, head_dim});
    at::Tensor k = qkv.narrow(1, heads * head_dim, kv_heads * head_dim).view({tokens, kv_heads, head_dim});
    at::Tensor v = qkv.narrow(1, (heads + kv_heads) * head_dim, kv_heads * head_dim)
                       .view({tokens, kv_heads, head_dim});
    if (config_.qk_norm) {
      q = RmsNorm(q, w.q_norm);
      k = RmsNorm(k, w.k_norm);
    }
    q = ApplyRope(q, cos, sin);
    k = ApplyRope(k, cos, sin);

    at::Tensor k_cache = kv_cache_[l][0].view({-1, kv_heads, head_dim});  // [slots, kv_heads, head_dim]
    at::Tensor v_cache = kv_cache_[l][1].view({-1, kv_heads, head_dim});
    k_cache.index_copy_(0, batch.slot_mapping, k);
    v_cache.index_copy_(0, batch.slot_mapping, v);

    at::Tensor attention = PagedAttention(q, k_cache, v_cache, batch, scale);
    at::Tensor o = at::linear(attention, w.o_proj, w.o_bias);
    SumOverRanks(o);
    hidden = hidden + o;

    x = RmsNorm(hidden, w.post_norm);
    at::Tensor gate_up = at::linear(x, w.gate_up_proj, w.gate_up_bias);
    const int64_t inter = config_.intermediate_size;
    at::Tensor act = at::silu(gate_up.narrow(1, 0, inter)) * gate_up.narrow(1, inter, inter);
    at::Tensor down = at::linear(act, w.down_proj, w.down_bias);
    SumOverRanks(down);
    hidden = hidden + down;
  }
  at::Tensor last = RmsNorm(hidden.index_select(0, logit_rows), weights_.final_norm);
  if (!config_.has_lm_head) return last.to(at::kFloat);  // a bare transformer's output: the hidden states
  return FullLogits(at::linear(last, weights_.lm_head));
}

}  // namespace gantry::runtime

#include "runtime/internal/sampler.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "runtime/cuda/hash32.h"
#include "runtime/internal/torch_util.h"

#ifdef GANTRY_WITH_CUDA_KERNELS
#include <c10/cuda/CUDAStream.h>

#include <stdexcept>
#include <string>

#include "runtime/cuda/kernels.h"
#endif

namespace gantry::runtime {

using ::gantry::Hash32;  // the scalar hash, beside the tensor one below
namespace {

constexpr int64_t kMask32 = 0xFFFFFFFFll;

// (x * c) mod 2^32 for x in [0, 2^32): 16-bit halves keep products < 2^49.
at::Tensor MulMod32(const at::Tensor& x, int64_t c) {
  at::Tensor lo = x.bitwise_and(0xFFFF);
  at::Tensor hi = x.div(65536, "floor");
  return (lo * c + (hi * c).bitwise_and(0xFFFF) * 65536).bitwise_and(kMask32);
}

at::Tensor XorShift(const at::Tensor& x, int64_t shift) {
  return x.bitwise_xor(x.div(int64_t{1} << shift, "floor"));
}

}  // namespace

at::Tensor Hash32(const at::Tensor& x) {
  at::Tensor h = XorShift(x, 16);
  h = MulMod32(h, 0x7feb352d);
  h = XorShift(h, 15);
  h = MulMod32(h, 0x846ca68b);
  return XorShift(h, 16);
}

namespace {

// Rows of Sampler::params_.
enum Field : int64_t {
  kTemperature, kTopK, kTopP, kMinP, kKey, kRepetition, kPresence, kFrequency, kPenaltyRow, kFields
};

float Bits(int32_t value) {
  float out;
  std::memcpy(&out, &value, sizeof(out));
  return out;
}

}  // namespace

Sampler::Sampler(const std::vector<SamplerRow>& rows, int64_t vocab_size, const at::Device& device,
                 PenaltyState* penalties)
    : rows_(rows), vocab_size_(vocab_size), device_(device), penalties_(penalties) {
#ifdef GANTRY_WITH_CUDA_KERNELS
  use_kernel_ = device.is_cuda();
#endif
  const int64_t n = static_cast<int64_t>(rows.size());
  std::vector<float>& values = host_params_;
  values.resize(kFields * n);
  auto set = [&](Field field, int64_t row, float value) { values[field * n + row] = value; };
  for (int64_t i = 0; i < n; ++i) {
    const SamplingParams& p = *rows[i].params;
    set(kTemperature, i, p.temperature);
    set(kTopK, i, Bits(p.top_k > 0 && p.top_k < vocab_size ? p.top_k : 0));
    set(kTopP, i, p.top_p);
    set(kMinP, i, p.min_p);
    const uint32_t seed_lo = static_cast<uint32_t>(p.seed), seed_hi = static_cast<uint32_t>(p.seed >> 32);
    const uint32_t key = Hash32(seed_lo ^ Hash32(seed_hi ^ Hash32(static_cast<uint32_t>(rows[i].position))));
    set(kKey, i, Bits(static_cast<int32_t>(key)));
    set(kRepetition, i, p.repetition_penalty);
    set(kPresence, i, p.presence_penalty);
    set(kFrequency, i, p.frequency_penalty);
    set(kPenaltyRow, i, Bits(static_cast<int32_t>(rows[i].penalty_row)));
    if (p.temperature > 0) {
      any_random_ = true;
      any_filter_ |= p.top_k > 0 || p.top_p < 1.0f || p.min_p > 0.0f;
    }
    any_penalty_ |= rows[i].penalty_row > 0;
    any_allowed_ |= !rows[i].allowed_tokens.empty();
    any_bias_ |= !p.logit_bias.empty();
    any_logprobs_ |= p.logprobs || p.top_logprobs > 0;
    max_top_logprobs_ = std::max<int64_t>(max_top_logprobs_, p.top_logprobs);
  }
  if (!any_random_ && !any_penalty_) host_params_.clear();  // greedy rows need no parameters on the device
}

void Sampler::Bind(const at::Tensor& uploaded) {
  if (host_params_.empty()) return;
  const int64_t n = static_cast<int64_t>(rows_.size());
  params_ = (uploaded.defined() ? uploaded : Upload(host_params_, device_)).view({kFields, n});
  temperature_ = params_[kTemperature];
  top_k_ = params_[kTopK].view(at::kInt);
  top_p_ = params_[kTopP];
  min_p_ = params_[kMinP];
  keys_ = params_[kKey].view(at::kInt);
  repetition_ = params_[kRepetition].unsqueeze(1);
  presence_ = params_[kPresence].unsqueeze(1);
  frequency_ = params_[kFrequency].unsqueeze(1);
  penalty_rows_ = params_[kPenaltyRow].view(at::kInt).to(at::kLong);
}

at::Tensor Sampler::ApplyPenalties(const at::Tensor& logits) const {
  // vLLM's definitions: repetition (CTRL paper) over prompt and output,
  // presence and frequency (OpenAI) over output only. Rows without
  // penalties read the state's zero row and have neutral parameters.
  at::Tensor seen = penalties_->Seen(penalty_rows_);
  at::Tensor counts = penalties_->Counts(penalty_rows_);
  at::Tensor penalised = at::where(logits.gt(0), logits / repetition_, logits * repetition_);
  at::Tensor out = at::where(seen, penalised, logits);
  return out - frequency_ * counts - presence_ * counts.gt(0).to(at::kFloat);
}

at::Tensor Sampler::ApplyAllowedTokens(const at::Tensor& logits) const {
  // Packed bits travel (32 tokens a word, one upload), then expand on the
  // device; rows without a mask are all ones.
  const int64_t n = static_cast<int64_t>(rows_.size());
  const int64_t words = AllowedTokenWords(vocab_size_);
  std::vector<int32_t> packed(n * words, -1);
  for (int64_t i = 0; i < n; ++i) {
    const absl::Span<const uint32_t> mask = rows_[i].allowed_tokens;
    if (!mask.empty()) std::memcpy(packed.data() + i * words, mask.data(), words * sizeof(uint32_t));
  }
  at::Tensor bits = Upload(packed, device_).view({n, words, 1});                       // [rows, words, 1]
  at::Tensor shifts = at::arange(32, bits.options()).view({1, 1, 32});                 // [1, 1, 32]
  at::Tensor allowed = bits.bitwise_right_shift(shifts).bitwise_and(1).view({n, words * 32})
                           .narrow(1, 0, logits.size(1)).to(at::kBool);              // [rows, vocab]
  return logits.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
}

at::Tensor Sampler::ApplyLogitBias(const at::Tensor& logits) const {
  // Only the biased entries travel (flat index, value), one add for all rows.
  const int64_t width = logits.size(1);
  std::vector<int64_t> index;
  std::vector<float> bias;
  for (size_t i = 0; i < rows_.size(); ++i) {
    for (const auto& [token, value] : rows_[i].params->logit_bias) {
      index.push_back(static_cast<int64_t>(i) * width + token);
      bias.push_back(value);
    }
  }
  return logits.reshape({-1}).index_add(0, Upload(index, device_), Upload(bias, device_)).view_as(logits);
}

at::Tensor Sampler::GumbelNoise() const {
  const int64_t n = static_cast<int64_t>(rows_.size());
  at::Tensor ids = at::arange(vocab_size_, at::TensorOptions().dtype(at::kLong).device(device_)).view({1, -1});
  at::Tensor row_keys = keys_.to(at::kLong).bitwise_and(kMask32).view({n, 1});  // [rows, 1] in [0, 2^32)
  at::Tensor bits = Hash32((row_keys + ids).bitwise_and(kMask32).expand({n, vocab_size_}).contiguous());
  bits = Hash32(bits.bitwise_xor(row_keys));
  // 23 random bits -> uniform in [2^-24, 1 - 2^-24], exact in float32 (24
  // bits could round to 1.0 and give an infinite noise) -> Gumbel(0, 1).
  at::Tensor uniform = (bits.div(512, "floor").to(at::kFloat) + 0.5f) / 8388608.0f;
  return uniform.log().neg().log().neg();
}

#ifdef GANTRY_WITH_CUDA_KERNELS
at::Tensor Sampler::KernelDraw(const at::Tensor& logits, bool greedy_only) const {
  at::Tensor tokens = at::empty({logits.size(0)}, logits.options().dtype(at::kInt));
  cuda::SampleArgs args;
  args.rows = static_cast<int>(logits.size(0));
  args.vocab = static_cast<int>(vocab_size_);
  at::Tensor contiguous = logits.contiguous();
  args.logits = contiguous.data_ptr<float>();
  if (!greedy_only) {  // greedy rows bring no parameters (host_params_ is empty)
    args.temperature = temperature_.data_ptr<float>();
    args.top_k = top_k_.data_ptr<int32_t>();
    args.top_p = top_p_.data_ptr<float>();
    args.min_p = min_p_.data_ptr<float>();
    args.keys = reinterpret_cast<const uint32_t*>(keys_.data_ptr<int32_t>());
  }
  args.tokens = tokens.data_ptr<int32_t>();
  absl::Status status = cuda::SampleTokens(args, c10::cuda::getCurrentCUDAStream(device_.index()).stream());
  if (!status.ok()) throw std::runtime_error(std::string(status.message()));
  return tokens.to(at::kLong);
}
#endif

at::Tensor Sampler::Greedy(const at::Tensor& logits) const {
#ifdef GANTRY_WITH_CUDA_KERNELS
  // One block a row reads it once (LibTorch's argmax of a single 128k-token
  // row took 40 us on the H100). NaN never wins there, unlike at::argmax.
  if (use_kernel_) return KernelDraw(logits, /*greedy_only=*/true);
#endif
  return logits.argmax(-1);
}

at::Tensor Sampler::Draw(const at::Tensor& logits) const {
#ifdef GANTRY_WITH_CUDA_KERNELS
  if (use_kernel_) return KernelDraw(logits, /*greedy_only=*/false);
#endif
  at::Tensor safe_temperature = temperature_.clamp_min(1e-6f).unsqueeze(1);
  at::Tensor scaled = logits / safe_temperature;
  at::Tensor noise = GumbelNoise();
  if (!any_filter_) return (scaled + noise).argmax(-1);
  auto [sorted, order] = scaled.sort(-1, /*descending=*/true);
  at::Tensor probs = sorted.softmax(-1);
  at::Tensor rank = at::arange(vocab_size_, order.options()).view({1, -1});
  at::Tensor top_k = at::where(top_k_.gt(0), top_k_, vocab_size_).to(at::kLong).unsqueeze(1);
  at::Tensor drop = rank.ge(top_k);
  // Keep the smallest prefix whose mass reaches top_p (the first token always).
  drop = drop.logical_or((probs.cumsum(-1) - probs).gt(top_p_.unsqueeze(1)));
  drop = drop.logical_or(probs.lt(min_p_.unsqueeze(1) * probs.narrow(1, 0, 1)));
  sorted = sorted.masked_fill(drop, -std::numeric_limits<float>::infinity());
  at::Tensor pick = (sorted + noise.gather(1, order)).argmax(-1, /*keepdim=*/true);
  return order.gather(1, pick).squeeze(1);
}

SampleChoice Sampler::Choose(const at::Tensor& raw_logits) const {
  at::Tensor logits = any_penalty_ ? ApplyPenalties(raw_logits) : raw_logits;
  if (any_bias_) logits = ApplyLogitBias(logits);
  if (any_allowed_) logits = ApplyAllowedTokens(logits);
  at::Tensor chosen;  // [rows] int64
  if (!any_random_) {
    chosen = Greedy(logits);
  } else if (use_kernel_) {
    chosen = Draw(logits);  // greedy rows included
  } else {
    chosen = at::where(temperature_.gt(0), Draw(logits), logits.argmax(-1));
  }
  if (any_penalty_) penalties_->Record(penalty_rows_, chosen);

  SampleChoice choice;
  choice.ids = chosen;
  if (!any_logprobs_) {
    choice.packed = chosen;
    choice.host = HostCopy(chosen);
    return choice;
  }
  // Pack everything the host needs into one float tensor: one copy, one sync.
  // Token ids stay exact in float32 (vocabularies are far below 2^24).
  std::vector<at::Tensor> parts = {chosen.to(at::kFloat).unsqueeze(1)};
  {
    // Log-probabilities of the model's own distribution, before penalties
    // and temperature, as OpenAI reports them.
    at::Tensor logprobs = raw_logits.log_softmax(-1);
    parts.push_back(logprobs.gather(1, chosen.unsqueeze(1)));
    if (max_top_logprobs_ > 0) {
      auto [top_values, top_ids] = logprobs.topk(max_top_logprobs_, -1);
      parts.push_back(top_ids.to(at::kFloat));
      parts.push_back(top_values);
    }
  }
  choice.packed = parts.size() == 1 ? parts[0] : at::cat(parts, 1);
  choice.with_logprobs = true;
  choice.max_top_logprobs = max_top_logprobs_;
  for (const SamplerRow& row : rows_) choice.top_logprobs.push_back(row.params->top_logprobs);
  choice.host = HostCopy(choice.packed);
  return choice;
}

std::vector<SampledToken> Sampler::Read(const SampleChoice& choice) {
  const int64_t n = choice.packed.size(0);
  std::vector<SampledToken> out(n);
  const at::Tensor& host = choice.host.Wait();
  if (!choice.with_logprobs) {
    const int64_t* data = host.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) out[i].token = static_cast<int32_t>(data[i]);
    return out;
  }
  const float* data = host.data_ptr<float>();
  const int64_t width = host.size(1);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = data + i * width;
    out[i].token = static_cast<int32_t>(row[0]);
    out[i].logprob = row[1];
    for (int64_t j = 0; j < choice.top_logprobs[i]; ++j) {
      out[i].top_logprobs.push_back(
          {static_cast<int32_t>(row[2 + j]), row[2 + choice.max_top_logprobs + j]});
    }
  }
  return out;
}

}  // namespace gantry::runtime

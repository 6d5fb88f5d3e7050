#include "runtime/internal/sampler.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "runtime/internal/torch_util.h"

namespace gantry::runtime {
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

uint32_t Hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

Sampler::Sampler(const std::vector<SamplerRow>& rows, int64_t vocab_size, const at::Device& device)
    : rows_(rows), vocab_size_(vocab_size), device_(device) {
  const int64_t n = static_cast<int64_t>(rows.size());
  std::vector<float> temperature(n), top_p(n), min_p(n), repetition(n), presence(n), frequency(n);
  std::vector<int64_t> top_k(n), keys(n);
  int64_t max_seen = 1, max_generated = 1;
  for (int64_t i = 0; i < n; ++i) {
    const SamplingParams& p = *rows[i].params;
    temperature[i] = p.temperature;
    top_k[i] = p.top_k > 0 ? std::min<int64_t>(p.top_k, vocab_size) : vocab_size;
    top_p[i] = p.top_p;
    min_p[i] = p.min_p;
    repetition[i] = p.repetition_penalty;
    presence[i] = p.presence_penalty;
    frequency[i] = p.frequency_penalty;
    const uint32_t seed_lo = static_cast<uint32_t>(p.seed), seed_hi = static_cast<uint32_t>(p.seed >> 32);
    keys[i] = Hash32(seed_lo ^ Hash32(seed_hi ^ Hash32(static_cast<uint32_t>(rows[i].position))));
    if (p.temperature > 0) {
      any_random_ = true;
      any_filter_ |= p.top_k > 0 || p.top_p < 1.0f || p.min_p > 0.0f;
    }
    if (p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
      any_penalty_ = true;
      max_seen = std::max<int64_t>(max_seen, rows[i].tokens->size());
      max_generated = std::max<int64_t>(max_generated, rows[i].tokens->size() - rows[i].num_prompt);
    }
    any_logprobs_ |= p.logprobs || p.top_logprobs > 0;
    max_top_logprobs_ = std::max<int64_t>(max_top_logprobs_, p.top_logprobs);
  }
  temperature_ = Upload(temperature, device);
  if (any_filter_) {
    top_k_ = Upload(top_k, device);
    top_p_ = Upload(top_p, device);
    min_p_ = Upload(min_p, device);
  }
  if (any_random_) row_keys_ = Upload(keys, device).view({n, 1});
  if (any_penalty_) {
    repetition_ = Upload(repetition, device).view({n, 1});
    presence_ = Upload(presence, device).view({n, 1});
    frequency_ = Upload(frequency, device).view({n, 1});
    // Rows without penalties contribute only padding (id == vocab, a column
    // dropped after the scatter).
    std::vector<int64_t> seen(n * max_seen, vocab_size), generated(n * max_generated, vocab_size);
    for (int64_t i = 0; i < n; ++i) {
      const SamplingParams& p = *rows[i].params;
      if (p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f) {
        continue;
      }
      const auto& tokens = *rows[i].tokens;
      for (size_t t = 0; t < tokens.size(); ++t) {
        seen[i * max_seen + t] = tokens[t];
        if (static_cast<int64_t>(t) >= rows[i].num_prompt) {
          generated[i * max_generated + (t - rows[i].num_prompt)] = tokens[t];
        }
      }
    }
    seen_ids_ = Upload(seen, device).view({n, max_seen});
    generated_ids_ = Upload(generated, device).view({n, max_generated});
  }
}

at::Tensor Sampler::ApplyPenalties(const at::Tensor& logits) const {
  const int64_t n = logits.size(0);
  auto options = logits.options();
  // vLLM's definitions: repetition (CTRL paper) over prompt and output,
  // presence and frequency (OpenAI) over output only.
  at::Tensor seen = at::zeros({n, vocab_size_ + 1}, options)
                        .scatter_(1, seen_ids_, 1.0f)
                        .narrow(1, 0, vocab_size_)
                        .gt(0);
  at::Tensor counts = at::zeros({n, vocab_size_ + 1}, options)
                          .scatter_add_(1, generated_ids_, at::ones(generated_ids_.sizes(), options))
                          .narrow(1, 0, vocab_size_);
  at::Tensor penalised = at::where(logits.gt(0), logits / repetition_, logits * repetition_);
  at::Tensor out = at::where(seen, penalised, logits);
  return out - frequency_ * counts - presence_ * counts.gt(0).to(at::kFloat);
}

at::Tensor Sampler::GumbelNoise() const {
  const int64_t n = static_cast<int64_t>(rows_.size());
  at::Tensor ids = at::arange(vocab_size_, at::TensorOptions().dtype(at::kLong).device(device_)).view({1, -1});
  at::Tensor bits = Hash32((row_keys_ + ids).bitwise_and(kMask32).expand({n, vocab_size_}).contiguous());
  bits = Hash32(bits.bitwise_xor(row_keys_));
  // 24 random bits -> uniform in (0, 1) -> Gumbel(0, 1).
  at::Tensor uniform = (bits.div(256, "floor").to(at::kFloat) + 0.5f) / 16777216.0f;
  return uniform.log().neg().log().neg();
}

std::vector<SampledToken> Sampler::Sample(const at::Tensor& raw_logits) const {
  const int64_t n = raw_logits.size(0);
  at::Tensor logits = any_penalty_ ? ApplyPenalties(raw_logits) : raw_logits;
  at::Tensor chosen = logits.argmax(-1);  // greedy rows keep this
  if (any_random_) {
    at::Tensor safe_temperature = temperature_.clamp_min(1e-6f).unsqueeze(1);
    at::Tensor scaled = logits / safe_temperature;
    at::Tensor noise = GumbelNoise();
    at::Tensor sampled;
    if (any_filter_) {
      auto [sorted, order] = scaled.sort(-1, /*descending=*/true);
      at::Tensor probs = sorted.softmax(-1);
      at::Tensor rank = at::arange(vocab_size_, order.options()).view({1, -1});
      at::Tensor drop = rank.ge(top_k_.unsqueeze(1));
      // Keep the smallest prefix whose mass reaches top_p (the first token always).
      drop = drop.logical_or((probs.cumsum(-1) - probs).gt(top_p_.unsqueeze(1)));
      drop = drop.logical_or(probs.lt(min_p_.unsqueeze(1) * probs.narrow(1, 0, 1)));
      sorted = sorted.masked_fill(drop, -std::numeric_limits<float>::infinity());
      at::Tensor pick = (sorted + noise.gather(1, order)).argmax(-1, /*keepdim=*/true);
      sampled = order.gather(1, pick).squeeze(1);
    } else {
      sampled = (scaled + noise).argmax(-1);
    }
    chosen = at::where(temperature_.gt(0), sampled, chosen);
  }

  // Pack everything the host needs into one float tensor: one copy, one sync.
  // Token ids stay exact in float32 (vocabularies are far below 2^24).
  std::vector<at::Tensor> parts = {chosen.to(at::kFloat).unsqueeze(1)};
  if (any_logprobs_) {
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
  at::Tensor host = at::cat(parts, 1).to(at::kCPU).contiguous();
  const float* data = host.data_ptr<float>();
  const int64_t width = host.size(1);
  std::vector<SampledToken> out(n);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = data + i * width;
    const SamplingParams& p = *rows_[i].params;
    out[i].token = static_cast<int32_t>(row[0]);
    if (!any_logprobs_) continue;
    out[i].logprob = row[1];
    for (int64_t j = 0; j < p.top_logprobs; ++j) {
      out[i].top_logprobs.push_back(
          {static_cast<int32_t>(row[2 + j]), row[2 + max_top_logprobs_ + j]});
    }
  }
  return out;
}

}  // namespace gantry::runtime

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/model_runner.h"

namespace gantry::runtime {

absl::Status ValidateSamplingParams(const SamplingParams& p, int64_t vocab_size) {
  auto out_of_range = [](absl::string_view field, double value, absl::string_view range) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " must be in ", range, ", got ", value));
  };
  if (!(p.temperature >= 0.0f && p.temperature <= 100.0f)) {
    return out_of_range("temperature", p.temperature, "[0, 100]");
  }
  // A top_k past the vocabulary keeps every token, as top_k = 0 does.
  if (p.top_k < 0) return out_of_range("top_k", p.top_k, "[0, inf) (0 = off)");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return out_of_range("top_p", p.top_p, "(0, 1]");
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return out_of_range("min_p", p.min_p, "[0, 1]");
  if (!(p.repetition_penalty > 0.0f && p.repetition_penalty <= 10.0f)) {
    return out_of_range("repetition_penalty", p.repetition_penalty, "(0, 10]");
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return out_of_range("presence_penalty", p.presence_penalty, "[-2, 2]");
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return out_of_range("frequency_penalty", p.frequency_penalty, "[-2, 2]");
  }
  if (p.top_logprobs < 0 || p.top_logprobs > kMaxTopLogprobs || p.top_logprobs > vocab_size) {
    return out_of_range("top_logprobs", p.top_logprobs, absl::StrCat("[0, ", kMaxTopLogprobs, "]"));
  }
  if (p.logit_bias.size() > static_cast<size_t>(kMaxLogitBiasTokens)) {
    return absl::InvalidArgumentError(
        absl::StrCat("logit_bias: at most ", kMaxLogitBiasTokens, " tokens, got ", p.logit_bias.size()));
  }
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias: token ", token, " is not in the model's vocabulary (0 to ", vocab_size - 1, ")"));
    }
    if (!(bias >= -kMaxLogitBias && bias <= kMaxLogitBias)) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias: the bias of token ", token, " must be in [-",
                                                     kMaxLogitBias, ", ", kMaxLogitBias, "], got ", bias));
    }
  }
  return absl::OkStatus();
}

}  // namespace gantry::runtime

#include "server/request_checks.h"

#include <algorithm>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"

namespace gantry::server {

using scheduler::GenerationRequest;

namespace {

// Caps on what one request may ask of every step (README, "Limits").
constexpr int kMaxStopStrings = 64;
constexpr size_t kMaxStopBytes = 1024;
constexpr int kMaxStopTokenIds = 1024;

}  // namespace

absl::Status CheckModelName(const std::string& model) {
  if (model.empty()) return absl::InvalidArgumentError("model is required (see Models.List)");
  return absl::OkStatus();
}

absl::Status ApplyParameters(const v1::SamplingParameters& p, GenerationRequest* request) {
  runtime::SamplingParams& s = request->sampling;
  if (p.has_max_tokens()) {
    if (p.max_tokens() == 0) return absl::InvalidArgumentError("max_tokens must be >= 1, got 0");
    request->max_tokens = p.max_tokens();
  }
  if (p.has_temperature()) s.temperature = p.temperature();
  if (p.has_top_p()) s.top_p = p.top_p();
  if (p.has_top_k()) {
    if (p.top_k() > 1000000) return absl::InvalidArgumentError(absl::StrCat("top_k must be in [0, 1000000], got ", p.top_k()));
    s.top_k = static_cast<int32_t>(p.top_k());
  }
  if (p.has_min_p()) s.min_p = p.min_p();
  if (p.has_repetition_penalty()) s.repetition_penalty = p.repetition_penalty();
  if (p.has_presence_penalty()) s.presence_penalty = p.presence_penalty();
  if (p.has_frequency_penalty()) s.frequency_penalty = p.frequency_penalty();
  s.seed = p.has_seed() ? p.seed() : std::random_device()() * 4294967296ull + std::random_device()();
  if (p.top_logprobs() > runtime::kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs must be in [0, ", runtime::kMaxTopLogprobs, "], got ", p.top_logprobs()));
  }
  s.logprobs = p.logprobs() || p.top_logprobs() > 0;
  s.top_logprobs = static_cast<int32_t>(p.top_logprobs());
  // Every stop string is matched against every step's text: a request with
  // thousands would slow every other request in its batch.
  if (p.stop_size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop: at most ", kMaxStopStrings, " stop strings, got ", p.stop_size()));
  }
  for (const auto& stop : p.stop()) {
    if (stop.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
    if (stop.size() > kMaxStopBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop: each stop string at most ", kMaxStopBytes, " bytes, got one of ", stop.size()));
    }
    request->stop.push_back(stop);
  }
  if (p.stop_token_ids_size() > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop_token_ids: at most ", kMaxStopTokenIds, ", got ", p.stop_token_ids_size()));
  }
  for (uint32_t id : p.stop_token_ids()) {
    if (id > static_cast<uint32_t>(INT32_MAX)) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids: ", id, " is not a token id"));
    }
    request->stop_token_ids.push_back(static_cast<int32_t>(id));
  }
  // Ranges and the vocabulary are checked where the model is known
  // (runtime::ValidateSamplingParams); the count here, before copying.
  if (p.logit_bias_size() > runtime::kMaxLogitBiasTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("logit_bias: at most ", runtime::kMaxLogitBiasTokens, " tokens, got ", p.logit_bias_size()));
  }
  for (const auto& [token, bias] : p.logit_bias()) {
    if (token > static_cast<uint32_t>(INT32_MAX)) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias: ", token, " is not a token id"));
    }
    s.logit_bias.emplace_back(static_cast<int32_t>(token), bias);
  }
  // Map order is unspecified; sorted, the same request samples the same way.
  std::sort(s.logit_bias.begin(), s.logit_bias.end());
  request->ignore_eos = p.ignore_eos();
  request->skip_special_tokens = p.has_skip_special_tokens() ? p.skip_special_tokens() : true;
  return absl::OkStatus();
}

absl::Status CheckGenerate(const v1::GenerateRequest& request, GenerationRequest* generation) {
  if (auto s = CheckModelName(request.model()); !s.ok()) return s;
  if (auto s = ApplyParameters(request.parameters(), generation); !s.ok()) return s;
  if (request.prompt_case() == v1::GenerateRequest::PROMPT_NOT_SET) {
    return absl::InvalidArgumentError("prompt is required: set text or token_ids");
  }
  return GrammarSpecOf(request.parameters().grammar()).status();
}

absl::Status CheckChat(const v1::ChatRequest& request, GenerationRequest* generation, ChatSetup* setup) {
  if (auto s = CheckModelName(request.model()); !s.ok()) return s;
  if (auto s = ApplyParameters(request.parameters(), generation); !s.ok()) return s;
  auto read = ReadChatSetup(request);
  if (!read.ok()) return read.status();
  *setup = *std::move(read);
  return absl::OkStatus();
}

absl::Status CheckEmbed(const v1::EmbedRequest& request) {
  if (auto s = CheckModelName(request.model()); !s.ok()) return s;
  if (request.inputs_size() == 0) return absl::InvalidArgumentError("inputs is empty: at least one is needed");
  if (request.inputs_size() > kMaxEmbedInputs) {
    return absl::InvalidArgumentError(absl::StrCat("inputs has ", request.inputs_size(), " entries; at most ",
                                                   kMaxEmbedInputs, " per request"));
  }
  for (int i = 0; i < request.inputs_size(); ++i) {
    const v1::EmbedInput& input = request.inputs(i);
    switch (input.input_case()) {
      case v1::EmbedInput::kText:
        if (input.text().empty()) return absl::InvalidArgumentError(absl::StrCat("inputs[", i, "].text is empty"));
        break;
      case v1::EmbedInput::kTokenIds:
        if (input.token_ids().ids_size() == 0) {
          return absl::InvalidArgumentError(absl::StrCat("inputs[", i, "].token_ids is empty"));
        }
        for (uint32_t id : input.token_ids().ids()) {
          if (id > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
            return absl::InvalidArgumentError(absl::StrCat("inputs[", i, "].token_ids holds ", id,
                                                           ", beyond any vocabulary"));
          }
        }
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("inputs[", i, "] has neither text nor token_ids"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRerank(const v1::RerankRequest& request) {
  if (auto s = CheckModelName(request.model()); !s.ok()) return s;
  if (request.query().empty()) return absl::InvalidArgumentError("query is empty");
  if (request.documents_size() == 0) return absl::InvalidArgumentError("documents is empty: at least one is needed");
  if (request.documents_size() > kMaxRerankDocuments) {
    return absl::InvalidArgumentError(absl::StrCat("documents has ", request.documents_size(), " entries; at most ",
                                                   kMaxRerankDocuments, " per request"));
  }
  return absl::OkStatus();
}

}  // namespace gantry::server

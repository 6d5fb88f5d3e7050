#include "server/inference_service.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "text/json_limits.h"
#include "server/status_util.h"

namespace gantry::server {
namespace {

using scheduler::GenerationRequest;

absl::Status CheckModelName(const std::string& model) {
  if (model.empty()) return absl::InvalidArgumentError("model is required (see Models.List)");
  return absl::OkStatus();
}

// SamplingParameters -> GenerationRequest fields; ranges are checked by the
// engine's Submit (runtime::ValidateSamplingParams names field and range).
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
  for (const auto& stop : p.stop()) {
    if (stop.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
    request->stop.push_back(stop);
  }
  for (uint32_t id : p.stop_token_ids()) request->stop_token_ids.push_back(static_cast<int32_t>(id));
  request->ignore_eos = p.ignore_eos();
  request->skip_special_tokens = p.has_skip_special_tokens() ? p.skip_special_tokens() : true;
  return absl::OkStatus();
}

v1::FinishReason ToProto(scheduler::FinishReason reason) {
  switch (reason) {
    case scheduler::FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case scheduler::FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case scheduler::FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    default: return v1::FINISH_REASON_UNSPECIFIED;
  }
}

void FillResponse(const scheduler::StreamEvent& event, const text::Tokenizer* tokenizer, bool want_logprobs,
                  v1::GenerateResponse* out) {
  out->set_text(event.text);
  for (const auto& token : event.tokens) {
    out->add_token_ids(static_cast<uint32_t>(token.id));
    if (!want_logprobs) continue;
    v1::TokenLogprobs* lp = out->add_logprobs();
    lp->set_token(static_cast<uint32_t>(token.id));
    lp->set_logprob(token.logprob);
    if (tokenizer) lp->set_text(tokenizer->Decode(std::vector<int32_t>{token.id}));
    for (const auto& alt : token.top_logprobs) {
      v1::TokenLogprob* a = lp->add_top_logprobs();
      a->set_token(static_cast<uint32_t>(alt.token));
      a->set_logprob(alt.logprob);
      if (tokenizer) a->set_text(tokenizer->Decode(std::vector<int32_t>{alt.token}));
    }
  }
  if (event.reason != scheduler::FinishReason::kNone) {
    out->set_finish_reason(ToProto(event.reason));
    out->set_stop_reason(event.stop_reason);
    v1::Usage* usage = out->mutable_usage();
    usage->set_prompt_tokens(static_cast<uint32_t>(event.usage.prompt_tokens));
    usage->set_cached_prompt_tokens(static_cast<uint32_t>(event.usage.cached_prompt_tokens));
    usage->set_completion_tokens(static_cast<uint32_t>(event.usage.completion_tokens));
    usage->set_queue_seconds(event.usage.queue_seconds);
    usage->set_time_to_first_token_seconds(event.usage.time_to_first_token_seconds);
  }
}

}  // namespace

grpc::Status InferenceService::Stream(grpc::ServerContext* context, const scheduler::ModelLease& engine,
                                      GenerationRequest request, grpc::ServerWriter<v1::GenerateResponse>* writer,
                                      Metrics::Request* recorded) {
  // `engine` is the request's lease: the model stays loaded until it returns.
  const bool want_logprobs = request.sampling.logprobs;
  auto stream = engine->Submit(std::move(request));
  if (!stream.ok()) return ToGrpc(stream.status());
  scheduler::StreamEvent event;
  while (true) {
    if (!(*stream)->Pop(&event, absl::Milliseconds(20))) {
      if (context->IsCancelled()) {
        (*stream)->Cancel();  // the engine drops it at its next step, freeing its blocks
        const bool expired = context->deadline() <= std::chrono::system_clock::now();
        return ToGrpc(expired ? absl::DeadlineExceededError("deadline exceeded")
                              : absl::CancelledError("cancelled by the client"));
      }
      continue;
    }
    if (!event.error.ok()) return ToGrpc(event.error);
    v1::GenerateResponse response;
    FillResponse(event, engine->tokenizer(), want_logprobs, &response);
    if (!writer->Write(response)) {
      (*stream)->Cancel();
      return ToGrpc(absl::CancelledError("the client went away"));
    }
    recorded->OnTokens(static_cast<int64_t>(event.tokens.size()));
    if (event.last()) {
      recorded->OnUsage(event.usage.prompt_tokens, event.usage.queue_seconds);
      return grpc::Status::OK;
    }
  }
}

grpc::Status InferenceService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                        grpc::ServerWriter<v1::GenerateResponse>* writer) {
  Metrics::Request recorded(metrics_, request->model());
  grpc::Status status = GenerateStream(context, request, writer, &recorded);
  recorded.Finish(status.error_code());
  return status;
}

grpc::Status InferenceService::Chat(grpc::ServerContext* context, const v1::ChatRequest* request,
                                    grpc::ServerWriter<v1::GenerateResponse>* writer) {
  Metrics::Request recorded(metrics_, request->model());
  grpc::Status status = ChatStream(context, request, writer, &recorded);
  recorded.Finish(status.error_code());
  return status;
}

grpc::Status InferenceService::GenerateStream(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                              grpc::ServerWriter<v1::GenerateResponse>* writer,
                                              Metrics::Request* recorded) {
  if (auto s = CheckModelName(request->model()); !s.ok()) return ToGrpc(s);
  GenerationRequest generation;
  if (auto s = ApplyParameters(request->parameters(), &generation); !s.ok()) return ToGrpc(s);
  if (request->prompt_case() == v1::GenerateRequest::PROMPT_NOT_SET) {
    return ToGrpc(absl::InvalidArgumentError("prompt is required: set text or token_ids"));
  }
  auto engine = registry_->Acquire(request->model());
  if (!engine.ok()) return ToGrpc(engine.status());
  if (request->has_token_ids()) {
    for (uint32_t id : request->token_ids().ids()) generation.prompt.push_back(static_cast<int32_t>(id));
  } else {
    const text::Tokenizer* tokenizer = (*engine)->tokenizer();
    if (tokenizer == nullptr) {
      return ToGrpc(absl::FailedPreconditionError(
          absl::StrCat("model ", request->model(), " has no tokenizer.json: send token_ids instead of text")));
    }
    auto ids = tokenizer->Encode(request->text(), request->has_add_special_tokens() ? request->add_special_tokens() : true);
    if (!ids.ok()) return ToGrpc(absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message())));
    generation.prompt = *std::move(ids);
  }
  return Stream(context, *engine, std::move(generation), writer, recorded);
}

grpc::Status InferenceService::ChatStream(grpc::ServerContext* context, const v1::ChatRequest* request,
                                          grpc::ServerWriter<v1::GenerateResponse>* writer,
                                          Metrics::Request* recorded) {
  if (auto s = CheckModelName(request->model()); !s.ok()) return ToGrpc(s);
  if (request->messages().empty()) return ToGrpc(absl::InvalidArgumentError("messages must not be empty"));
  GenerationRequest generation;
  if (auto s = ApplyParameters(request->parameters(), &generation); !s.ok()) return ToGrpc(s);
  nlohmann::ordered_json tools = nullptr;
  if (!request->tools_json().empty()) {
    auto parsed = text::ParseJsonLimited<nlohmann::ordered_json>(request->tools_json(), "tools_json");
    if (!parsed.ok()) return ToGrpc(parsed.status());
    tools = *std::move(parsed);
    if (!tools.is_array()) return ToGrpc(absl::InvalidArgumentError("tools_json must be a JSON list of tool schemas"));
  }
  auto engine = registry_->Acquire(request->model());
  if (!engine.ok()) return ToGrpc(engine.status());
  const text::Tokenizer* tokenizer = (*engine)->tokenizer();
  if (tokenizer == nullptr) {
    return ToGrpc(absl::FailedPreconditionError(
        absl::StrCat("model ", request->model(), " has no tokenizer.json, so it cannot chat; use Generate with token_ids")));
  }
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (const auto& m : request->messages()) {
    if (m.role().empty()) return ToGrpc(absl::InvalidArgumentError("every message needs a role"));
    messages.push_back({{"role", m.role()}, {"content", m.content()}});
  }
  auto prompt = (*engine)->chat_template()->Render(
      messages, request->has_add_generation_prompt() ? request->add_generation_prompt() : true, tools);
  if (!prompt.ok()) return ToGrpc(prompt.status());
  // The template writes the special tokens it wants (BOS included).
  auto ids = tokenizer->Encode(*prompt, /*add_special_tokens=*/false);
  if (!ids.ok()) return ToGrpc(absl::InvalidArgumentError(absl::StrCat("messages: ", ids.status().message())));
  generation.prompt = *std::move(ids);
  return Stream(context, *engine, std::move(generation), writer, recorded);
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                                        v1::TokenizeResponse* response) {
  if (auto s = CheckModelName(request->model()); !s.ok()) return ToGrpc(s);
  auto engine = registry_->Acquire(request->model());
  if (!engine.ok()) return ToGrpc(engine.status());
  if ((*engine)->tokenizer() == nullptr) {
    return ToGrpc(absl::FailedPreconditionError(absl::StrCat("model ", request->model(), " has no tokenizer.json")));
  }
  auto ids = (*engine)->tokenizer()->Encode(request->text(),
                                            request->has_add_special_tokens() ? request->add_special_tokens() : true);
  if (!ids.ok()) return ToGrpc(absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message())));
  for (int32_t id : *ids) response->add_token_ids(static_cast<uint32_t>(id));
  return grpc::Status::OK;
}

grpc::Status InferenceService::Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* request,
                                          v1::DetokenizeResponse* response) {
  if (auto s = CheckModelName(request->model()); !s.ok()) return ToGrpc(s);
  auto engine = registry_->Acquire(request->model());
  if (!engine.ok()) return ToGrpc(engine.status());
  const text::Tokenizer* tokenizer = (*engine)->tokenizer();
  if (tokenizer == nullptr) {
    return ToGrpc(absl::FailedPreconditionError(absl::StrCat("model ", request->model(), " has no tokenizer.json")));
  }
  std::vector<int32_t> ids;
  for (int i = 0; i < request->token_ids_size(); ++i) {
    const uint32_t id = request->token_ids(i);
    if (id >= static_cast<uint32_t>(tokenizer->vocab_size())) {
      return ToGrpc(absl::InvalidArgumentError(absl::StrCat("token_ids[", i, "] = ", id,
                                                            " is outside the vocabulary [0, ", tokenizer->vocab_size(), ")")));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  response->set_text(tokenizer->Decode(ids, request->skip_special_tokens()));
  return grpc::Status::OK;
}

}  // namespace gantry::server

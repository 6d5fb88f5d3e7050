#include "server/inference_service.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "text/chat_encoder.h"
#include "text/json_limits.h"
#include "server/chat_reply.h"
#include "server/chat_request.h"
#include "server/request_checks.h"
#include "server/status_util.h"

namespace gantry::server {
namespace {

using scheduler::GenerationRequest;

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

// Builds the prompt once the model is known (tokenizing, rendering the chat
// template, compiling the grammar); the request's parameters are already
// applied. A chat also sets how its reply is shaped (`reply`).
using Prepare =
    std::function<absl::Status(const scheduler::ModelLease&, GenerationRequest*, std::unique_ptr<ChatReply>* reply)>;

// One Generate or Chat stream. Owned jointly by gRPC (until OnDone) and, while
// it waits for a model, by the work queue's task: the last to let go deletes
// it. Every method that may finish the call does so as its last act.
class GenerationCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerationCall(InferenceService* service, grpc::CallbackServerContext* context, const std::string& model)
      : service_(service), context_(context), model_(model), recorded_(service->metrics(), model) {}

  // Validation errors so far in `checked`; otherwise waits for the model,
  // prepares and submits the request. A request with a grammar is prepared
  // off the gRPC thread (compiling it takes up to seconds).
  void Start(absl::Status checked, GenerationRequest request, Prepare prepare, bool compiles_grammar) {
    if (!checked.ok()) return FinishNow(checked);
    refs_.fetch_add(1);
    service_->WithLease(
        model_,
        [this, request = std::move(request), prepare = std::move(prepare)](
            absl::StatusOr<scheduler::ModelLease> lease) mutable {
          Admit(std::move(lease), std::move(request), prepare);
          Unref();
        },
        compiles_grammar);
  }

  void OnWriteDone(bool ok) override {
    absl::Status end;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      writing_ = false;
      if (finished_) {
        // Cancelled while the write was in flight.
        end = pending_end_;
      } else if (!ok) {
        finished_ = true;
        if (stream_) stream_->Cancel();
        end = EndedByClient(*context_, "the client went away");
      }
    }
    if (!end.ok()) return FinishWith(end);
    Pump();
  }

  void OnCancel() override {
    const absl::Status end = EndedByClient(*context_, "cancelled by the client");
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stream_) stream_->Cancel();  // the engine drops it at its next step, freeing its blocks
      if (finished_) return;
      finished_ = true;
      if (writing_) {  // OnWriteDone finishes
        pending_end_ = end;
        return;
      }
    }
    FinishWith(end);
  }

  void OnDone() override {
    std::shared_ptr<scheduler::RequestStream> stream;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stream = stream_;
    }
    // Waits for a listener call in progress: none comes after this.
    if (stream) stream->SetListener(nullptr);
    recorded_.Finish(code_.load());
    Unref();
  }

 private:
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  // Finishes a call nothing else is touching yet (no write, no stream).
  void FinishNow(const absl::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      finished_ = true;
    }
    FinishWith(status);
  }

  void FinishWith(const absl::Status& status) {
    code_.store(static_cast<int>(status.code()));
    Finish(ToGrpc(status));
  }

  void Admit(absl::StatusOr<scheduler::ModelLease> lease, GenerationRequest request, const Prepare& prepare) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (finished_) return;  // cancelled while the model loaded; the lease goes here
    }
    // Outside the lock: a grammar compiles for up to seconds, and a cancel
    // (on a gRPC thread) must not wait for it.
    absl::Status error = lease.status();
    std::unique_ptr<ChatReply> reply;
    if (error.ok()) error = prepare(*lease, &request, &reply);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (finished_) return;  // cancelled while it was prepared
      if (error.ok()) {
        reply_ = std::move(reply);
        want_logprobs_ = request.sampling.logprobs;
        tokenizer_ = (*lease)->tokenizer();
        auto stream = (*lease)->Submit(std::move(request));
        if (!stream.ok()) {
          error = stream.status();
        } else {
          lease_.emplace(*std::move(lease));
          stream_ = *std::move(stream);
        }
      }
      if (!error.ok()) finished_ = true;
    }
    if (!error.ok()) return FinishWith(error);
    // Events pushed before the listener was set are found by the first Pump.
    stream_->SetListener([this] { Pump(); });
    Pump();
    // A call that ended meanwhile (cancelled, perhaps already past OnDone)
    // must not leave a listener behind: this task's reference keeps it alive
    // until here.
    bool over;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      over = finished_;
    }
    if (over) stream_->SetListener(nullptr);
  }

  // Writes the next event, unless a write is in flight (its OnWriteDone
  // comes back here) or the call is over.
  void Pump() {
    bool last = false;
    absl::Status error;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (writing_ || finished_) return;
      scheduler::StreamEvent event;
      if (!stream_->Pop(&event, absl::ZeroDuration())) return;
      if (!event.error.ok()) {
        finished_ = true;
        error = event.error;
      } else {
        response_.Clear();
        FillResponse(event, tokenizer_, want_logprobs_, &response_);
        if (reply_) reply_->Shape(event, &response_);
        recorded_.OnTokens(static_cast<int64_t>(event.tokens.size()));
        writing_ = true;
        last = event.last();
        if (last) {
          finished_ = true;
          recorded_.OnUsage(event.usage.prompt_tokens, event.usage.queue_seconds);
          code_.store(0);
        }
      }
    }
    if (!error.ok()) return FinishWith(error);
    if (last) return StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    StartWrite(&response_);
  }

  InferenceService* const service_;
  grpc::CallbackServerContext* const context_;
  const std::string model_;
  Metrics::Request recorded_;
  std::atomic<int> refs_{1};   // gRPC's, plus the load wait's while it runs
  std::atomic<int> code_{0};   // the status code the call ended with

  std::mutex mutex_;
  bool finished_ = false;  // Finish called or about to be: nothing more is written
  bool writing_ = false;   // a write is in flight
  absl::Status pending_end_;  // the status to finish with when a write in flight returns
  std::optional<scheduler::ModelLease> lease_;  // keeps the model loaded until the call is done
  std::shared_ptr<scheduler::RequestStream> stream_;
  const text::Tokenizer* tokenizer_ = nullptr;
  std::unique_ptr<ChatReply> reply_;  // Chat: content, reasoning and tool calls from the text
  bool want_logprobs_ = false;
  v1::GenerateResponse response_;  // the message being written
};

// The grammar of `spec`, compiled for the engine's model.
absl::Status SetGrammar(const std::optional<guided::GrammarSpec>& spec, const scheduler::ModelLease& engine,
                        GenerationRequest* generation) {
  if (!spec) return absl::OkStatus();
  auto grammar = engine->CompileGrammar(*spec);
  if (!grammar.ok()) return grammar.status();
  generation->grammar = *std::move(grammar);
  return absl::OkStatus();
}

absl::Status PrepareGenerate(const v1::GenerateRequest& request, const scheduler::ModelLease& engine,
                             GenerationRequest* generation) {
  auto spec = GrammarSpecOf(request.parameters().grammar());
  if (!spec.ok()) return spec.status();
  if (auto s = SetGrammar(*spec, engine, generation); !s.ok()) return s;
  if (request.has_token_ids()) {
    for (uint32_t id : request.token_ids().ids()) generation->prompt.push_back(static_cast<int32_t>(id));
    return absl::OkStatus();
  }
  const text::Tokenizer* tokenizer = engine->tokenizer();
  if (tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", request.model(), " has no tokenizer.json: send token_ids instead of text"));
  }
  auto ids = tokenizer->Encode(request.text(), request.has_add_special_tokens() ? request.add_special_tokens() : true);
  if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message()));
  generation->prompt = *std::move(ids);
  return absl::OkStatus();
}

// The model's tool-call and reasoning formats: its config's choice, or what
// its chat template shows.
text::ChatOutputOptions OutputFormatOf(const scheduler::ModelLease& engine) {
  text::ChatOutputOptions options;
  const scheduler::EngineOptions& configured = engine->options();
  const std::string& source = engine->tokenizer()->chat_template();
  auto tool_parser = text::ToolParserFromName(configured.tool_parser);
  options.tool_parser = !configured.tool_parser.empty() && tool_parser.ok() ? *tool_parser
                                                                            : text::DetectToolParser(source);
  auto reasoning_parser = text::ReasoningParserFromName(configured.reasoning_parser);
  options.reasoning_parser = !configured.reasoning_parser.empty() && reasoning_parser.ok()
                                 ? *reasoning_parser
                                 : text::DetectReasoningParser(source);
  return options;
}

absl::Status PrepareChat(const v1::ChatRequest& request, const ChatSetup& setup, const scheduler::ModelLease& engine,
                         GenerationRequest* generation, std::unique_ptr<ChatReply>* reply) {
  if (engine->task() != runtime::ModelTask::kGenerate) {
    return WithReason(absl::FailedPreconditionError(absl::StrCat("model ", request.model(), " serves ",
                                                                 runtime::ModelTaskName(engine->task()),
                                                                 ", not chat")),
                      ErrorReason::kUnsupported);
  }
  const text::Tokenizer* tokenizer = engine->tokenizer();
  if (tokenizer == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model ", request.model(), " has no tokenizer.json, so it cannot chat; use Generate with token_ids"));
  }
  ChatReply::Options shape;
  shape.parse = OutputFormatOf(engine);
  shape.tool_choice = setup.tool_choice;
  shape.forced_function = setup.forced_function;
  const bool offers_tools = !setup.tools.is_null();
  if (offers_tools && setup.tool_choice == v1::TOOL_CHOICE_AUTO && shape.parse.tool_parser == text::ToolParserKind::kNone) {
    return WithReason(absl::FailedPreconditionError(absl::StrCat(
                          "model ", request.model(),
                          "'s chat template shows no known tool-call format; set tool_parser in its config "
                          "(hermes, llama3_json, mistral or deepseek_v3), or use tool_choice required or a function")),
                      ErrorReason::kUnsupported);
  }
  if (!offers_tools || setup.tool_choice != v1::TOOL_CHOICE_AUTO) shape.parse.tool_parser = text::ToolParserKind::kNone;
  // Tool-call markers may be special tokens ([TOOL_CALLS], <|python_tag|>).
  if (shape.parse.tool_parser != text::ToolParserKind::kNone && !request.parameters().has_skip_special_tokens()) {
    generation->skip_special_tokens = false;
  }
  if (auto s = SetGrammar(setup.grammar, engine, generation); !s.ok()) return s;

  text::ChatEncodeOptions options;
  options.add_generation_prompt = request.has_add_generation_prompt() ? request.add_generation_prompt() : true;
  options.special_tokens_in_content = engine->options().special_tokens_in_content;
  options.template_variables = setup.template_kwargs;
  std::string rendered;
  options.rendered = &rendered;
  auto ids = text::EncodeChat(*engine->chat_template(), *tokenizer, setup.messages, setup.tools, options);
  if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("messages: ", ids.status().message()));
  generation->prompt = *std::move(ids);
  shape.parse.starts_in_reasoning = text::PromptEndsInReasoning(rendered, shape.parse.reasoning_parser);
  // A reasoning model thinks first; the request's grammar (response_format)
  // applies to its answer. A forced tool call is JSON from the first token.
  const auto open = tokenizer->TokenToId("<think>"), close = tokenizer->TokenToId("</think>");
  if (generation->grammar && setup.tool_choice != v1::TOOL_CHOICE_REQUIRED &&
      setup.tool_choice != v1::TOOL_CHOICE_FUNCTION && shape.parse.reasoning_parser != text::ReasoningParserKind::kNone &&
      open && close) {
    generation->reasoning_gate = GenerationRequest::ReasoningGate{*open, *close, shape.parse.starts_in_reasoning};
  }
  *reply = std::make_unique<ChatReply>(std::move(shape));
  return absl::OkStatus();
}

// A tokenizer request's model, or the error.
absl::StatusOr<const text::Tokenizer*> TokenizerOf(const absl::StatusOr<scheduler::ModelLease>& engine,
                                                   const std::string& model) {
  if (!engine.ok()) return engine.status();
  if ((*engine)->tokenizer() == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("model ", model, " has no tokenizer.json"));
  }
  return (*engine)->tokenizer();
}

}  // namespace

void InferenceService::WithLease(const std::string& model,
                                 std::function<void(absl::StatusOr<scheduler::ModelLease>)> then, bool heavy) {
  if (auto ready = registry_->TryAcquire(model)) {
    if (!heavy) return then(*std::move(ready));
    // std::function needs a copyable task: the lease travels in a shared_ptr.
    auto lease = std::make_shared<absl::StatusOr<scheduler::ModelLease>>(*std::move(ready));
    return preparers_.Post([then = std::move(then), lease] { then(std::move(*lease)); });
  }
  load_waiters_.Post([this, model, then = std::move(then)] { then(registry_->Acquire(model)); });
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                                           const v1::GenerateRequest* request) {
  auto* call = new GenerationCall(this, context, request->model());
  GenerationRequest generation;
  absl::Status checked = Authorize(*context, "Inference.Generate");
  if (checked.ok()) checked = CheckGenerate(*request, &generation);
  // `request` lives until the call is done.
  call->Start(
      checked, std::move(generation),
      [request](const scheduler::ModelLease& engine, GenerationRequest* g, std::unique_ptr<ChatReply>*) {
        return PrepareGenerate(*request, engine, g);
      },
      request->parameters().has_grammar());
  return call;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Chat(grpc::CallbackServerContext* context,
                                                                       const v1::ChatRequest* request) {
  auto* call = new GenerationCall(this, context, request->model());
  GenerationRequest generation;
  auto setup = std::make_shared<ChatSetup>();
  absl::Status checked = Authorize(*context, "Inference.Chat");
  if (checked.ok()) checked = CheckChat(*request, &generation, setup.get());
  call->Start(
      checked, std::move(generation),
      [request, setup](const scheduler::ModelLease& engine, GenerationRequest* g, std::unique_ptr<ChatReply>* reply) {
        return PrepareChat(*request, *setup, engine, g, reply);
      },
      setup->grammar.has_value());
  return call;
}

grpc::ServerUnaryReactor* InferenceService::WithTokenizer(
    grpc::CallbackServerContext* context, const std::string& model,
    std::function<absl::Status(const text::Tokenizer&)> body) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (auto s = Authorize(*context, "Inference.Tokenize/Detokenize"); !s.ok()) {
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  if (auto s = CheckModelName(model); !s.ok()) {
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  WithLease(model, [reactor, model, body = std::move(body)](absl::StatusOr<scheduler::ModelLease> engine) {
    auto tokenizer = TokenizerOf(engine, model);
    reactor->Finish(ToGrpc(tokenizer.ok() ? body(**tokenizer) : tokenizer.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  return WithTokenizer(context, request->model(), [request, response](const text::Tokenizer& tokenizer) {
    auto ids = tokenizer.Encode(request->text(),
                                request->has_add_special_tokens() ? request->add_special_tokens() : true);
    if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message()));
    for (int32_t id : *ids) response->add_token_ids(static_cast<uint32_t>(id));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* context,
                                                       const v1::DetokenizeRequest* request,
                                                       v1::DetokenizeResponse* response) {
  return WithTokenizer(context, request->model(), [request, response](const text::Tokenizer& tokenizer) {
    std::vector<int32_t> ids;
    for (int i = 0; i < request->token_ids_size(); ++i) {
      const uint32_t id = request->token_ids(i);
      if (id >= static_cast<uint32_t>(tokenizer.vocab_size())) {
        return absl::InvalidArgumentError(absl::StrCat("token_ids[", i, "] = ", id,
                                                       " is outside the vocabulary [0, ", tokenizer.vocab_size(), ")"));
      }
      ids.push_back(static_cast<int32_t>(id));
    }
    response->set_text(tokenizer.Decode(ids, request->skip_special_tokens()));
    return absl::OkStatus();
  });
}

}  // namespace gantry::server

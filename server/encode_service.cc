// Inference.Embed and Inference.Rerank: the request is tokenized once its
// model is known (prompts, pairs, truncation), queued on the model's engine
// (which batches inputs of concurrent calls into one encoder step), and
// answered when its one event arrives. A cancelled call leaves the engine's
// queue at its next step.
#include <atomic>
#include <functional>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/encode_results.h"
#include "server/inference_service.h"
#include "server/request_checks.h"
#include "server/status_util.h"

namespace gantry::server {
namespace {

using runtime::ModelTask;

// Builds the engine request once the model is known.
using PrepareEncode = std::function<absl::StatusOr<scheduler::EncodeRequest>(const scheduler::ModelLease&)>;
// Fills the response from the engine's event.
using Respond = std::function<absl::Status(const scheduler::ModelLease&, scheduler::StreamEvent&)>;

// One Embed or Rerank call. Owned by gRPC (until OnDone) and, while it
// waits for its model, by the work queue's task: the last to let go deletes it.
class EncodeCall final : public grpc::ServerUnaryReactor {
 public:
  EncodeCall(InferenceService* service, grpc::CallbackServerContext* context, const std::string& model)
      : service_(service), context_(context), model_(model), recorded_(service->metrics(), model) {}

  void Start(absl::Status checked, PrepareEncode prepare, Respond respond) {
    if (!checked.ok()) return FinishOnce(checked);
    respond_ = std::move(respond);
    refs_.fetch_add(1);
    service_->WithLease(model_, [this, prepare = std::move(prepare)](absl::StatusOr<scheduler::ModelLease> lease) {
      Admit(std::move(lease), prepare);
      Unref();
    });
  }

  void OnCancel() override {
    const absl::Status end = EndedByClient(*context_, "cancelled by the client");
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stream_) stream_->Cancel();  // the engine drops it at its next step
    }
    FinishOnce(end);
  }

  void OnDone() override {
    std::shared_ptr<scheduler::RequestStream> stream;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stream = stream_;
    }
    if (stream) stream->SetListener(nullptr);  // waits for a listener call in progress
    recorded_.Finish(code_.load());
    Unref();
  }

 private:
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  // Finishes the call unless it already was.
  void FinishOnce(const absl::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (finished_) return;
      finished_ = true;
    }
    code_.store(static_cast<int>(status.code()));
    Finish(ToGrpc(status));
  }

  void Admit(absl::StatusOr<scheduler::ModelLease> lease, const PrepareEncode& prepare) {
    absl::Status error;
    std::shared_ptr<scheduler::RequestStream> stream;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (finished_) return;  // cancelled while the model loaded
      if (!lease.ok()) {
        error = lease.status();
      } else if (auto request = prepare(*lease); !request.ok()) {
        error = request.status();
      } else if (auto submitted = (*lease)->SubmitEncode(*std::move(request)); !submitted.ok()) {
        error = submitted.status();
      } else {
        lease_.emplace(*std::move(lease));
        stream_ = stream = *std::move(submitted);
      }
    }
    if (!error.ok()) return FinishOnce(error);
    stream->SetListener([this] { OnEvent(); });
    OnEvent();  // an event pushed before the listener was set
    bool over;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      over = finished_;
    }
    // A call over (perhaps past OnDone) must not leave a listener behind;
    // this task's reference keeps it alive until here.
    if (over) stream->SetListener(nullptr);
  }

  void OnEvent() {
    scheduler::StreamEvent event;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (finished_ || !stream_->Pop(&event, absl::ZeroDuration())) return;
      finished_ = true;  // this event ends the call: a cancellation now changes nothing
    }
    absl::Status status = event.error;
    if (status.ok() && event.reason == scheduler::FinishReason::kCancelled) {
      status = WithReason(absl::UnavailableError(absl::StrCat("model ", model_, " is shutting down")),
                          ErrorReason::kShuttingDown);
    }
    if (status.ok()) {
      recorded_.OnUsage(event.usage.prompt_tokens, event.usage.queue_seconds);
      status = respond_(*lease_, event);
    }
    code_.store(static_cast<int>(status.code()));
    Finish(ToGrpc(status));
  }

  InferenceService* const service_;
  grpc::CallbackServerContext* const context_;
  const std::string model_;
  Metrics::Request recorded_;
  Respond respond_;
  std::atomic<int> refs_{1};  // gRPC's, plus the load wait's while it runs
  std::atomic<int> code_{0};

  std::mutex mutex_;
  bool finished_ = false;
  std::optional<scheduler::ModelLease> lease_;
  std::shared_ptr<scheduler::RequestStream> stream_;
};

absl::Status ServesTask(const scheduler::ModelLease& engine, const std::string& model, ModelTask wanted,
                        const char* what) {
  if (engine->task() == wanted) return absl::OkStatus();
  return WithReason(absl::FailedPreconditionError(absl::StrCat("model ", model, " serves ",
                                                               runtime::ModelTaskName(engine->task()), ", not ", what)),
                    ErrorReason::kUnsupported);
}

absl::Status NoTokenizer(const std::string& model, const char* what) {
  return WithReason(absl::FailedPreconditionError(absl::StrCat("model ", model, " has no tokenizer.json, so ", what)),
                    ErrorReason::kUnsupported);
}

// Token types go to models that have more than one; RoBERTa-family models
// (one type) take zeros whatever the tokenizer's pair template says.
std::vector<int32_t> TypesFor(const scheduler::ModelLease& engine, std::vector<int32_t> types) {
  const runtime::EncoderInfo* info = engine->encoder_info();
  if (info == nullptr || info->config.type_vocab_size < 2) return {};
  return types;
}

absl::StatusOr<scheduler::EncodeRequest> PrepareEmbed(const v1::EmbedRequest& request,
                                                      const scheduler::ModelLease& engine) {
  if (auto s = ServesTask(engine, request.model(), ModelTask::kEmbed, "embeddings"); !s.ok()) return s;
  const runtime::EmbeddingSetup& setup = engine->task_info().embedding;
  const int64_t limit = engine->info().max_context;
  std::string prompt;
  if (!request.prompt_name().empty()) {
    auto it = setup.prompts.find(request.prompt_name());
    if (it == setup.prompts.end()) {
      std::vector<std::string> names;
      for (const auto& [name, text] : setup.prompts) names.push_back(name);
      return absl::InvalidArgumentError(absl::StrCat("prompt_name \"", request.prompt_name(), "\" is not a prompt of model ",
                                                     request.model(), names.empty() ? " (it has none)" : "; it has: ",
                                                     absl::StrJoin(names, ", ")));
    }
    prompt = it->second;
  } else if (!setup.default_prompt_name.empty()) {
    prompt = setup.prompts.at(setup.default_prompt_name);
  }
  scheduler::EncodeRequest out;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const v1::EmbedInput& input = request.inputs(i);
    scheduler::EncodeInput encoded;
    if (input.has_token_ids()) {
      for (uint32_t id : input.token_ids().ids()) encoded.tokens.push_back(static_cast<int32_t>(id));
      // Token ids carry no marks of their special tokens: cut at the end.
      if (request.truncate() && static_cast<int64_t>(encoded.tokens.size()) > limit) encoded.tokens.resize(limit);
    } else {
      const text::Tokenizer* tokenizer = engine->tokenizer();
      if (tokenizer == nullptr) return NoTokenizer(request.model(), "send token_ids instead of text");
      auto encoding = tokenizer->EncodeWithTypes(prompt + input.text(), /*add_special_tokens=*/true,
                                                 request.truncate() ? static_cast<int>(limit) : 0);
      if (!encoding.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("inputs[", i, "].text: ", encoding.status().message()));
      }
      encoded.tokens = std::move(encoding->ids);
      encoded.token_types = TypesFor(engine, std::move(encoding->type_ids));
    }
    out.inputs.push_back(std::move(encoded));
  }
  return out;
}

// Qwen3-Reranker's prompt (its model card): a system turn asking for "yes"
// or "no", then the instruction, query and document; the model's answer
// token comes next.
constexpr char kJudgePrefix[] =
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n";
constexpr char kJudgeSuffix[] = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
constexpr char kDefaultInstruction[] = "Given a web search query, retrieve relevant passages that answer the query";

absl::StatusOr<scheduler::EncodeRequest> PrepareJudgePrompts(const v1::RerankRequest& request,
                                                             const text::Tokenizer& tokenizer, int64_t limit) {
  auto encode = [&](const std::string& text) { return tokenizer.Encode(text, /*add_special_tokens=*/false); };
  auto prefix = encode(kJudgePrefix);
  auto suffix = encode(kJudgeSuffix);
  if (!prefix.ok() || !suffix.ok()) return absl::InternalError("the rerank prompt does not tokenize");
  const std::string instruction = request.instruction().empty() ? kDefaultInstruction : request.instruction();
  scheduler::EncodeRequest out;
  for (int i = 0; i < request.documents_size(); ++i) {
    auto body = encode(absl::StrCat("<Instruct>: ", instruction, "\n<Query>: ", request.query(),
                                    "\n<Document>: ", request.documents(i)));
    if (!body.ok()) return absl::InvalidArgumentError(absl::StrCat("documents[", i, "]: ", body.status().message()));
    const int64_t room = limit - static_cast<int64_t>(prefix->size() + suffix->size());
    if (request.truncate() && static_cast<int64_t>(body->size()) > room) {
      if (room < 1) return absl::InvalidArgumentError("the model's context cannot hold the rerank prompt");
      body->resize(static_cast<size_t>(room));  // the document's end goes first
    }
    std::vector<int32_t> ids = *prefix;
    ids.insert(ids.end(), body->begin(), body->end());
    ids.insert(ids.end(), suffix->begin(), suffix->end());
    out.inputs.push_back({std::move(ids), {}});
  }
  return out;
}

absl::StatusOr<scheduler::EncodeRequest> PrepareRerank(const v1::RerankRequest& request,
                                                       const scheduler::ModelLease& engine) {
  if (auto s = ServesTask(engine, request.model(), ModelTask::kRerank, "rerank"); !s.ok()) return s;
  const text::Tokenizer* tokenizer = engine->tokenizer();
  if (tokenizer == nullptr) return NoTokenizer(request.model(), "it cannot rerank text");
  const int64_t limit = engine->info().max_context;
  if (engine->task_info().decoder_rerank) return PrepareJudgePrompts(request, *tokenizer, limit);
  scheduler::EncodeRequest out;
  for (int i = 0; i < request.documents_size(); ++i) {
    auto encoding = tokenizer->EncodePair(request.query(), request.documents(i), /*add_special_tokens=*/true,
                                          request.truncate() ? static_cast<int>(limit) : 0);
    if (!encoding.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("documents[", i, "]: ", encoding.status().message()));
    }
    out.inputs.push_back({std::move(encoding->ids), TypesFor(engine, std::move(encoding->type_ids))});
  }
  return out;
}

}  // namespace

grpc::ServerUnaryReactor* InferenceService::Embed(grpc::CallbackServerContext* context,
                                                  const v1::EmbedRequest* request, v1::EmbedResponse* response) {
  auto* call = new EncodeCall(this, context, request->model());
  absl::Status checked = Authorize(*context, "Inference.Embed");
  if (checked.ok()) checked = CheckEmbed(*request);
  // `request` and `response` live until the call is done.
  call->Start(
      checked, [request](const scheduler::ModelLease& engine) { return PrepareEmbed(*request, engine); },
      [request, response](const scheduler::ModelLease& engine, scheduler::StreamEvent& event) -> absl::Status {
        const bool normalize =
            request->has_normalize() ? request->normalize() : engine->task_info().embedding.normalize;
        for (auto& pooled : event.outputs) {
          auto shaped = ShapeEmbedding(std::move(pooled), request->dimensions(), normalize);
          if (!shaped.ok()) return shaped.status();
          response->add_embeddings()->mutable_values()->Add(shaped->begin(), shaped->end());
        }
        response->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(event.usage.prompt_tokens));
        response->mutable_usage()->set_queue_seconds(event.usage.queue_seconds);
        return absl::OkStatus();
      });
  return call;
}

grpc::ServerUnaryReactor* InferenceService::Rerank(grpc::CallbackServerContext* context,
                                                   const v1::RerankRequest* request, v1::RerankResponse* response) {
  auto* call = new EncodeCall(this, context, request->model());
  absl::Status checked = Authorize(*context, "Inference.Rerank");
  if (checked.ok()) checked = CheckRerank(*request);
  call->Start(
      checked, [request](const scheduler::ModelLease& engine) { return PrepareRerank(*request, engine); },
      [request, response](const scheduler::ModelLease&, scheduler::StreamEvent& event) -> absl::Status {
        auto ranked = RankDocuments(event.outputs, request->top_n());
        if (!ranked.ok()) return ranked.status();
        for (const RankedDocument& doc : *ranked) {
          v1::RerankResult* result = response->add_results();
          result->set_index(doc.index);
          result->set_relevance_score(doc.score);
          result->set_logit(doc.logit);
          if (request->return_documents()) result->set_document(request->documents(static_cast<int>(doc.index)));
        }
        response->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(event.usage.prompt_tokens));
        response->mutable_usage()->set_queue_seconds(event.usage.queue_seconds);
        return absl::OkStatus();
      });
  return call;
}

}  // namespace gantry::server

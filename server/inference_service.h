// gantry.v1.Inference (Generate, Chat, Tokenize, Detokenize, Embed, Rerank) on gRPC's
// callback API: a stream holds no thread while it waits for tokens. The
// engine's RequestStream calls the call back when it has an event, the call
// writes it and, when the write is done, looks for the next; a cancellation,
// a passed deadline or a closed connection is an OnCancel event, handled at
// once. Only waiting for a model to load is done off gRPC's threads, on a
// small work queue.
#ifndef GANTRY_SERVER_INFERENCE_SERVICE_H_
#define GANTRY_SERVER_INFERENCE_SERVICE_H_

#include <functional>
#include <string>

#include "gantry/v1/gantry.grpc.pb.h"
#include "scheduler/model_registry.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/work_queue.h"

namespace gantry::server {

class InferenceService final : public gantry::v1::Inference::CallbackService {
 public:
  // `metrics` may be null. `load_waiters` threads wait for model loads for
  // requests that arrive while their model is not ready; `preparers` compile
  // the grammars of requests whose model is. `auth` (may be null: no
  // authentication) decides who may call.
  InferenceService(scheduler::ModelRegistry* registry, Metrics* metrics, const Authorizer* auth = nullptr,
                   int load_waiters = 8, int preparers = 4)
      : registry_(registry), metrics_(metrics), auth_(auth), preparers_(preparers), load_waiters_(load_waiters) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext* context,
                                                           const v1::GenerateRequest* request) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Chat(grpc::CallbackServerContext* context,
                                                       const v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context, const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  // encode_service.cc: requests for encoder models, batched by their engine.
  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* context, const v1::EmbedRequest* request,
                                  v1::EmbedResponse* response) override;
  grpc::ServerUnaryReactor* Rerank(grpc::CallbackServerContext* context, const v1::RerankRequest* request,
                                   v1::RerankResponse* response) override;

  // Runs `then` with a lease on `model` (or the error): at once, on this
  // thread, when the model is ready (`heavy` work: on the preparers' queue,
  // so gRPC's threads never wait for it); otherwise on the load waiters'
  // queue once Acquire has waited for or done the load.
  void WithLease(const std::string& model, std::function<void(absl::StatusOr<scheduler::ModelLease>)> then,
                 bool heavy = false);

  Metrics* metrics() const { return metrics_; }
  // OK when the caller may use the service.
  absl::Status Authorize(const grpc::CallbackServerContext& context, const char* what) const {
    return auth_ ? auth_->Check(context, Access::kUse, what) : absl::OkStatus();
  }

 private:
  // A unary call that needs the model's tokenizer: `body` fills the response.
  grpc::ServerUnaryReactor* WithTokenizer(grpc::CallbackServerContext* context, const std::string& model,
                                          std::function<absl::Status(const text::Tokenizer&)> body);

  scheduler::ModelRegistry* registry_;
  Metrics* metrics_;
  const Authorizer* auth_;
  // Declared last: joined first, while the registry is alive.
  WorkQueue preparers_;
  WorkQueue load_waiters_;
};

}  // namespace gantry::server

#endif  // GANTRY_SERVER_INFERENCE_SERVICE_H_

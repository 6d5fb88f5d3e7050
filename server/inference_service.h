// gantry.v1.Inference: Generate, Chat, Tokenize, Detokenize.
#ifndef GANTRY_SERVER_INFERENCE_SERVICE_H_
#define GANTRY_SERVER_INFERENCE_SERVICE_H_

#include "gantry/v1/gantry.grpc.pb.h"
#include "scheduler/model_registry.h"
#include "server/metrics.h"

namespace gantry::server {

class InferenceService final : public gantry::v1::Inference::Service {
 public:
  // `metrics` may be null.
  InferenceService(scheduler::ModelRegistry* registry, Metrics* metrics) : registry_(registry), metrics_(metrics) {}

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Chat(grpc::ServerContext* context, const v1::ChatRequest* request,
                    grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* context, const v1::DetokenizeRequest* request,
                          v1::DetokenizeResponse* response) override;

 private:
  // Submits and streams until the last message, cancellation or deadline.
  grpc::Status Stream(grpc::ServerContext* context, const scheduler::ModelLease& engine,
                      scheduler::GenerationRequest request, grpc::ServerWriter<v1::GenerateResponse>* writer,
                      Metrics::Request* recorded);
  grpc::Status GenerateStream(grpc::ServerContext* context, const v1::GenerateRequest* request,
                              grpc::ServerWriter<v1::GenerateResponse>* writer, Metrics::Request* recorded);
  grpc::Status ChatStream(grpc::ServerContext* context, const v1::ChatRequest* request,
                          grpc::ServerWriter<v1::GenerateResponse>* writer, Metrics::Request* recorded);

  scheduler::ModelRegistry* registry_;
  Metrics* metrics_;
};

}  // namespace gantry::server

#endif  // GANTRY_SERVER_INFERENCE_SERVICE_H_

// The HTTP routes of gantry-adapter, each forwarding to gantry-server over
// gRPC: GET /v1/models, POST /v1/chat/completions, POST /v1/completions
// (streamed as server-sent events or whole), POST /v1/embeddings, POST
// /v1/rerank (Dify posts {base}/rerank, its base ending in /v1) and /rerank
// (clients whose base has no /v1), GET /health (the upstream's
// grpc.health.v1 status) and GET /metrics (the adapter's own figures).
// A client that disconnects (mid-stream or while a whole reply is being
// generated) cancels its gRPC call, so the server stops generating and frees
// the request's KV blocks. The HTTP server's own errors (limits, deadlines)
// are answered in OpenAI's error shape too.
#ifndef GANTRY_ADAPTER_GATEWAY_H_
#define GANTRY_ADAPTER_GATEWAY_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>

#include "adapter/adapter_config.h"
#include "adapter/openai_api.h"
#include "gantry/v1/gantry.grpc.pb.h"
#include "http/http_server.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace gantry::adapter {

class Gateway {
 public:
  // `upstream_token`: sent to gantry-server as a bearer token ("" = none).
  Gateway(AdapterConfig config, std::shared_ptr<grpc::Channel> upstream, std::string upstream_token = "");
  // Installs the routes, the API-key check, request accounting and the
  // OpenAI-shaped rendering of the server's own errors.
  void Register(http::HttpServer* server);

 private:
  void Models(http::Exchange& exchange);
  void Model(const http::Request& request, http::Exchange& exchange);  // GET /v1/models/{model}
  void Complete(const http::Request& request, http::Exchange& exchange, Endpoint endpoint);
  void Embeddings(const http::Request& request, http::Exchange& exchange);
  void Rerank(const http::Request& request, http::Exchange& exchange);
  // Runs one unary gRPC call with the request deadline and the upstream
  // token, cancelled if the HTTP client hangs up meanwhile.
  grpc::Status UnaryCall(http::Exchange& exchange, const std::function<grpc::Status(grpc::ClientContext*)>& call);
  void Health(http::Exchange& exchange);
  void Metrics(http::Exchange& exchange);
  bool Authorized(const http::Request& request) const;
  std::chrono::system_clock::time_point Deadline() const;
  // Adds the upstream token to a call's metadata.
  void Authenticate(grpc::ClientContext* context) const;
  // Models.List and Models.Get: the upstream token and a short deadline (the
  // catalogue answers at once; no generation is waited for).
  void PrepareCatalogueCall(grpc::ClientContext* context) const;

  const AdapterConfig config_;
  std::shared_ptr<grpc::Channel> channel_;
  const std::string upstream_token_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<v1::Models::Stub> models_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* durations_;
};

}  // namespace gantry::adapter

#endif  // GANTRY_ADAPTER_GATEWAY_H_

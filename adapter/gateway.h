// The HTTP routes of gantry-adapter, each forwarding to gantry-server over
// gRPC: GET /v1/models, POST /v1/chat/completions, POST /v1/completions
// (streamed as server-sent events or whole), GET /health (the upstream's
// grpc.health.v1 status) and GET /metrics (the adapter's own figures).
// A client that disconnects mid-stream cancels its gRPC call, so the server
// stops generating and frees the request's KV blocks.
#ifndef GANTRY_ADAPTER_GATEWAY_H_
#define GANTRY_ADAPTER_GATEWAY_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "adapter/adapter_config.h"
#include "adapter/openai_api.h"
#include "gantry/v1/gantry.grpc.pb.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace gantry::adapter {

class Gateway {
 public:
  // `upstream_token`: sent to gantry-server as a bearer token ("" = none).
  Gateway(AdapterConfig config, std::shared_ptr<grpc::Channel> upstream, std::string upstream_token = "");
  // Installs the routes, the API-key check and request accounting.
  void Register(httplib::Server* server);

 private:
  void Models(httplib::Response& response);
  void Complete(const httplib::Request& request, httplib::Response& response, Endpoint endpoint);
  void Health(httplib::Response& response);
  void Metrics(httplib::Response& response);
  bool Authorized(const httplib::Request& request) const;
  std::chrono::system_clock::time_point Deadline() const;
  // Adds the upstream token to a call's metadata.
  void Authenticate(grpc::ClientContext* context) const;

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

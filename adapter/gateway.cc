#include "adapter/gateway.h"

#include <spdlog/spdlog.h>

#include <ctime>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "prometheus/text_serializer.h"
#include "text/json_limits.h"

namespace gantry::adapter {

namespace {

using nlohmann::json;

// Token texts are normally whole UTF-8, but a lone token can be part of a
// character: never let that fail a reply (bad bytes become U+FFFD).
std::string JsonText(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

http::Response JsonResponse(const json& body, int status = 200) {
  http::Response response;
  response.status = status;
  response.content_type = "application/json";
  response.body = JsonText(body);
  return response;
}

void SendError(http::Exchange& exchange, const ApiError& error) {
  exchange.Send(JsonResponse(error.ToJson(), error.http_status));
}

// The HTTP server's own refusals (bad or oversized requests, deadlines,
// connection caps, no route) in OpenAI's shape, naming the limit.
http::Response RenderServerError(const http::ServerError& error) {
  ApiError e;
  e.http_status = error.status;
  e.message = error.message;
  e.code = error.code;
  if (error.status == 429) e.type = "rate_limit_exceeded";
  if (error.status >= 500) e.type = "server_error";
  return JsonResponse(e.ToJson(), e.http_status);
}

// The request body as JSON (nesting limited), or false once a 400 is sent.
template <typename Json>
bool ParseBody(const http::Request& request, http::Exchange& exchange, Json* body) {
  auto parsed = text::ParseJsonLimited<Json>(request.body, "the request body");
  if (!parsed.ok()) {
    ApiError e;
    e.message = std::string(parsed.status().message());
    SendError(exchange, e);
    return false;
  }
  *body = *std::move(parsed);
  return true;
}

std::string Sse(const json& payload) { return absl::StrCat("data: ", JsonText(payload), "\n\n"); }

// What an HTTP client is told of a gRPC error. Refusals (4xx) name the
// field or the limit and are passed on; the server's own failures (5xx)
// may carry paths and library details, so the client gets a short message
// and a request id, and the details go to the log under that id.
ApiError ClientError(const grpc::Status& status) {
  ApiError e = FromGrpc(status);
  if (e.http_status < 500) return e;
  thread_local absl::BitGen gen;
  const std::string id = absl::StrFormat("req-%016x", absl::Uniform<uint64_t>(gen));
  spdlog::warn("request {}: {} from gantry-server (gRPC {}, reason '{}'): {}", id, e.http_status,
               static_cast<int>(status.error_code()), StatusReason(status), status.error_message());
  const char* what = e.code == "model_load_failed"      ? "the model failed to load"
                     : e.code == "insufficient_memory"  ? "not enough device memory for the request now"
                     : e.code == "shutting_down"        ? "the server is shutting down"
                     : e.http_status == 503              ? "gantry-server is unavailable"
                     : e.http_status == 504              ? "the request timed out"
                                                         : "internal error";
  e.message = absl::StrCat(what, " (request id ", id, "; the details are in gantry-adapter's log)");
  return e;
}

// One gRPC generation call; a call dropped before its end is cancelled and
// drained, so the server sees the cancellation and the stub is not leaked.
struct Call {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;
  bool finished = false;

  grpc::Status Finish() {
    finished = true;
    return reader->Finish();
  }
  ~Call() {
    if (reader && !finished) {
      context.TryCancel();
      v1::GenerateResponse ignored;
      while (reader->Read(&ignored)) {
      }
      (void)reader->Finish();
    }
  }
};

const prometheus::Histogram::BucketBoundaries kRequestSeconds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                                   2.5,   5,    10,    30,   60,  120,  300, 600};

constexpr char kModelPrefix[] = "/v1/models/";

const char* RouteLabel(const std::string& path) {
  for (const char* route : {"/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank",
                            "/rerank", "/health", "/metrics"}) {
    if (path == route) return route;
  }
  if (absl::StartsWith(path, kModelPrefix)) return "/v1/models/{model}";
  return "other";
}

}  // namespace

Gateway::Gateway(AdapterConfig config, std::shared_ptr<grpc::Channel> upstream, std::string upstream_token)
    : config_(std::move(config)),
      channel_(std::move(upstream)),
      upstream_token_(std::move(upstream_token)),
      inference_(v1::Inference::NewStub(channel_)),
      models_(v1::Models::NewStub(channel_)),
      registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("gantry_adapter_requests_total")
                   .Help("HTTP requests by route and status code")
                   .Register(*registry_);
  durations_ = &prometheus::BuildHistogram()
                    .Name("gantry_adapter_request_duration_seconds")
                    .Help("HTTP request time by route, to the last byte of the reply")
                    .Register(*registry_);
}

std::chrono::system_clock::time_point Gateway::Deadline() const {
  return std::chrono::system_clock::now() +
         std::chrono::milliseconds(static_cast<int64_t>(config_.request_timeout_seconds * 1000));
}

bool Gateway::Authorized(const http::Request& request) const {
  if (config_.api_keys.empty()) return true;
  const std::string header = request.Header("Authorization");
  if (!absl::StartsWith(header, "Bearer ")) return false;
  const std::string key = header.substr(7);
  for (const auto& allowed : config_.api_keys) {
    if (key == allowed) return true;
  }
  return false;
}

void Gateway::Register(http::HttpServer* server) {
  server->SetErrorRenderer(RenderServerError);
  server->SetObserver([this](const http::Request& request, int status, double) {
    requests_->Add({{"route", RouteLabel(request.path)}, {"status", std::to_string(status)}}).Increment();
  });
  // The API routes: key checked, then timed to the reply's last byte.
  auto api = [this](const char* route, auto handler) {
    return [this, route, handler](const http::Request& request, http::Exchange& exchange) {
      if (!Authorized(request)) {
        ApiError e;
        e.http_status = 401;
        e.message = "invalid or missing API key: send 'Authorization: Bearer <key>'";
        e.code = "invalid_api_key";
        return SendError(exchange, e);
      }
      const auto start = std::chrono::steady_clock::now();
      handler(request, exchange);
      durations_->Add({{"route", route}}, kRequestSeconds)
          .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    };
  };
  server->Handle("GET", "/v1/models", api("/v1/models", [this](const http::Request&, http::Exchange& x) { Models(x); }));
  server->HandlePrefix("GET", kModelPrefix, api("/v1/models/{model}", [this](const http::Request& q, http::Exchange& x) {
                         Model(q, x);
                       }));
  server->Handle("POST", "/v1/chat/completions",
                 api("/v1/chat/completions",
                     [this](const http::Request& q, http::Exchange& x) { Complete(q, x, Endpoint::kChat); }));
  server->Handle("POST", "/v1/completions",
                 api("/v1/completions",
                     [this](const http::Request& q, http::Exchange& x) { Complete(q, x, Endpoint::kCompletions); }));
  server->Handle("POST", "/v1/embeddings",
                 api("/v1/embeddings", [this](const http::Request& q, http::Exchange& x) { Embeddings(q, x); }));
  for (const char* route : {"/v1/rerank", "/rerank"}) {
    server->Handle("POST", route, api(route, [this](const http::Request& q, http::Exchange& x) { Rerank(q, x); }));
  }
  server->Handle("GET", "/health", [this](const http::Request&, http::Exchange& x) { Health(x); });
  server->Handle("GET", "/metrics", [this](const http::Request&, http::Exchange& x) { Metrics(x); });
}

void Gateway::Models(http::Exchange& exchange) {
  grpc::ClientContext context;
  PrepareCatalogueCall(&context);
  v1::ListModelsResponse list;
  grpc::Status status = models_->List(&context, {}, &list);
  if (!status.ok()) return SendError(exchange, ClientError(status));
  json data = json::array();
  for (const auto& m : list.models()) data.push_back(ModelObject(m));
  exchange.Send(JsonResponse(json{{"object", "list"}, {"data", data}}));
}

void Gateway::Model(const http::Request& request, http::Exchange& exchange) {
  v1::GetModelRequest get;
  if (auto e = ModelNameFromPath(request.path.substr(sizeof(kModelPrefix) - 1), get.mutable_name())) {
    return SendError(exchange, *e);
  }
  grpc::ClientContext context;
  PrepareCatalogueCall(&context);
  v1::ModelStatus model;
  grpc::Status status = models_->Get(&context, get, &model);
  if (!status.ok()) return SendError(exchange, ClientError(status));
  exchange.Send(JsonResponse(ModelObject(model)));
}

void Gateway::Complete(const http::Request& http_request, http::Exchange& exchange, Endpoint endpoint) {
  nlohmann::ordered_json body;  // chat schemas keep their key order
  if (!ParseBody(http_request, exchange, &body)) return;
  ReplyOptions options;
  auto call = std::make_shared<Call>();
  call->context.set_deadline(Deadline());
  Authenticate(&call->context);
  if (endpoint == Endpoint::kChat) {
    v1::ChatRequest request;
    if (auto e = ParseChatRequest(body, &request, &options)) return SendError(exchange, *e);
    call->reader = inference_->Chat(&call->context, request);
  } else {
    v1::GenerateRequest request;
    if (auto e = ParseCompletionRequest(json(body), &request, &options)) return SendError(exchange, *e);
    call->reader = inference_->Generate(&call->context, request);
  }
  // A client that goes away stops the generation, streamed or not.
  exchange.OnClientGone([call] { call->context.TryCancel(); });
  // The first response decides the HTTP status: errors (unknown model, bad
  // parameters, a full queue) come before any token.
  v1::GenerateResponse first;
  if (!call->reader->Read(&first)) return SendError(exchange, ClientError(call->Finish()));
  const std::string id = NewCompletionId(endpoint);
  const int64_t created = static_cast<int64_t>(std::time(nullptr));

  if (!options.stream) {
    ReplyBuilder reply(options);
    reply.Add(first);
    v1::GenerateResponse next;
    while (call->reader->Read(&next)) reply.Add(next);
    grpc::Status status = call->Finish();
    if (!status.ok()) return SendError(exchange, ClientError(status));
    return exchange.Send(JsonResponse(reply.Finish(id, created)));
  }

  ChunkBuilder chunks(options, id, created);
  http::Response head;
  head.content_type = "text/event-stream";
  head.headers = {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}};  // no proxy buffering
  exchange.StartStream(head);
  v1::GenerateResponse next = std::move(first);
  do {
    for (const json& chunk : chunks.Add(next)) {
      if (!exchange.Write(Sse(chunk))) {
        call->context.TryCancel();  // the client went away (or stopped reading): stop generating
        return;
      }
    }
  } while (call->reader->Read(&next));
  grpc::Status status = call->Finish();
  std::string tail;
  if (!status.ok()) {
    tail = Sse(ClientError(status).ToJson());  // the SDKs raise an APIError on it
  } else if (auto usage = chunks.UsageChunk()) {
    tail = Sse(*usage);
  }
  tail += "data: [DONE]\n\n";
  exchange.Write(tail);
}

void Gateway::Embeddings(const http::Request& http_request, http::Exchange& exchange) {
  json body;
  if (!ParseBody(http_request, exchange, &body)) return;
  v1::EmbedRequest request;
  EmbeddingOptions options;
  if (auto e = ParseEmbeddingRequest(body, &request, &options)) return SendError(exchange, *e);
  v1::EmbedResponse response;
  grpc::Status status = UnaryCall(exchange, [&](grpc::ClientContext* context) {
    return inference_->Embed(context, request, &response);
  });
  if (!status.ok()) return SendError(exchange, ClientError(status));
  exchange.Send(JsonResponse(RenderEmbeddings(response, options)));
}

void Gateway::Rerank(const http::Request& http_request, http::Exchange& exchange) {
  json body;
  if (!ParseBody(http_request, exchange, &body)) return;
  v1::RerankRequest request;
  RerankOptions options;
  if (auto e = ParseRerankRequest(body, &request, &options)) return SendError(exchange, *e);
  v1::RerankResponse response;
  grpc::Status status = UnaryCall(exchange, [&](grpc::ClientContext* context) {
    return inference_->Rerank(context, request, &response);
  });
  if (!status.ok()) return SendError(exchange, ClientError(status));
  exchange.Send(JsonResponse(RenderRerank(response, options, NewRerankId())));
}

grpc::Status Gateway::UnaryCall(http::Exchange& exchange,
                                const std::function<grpc::Status(grpc::ClientContext*)>& call) {
  // Shared with OnClientGone, which may run on an io thread after the call returned.
  auto context = std::make_shared<grpc::ClientContext>();
  context->set_deadline(Deadline());
  Authenticate(context.get());
  // A client that hangs up cancels the call: its inputs leave the batch.
  exchange.OnClientGone([context] { context->TryCancel(); });
  return call(context.get());
}

void Gateway::PrepareCatalogueCall(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  Authenticate(context);
}

void Gateway::Authenticate(grpc::ClientContext* context) const {
  if (!upstream_token_.empty()) context->AddMetadata("authorization", "Bearer " + upstream_token_);
}

void Gateway::Health(http::Exchange& exchange) {
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse reply;
  grpc::Status status = stub->Check(&context, request, &reply);
  const bool serving = status.ok() && reply.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  // No addresses or error texts here: /health is unauthenticated.
  json body = {{"status", serving ? "ok" : "unavailable"}};
  body["upstream_status"] =
      status.ok() ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(reply.status()) : "UNREACHABLE";
  if (!status.ok()) spdlog::warn("health check of gantry-server failed: {}", status.error_message());
  exchange.Send(JsonResponse(body, serving ? 200 : 503));
}

void Gateway::Metrics(http::Exchange& exchange) {
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, registry_->Collect());
  http::Response response;
  response.content_type = "text/plain; version=0.0.4; charset=utf-8";
  response.body = text.str();
  exchange.Send(std::move(response));
}

}  // namespace gantry::adapter

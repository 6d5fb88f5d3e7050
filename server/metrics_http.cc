#include "server/metrics_http.h"

#include <spdlog/spdlog.h>

#include <sstream>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace gantry::server {

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
    const TlsConfig& tls) {
  auto server = std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer);
  server->collectables_ = std::move(collectables);
  server->tls_ = !tls.cert_file.empty();
  http::HttpServerOptions options;
  options.listen = listen;
  options.listen_setting = "metrics_listen";
  options.io_threads = 1;
  options.tls_cert_file = tls.cert_file;
  options.tls_key_file = tls.key_file;
  options.tls_client_ca_file = tls.client_ca_file;
  options.limits.max_body_bytes = 64 << 10;  // scrapes are GETs
  options.limits.max_connections = 128;
  options.limits.max_connections_per_client = 64;
  server->http_ = std::make_unique<http::HttpServer>(options);
  MetricsHttpServer* self = server.get();
  server->http_->Handle("GET", "/metrics", [self](const http::Request&, http::Exchange& exchange) {
    http::Response response;
    std::vector<prometheus::MetricFamily> families;
    try {
      for (const auto& collectable : self->collectables_) {
        auto collected = collectable->Collect();
        families.insert(families.end(), std::make_move_iterator(collected.begin()),
                        std::make_move_iterator(collected.end()));
      }
    } catch (const std::exception& e) {
      // Said in the log and the reply: a bare 500 would leave operators guessing.
      spdlog::error("metrics: scrape failed: {}", e.what());
      response.status = 500;
      response.body = absl::StrCat("scrape failed: ", e.what(), "\n");
      return exchange.Send(std::move(response));
    }
    std::ostringstream text;
    prometheus::TextSerializer().Serialize(text, families);
    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    response.body = text.str();
    exchange.Send(std::move(response));
  });
  if (auto started = server->http_->Start("serve metrics"); !started.ok()) return started;
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (http_) http_->Stop(0);
}

std::string MetricsHttpServer::url() const {
  return absl::StrCat(tls_ ? "https://" : "http://", http_->host(), ":", http_->port(), "/metrics");
}

}  // namespace gantry::server

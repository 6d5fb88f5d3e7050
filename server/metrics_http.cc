#include "server/metrics_http.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"
#include "server/http_listen.h"

namespace gantry::server {

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, std::vector<std::shared_ptr<prometheus::Collectable>> collectables) {
  auto server = std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer);
  server->collectables_ = std::move(collectables);
  server->http_ = std::make_unique<httplib::Server>();
  MetricsHttpServer* self = server.get();
  server->http_->Get("/metrics", [self](const httplib::Request&, httplib::Response& response) {
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
      response.set_content(absl::StrCat("scrape failed: ", e.what(), "\n"), "text/plain; charset=utf-8");
      return;
    }
    std::ostringstream text;
    prometheus::TextSerializer().Serialize(text, families);
    response.set_content(text.str(), "text/plain; version=0.0.4; charset=utf-8");
  });
  auto bound = BindHttpServer(server->http_.get(), listen, "metrics_listen", "serve metrics");
  if (!bound.ok()) return bound.status();
  server->host_ = bound->host;
  server->port_ = bound->port;
  server->thread_ = std::thread([self] { self->http_->listen_after_bind(); });
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace gantry::server

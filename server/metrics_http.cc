#include "server/metrics_http.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace gantry::server {

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, std::vector<std::shared_ptr<prometheus::Collectable>> collectables) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics_listen must be host:port, got '", listen, "'"));
  }
  const std::string host = listen.substr(0, colon);
  auto server = std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer);
  server->collectables_ = std::move(collectables);
  server->http_ = std::make_unique<httplib::Server>();
  // httplib's default socket options set SO_REUSEPORT, which lets a second
  // server bind the same port and take a share of the scrapes; keep only
  // SO_REUSEADDR so a port in use is a start-up error.
  server->http_->set_socket_options([](socket_t socket) {
    int yes = 1;
    setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
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
  if (port == 0) {
    port = server->http_->bind_to_any_port(host);
    if (port <= 0) return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": address not local"));
  } else if (!server->http_->bind_to_port(host, port)) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": address in use or not local"));
  }
  server->host_ = host;
  server->port_ = port;
  server->thread_ = std::thread([self] { self->http_->listen_after_bind(); });
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace gantry::server

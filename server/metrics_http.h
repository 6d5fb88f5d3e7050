// Serves GET /metrics in Prometheus's text format on its own address, from
// prometheus-cpp collectables. The HTTP side is cpp-httplib rather than
// prometheus-cpp's Exposer: the Exposer's embedded civetweb could not start
// a listener on the GPU host ("null context when constructing CivetServer",
// any port), while httplib, which the adapter uses anyway, binds everywhere
// and supports port 0.
#ifndef GANTRY_SERVER_METRICS_HTTP_H_
#define GANTRY_SERVER_METRICS_HTTP_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"

namespace httplib {
class Server;
}

namespace gantry::server {

class MetricsHttpServer {
 public:
  // Binds `listen` ("host:port", port 0 for any) and serves on a thread.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::vector<std::shared_ptr<prometheus::Collectable>> collectables);
  ~MetricsHttpServer();

  // "http://HOST:PORT/metrics", with the port bound.
  std::string url() const { return "http://" + host_ + ":" + std::to_string(port_) + "/metrics"; }

 private:
  MetricsHttpServer() = default;

  std::unique_ptr<httplib::Server> http_;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::string host_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace gantry::server

#endif  // GANTRY_SERVER_METRICS_HTTP_H_

// Serves GET /metrics in Prometheus's text format on its own address, from
// prometheus-cpp collectables serialized by prometheus-cpp's TextSerializer.
// The HTTP side is Gantry's event-driven server (http/http_server.h), shared
// with gantry-adapter, rather than prometheus-cpp's Exposer: the Exposer runs
// on civetweb, and Debian's civetweb starts its threads with a fixed 100 KiB
// stack (USE_STACK_SIZE 0x19000). glibc carves each thread's static TLS out
// of that stack; with the CUDA LibTorch linked in, static TLS is 189 KiB
// (libcublasLt alone 92 KiB), so pthread_create fails with EINVAL and the
// Exposer throws "null context when constructing CivetServer" (civetweb logs
// "Cannot create threads"). Measured on the H100 host. Slow or idle clients
// cannot hold scrapes back: headers have 10 s, connections are capped.
#ifndef GANTRY_SERVER_METRICS_HTTP_H_
#define GANTRY_SERVER_METRICS_HTTP_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "http/http_server.h"
#include "prometheus/collectable.h"
#include "server/config.h"

namespace gantry::server {

class MetricsHttpServer {
 public:
  // Binds `listen` ("host:port", port 0 for any) and serves on its own
  // thread; HTTPS when `tls` has a certificate.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
      const TlsConfig& tls = {});
  ~MetricsHttpServer();

  // "http(s)://HOST:PORT/metrics", with the port bound.
  std::string url() const;

 private:
  MetricsHttpServer() = default;

  std::unique_ptr<http::HttpServer> http_;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  bool tls_ = false;
};

}  // namespace gantry::server

#endif  // GANTRY_SERVER_METRICS_HTTP_H_

// Serves GET /metrics in Prometheus's text format on its own address, from
// prometheus-cpp collectables serialized by prometheus-cpp's TextSerializer.
// The HTTP side is cpp-httplib rather than prometheus-cpp's Exposer: the
// Exposer runs on civetweb, and Debian's civetweb starts its threads with a
// fixed 100 KiB stack (USE_STACK_SIZE 0x19000). glibc carves each thread's
// static TLS out of that stack; with the CUDA LibTorch linked in, static TLS
// is 189 KiB (libcublasLt alone 92 KiB), so pthread_create fails with EINVAL
// and the Exposer throws "null context when constructing CivetServer" (civetweb
// logs "Cannot create threads"). Measured on the H100 host; CPU LibTorch
// builds stay under the limit, which is why it works there. httplib threads
// take the default stack, and the adapter uses httplib anyway.
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

// Binds a cpp-httplib server to a "HOST:PORT" address without SO_REUSEPORT.
//
// Shared by gantry-server's /metrics listener and gantry-adapter: both must
// refuse a port already in use (httplib's default socket options set
// SO_REUSEPORT, so a second process would bind too and take a share of the
// requests). It holds no server logic: the adapter links this small library
// only, and still talks to the server over gRPC alone.
#ifndef GANTRY_SERVER_HTTP_LISTEN_H_
#define GANTRY_SERVER_HTTP_LISTEN_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace httplib {
class Server;
}

namespace gantry::server {

struct HttpListenAddress {
  std::string host;
  int port = 0;  // the bound port (never 0)
};

// Binds `server` to `listen` ("host:port", port 0 for any free one); the
// caller then runs server->listen_after_bind(). Errors: InvalidArgument
// "<setting> must be host:port, got '<listen>'"; Unavailable
// "cannot <action> on <listen>: address in use or not local".
absl::StatusOr<HttpListenAddress> BindHttpServer(httplib::Server* server, const std::string& listen,
                                                 absl::string_view setting, absl::string_view action);

}  // namespace gantry::server

#endif  // GANTRY_SERVER_HTTP_LISTEN_H_

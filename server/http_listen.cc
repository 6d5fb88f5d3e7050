#include "server/http_listen.h"

#include <httplib.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace gantry::server {

absl::StatusOr<HttpListenAddress> BindHttpServer(httplib::Server* server, const std::string& listen,
                                                 absl::string_view setting, absl::string_view action) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(setting, " must be host:port, got '", listen, "'"));
  }
  HttpListenAddress bound{listen.substr(0, colon), port};
  server->set_socket_options([](socket_t socket) {
    int yes = 1;
    setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  if (port == 0) {
    bound.port = server->bind_to_any_port(bound.host);
    if (bound.port <= 0) return absl::UnavailableError(absl::StrCat("cannot ", action, " on ", listen, ": address not local"));
  } else if (!server->bind_to_port(bound.host, port)) {
    return absl::UnavailableError(absl::StrCat("cannot ", action, " on ", listen, ": address in use or not local"));
  }
  return bound;
}

}  // namespace gantry::server

// gantry-adapter settings, from a YAML file and/or flags (flags win):
//
//   listen: 127.0.0.1:8080          # HTTP address:port (port 0: any free one)
//   upstream: 127.0.0.1:50051       # gantry-server's gRPC address
//   api_keys: [key-1, key-2]        # Bearer keys; empty: no authentication
//   request_timeout_seconds: 600    # gRPC deadline of one completion
//   max_connections: 1024           # HTTP connections at once; more get 503 and are closed
//   max_connections_per_client: 256 # from one client IP; more get 429 and are closed
//   header_timeout_seconds: 10      # a request's header must arrive within this (else 408)
//   body_timeout_seconds: 60        # its body within this from the header's end (else 408)
//   idle_timeout_seconds: 60        # keep-alive connections with nothing in flight are closed after this
//   write_timeout_seconds: 60       # a client that takes no bytes of a reply for this is cut
//   max_header_bytes: 16384         # request line and headers (else 431)
//   max_body_bytes: 33554432        # request body, 32 MiB at most (else 413, before the body is read)
//   upstream_token_file: token      # bearer token for gantry-server (or GANTRY_UPSTREAM_TOKEN)
//   upstream_ca_file: ca.crt        # gRPC to gantry-server over TLS, verified against this CA
//   upstream_cert_file: client.crt  # client certificate, when the server requires one
//   upstream_key_file: client.key
//   tls_cert_file: adapter.crt      # HTTPS instead of HTTP
//   tls_key_file: adapter.key
#ifndef GANTRY_ADAPTER_ADAPTER_CONFIG_H_
#define GANTRY_ADAPTER_ADAPTER_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "http/http_server.h"

namespace gantry::adapter {

struct AdapterConfig {
  std::string listen = "127.0.0.1:8080";
  std::string upstream = "127.0.0.1:50051";
  std::vector<std::string> api_keys;
  double request_timeout_seconds = 600;
  http::HttpLimits limits;  // max_connections ... max_body_bytes above
  std::string upstream_token_file;
  std::string upstream_ca_file, upstream_cert_file, upstream_key_file;
  std::string tls_cert_file, tls_key_file;
};

// Errors name the file, line and key.
absl::StatusOr<AdapterConfig> ParseAdapterConfig(const std::string& yaml_text, const std::string& path);
absl::StatusOr<AdapterConfig> LoadAdapterConfig(const std::string& path);

}  // namespace gantry::adapter

#endif  // GANTRY_ADAPTER_ADAPTER_CONFIG_H_

// An HTTP/1.1 server for gantry-adapter and gantry-server's /metrics, on
// Boost.Beast (parsing) and Asio (event-driven I/O), with OpenSSL for HTTPS.
//
// Why not a ready-made server: cpp-httplib, used before, gives each
// connection a pool thread for its whole life and blocks in reads, so slow
// clients starved everyone (issue 13); Beast is a toolkit without a server
// loop. This file adds what a hostile network needs on top of Beast:
//   - few io threads; handlers run on threads of their own (one per
//     connection with a request in flight, so bounded by max_connections),
//     because a handler may block on a gRPC generation for minutes;
//   - deadlines for a request's header (from its first byte) and for its
//     whole body (from the header's end), a keep-alive idle timeout, and a
//     write timeout for clients that stop reading;
//   - limits answered at once, before any body is read: 400 for a malformed
//     request or a bad Content-Length (-1, 1e20, garbage), 411 for a POST/PUT/
//     PATCH with neither Content-Length nor chunked encoding, 413 when the
//     announced or received body exceeds max_body_bytes, 431 for a header
//     over max_header_bytes, 408 when a deadline passes;
//   - caps on connections in all (extra ones get 503 and are closed) and per
//     client IP (429 and closed);
//   - pipelined requests answered in order (up to 16 read ahead);
//   - replies whole or streamed (chunked, for server-sent events) with
//     back-pressure, and notice of a client that went away.
// The public header holds no Boost, so its users compile fast.
#ifndef GANTRY_HTTP_HTTP_SERVER_H_
#define GANTRY_HTTP_HTTP_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gantry::http {

// What an operator tunes (gantry-adapter's config keys have these names).
struct HttpLimits {
  // A request's header must arrive within this from its first byte (or from
  // the connection's start, TLS handshake included).
  double header_timeout_seconds = 10;
  // A request's body must arrive within this from the end of its header.
  double body_timeout_seconds = 60;
  // A keep-alive connection with nothing in flight is closed after this.
  double idle_timeout_seconds = 60;
  // A reply's bytes must be taken by the client within this, or the
  // connection is cut (the handler's Write returns false).
  double write_timeout_seconds = 60;
  int64_t max_header_bytes = 16 << 10;
  int64_t max_body_bytes = 32 << 20;
  int max_connections = 1024;
  int max_connections_per_client = 256;
};

struct HttpServerOptions {
  std::string listen = "127.0.0.1:0";  // "host:port"; port 0: any free one
  // How errors name the address's setting ("listen", "metrics_listen").
  std::string listen_setting = "listen";
  int io_threads = 2;
  // HTTPS when cert and key are set; with client_ca_file, clients must
  // present a certificate it signed.
  std::string tls_cert_file, tls_key_file, tls_client_ca_file;
  HttpLimits limits;
};

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: path and query
  std::string path;    // target up to '?'
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string client_ip;
  // The first header of that name (ASCII case-insensitive), or "".
  std::string Header(absl::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// How a handler answers one request; used from the handler's thread only
// (OnClientGone's callback excepted). A handler that returns without
// answering gets a 500.
class Exchange {
 public:
  virtual ~Exchange() = default;
  // Answers whole (blocks while earlier bytes wait for a slow client).
  virtual void Send(Response response) = 0;
  // Starts a chunked reply with `head`'s status and headers (its body is
  // ignored); Write sends each piece; the reply ends when the handler returns.
  virtual void StartStream(const Response& head) = 0;
  // Queues `data` (after StartStream). Blocks while more than 256 KiB of the
  // reply is waiting for the client; false once the client is gone, was cut
  // for not reading within write_timeout_seconds, or the server stops.
  virtual bool Write(absl::string_view data) = 0;
  // True once the client disconnected or was cut.
  virtual bool ClientGone() const = 0;
  // `callback` runs once when the client goes (at once if it has): from an
  // io thread, so it must not block (cancelling a gRPC call is fine). A
  // client that closes its sending side counts as gone, as in Go's net/http.
  // Not called after the handler returned.
  virtual void OnClientGone(std::function<void()> callback) = 0;
};

using Handler = std::function<void(const Request&, Exchange&)>;

// An error the server answers itself (bad or oversized request, deadline,
// connection caps, no route). `message` names the limit or the problem.
struct ServerError {
  int status = 400;
  std::string message;
  std::string code;  // short and stable: "body_too_large", "header_timeout", ...
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();  // Stop(0) if still running
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Before Start. Exact paths; a known path with another method is a 405,
  // an unknown one a 404.
  void Handle(const std::string& method, const std::string& path, Handler handler);
  // Before Start. Paths that go on past `prefix` and have no exact route,
  // such as "/v1/models/" for "/v1/models/{model}"; the longest prefix wins.
  void HandlePrefix(const std::string& method, const std::string& prefix, Handler handler);
  // How the server's own errors are written (default: plain text).
  void SetErrorRenderer(std::function<Response(const ServerError&)> renderer);
  // Called after each reply (status and seconds from the request's arrival
  // to its last byte queued), the server's own errors included; `request`
  // holds what was read of it. From any thread; must not block.
  void SetObserver(std::function<void(const Request&, int status, double seconds)> observer);

  // Checks the options, loads the TLS files, binds (no SO_REUSEPORT: a port
  // in use is refused) and serves. Errors: InvalidArgument "<listen_setting>
  // must be host:port, got '...'" or naming a TLS file; Unavailable "cannot
  // <action> on <listen>: address in use or not local".
  absl::Status Start(absl::string_view action = "listen");
  const std::string& host() const;
  int port() const;  // the bound port

  // Stops accepting, lets requests in flight finish for `grace_seconds`,
  // then cuts their connections (their Write returns false, OnClientGone
  // fires) and waits for their handlers to return.
  void Stop(double grace_seconds);

  class Impl;  // opaque: http_server.cc

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace gantry::http

#endif  // GANTRY_HTTP_HTTP_SERVER_H_

// A plain TCP client for HTTP tests: sends exact bytes (partial headers,
// bad lengths, pipelined requests) and reads what comes back, with deadlines.
// Shared by the HTTP server's tests, the metrics tests and the adapter's.
#ifndef GANTRY_TESTS_HTTP_RAW_CLIENT_H_
#define GANTRY_TESTS_HTTP_RAW_CLIENT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace gantry::testing {

class RawClient {
 public:
  // Connects to 127.0.0.1:port (or "host:port" on loopback).
  explicit RawClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  explicit RawClient(const std::string& host_port) : RawClient(std::stoi(host_port.substr(host_port.rfind(':') + 1))) {}
  ~RawClient() { Close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return fd_ >= 0; }

  bool Send(const std::string& bytes) {
    size_t sent = 0;
    while (fd_ >= 0 && sent < bytes.size()) {
      const ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return fd_ >= 0;
  }

  // Reads until `done(received)` holds, the peer closes, or `timeout` passes;
  // returns everything received so far (also kept in received()).
  template <class Done>
  const std::string& ReadUntil(Done done, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (fd_ >= 0 && !closed_ && !done(received_)) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char buffer[65536];
      const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      received_.append(buffer, static_cast<size_t>(n));
    }
    return received_;
  }
  // Until `count` replies have arrived whole (each status line and, for a
  // Content-Length reply, its body).
  const std::string& ReadReplies(int count, std::chrono::milliseconds timeout) {
    return ReadUntil([count](const std::string& text) { return CompleteReplies(text) >= count; }, timeout);
  }
  const std::string& ReadToClose(std::chrono::milliseconds timeout) {
    return ReadUntil([](const std::string&) { return false; }, timeout);
  }

  // Sends `piece` every `every` until the server answers or closes (or
  // `limit` passes), as a client trickling a body; returns the seconds taken.
  double TrickleUntilAnswered(const std::string& piece, std::chrono::milliseconds every,
                              std::chrono::milliseconds limit) {
    const auto start = std::chrono::steady_clock::now();
    while (received_.empty() && !closed_ && std::chrono::steady_clock::now() - start < limit) {
      Send(piece);
      ReadUntil([](const std::string& text) { return !text.empty(); }, every);
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  // Whether the server closed the connection (seen by a read).
  bool closed() const { return closed_; }
  const std::string& received() const { return received_; }
  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  // How many whole Content-Length replies `text` holds.
  static int CompleteReplies(const std::string& text) {
    int replies = 0;
    size_t at = 0;
    while (true) {
      const size_t head_end = text.find("\r\n\r\n", at);
      if (head_end == std::string::npos || text.compare(at, 5, "HTTP/") != 0) return replies;
      const std::string head = text.substr(at, head_end - at);
      size_t length = 0;
      for (const char* name : {"Content-Length: ", "content-length: "}) {
        if (size_t l = head.find(name); l != std::string::npos) length = std::stoul(head.substr(l + 16));
      }
      if (head.compare(9, 3, "100") == 0) {  // 100 Continue: not a reply
        at = head_end + 4;
        continue;
      }
      if (text.size() < head_end + 4 + length) return replies;
      ++replies;
      at = head_end + 4 + length;
    }
  }

 private:
  int fd_ = -1;
  bool closed_ = false;
  std::string received_;
};

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_HTTP_RAW_CLIENT_H_

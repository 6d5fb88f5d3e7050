#include "http/http_server.h"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gantry::http {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxReadAhead = 16;          // complete requests queued per connection
constexpr size_t kMaxUnsentBytes = 256 << 10;  // a writer blocks above this
constexpr size_t kReadChunk = 16 << 10;
// After an error reply, input is read and dropped this long (or this much)
// before the close, so the client reads the reply instead of a reset.
constexpr auto kLinger = std::chrono::seconds(2);
constexpr size_t kMaxLingerBytes = 1 << 20;

Clock::duration Seconds(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

std::string FormatSeconds(double seconds) { return absl::StrFormat("%g s", seconds); }

// The status line and headers (Beast writes them; the body follows as is).
std::string Head(const Response& response, bool keep_alive, std::optional<size_t> content_length) {
  bhttp::response<bhttp::empty_body> head{static_cast<bhttp::status>(response.status), 11};
  head.set(bhttp::field::content_type, response.content_type);
  for (const auto& [name, value] : response.headers) head.insert(name, value);
  if (content_length) {
    head.content_length(*content_length);
  } else {
    head.chunked(true);
  }
  head.keep_alive(keep_alive);
  std::ostringstream out;
  out << head.base();
  return out.str();
}

std::string Whole(const Response& response, bool keep_alive) {
  return Head(response, keep_alive, response.body.size()) + response.body;
}

Response PlainText(const ServerError& error) {
  Response response;
  response.status = error.status;
  response.body = error.message + "\n";
  return response;
}

bool NeedsBody(absl::string_view method) { return method == "POST" || method == "PUT" || method == "PATCH"; }

}  // namespace

std::string Request::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, name)) return value;
  }
  return "";
}

class Connection;

class HttpServer::Impl : public std::enable_shared_from_this<HttpServer::Impl> {
 public:
  explicit Impl(HttpServerOptions options) : options_(std::move(options)) {}
  ~Impl() {
    // Connections still queued in the io_context refer to this object:
    // destroy them (with the context) before the members they use.
    acceptor_.reset();
    io_.reset();
  }

  absl::Status Start(absl::string_view action);
  void Stop(double grace_seconds);

  Response RenderError(const ServerError& error) const { return renderer_ ? renderer_(error) : PlainText(error); }
  void Observe(const Request& request, int status, Clock::time_point arrived) const {
    if (observer_) observer_(request, status, std::chrono::duration<double>(Clock::now() - arrived).count());
  }
  // Runs the route's handler on a thread of its own.
  void Dispatch(std::shared_ptr<class ExchangeImpl> exchange);
  void Forget(Connection* connection, const std::string& client_ip, bool counted);

  const HttpServerOptions options_;
  std::map<std::string, std::map<std::string, Handler>> routes_;  // path -> method -> handler
  std::map<std::string, std::map<std::string, Handler>> prefix_routes_;  // prefix -> method -> handler
  // The exact route of `path`, else its longest prefix route; nullptr: none.
  const std::map<std::string, Handler>* FindRoute(const std::string& path) const {
    if (auto exact = routes_.find(path); exact != routes_.end()) return &exact->second;
    const std::map<std::string, Handler>* found = nullptr;
    size_t longest = 0;
    for (const auto& [prefix, methods] : prefix_routes_) {
      if (path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 && prefix.size() >= longest) {
        found = &methods;
        longest = prefix.size();
      }
    }
    return found;
  }
  std::function<Response(const ServerError&)> renderer_;
  std::function<void(const Request&, int, double)> observer_;
  std::optional<asio::ssl::context> tls_;
  std::string host_;
  int port_ = 0;

 private:
  void Accept();
  void OnAccept(tcp::socket socket);

  std::unique_ptr<asio::io_context> io_ = std::make_unique<asio::io_context>();
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::optional<tcp::acceptor> acceptor_;
  std::optional<asio::steady_timer> accept_retry_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;

  std::mutex mu_;
  std::condition_variable handlers_done_;
  int handlers_ = 0;  // handler threads running
  int connections_ = 0;
  std::unordered_map<std::string, int> per_client_;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> live_;
};

// One client connection. Everything but the members under mu_ belongs to the
// connection's strand; handler threads reach it through Enqueue and posts.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(HttpServer::Impl* server, tcp::socket socket, std::string client_ip, bool counted)
      : server_(server),
        options_(server->options_),
        client_ip_(std::move(client_ip)),
        counted_(counted),
        strand_(socket.get_executor()),
        accepted_(Clock::now()),
        read_timer_(socket.get_executor()),
        write_timer_(socket.get_executor()) {
    if (server->tls_) {
      tls_.emplace(std::move(socket), *server->tls_);
    } else {
      plain_.emplace(std::move(socket));
    }
  }
  ~Connection() { server_->Forget(this, client_ip_, counted_); }

  // `reject`: refuse the connection with this error (a cap was hit).
  void Start(std::optional<ServerError> reject) {
    beast::error_code ignored;
    Socket().set_option(tcp::no_delay(true), ignored);
    if (reject) {
      draining_ = true;
      queued_.push_back(Item{Request{}, Clock::now(), false, std::move(reject)});
    }
    if (!tls_) return Begin();
    SetReadDeadline(Clock::now() + Seconds(options_.limits.header_timeout_seconds), Phase::kHandshake);
    tls_->async_handshake(asio::ssl::stream_base::server, [self = shared_from_this()](beast::error_code ec) {
      if (self->cut_) return;
      if (ec) return self->Cut();
      self->CancelReadDeadline();
      self->Begin();
    });
  }

  // Handler thread: queues bytes for the client, blocking while too many
  // wait. `stream_piece`: fails once the client is gone (a whole reply is
  // still sent to a client that only closed its sending side).
  bool Enqueue(std::string bytes, bool stream_piece) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto deadline = Clock::now() + Seconds(options_.limits.write_timeout_seconds);
      while (!cut_shared_ && !(stream_piece && gone_) && unsent_ > kMaxUnsentBytes) {
        if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && unsent_ > kMaxUnsentBytes) {
          // The client took nothing for write_timeout: gone, told at once
          // (before the handler can return), cut on the strand.
          gone_ = cut_shared_ = true;
          std::function<void()> callback = std::move(on_gone_);
          on_gone_ = nullptr;
          lock.unlock();
          if (callback) callback();
          asio::post(strand_, [self = shared_from_this()] { self->Cut(); });
          return false;
        }
      }
      if (cut_shared_ || (stream_piece && gone_)) return false;
      unsent_ += bytes.size();
    }
    asio::post(strand_, [self = shared_from_this(), bytes = std::move(bytes)]() mutable {
      self->PushOut(std::move(bytes));
    });
    return true;
  }

  bool Gone() const {
    std::lock_guard<std::mutex> lock(mu_);
    return gone_;
  }

  void SetGoneCallback(std::function<void()> callback) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!gone_) {
        on_gone_ = std::move(callback);
        return;
      }
    }
    callback();
  }

  void ClearGoneCallback() {
    std::function<void()> callback;
    std::lock_guard<std::mutex> lock(mu_);
    callback.swap(on_gone_);
    // Destroyed after the unlock (declared first): what it holds (a gRPC
    // call) may take a while to release, and the io thread takes mu_.
  }

  void HandlerDone(bool keep_alive) {
    asio::post(strand_, [self = shared_from_this(), keep_alive] { self->OnHandlerDone(keep_alive); });
  }

  void PostCut() {
    asio::post(strand_, [self = shared_from_this()] { self->Cut(); });
  }

  const HttpServerOptions& options() const { return options_; }

 private:
  enum class Phase { kNone, kHandshake, kIdle, kHeader, kBody, kLinger };

  // A complete request, or the error that ends the connection.
  struct Item {
    Request request;
    Clock::time_point arrived;
    bool keep_alive = true;
    std::optional<ServerError> error;
  };

  tcp::socket& Socket() { return tls_ ? tls_->next_layer() : *plain_; }

  template <class Callback>
  void ReadSome(asio::mutable_buffer buffer, Callback&& callback) {
    if (tls_) {
      tls_->async_read_some(buffer, std::forward<Callback>(callback));
    } else {
      plain_->async_read_some(buffer, std::forward<Callback>(callback));
    }
  }

  template <class Callback>
  void WriteAll(asio::const_buffer buffer, Callback&& callback) {
    if (tls_) {
      asio::async_write(*tls_, buffer, std::forward<Callback>(callback));
    } else {
      asio::async_write(*plain_, buffer, std::forward<Callback>(callback));
    }
  }

  void Begin() {
    MaybeDispatch();
    DoRead();
    ArmReadDeadline();
  }

  void DoRead() {
    if (reading_ || cut_ || peer_closed_) return;
    if (!draining_ && queued_.size() >= kMaxReadAhead) return;  // resumes as requests are answered
    reading_ = true;
    ReadSome(in_.prepare(kReadChunk), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->OnRead(ec, n);
    });
  }

  void OnRead(beast::error_code ec, size_t n) {
    reading_ = false;
    if (cut_) return;
    if (ec) {
      if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) return PeerClosed();
      return Cut();
    }
    in_.commit(n);
    if (draining_) {
      in_.consume(in_.size());
      drained_ += n;
      if (closing_ && drained_ > kMaxLingerBytes) return Cut();
    } else {
      Parse();
    }
    DoRead();
  }

  void Parse() {
    while (!draining_ && in_.size() > 0 && queued_.size() < kMaxReadAhead) {
      if (!parser_) {
        parser_.emplace();
        parser_->header_limit(static_cast<uint32_t>(options_.limits.max_header_bytes));
        parser_->body_limit(static_cast<uint64_t>(options_.limits.max_body_bytes));
        header_seen_ = false;
        started_ = Clock::now();
      }
      beast::error_code ec;
      const size_t used = parser_->put(in_.data(), ec);
      in_.consume(used);
      if (ec == bhttp::error::need_more) break;
      if (ec) return Fail(ErrorFor(ec));
      bool progressed = used > 0;
      if (parser_->is_header_done() && !header_seen_) {
        header_seen_ = true;
        progressed = true;
        body_started_ = Clock::now();
        const auto& message = parser_->get();
        if (NeedsBody(std::string(message.method_string())) && !parser_->content_length() && !parser_->chunked()) {
          return Fail({411,
                       absl::StrCat(std::string(message.method_string()),
                                    " needs a Content-Length header or chunked Transfer-Encoding"),
                       "length_required"});
        }
        // curl and others wait for this before sending a body; only when no
        // earlier reply is due, or it would land inside that one.
        if (!parser_->is_done() && absl::EqualsIgnoreCase(std::string(message[bhttp::field::expect]), "100-continue") &&
            !handler_running_ && queued_.empty() && out_.empty()) {
          PushOut("HTTP/1.1 100 Continue\r\n\r\n", /*count=*/true);
        }
        parser_->eager(true);
      }
      if (parser_->is_done()) {
        QueueRequest();
      } else if (!progressed) {
        break;
      }
    }
    ArmReadDeadline();
  }

  ServerError ErrorFor(const beast::error_code& ec) const {
    if (ec == bhttp::error::body_limit) {
      return {413,
              absl::StrCat("the request body is over the limit of ", options_.limits.max_body_bytes,
                           " bytes (max_body_bytes)"),
              "request_too_large"};
    }
    if (ec == bhttp::error::header_limit) {
      return {431,
              absl::StrCat("the request header is over the limit of ", options_.limits.max_header_bytes,
                           " bytes (max_header_bytes)"),
              "header_too_large"};
    }
    if (ec == bhttp::error::bad_content_length) {
      return {400, "bad Content-Length: it must be a decimal number of bytes", "bad_content_length"};
    }
    return {400, absl::StrCat("malformed HTTP request: ", ec.message()), "bad_request"};
  }

  Request Partial() const {
    Request request;
    request.client_ip = client_ip_;
    if (!parser_) return request;
    const auto& message = parser_->get();
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    request.path = request.target.substr(0, request.target.find('?'));
    return request;
  }

  void QueueRequest() {
    auto message = parser_->release();
    parser_.reset();
    Item item;
    item.request.method = std::string(message.method_string());
    item.request.target = std::string(message.target());
    item.request.path = item.request.target.substr(0, item.request.target.find('?'));
    for (const auto& field : message) {
      item.request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    item.request.body = std::move(message.body());
    item.request.client_ip = client_ip_;
    item.arrived = started_;
    item.keep_alive = message.keep_alive();
    served_any_ = true;
    if (!item.keep_alive) draining_ = true;  // nothing after it is served
    queued_.push_back(std::move(item));
    MaybeDispatch();
  }

  // The request cannot be served: its error is answered after the replies
  // due before it, and the connection closes.
  void Fail(ServerError error) {
    Item item{Partial(), parser_ ? started_ : Clock::now(), false, std::move(error)};
    parser_.reset();
    draining_ = true;
    in_.consume(in_.size());
    CancelReadDeadline();
    queued_.push_back(std::move(item));
    MaybeDispatch();
  }

  void MaybeDispatch() {
    if (handler_running_ || queued_.empty() || cut_) return;
    Item item = std::move(queued_.front());
    queued_.pop_front();
    if (item.error) {
      queued_.clear();
      close_after_ = true;
      const Response response = server_->RenderError(*item.error);
      PushOut(Whole(response, false), /*count=*/true);
      server_->Observe(item.request, response.status, item.arrived);
      return;
    }
    handler_running_ = true;
    StartHandler(std::move(item));
  }

  void StartHandler(Item item);

  void OnHandlerDone(bool keep_alive) {
    handler_running_ = false;
    if (cut_) return;
    if (!keep_alive) close_after_ = true;
    MaybeDispatch();
    if (!draining_ && in_.size() > 0) Parse();  // requests read ahead while the queue was full
    MaybeClose();
    DoRead();
    ArmReadDeadline();
  }

  void PushOut(std::string bytes, bool count = false) {
    if (cut_) return;
    if (count) {
      std::lock_guard<std::mutex> lock(mu_);
      unsent_ += bytes.size();
    }
    out_.push_back(std::move(bytes));
    StartWrite();
  }

  void StartWrite() {
    if (writing_ || out_.empty() || cut_) return;
    writing_ = true;
    write_timer_.expires_after(Seconds(options_.limits.write_timeout_seconds));
    write_timer_.async_wait([self = shared_from_this(), generation = ++write_generation_](beast::error_code ec) {
      if (!ec && generation == self->write_generation_ && self->writing_) self->Cut();
    });
    WriteAll(asio::buffer(out_.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->OnWrite(ec);
    });
  }

  void OnWrite(beast::error_code ec) {
    writing_ = false;
    ++write_generation_;
    write_timer_.cancel();
    {
      std::lock_guard<std::mutex> lock(mu_);
      unsent_ -= out_.front().size();
    }
    cv_.notify_all();
    out_.pop_front();
    if (cut_) return;
    if (ec) return Cut();
    StartWrite();
    MaybeClose();
    ArmReadDeadline();
  }

  void MaybeClose() {
    if (!close_after_ || closing_ || handler_running_ || !queued_.empty() || !out_.empty() || writing_) return;
    if (peer_closed_) return Cut();
    // Half-close and drop what the client still sends for a moment, so a
    // client still sending a refused body reads the reply, not a reset.
    closing_ = true;
    draining_ = true;
    beast::error_code ignored;
    Socket().shutdown(tcp::socket::shutdown_send, ignored);
    SetReadDeadline(Clock::now() + kLinger, Phase::kLinger);
    DoRead();
  }

  // The client closed its sending side: requests in flight are told (as Go's
  // net/http cancels their context) but their replies are still sent.
  void PeerClosed() {
    peer_closed_ = true;
    parser_.reset();
    FireGone(/*cut=*/false);
    if (closing_ || (!handler_running_ && queued_.empty() && out_.empty())) return Cut();
    close_after_ = true;
    CancelReadDeadline();
  }

  void FireGone(bool cut) {
    std::function<void()> callback;
    {
      std::lock_guard<std::mutex> lock(mu_);
      gone_ = true;
      if (cut) cut_shared_ = true;
      callback = std::move(on_gone_);
      on_gone_ = nullptr;
    }
    cv_.notify_all();
    if (callback) callback();
  }

  // Ends the connection now (error, deadline, server stop or done).
  void Cut() {
    if (cut_) return;
    cut_ = true;
    queued_.clear();
    parser_.reset();
    FireGone(/*cut=*/true);
    CancelReadDeadline();
    ++write_generation_;
    write_timer_.cancel();
    beast::error_code ignored;
    Socket().shutdown(tcp::socket::shutdown_both, ignored);
    Socket().close(ignored);
  }

  void SetReadDeadline(Clock::time_point at, Phase phase) {
    if (phase == read_phase_ && at == read_deadline_) return;
    read_phase_ = phase;
    read_deadline_ = at;
    read_timer_.expires_at(at);
    read_timer_.async_wait([self = shared_from_this(), generation = ++read_generation_](beast::error_code ec) {
      if (!ec && generation == self->read_generation_) self->OnReadDeadline();
    });
  }

  void CancelReadDeadline() {
    if (read_phase_ == Phase::kNone) return;
    read_phase_ = Phase::kNone;
    ++read_generation_;
    read_timer_.cancel();
  }

  // The deadline that applies to what is being read now.
  void ArmReadDeadline() {
    if (cut_ || closing_ || draining_) return;
    if (parser_ && parser_->got_some()) {
      if (!header_seen_) {
        return SetReadDeadline(started_ + Seconds(options_.limits.header_timeout_seconds), Phase::kHeader);
      }
      return SetReadDeadline(body_started_ + Seconds(options_.limits.body_timeout_seconds), Phase::kBody);
    }
    if (!handler_running_ && queued_.empty() && out_.empty()) {
      // A connection that never sent a request gets the header's time, not
      // the keep-alive idle time.
      const auto deadline = served_any_ ? Clock::now() + Seconds(options_.limits.idle_timeout_seconds)
                                        : accepted_ + Seconds(options_.limits.header_timeout_seconds);
      if (read_phase_ != Phase::kIdle) SetReadDeadline(deadline, Phase::kIdle);
      return;
    }
    CancelReadDeadline();
  }

  void OnReadDeadline() {
    const Phase phase = read_phase_;
    read_phase_ = Phase::kNone;
    switch (phase) {
      case Phase::kHeader:
        return Fail({408,
                     absl::StrCat("the request header did not arrive within ",
                                  FormatSeconds(options_.limits.header_timeout_seconds), " (header_timeout_seconds)"),
                     "header_timeout"});
      case Phase::kBody:
        return Fail({408,
                     absl::StrCat("the request body did not arrive within ",
                                  FormatSeconds(options_.limits.body_timeout_seconds), " (body_timeout_seconds)"),
                     "body_timeout"});
      case Phase::kNone:
        return;
      default:  // handshake, idle keep-alive, linger
        return Cut();
    }
  }

  HttpServer::Impl* const server_;
  const HttpServerOptions& options_;
  const std::string client_ip_;
  const bool counted_;
  // The socket's strand (accepted onto one): every handler below runs on it.
  asio::any_io_executor strand_;
  const Clock::time_point accepted_;
  bool served_any_ = false;
  std::optional<tcp::socket> plain_;
  std::optional<asio::ssl::stream<tcp::socket>> tls_;
  asio::steady_timer read_timer_, write_timer_;
  uint64_t read_generation_ = 0, write_generation_ = 0;
  Phase read_phase_ = Phase::kNone;
  Clock::time_point read_deadline_;

  beast::flat_buffer in_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bool header_seen_ = false;
  Clock::time_point started_, body_started_;
  std::deque<Item> queued_;
  std::deque<std::string> out_;
  bool reading_ = false, writing_ = false;
  bool handler_running_ = false;
  bool draining_ = false;     // input is dropped (an error, Connection: close, or closing)
  bool close_after_ = false;  // close once what is due is written
  bool closing_ = false;      // half-closed, lingering
  bool peer_closed_ = false;
  bool cut_ = false;
  size_t drained_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  size_t unsent_ = 0;        // bytes queued or being written
  bool gone_ = false;        // the client went (or was cut)
  bool cut_shared_ = false;  // nothing more can be written
  std::function<void()> on_gone_;
};

class ExchangeImpl : public Exchange {
 public:
  ExchangeImpl(std::shared_ptr<Connection> connection, Request request, Clock::time_point arrived, bool keep_alive)
      : connection_(std::move(connection)), request_(std::move(request)), arrived_(arrived), keep_alive_(keep_alive) {}

  void Send(Response response) override {
    if (answered_) return;
    answered_ = true;
    status_ = response.status;
    connection_->Enqueue(Whole(response, keep_alive_), /*stream_piece=*/false);
  }

  void StartStream(const Response& head) override {
    if (answered_) return;
    answered_ = streaming_ = true;
    status_ = head.status;
    connection_->Enqueue(Head(head, keep_alive_, std::nullopt), /*stream_piece=*/false);
  }

  bool Write(absl::string_view data) override {
    if (!streaming_) return false;
    if (data.empty()) return !ClientGone();
    return connection_->Enqueue(absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n"), /*stream_piece=*/true);
  }

  bool ClientGone() const override { return connection_->Gone(); }
  void OnClientGone(std::function<void()> callback) override { connection_->SetGoneCallback(std::move(callback)); }

  const Request& request() const { return request_; }

  // After the handler: the reply's end, accounting, the next request.
  void Finish(HttpServer::Impl* server) {
    connection_->ClearGoneCallback();
    if (!answered_) {
      Send(server->RenderError({500, "the handler gave no reply", "internal_error"}));
    } else if (streaming_) {
      connection_->Enqueue("0\r\n\r\n", /*stream_piece=*/false);
    }
    server->Observe(request_, status_, arrived_);
    connection_->HandlerDone(keep_alive_);
  }

 private:
  std::shared_ptr<Connection> connection_;
  Request request_;
  Clock::time_point arrived_;
  bool keep_alive_;
  bool answered_ = false, streaming_ = false;
  int status_ = 500;
};

void Connection::StartHandler(Item item) {
  server_->Dispatch(std::make_shared<ExchangeImpl>(shared_from_this(), std::move(item.request), item.arrived,
                                                   item.keep_alive));
}

void HttpServer::Impl::Dispatch(std::shared_ptr<ExchangeImpl> exchange) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++handlers_;
  }
  // A thread per request in flight: handlers block on gRPC for as long as a
  // generation lasts, and connections (so threads) are capped.
  std::thread([self = shared_from_this(), exchange = std::move(exchange)]() mutable {
    const Request& request = exchange->request();
    const std::map<std::string, Handler>* methods = self->FindRoute(request.path);
    try {
      if (methods == nullptr) {
        exchange->Send(self->RenderError(
            {404, absl::StrCat("no route ", request.method, " ", request.path), "not_found"}));
      } else if (auto method = methods->find(request.method); method == methods->end()) {
        exchange->Send(self->RenderError(
            {405, absl::StrCat(request.method, " is not allowed on ", request.path), "method_not_allowed"}));
      } else {
        method->second(request, *exchange);
      }
    } catch (const std::exception& e) {
      exchange->Send(self->RenderError({500, absl::StrCat("internal error: ", e.what()), "internal_error"}));
    }
    exchange->Finish(self.get());
    exchange.reset();  // and with it the connection, while the server is sure to live
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      --self->handlers_;
    }
    self->handlers_done_.notify_all();
  }).detach();
}

void HttpServer::Impl::Forget(Connection* connection, const std::string& client_ip, bool counted) {
  std::lock_guard<std::mutex> lock(mu_);
  live_.erase(connection);
  if (!counted) return;
  --connections_;
  if (--per_client_[client_ip] <= 0) per_client_.erase(client_ip);
}

absl::Status HttpServer::Impl::Start(absl::string_view action) {
  const std::string& listen = options_.listen;
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(options_.listen_setting, " must be host:port, got '", listen, "'"));
  }
  host_ = listen.substr(0, colon);
  std::string bare_host = host_;
  if (bare_host.size() > 2 && bare_host.front() == '[' && bare_host.back() == ']') {
    bare_host = bare_host.substr(1, bare_host.size() - 2);
  }
  if (!options_.tls_cert_file.empty()) {
    tls_.emplace(asio::ssl::context::tls_server);
    tls_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1);
    beast::error_code ec;
    tls_->use_certificate_chain_file(options_.tls_cert_file, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("TLS certificate ", options_.tls_cert_file, ": ", ec.message()));
    tls_->use_private_key_file(options_.tls_key_file, asio::ssl::context::pem, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("TLS key ", options_.tls_key_file, ": ", ec.message()));
    if (!options_.tls_client_ca_file.empty()) {
      tls_->load_verify_file(options_.tls_client_ca_file, ec);
      if (ec) {
        return absl::InvalidArgumentError(absl::StrCat("TLS client CA ", options_.tls_client_ca_file, ": ", ec.message()));
      }
      tls_->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    }
  }
  const auto unavailable = [&] {
    return absl::UnavailableError(absl::StrCat("cannot ", action, " on ", listen, ": address in use or not local"));
  };
  beast::error_code ec;
  tcp::resolver resolver(*io_);
  auto endpoints = resolver.resolve(bare_host, std::to_string(port), tcp::resolver::passive, ec);
  if (ec || endpoints.empty()) return unavailable();
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  // SO_REUSEADDR (restarts while old connections sit in TIME_WAIT), never
  // SO_REUSEPORT: a second process must not share the port.
  acceptor_.emplace(asio::make_strand(*io_));
  acceptor_->open(endpoint.protocol(), ec);
  if (!ec) acceptor_->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_->bind(endpoint, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    acceptor_.reset();
    return unavailable();
  }
  port_ = acceptor_->local_endpoint().port();
  accept_retry_.emplace(acceptor_->get_executor());
  work_.emplace(io_->get_executor());
  Accept();
  for (int i = 0; i < std::max(1, options_.io_threads); ++i) threads_.emplace_back([this] { io_->run(); });
  return absl::OkStatus();
}

void HttpServer::Impl::Accept() {
  acceptor_->async_accept(asio::make_strand(*io_), [self = shared_from_this()](beast::error_code ec,
                                                                                tcp::socket socket) {
    if (!self->acceptor_->is_open()) return;
    if (ec) {
      // Out of descriptors and the like: try again shortly, not in a spin.
      self->accept_retry_->expires_after(std::chrono::milliseconds(50));
      self->accept_retry_->async_wait([self](beast::error_code wait_ec) {
        if (!wait_ec && self->acceptor_->is_open()) self->Accept();
      });
      return;
    }
    self->OnAccept(std::move(socket));
    self->Accept();
  });
}

void HttpServer::Impl::OnAccept(tcp::socket socket) {
  beast::error_code ec;
  const tcp::endpoint remote = socket.remote_endpoint(ec);
  if (ec) return;
  std::string client_ip = remote.address().to_string();
  std::optional<ServerError> reject;
  std::shared_ptr<Connection> connection;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (connections_ >= options_.limits.max_connections) {
      reject = ServerError{503,
                           absl::StrCat("the server has its limit of ", options_.limits.max_connections,
                                        " connections (max_connections); try again later"),
                           "too_many_connections"};
    } else if (per_client_[client_ip] >= options_.limits.max_connections_per_client) {
      reject = ServerError{429,
                           absl::StrCat("this client has its limit of ", options_.limits.max_connections_per_client,
                                        " connections (max_connections_per_client)"),
                           "too_many_connections_from_client"};
    } else {
      ++connections_;
      ++per_client_[client_ip];
    }
    if (reject && per_client_[client_ip] == 0) per_client_.erase(client_ip);
    connection = std::make_shared<Connection>(this, std::move(socket), client_ip, !reject);
    live_[connection.get()] = connection;
  }
  connection->Start(std::move(reject));
}

void HttpServer::Impl::Stop(double grace_seconds) {
  if (stopped_ || !acceptor_) return;
  stopped_ = true;
  {
    std::promise<void> closed;
    asio::dispatch(acceptor_->get_executor(), [this, &closed] {
      beast::error_code ignored;
      acceptor_->close(ignored);
      accept_retry_->cancel();
      closed.set_value();
    });
    closed.get_future().wait();
  }
  std::vector<std::shared_ptr<Connection>> connections;
  {
    std::unique_lock<std::mutex> lock(mu_);
    handlers_done_.wait_for(lock, Seconds(grace_seconds), [this] { return handlers_ == 0; });
    for (auto& [raw, weak] : live_) {
      if (auto connection = weak.lock()) connections.push_back(std::move(connection));
    }
  }
  // Cut clients make handlers' writes fail and cancel their calls.
  for (const auto& connection : connections) connection->PostCut();
  connections.clear();  // outside mu_: the last reference's destructor takes it
  {
    std::unique_lock<std::mutex> lock(mu_);
    handlers_done_.wait(lock, [this] { return handlers_ == 0; });
  }
  work_.reset();
  io_->stop();
  for (auto& thread : threads_) thread.join();
  threads_.clear();
}

HttpServer::HttpServer(HttpServerOptions options) : impl_(std::make_shared<Impl>(std::move(options))) {}

HttpServer::~HttpServer() { Stop(0); }

void HttpServer::Handle(const std::string& method, const std::string& path, Handler handler) {
  impl_->routes_[path][method] = std::move(handler);
}

void HttpServer::HandlePrefix(const std::string& method, const std::string& prefix, Handler handler) {
  impl_->prefix_routes_[prefix][method] = std::move(handler);
}

void HttpServer::SetErrorRenderer(std::function<Response(const ServerError&)> renderer) {
  impl_->renderer_ = std::move(renderer);
}

void HttpServer::SetObserver(std::function<void(const Request&, int, double)> observer) {
  impl_->observer_ = std::move(observer);
}

absl::Status HttpServer::Start(absl::string_view action) { return impl_->Start(action); }
const std::string& HttpServer::host() const { return impl_->host_; }
int HttpServer::port() const { return impl_->port_; }
void HttpServer::Stop(double grace_seconds) { impl_->Stop(grace_seconds); }

}  // namespace gantry::http

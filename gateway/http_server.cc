#include "gateway/http_server.h"

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <optional>
#include <unordered_set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "libs/metrics/metrics.h"
#include "prometheus/counter.h"

namespace nexusflow::gateway {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
constexpr auto kNoThrow = net::as_tuple(net::use_awaitable);

std::string UrlDecode(std::string_view in, bool form) {
  std::string out;
  out.reserve(in.size());
  auto hex = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+' && form) {
      out.push_back(' ');
    } else if (c == '%' && i + 2 < in.size() && isxdigit(static_cast<unsigned char>(in[i + 1])) &&
               isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      out.push_back(static_cast<char>(hex(in[i + 1]) * 16 + hex(in[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

using Clock = std::chrono::steady_clock;

// Deadlines are kept per connection and enforced by one sweep a loop (every
// kSweepInterval), not by a timer per read or write: re-arming the earliest timer is a
// syscall, and a request would make several. A deadline may thus pass by up to one
// interval before its connection is cut.
constexpr auto kSweepInterval = std::chrono::milliseconds(200);
// At most this many connections are cut a sweep on each loop; the rest at the next. Slow
// connections opened together (a slowloris run) reach their deadline together: cut all
// at once, they and the reconnections that follow stall the loop's requests in a burst.
constexpr int kMaxCutsPerSweep = 64;
// A request whose header is still incomplete this long after its first byte moves to the
// intake: one thread at the lowest scheduling priority that polls such connections every
// kSweepInterval (a non-blocking read each, no epoll registration, so a dripped byte wakes
// nobody) and hands a connection back to its loop once its header is whole. A client's
// header normally arrives in one read; a slow or hostile one (a slowloris connection
// dripping a byte a second) then costs the loops serving requests two reads, and the
// cores a few batched reads a second on a thread that only runs in their idle time. A
// slow header's wait grows by up to one interval.
constexpr auto kSlowHeader = std::chrono::milliseconds(100);
constexpr int kIntakeNice = 19;
// The intake cuts at most this many connections a pass (as the loops' sweeps, together).
constexpr int kMaxIntakeCutsPerPass = 2 * kMaxCutsPerSweep;

using RequestParser = http::request_parser<http::string_body>;

struct EdgeCounters {
  prometheus::Counter& slow_headers;
  prometheus::Counter& deadline_cuts;
};

EdgeCounters& Counters() {
  static EdgeCounters c{
      prometheus::BuildCounter()
          .Name("nexusflow_gateway_slow_headers_total")
          .Help("Requests whose header was still incomplete 100 ms after its first byte, "
                "read on in the low-priority intake loop")
          .Register(MetricsRegistry())
          .Add({}),
      prometheus::BuildCounter()
          .Name("nexusflow_gateway_deadline_cuts_total")
          .Help("Client connections cut at a deadline: idle, header, body or send")
          .Register(MetricsRegistry())
          .Add({})};
  return c;
}

struct HttpServer::Connection {
  explicit Connection(tcp::socket s) : socket(std::move(s)) {}
  ~Connection() {
    if (fd >= 0) ::close(fd);
  }
  tcp::socket socket;
  Clock::time_point deadline = Clock::time_point::max();  // of the operation under way
  bool timed_out = false;           // the sweep cut it
  std::string ip;
  std::string remote;               // ip:port
  int loop = 0;                     // the loop serving its requests
  void Expire(Clock::duration d) { deadline = Clock::now() + d; }
  void Unexpire() { deadline = Clock::time_point::max(); }
  bool idle = true;                 // waiting for a request: closed at once by a drain
  std::function<void()> on_gone;    // the exchange's client watcher, if any
  // The request being read; both travel with the connection to the intake and back.
  beast::flat_buffer buffer;        // grows to what a request needs (the parser caps it)
  std::optional<RequestParser> parser;
  Clock::time_point header_started;
  bool resumed = false;             // back from the intake with its header read
  boost::system::error_code header_error;  // what the intake's parse found
  int fd = -1;                      // on the intake: the descriptor, out of any loop's reactor
  tcp protocol = tcp::v4();
};

struct HttpServer::Shared {
  Shared(Options o, EventLoops& l, AsyncHandler h, ErrorBodyFn e)
      : options(std::move(o)), loops(l), handler(std::move(h)), error_body(std::move(e)),
        connections(static_cast<size_t>(l.size())) {}
  const Options options;
  EventLoops& loops;
  AsyncHandler handler;
  ErrorBodyFn error_body;
  std::unique_ptr<tcp::acceptor> acceptor;  // on loop 0
  std::atomic<bool> draining{false};
  std::atomic<int> active{0};
  std::atomic<unsigned> next_loop{0};
  std::mutex mu;  // per_ip; drain waits on cv
  std::condition_variable cv;
  std::unordered_map<std::string, int> per_ip;
  // By loop; each set is touched only on its own loop's thread.
  std::vector<std::unordered_set<Connection*>> connections;
  std::atomic<bool> stopped{false};  // the sweeps end
  EventLoops* intake = nullptr;
  // The connections the intake polls; touched only on its thread.
  std::vector<std::unique_ptr<Connection>> slow;

  int intake_index() const { return loops.size(); }
  net::io_context& io(int index) { return index == intake_index() ? intake->at(0) : loops.at(index); }

  std::string ErrorBody(std::string_view path, int status, const std::string& message,
                        const std::string& code) const {
    if (error_body) return error_body(path, status, message, code);
    const char* type = status >= 500 ? "server_error" : "invalid_request_error";
    return absl::StrCat(R"({"error":{"message":")", message, R"(","type":")", type,
                        R"(","param":null,"code":)", code.empty() ? "null" : "\"" + code + "\"", "}}");
  }
};

namespace {

using Shared = HttpServer::Shared;
using Connection = HttpServer::Connection;

// A response written straight to a socket that is about to close (refusals at accept).
void RefuseAndClose(tcp::socket& socket, int status, const char* reason, const std::string& body,
                    int retry_after) {
  std::string text = absl::StrCat("HTTP/1.1 ", status, " ", reason,
                                  "\r\nServer: nexusflow\r\nContent-Type: application/json\r\nRetry-After: ",
                                  retry_after, "\r\nConnection: close\r\nContent-Length: ", body.size(),
                                  "\r\n\r\n", body);
  (void)::send(socket.native_handle(), text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  // What the client already sent is read and dropped, so the close is a FIN after the
  // answer, not a reset that could reach the client before it reads the answer.
  char scratch[4096];
  while (::recv(socket.native_handle(), scratch, sizeof scratch, MSG_DONTWAIT) > 0) {
  }
  boost::system::error_code ec;
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
}

class Exchange : public HttpExchange {
 public:
  Exchange(Shared& shared, Connection& conn, beast::flat_buffer& buffer, RequestParser& parser,
           HttpRequest& req, bool keep_alive)
      : shared_(shared), conn_(conn), buffer_(buffer), parser_(parser), req_(req),
        keep_alive_(keep_alive) {}

  ~Exchange() override { StopWatching(); }

  HttpRequest& request() override { return req_; }

  net::awaitable<bool> ReadBody() override {
    if (body_read_) co_return !gone_;
    body_read_ = true;
    if (parser_.is_done()) co_return true;
    if (absl::EqualsIgnoreCase(req_.Header("expect"), "100-continue")) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      conn_.Expire(std::chrono::seconds(shared_.options.send_timeout_seconds));
      auto [ec, n] = co_await net::async_write(conn_.socket, net::buffer(kContinue), kNoThrow);
      conn_.Unexpire();
      if (ec) {
        gone_ = true;
        co_return false;
      }
    }
    conn_.Expire(std::chrono::milliseconds(shared_.options.body_timeout_ms));
    auto [ec, n] = co_await http::async_read(conn_.socket, buffer_, parser_, kNoThrow);
    conn_.Unexpire();
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      co_await SendError(413, "Request body too large.", "request_too_large");
      co_return false;
    }
    if (conn_.timed_out) {
      gone_ = true;  // the sweep cut the connection at the deadline
      co_return false;
    }
    if (ec) {
      if (ec == http::error::end_of_stream || ec == net::error::eof ||
          ec == net::error::connection_reset) {
        gone_ = true;
      } else {
        keep_alive_ = false;
        co_await SendError(400, "Malformed request body.", "");
      }
      co_return false;
    }
    req_.body = std::move(parser_.get().body());
    co_return true;
  }

  net::awaitable<void> Send(int status, std::string_view content_type, std::string body,
                            HeaderList headers) override {
    if (started_) co_return;
    started_ = true;
    status_ = status;
    if (gone_) co_return;
    http::response<http::string_body> res{static_cast<http::status>(status), req_version()};
    res.set(http::field::server, "nexusflow");
    res.set(http::field::content_type, content_type);
    for (auto& [k, v] : headers) res.set(k, v);
    res.keep_alive(KeepAlive());
    bytes_ += static_cast<int64_t>(body.size());
    res.body() = std::move(body);
    res.prepare_payload();
    conn_.Expire(std::chrono::seconds(shared_.options.send_timeout_seconds));
    auto [ec, n] = co_await http::async_write(conn_.socket, res, kNoThrow);
    conn_.Unexpire();
    if (ec) gone_ = true;
    complete_ = !gone_;
    StopWatching();
  }

  net::awaitable<bool> Start(int status, std::string_view content_type, HeaderList headers) override {
    if (started_) co_return !gone_;
    started_ = true;
    streaming_ = true;
    status_ = status;
    if (gone_) co_return false;
    // A stream holds its connection for as long as it lasts: what reading the request
    // took (the read buffer, the parser's copy of the header fields) is given back now.
    if (buffer_.size() == 0) buffer_.shrink_to_fit();
    parser_.get().base().clear();
    http::response<http::empty_body> res{static_cast<http::status>(status), req_version()};
    res.set(http::field::server, "nexusflow");
    res.set(http::field::content_type, content_type);
    res.set(http::field::cache_control, "no-cache");
    res.set("x-accel-buffering", "no");
    for (auto& [k, v] : headers) res.set(k, v);
    res.keep_alive(KeepAlive());
    res.chunked(true);
    http::response_serializer<http::empty_body> sr{res};
    conn_.Expire(std::chrono::seconds(shared_.options.send_timeout_seconds));
    auto [ec, n] = co_await http::async_write_header(conn_.socket, sr, kNoThrow);
    conn_.Unexpire();
    if (ec) gone_ = true;
    co_return !gone_;
  }

  net::awaitable<bool> Write(std::string data) override {
    if (gone_ || !streaming_ || ended_ || data.empty()) co_return !gone_;
    bytes_ += static_cast<int64_t>(data.size());
    conn_.Expire(std::chrono::seconds(shared_.options.send_timeout_seconds));
    auto [ec, n] = co_await net::async_write(
        conn_.socket, http::make_chunk(net::const_buffer(data.data(), data.size())), kNoThrow);
    conn_.Unexpire();
    if (ec) gone_ = true;
    co_return !gone_;
  }

  net::awaitable<void> End() override {
    if (gone_ || !streaming_ || ended_) co_return;
    ended_ = true;
    conn_.Expire(std::chrono::seconds(shared_.options.send_timeout_seconds));
    auto [ec, n] = co_await net::async_write(conn_.socket, http::make_chunk_last(), kNoThrow);
    conn_.Unexpire();
    if (ec) gone_ = true;
    complete_ = !gone_;
    StopWatching();
  }

  void WatchClient(std::function<void()> on_gone) override {
    if (watching_ || gone_) return;
    watching_ = true;
    conn_.on_gone = [this, fn = std::move(on_gone)]() mutable {
      if (!watching_) return;
      watching_ = false;
      gone_ = true;
      auto call = std::move(fn);
      conn_.on_gone = nullptr;  // destroys this closure: only locals from here on
      call();
    };
    ArmWatch();
  }

  bool client_gone() const override { return gone_; }
  bool started() const override { return started_; }
  int status() const override { return status_; }
  int64_t bytes_written() const override { return bytes_; }

  // The connection may carry another request.
  bool reusable() const { return complete_ && KeepAlive(); }

  net::awaitable<void> SendError(int status, const std::string& message, const std::string& code) {
    co_await Send(status, "application/json", shared_.ErrorBody(req_.path, status, message, code), {});
  }

 private:
  unsigned req_version() const { return parser_.get().version(); }

  // Keep-alive only when the request was read whole and nobody is shutting down.
  bool KeepAlive() const {
    return keep_alive_ && parser_.is_done() && !shared_.draining.load(std::memory_order_relaxed);
  }

  void ArmWatch() {
    auto& socket = conn_.socket;
    socket.async_wait(tcp::socket::wait_read, [this, alive = alive_](boost::system::error_code ec) {
      if (!*alive || !watching_) return;
      if (ec == net::error::operation_aborted) return;
      char byte;
      ssize_t n = ec ? -1 : ::recv(conn_.socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) {  // the client sent more (a pipelined request): it is still there
        watching_ = false;
        conn_.on_gone = nullptr;
        return;
      }
      if (n < 0 && !ec && (errno == EAGAIN || errno == EWOULDBLOCK)) return ArmWatch();
      if (conn_.on_gone) conn_.on_gone();
    });
  }

  // Once the response is out (or the exchange is over) hang-ups no longer matter; the
  // wait is cancelled while no other operation is pending on the socket.
  void StopWatching() {
    *alive_ = false;
    alive_ = std::make_shared<bool>(true);
    if (!watching_) return;
    watching_ = false;
    conn_.on_gone = nullptr;
    boost::system::error_code ec;
    conn_.socket.cancel(ec);  // nothing else is pending once the handler is done
  }

  Shared& shared_;
  Connection& conn_;
  beast::flat_buffer& buffer_;
  RequestParser& parser_;
  HttpRequest& req_;
  bool keep_alive_;
  bool body_read_ = false;
  bool started_ = false;
  bool streaming_ = false;
  bool ended_ = false;
  bool complete_ = false;
  bool gone_ = false;
  bool watching_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  int status_ = 0;
  int64_t bytes_ = 0;
};

void FillRequest(const http::request<http::string_body>& msg, const std::string& remote,
                 HttpRequest& req) {
  req.method = std::string(msg.method_string());
  req.target = std::string(msg.target());
  auto q = req.target.find('?');
  req.path = UrlDecode(std::string_view(req.target).substr(0, q), false);
  if (q != std::string::npos) {
    std::string_view rest(req.target);
    rest.remove_prefix(q + 1);
    while (!rest.empty()) {
      auto amp = rest.find('&');
      std::string_view pair = rest.substr(0, amp);
      auto eq = pair.find('=');
      req.query[UrlDecode(pair.substr(0, eq))] =
          eq == std::string_view::npos ? "" : UrlDecode(pair.substr(eq + 1));
      if (amp == std::string_view::npos) break;
      rest.remove_prefix(amp + 1);
    }
  }
  for (const auto& field : msg) {
    std::string name(field.name_string());
    absl::AsciiStrToLower(&name);
    req.headers[std::move(name)] = std::string(field.value());
  }
  req.remote = remote;
}

// Gives back what a connection holds of the server's counts; the socket closes.
void Close(Shared& shared, Connection& conn) {
  boost::system::error_code ec;
  conn.socket.shutdown(tcp::socket::shutdown_both, ec);
  conn.socket.close(ec);
  if (conn.fd >= 0) {
    ::shutdown(conn.fd, SHUT_RDWR);
    ::close(conn.fd);
    conn.fd = -1;
  }
  if (shared.options.max_connections_per_ip > 0) {
    std::lock_guard<std::mutex> lock(shared.mu);
    if (--shared.per_ip[conn.ip] <= 0) shared.per_ip.erase(conn.ip);
  }
  if (shared.active.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(shared.mu);
    shared.cv.notify_all();
  }
}

net::awaitable<void> Serve(std::shared_ptr<Shared> shared, std::unique_ptr<Connection> conn);

// Moves a connection to the intake (`to` < 0) or to loop `to`, and goes on there. The
// descriptor stays open; only who watches it changes.
void MoveConnection(std::shared_ptr<Shared> shared, std::unique_ptr<Connection> conn, int to) {
  boost::system::error_code ec;
  if (conn->fd < 0) {
    conn->protocol = conn->socket.local_endpoint(ec).protocol();
    if (!ec) conn->fd = conn->socket.release(ec);
    if (ec) {
      Close(*shared, *conn);
      return;
    }
  }
  if (to < 0) {
    net::post(shared->intake->at(0), [shared, conn = std::move(conn)]() mutable {
      shared->slow.push_back(std::move(conn));
    });
    return;
  }
  auto& io = shared->loops.at(to);
  net::post(io, [shared, conn = std::move(conn), &io]() mutable {
    int fd = std::exchange(conn->fd, -1);
    conn->socket = tcp::socket(io, conn->protocol, fd);
    net::co_spawn(io, Serve(shared, std::move(conn)), net::detached);
  });
}

enum class HeaderRead { kDone, kSlow };

// Room to read into next: what the buffer has free, at least 512 bytes, at most 64 KiB.
size_t ReadRoom(const beast::flat_buffer& buffer) {
  return std::min<size_t>(std::max<size_t>(512, buffer.capacity() - buffer.size()), 65536);
}

// Parses what the connection's buffer holds; false while the header is incomplete, true
// once it is whole or malformed (`ec`).
bool ParseHeader(Connection& conn, boost::system::error_code& ec) {
  size_t used = conn.parser->put(conn.buffer.data(), ec);
  conn.buffer.consume(used);
  if (ec != http::error::need_more) return true;
  ec = {};
  return false;
}

// The client closed while the header was incomplete. As Beast's reads do: a header cut
// short is a partial message, none at all the end of the stream.
void HeaderAtEof(Connection& conn, boost::system::error_code& ec) {
  if (conn.parser->got_some())
    conn.parser->put_eof(ec);
  else
    ec = http::error::end_of_stream;
}

// Parses what the connection's buffer holds and reads until the request's header is whole
// or fails (`ec`); returns kSlow instead of reading on once the header has been under way
// for kSlowHeader.
net::awaitable<HeaderRead> ReadHeader(Connection& conn, boost::system::error_code& ec) {
  auto& buffer = conn.buffer;
  while (true) {
    if (buffer.size() > 0 && ParseHeader(conn, ec)) co_return HeaderRead::kDone;
    if (Clock::now() - conn.header_started >= kSlowHeader) co_return HeaderRead::kSlow;
    auto [e, n] = co_await conn.socket.async_read_some(buffer.prepare(ReadRoom(buffer)), kNoThrow);
    if (e == net::error::eof) {
      HeaderAtEof(conn, ec);
      co_return HeaderRead::kDone;
    }
    if (e) {
      ec = e;
      co_return HeaderRead::kDone;
    }
    buffer.commit(n);
  }
}

// Serves one connection, request after request, on the loop that owns its socket.
net::awaitable<void> Serve(std::shared_ptr<Shared> shared, std::unique_ptr<Connection> conn) {
  const auto& o = shared->options;
  auto& registry = shared->connections[conn->loop];
  registry.insert(conn.get());
  if (conn->remote.empty()) {
    boost::system::error_code ec;
    auto ep = conn->socket.remote_endpoint(ec);
    if (!ec) conn->remote = absl::StrCat(ep.address().to_string(), ":", ep.port());
  }
  auto& buffer = conn->buffer;
  // A connection back from the intake serves the request it brought, draining or not.
  while (conn->resumed || !shared->draining.load(std::memory_order_relaxed)) {
    boost::system::error_code ec;
    if (conn->resumed) {
      conn->resumed = false;
      ec = conn->header_error;
    } else {
      conn->parser.reset();  // the last request's header fields are not kept while idle
      conn->idle = true;
      if (buffer.size() == 0) {
        // Idle keep-alive: wait for the first byte of the next request.
        conn->Expire(std::chrono::seconds(o.idle_timeout_seconds));
        auto [e, n] = co_await conn->socket.async_read_some(buffer.prepare(4096), kNoThrow);
        conn->Unexpire();
        if (e) break;
        buffer.commit(n);
      }
      conn->idle = false;
      conn->parser.emplace();
      conn->parser->header_limit(static_cast<uint32_t>(o.max_header_bytes));
      conn->parser->body_limit(static_cast<uint64_t>(o.max_body_bytes));
      conn->header_started = Clock::now();
      conn->Expire(std::chrono::milliseconds(o.header_timeout_ms));
      if (co_await ReadHeader(*conn, ec) == HeaderRead::kSlow) {
        // The deadline goes with it: the intake's sweep enforces it.
        Counters().slow_headers.Increment();
        registry.erase(conn.get());
        MoveConnection(shared, std::move(conn), -1);
        co_return;
      }
    }
    conn->Unexpire();
    auto& parser = *conn->parser;
    HttpRequest req;
    if (ec) {
      if (conn->timed_out || ec == http::error::end_of_stream ||
          ec == net::error::eof || ec == net::error::connection_reset ||
          ec == net::error::operation_aborted)
        break;
      if (ec == http::error::body_limit) {
        // The headers are complete and announce a body over the limit (Content-Length):
        // refused before a byte of it is read, in the path's protocol.
        FillRequest(parser.get(), conn->remote, req);
        Exchange ex(*shared, *conn, buffer, parser, req, false);
        co_await ex.SendError(413, "Request body too large.", "request_too_large");
        break;
      }
      if (parser.got_some() || ec == http::error::header_limit) {
        // What the path is, if it got that far, decides the error's protocol.
        req.path = "/";
        Exchange ex(*shared, *conn, buffer, parser, req, false);
        if (ec == http::error::header_limit)
          co_await ex.SendError(431, "Request header fields too large.", "request_header_fields_too_large");
        else
          co_await ex.SendError(400, "Malformed HTTP request.", "");
      }
      break;
    }
    FillRequest(parser.get(), conn->remote, req);
    bool keep_alive = parser.get().keep_alive();
    Exchange ex(*shared, *conn, buffer, parser, req, keep_alive);
    size_t header_count = std::distance(parser.get().begin(), parser.get().end());
    if (header_count > static_cast<size_t>(o.max_header_count)) {
      co_await ex.SendError(431, absl::StrCat("Too many header fields (at most ", o.max_header_count, ")."),
                            "request_header_fields_too_large");
      break;
    }
    bool failed = false;
    try {
      co_await shared->handler(ex);
    } catch (const std::exception& e) {
      // A bug in a handler costs its request, not the process.
      fprintf(stderr, "nexusflow: handler failed on %s %s: %s\n", req.method.c_str(),
              req.path.c_str(), e.what());
      failed = true;
    }
    if (!ex.started()) co_await ex.SendError(500, failed ? "Internal error." : "No response.", "");
    if (failed || !ex.reusable()) break;
  }
  registry.erase(conn.get());
  Close(*shared, *conn);
}

enum class Polled { kWaiting, kWhole, kGone };

// Reads what a slow connection's client sent since the last pass, without waiting.
Polled PollHeader(Connection& conn) {
  auto& buffer = conn.buffer;
  while (true) {
    auto space = buffer.prepare(ReadRoom(buffer));
    ssize_t n = ::recv(conn.fd, space.data(), space.size(), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Polled::kWaiting;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Polled::kGone;
    if (n == 0) {
      HeaderAtEof(conn, conn.header_error);
      return conn.header_error == http::error::end_of_stream ? Polled::kGone : Polled::kWhole;
    }
    buffer.commit(static_cast<size_t>(n));
    // Whole: no error; malformed: what the loop answers.
    if (ParseHeader(conn, conn.header_error)) return Polled::kWhole;
  }
}

// The intake's pass over its connections every kSweepInterval: reads, hands back the
// ones whose header is whole (the loop answers a malformed one as it would have), cuts
// the ones past their deadline.
net::awaitable<void> PollSlow(std::shared_ptr<Shared> shared) {
  net::steady_timer timer(co_await net::this_coro::executor);
  auto& slow = shared->slow;
  while (!shared->stopped.load(std::memory_order_relaxed)) {
    timer.expires_after(kSweepInterval);
    co_await timer.async_wait(kNoThrow);
    auto now = Clock::now();
    int cuts = 0;
    for (size_t i = 0; i < slow.size();) {
      Connection& c = *slow[i];
      Polled state = PollHeader(c);
      if (state == Polled::kWaiting && c.deadline <= now && cuts < kMaxIntakeCutsPerPass) {
        ++cuts;
        Counters().deadline_cuts.Increment();
        state = Polled::kGone;
      }
      if (state == Polled::kWaiting) {
        ++i;
        continue;
      }
      std::unique_ptr<Connection> conn = std::move(slow[i]);
      slow[i] = std::move(slow.back());
      slow.pop_back();
      if (state == Polled::kGone) {
        Close(*shared, *conn);
        continue;
      }
      conn->resumed = true;
      int loop = conn->loop;
      MoveConnection(shared, std::move(conn), loop);
    }
  }
}

net::awaitable<void> Accept(std::shared_ptr<Shared> shared) {
  const auto& o = shared->options;
  auto& acceptor = *shared->acceptor;
  while (true) {
    auto [ec, socket] = co_await acceptor.async_accept(kNoThrow);
    if (ec) {
      if (shared->draining || !acceptor.is_open()) co_return;
      if (ec == net::error::no_descriptors || ec == net::error::no_buffer_space) {
        net::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(50));
        co_await pause.async_wait(kNoThrow);
      }
      continue;
    }
    if (shared->active.load() >= o.max_connections) {
      RefuseAndClose(socket, 503, "Service Unavailable",
                     shared->ErrorBody("/", 503, "Too many connections; retry shortly.", "service_unavailable"), 1);
      continue;
    }
    std::string ip;
    {
      boost::system::error_code e;
      auto ep = socket.remote_endpoint(e);
      if (!e) ip = ep.address().to_string();
    }
    if (o.max_connections_per_ip > 0) {
      std::lock_guard<std::mutex> lock(shared->mu);
      int& n = shared->per_ip[ip];
      if (n >= o.max_connections_per_ip) {
        if (n == 0) shared->per_ip.erase(ip);
        RefuseAndClose(socket, 429, "Too Many Requests",
                       shared->ErrorBody("/", 429, "Too many connections from this address; retry shortly.",
                                         "too_many_connections"), 1);
        continue;
      }
      ++n;
    }
    shared->active.fetch_add(1);
    boost::system::error_code e;
    socket.set_option(tcp::no_delay(true), e);
    // Round robin over the loops; the connection stays on its loop for life.
    int loop = static_cast<int>(shared->next_loop.fetch_add(1, std::memory_order_relaxed) %
                                static_cast<unsigned>(shared->loops.size()));
    auto& io = shared->loops.at(loop);
    auto protocol = socket.local_endpoint(e).protocol();
    int fd = socket.release(e);
    net::post(io, [shared, &io, protocol, fd, ip = std::move(ip), loop]() mutable {
      auto conn = std::make_unique<Connection>(tcp::socket(io, protocol, fd));
      conn->ip = std::move(ip);
      conn->loop = loop;
      net::co_spawn(io, Serve(shared, std::move(conn)), net::detached);
    });
  }
}

// Cuts the connections of one loop whose deadline has passed.
net::awaitable<void> Sweep(std::shared_ptr<Shared> shared, int loop) {
  net::steady_timer timer(co_await net::this_coro::executor);
  while (!shared->stopped.load(std::memory_order_relaxed)) {
    timer.expires_after(kSweepInterval);
    co_await timer.async_wait(kNoThrow);
    auto now = Clock::now();
    int cuts = 0;
    for (Connection* c : shared->connections[loop]) {
      if (c->deadline > now) continue;
      if (++cuts > kMaxCutsPerSweep) break;
      Counters().deadline_cuts.Increment();
      c->timed_out = true;
      c->Unexpire();
      boost::system::error_code ec;
      c->socket.shutdown(tcp::socket::shutdown_both, ec);
      c->socket.cancel(ec);
    }
  }
}

// Runs `fn` on every loop, the intake included, and waits for all of them.
void OnEveryLoop(Shared& shared, const std::function<void(int)>& fn) {
  std::mutex mu;
  std::condition_variable cv;
  int loops = shared.intake ? shared.intake_index() + 1 : shared.loops.size();
  int left = loops;
  for (int i = 0; i < loops; ++i) {
    net::post(shared.io(i), [&, i] {
      fn(i);
      std::lock_guard<std::mutex> lock(mu);
      if (--left == 0) cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(mu);
  cv.wait_for(lock, std::chrono::seconds(5), [&] { return left == 0; });
}

}  // namespace

namespace {

// The connection cap never exceeds what the process's descriptor limit can serve: a
// connection accepted past it would fail later (its upstream connect with EMFILE, a 502
// mid-request) instead of being refused at once with 503 and retry-after.
HttpServer::Options CapByDescriptors(HttpServer::Options o) {
  constexpr rlim_t kReserved = 256;  // listeners, databases, gRPC channels, logs
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY ||
      limit.rlim_cur <= 2 * kReserved)
    return o;
  rlim_t cap = (limit.rlim_cur - kReserved) / static_cast<rlim_t>(std::max(1, o.fds_per_connection));
  if (cap < static_cast<rlim_t>(o.max_connections)) {
    fprintf(stderr,
            "nexusflow: server.max_connections lowered from %d to %d: %llu open files allowed, "
            "%d per connection\n",
            o.max_connections, static_cast<int>(cap), static_cast<unsigned long long>(limit.rlim_cur),
            o.fds_per_connection);
    o.max_connections = static_cast<int>(cap);
  }
  return o;
}

}  // namespace

HttpServer::HttpServer(Options options, EventLoops& loops, AsyncHandler handler, ErrorBodyFn error_body)
    : options_(CapByDescriptors(std::move(options))), loops_(loops),
      shared_(std::make_shared<Shared>(options_, loops, std::move(handler), std::move(error_body))) {}

HttpServer::~HttpServer() {
  if (shared_->acceptor && !shared_->draining) Drain(0);
  shared_->stopped = true;
}

int HttpServer::active_connections() const { return shared_->active.load(); }

absl::Status HttpServer::Start() {
  auto colon = options_.listen.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("listen must be host:port");
  std::string host = options_.listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  boost::system::error_code ec;
  auto address = net::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad listen address ", options_.listen));
  tcp::endpoint ep(address, static_cast<unsigned short>(std::stoi(options_.listen.substr(colon + 1))));
  shared_->acceptor = std::make_unique<tcp::acceptor>(loops_.at(0));
  auto& acc = *shared_->acceptor;
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec && options_.reuse_port) {
    // The kernel spreads new connections over every process listening on the port.
    int one = 1;
    if (::setsockopt(acc.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
      ec = boost::system::error_code(errno, boost::system::system_category());
  }
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen, ": ", ec.message()));
  port_ = acc.local_endpoint().port();
  Counters();  // exported from the start, at zero
  intake_ = std::make_unique<EventLoops>(1, "nf-intake-", kIntakeNice);
  shared_->intake = intake_.get();
  net::co_spawn(loops_.at(0), Accept(shared_), net::detached);
  for (int i = 0; i < loops_.size(); ++i) net::co_spawn(loops_.at(i), Sweep(shared_, i), net::detached);
  net::co_spawn(intake_->at(0), PollSlow(shared_), net::detached);
  return absl::OkStatus();
}

void HttpServer::Drain(int grace_seconds) {
  if (shared_->draining.exchange(true)) return;
  auto shared = shared_;
  // Stop accepting: new connections are refused from here on.
  OnEveryLoop(*shared_, [shared](int i) {
    if (i != 0 || !shared->acceptor) return;
    boost::system::error_code ec;
    shared->acceptor->close(ec);
  });
  auto close_idle = [shared](int i) {
    if (i == shared->intake_index()) return;  // a slow header is a request under way
    for (Connection* c : shared->connections[i]) {
      if (!c->idle) continue;
      boost::system::error_code ec;
      c->socket.shutdown(tcp::socket::shutdown_receive, ec);
      c->socket.cancel(ec);
    }
  };
  OnEveryLoop(*shared_, close_idle);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(grace_seconds);
  while (shared_->active.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    {
      std::unique_lock<std::mutex> lock(shared_->mu);
      shared_->cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return shared_->active.load() == 0; });
    }
    OnEveryLoop(*shared_, close_idle);  // connections that finished a request since
  }
  if (shared_->active.load() == 0) return;
  // Past the grace period: close what is left; a request waiting on its upstream is told.
  OnEveryLoop(*shared_, [shared](int i) {
    if (i == shared->intake_index()) {
      for (auto& c : shared->slow) Close(*shared, *c);
      shared->slow.clear();
      return;
    }
    std::vector<Connection*> left(shared->connections[i].begin(), shared->connections[i].end());
    for (Connection* c : left) {
      if (c->on_gone) {
        auto fn = c->on_gone;
        fn();
      }
      boost::system::error_code ec;
      c->socket.shutdown(tcp::socket::shutdown_both, ec);
      c->socket.cancel(ec);
    }
  });
  std::unique_lock<std::mutex> lock(shared_->mu);
  shared_->cv.wait_for(lock, std::chrono::seconds(1), [&] { return shared_->active.load() == 0; });
}

}  // namespace nexusflow::gateway

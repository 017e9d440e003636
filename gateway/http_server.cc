#include "gateway/http_server.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <exception>

#include "absl/strings/str_cat.h"

namespace nexusflow::gateway {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

std::string UrlDecode(std::string_view in, bool form) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+' && form) {
      out.push_back(' ');
    } else if (c == '%' && i + 2 < in.size() && isxdigit(in[i + 1]) && isxdigit(in[i + 2])) {
      out.push_back(static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

struct HttpServer::Impl {
  net::io_context io;
  tcp::acceptor acceptor{io};
};

struct HttpServer::Connection {
  explicit Connection(tcp::socket s) : socket(std::move(s)) {}
  tcp::socket socket;
  std::mutex mu;
  bool idle = true;  // waiting for a request (safe to close on drain)
};

namespace {

class BeastWriter : public ResponseWriter {
 public:
  BeastWriter(tcp::socket& socket, unsigned version, bool keep_alive)
      : socket_(socket), version_(version), keep_alive_(keep_alive) {}

  void Send(int status, std::string_view content_type, std::string_view body,
            const HeaderList& headers) override {
    if (started_) return;
    started_ = true;
    status_ = status;
    http::response<http::string_body> res{static_cast<http::status>(status), version_};
    res.set(http::field::server, "nexusflow");
    res.set(http::field::content_type, content_type);
    for (const auto& [k, v] : headers) res.set(k, v);
    res.keep_alive(keep_alive_);
    res.body() = std::string(body);
    res.prepare_payload();
    beast::error_code ec;
    http::write(socket_, res, ec);
    if (ec) gone_ = true;
    bytes_ += static_cast<int64_t>(body.size());
  }

  bool Start(int status, std::string_view content_type, const HeaderList& headers) override {
    if (started_) return !gone_;
    started_ = true;
    streaming_ = true;
    status_ = status;
    http::response<http::empty_body> res{static_cast<http::status>(status), version_};
    res.set(http::field::server, "nexusflow");
    res.set(http::field::content_type, content_type);
    res.set(http::field::cache_control, "no-cache");
    res.set("x-accel-buffering", "no");
    for (const auto& [k, v] : headers) res.set(k, v);
    res.keep_alive(keep_alive_);
    res.chunked(true);
    http::response_serializer<http::empty_body> sr{res};
    beast::error_code ec;
    http::write_header(socket_, sr, ec);
    if (ec) gone_ = true;
    return !gone_;
  }

  bool Write(std::string_view data) override {
    if (gone_ || !streaming_ || data.empty()) return !gone_;
    beast::error_code ec;
    net::write(socket_, http::make_chunk(net::const_buffer(data.data(), data.size())), ec);
    if (ec) gone_ = true;
    bytes_ += static_cast<int64_t>(data.size());
    return !gone_;
  }

  void End() override {
    if (gone_ || !streaming_ || ended_) return;
    ended_ = true;
    beast::error_code ec;
    net::write(socket_, http::make_chunk_last(), ec);
    if (ec) gone_ = true;
  }

  bool started() const override { return started_; }
  int status() const override { return status_; }
  int64_t bytes_written() const override { return bytes_; }
  bool gone() const { return gone_; }
  bool complete() const { return started_ && (!streaming_ || ended_) && !gone_; }

 private:
  tcp::socket& socket_;
  unsigned version_;
  bool keep_alive_;
  bool started_ = false;
  bool streaming_ = false;
  bool ended_ = false;
  bool gone_ = false;
  int status_ = 0;
  int64_t bytes_ = 0;
};

}  // namespace

HttpServer::HttpServer(Options options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)), impl_(std::make_unique<Impl>()) {}

HttpServer::~HttpServer() {
  if (accept_thread_.joinable()) Drain(0);
}

absl::Status HttpServer::Start() {
  auto colon = options_.listen.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("listen must be host:port");
  std::string host = options_.listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  beast::error_code ec;
  auto address = net::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad listen address ", options_.listen));
  tcp::endpoint ep(address, static_cast<unsigned short>(std::stoi(options_.listen.substr(colon + 1))));
  auto& acc = impl_->acceptor;
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen, ": ", ec.message()));
  port_ = acc.local_endpoint().port();
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void HttpServer::AcceptLoop() {
  while (!draining_) {
    beast::error_code ec;
    tcp::socket socket(impl_->io);
    impl_->acceptor.accept(socket, ec);
    if (ec) {
      if (draining_) break;
      if (ec == net::error::no_descriptors || ec == net::error::no_buffer_space)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    timeval tv{options_.idle_timeout_seconds, 0};
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    // A client that stops reading cannot hold its thread (and its stream) forever.
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    auto conn = std::make_shared<Connection>(std::move(socket));
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (static_cast<int>(connections_.size()) >= options_.max_connections) {
        // Full: say so and close, rather than start one more thread.
        BeastWriter w(conn->socket, 11, false);
        w.Send(503, "application/json",
               R"({"error":{"message":"Too many connections; retry shortly.","type":"server_error","param":null,"code":"service_unavailable"}})",
               {{"retry-after", "1"}});
        beast::error_code ignored;
        conn->socket.shutdown(tcp::socket::shutdown_both, ignored);
        continue;
      }
      connections_.insert(conn);
    }
    std::thread([this, conn] { Serve(conn); }).detach();
  }
}

void HttpServer::Serve(std::shared_ptr<Connection> conn) {
  beast::flat_buffer buffer;
  std::string remote;
  {
    beast::error_code ec;
    auto ep = conn->socket.remote_endpoint(ec);
    if (!ec) remote = absl::StrCat(ep.address().to_string(), ":", ep.port());
  }
  while (true) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(static_cast<uint64_t>(options_.max_body_bytes));
    parser.header_limit(64 * 1024);
    beast::error_code ec;
    http::read(conn->socket, buffer, parser, ec);
    if (ec == http::error::body_limit || ec == http::error::header_limit) {
      BeastWriter w(conn->socket, 11, false);
      w.Send(413, "application/json",
             R"({"error":{"message":"Request body too large.","type":"invalid_request_error","param":null,"code":"request_too_large"}})",
             {});
      break;
    }
    if (ec) {
      if (ec != http::error::end_of_stream && ec != net::error::eof &&
          ec != net::error::connection_reset && ec != net::error::operation_aborted &&
          ec != net::error::would_block && ec != net::error::try_again &&
          ec != net::error::shut_down && ec != net::error::bad_descriptor &&
          ec != net::error::timed_out && parser.got_some()) {
        BeastWriter w(conn->socket, 11, false);
        w.Send(400, "application/json",
               R"({"error":{"message":"Malformed HTTP request.","type":"invalid_request_error","param":null,"code":null}})",
               {});
      }
      break;
    }
    {
      std::lock_guard<std::mutex> lock(conn->mu);
      conn->idle = false;
    }
    auto msg = parser.release();
    HttpRequest req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    auto q = req.target.find('?');
    req.path = UrlDecode(req.target.substr(0, q), false);
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
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req.headers[name] = std::string(field.value());
    }
    req.body = std::move(msg.body());
    req.remote = remote;
    bool keep_alive = msg.keep_alive() && !draining_;
    BeastWriter writer(conn->socket, msg.version(), keep_alive);
    try {
      handler_(req, writer);
    } catch (const std::exception& e) {
      // A bug in a handler costs its request, not the process.
      fprintf(stderr, "nexusflow: handler failed on %s %s: %s\n", req.method.c_str(),
              req.path.c_str(), e.what());
      if (!writer.started())
        writer.Send(500, "application/json",
                    R"({"error":{"message":"Internal error.","type":"server_error","param":null,"code":null}})", {});
      break;
    }
    if (!writer.started()) writer.Send(500, "application/json", R"({"error":{"message":"no response","type":"server_error","param":null,"code":null}})", {});
    if (!writer.complete() || !keep_alive || draining_) break;
    std::lock_guard<std::mutex> lock(conn->mu);
    conn->idle = true;
  }
  beast::error_code ec;
  conn->socket.shutdown(tcp::socket::shutdown_both, ec);
  conn->socket.close(ec);
  std::lock_guard<std::mutex> lock(mu_);
  connections_.erase(conn);
  cv_.notify_all();
}

int HttpServer::active_connections() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(connections_.size());
}

void HttpServer::Drain(int grace_seconds) {
  if (draining_.exchange(true)) return;
  beast::error_code ec;
  // shutdown() wakes a thread blocked in accept(); close() alone does not on Linux.
  ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  impl_->acceptor.close(ec);
  auto close_idle = [this] {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& c : connections_) {
      std::lock_guard<std::mutex> cl(c->mu);
      beast::error_code e;
      if (c->idle) c->socket.shutdown(tcp::socket::shutdown_receive, e);
    }
  };
  close_idle();
  std::unique_lock<std::mutex> lock(mu_);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(grace_seconds);
  while (!connections_.empty()) {
    if (cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() +
                                                    std::chrono::milliseconds(100))) ==
            std::cv_status::timeout &&
        std::chrono::steady_clock::now() >= deadline)
      break;
    lock.unlock();
    close_idle();  // connections that finished a request since
    lock.lock();
  }
  for (const auto& c : connections_) {
    beast::error_code e;
    c->socket.shutdown(tcp::socket::shutdown_both, e);
  }
  // Give the threads of force-closed connections a moment to leave.
  cv_.wait_for(lock, std::chrono::seconds(1), [this] { return connections_.empty(); });
}

}  // namespace nexusflow::gateway

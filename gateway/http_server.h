#pragma once
// The edge's HTTP/1.1 server on the process's event loops (Boost.Beast on C++20
// coroutines). A connection costs a coroutine frame and its buffers, no thread: it lives
// on one loop from accept to close, and so does every request it carries. Keep-alive,
// chunked request bodies, `Expect: 100-continue`, whole responses and chunked streams
// (SSE). Deadlines: one for the request line and headers and one for the body, each
// for the whole read however the bytes drip; an idle keep-alive timeout; a send timeout
// for clients that stop reading. Caps: header bytes and count, body bytes, connections
// in all and per client address. Handlers see the headers before the body is read, so a
// request can be refused without reading it.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "absl/status/status.h"
#include "libs/loop/event_loops.h"

namespace nexusflow::gateway {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // "GET", "POST", …
  std::string target;  // as received, with the query
  std::string path;    // without the query
  std::map<std::string, std::string> query;  // decoded
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;    // empty until HttpExchange::ReadBody
  std::string remote;  // peer address

  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// One request and its response. Every method is called from the coroutine serving the
// request, on its connection's loop; awaited calls never block the loop.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual HttpRequest& request() = 0;
  // Reads the body within the body deadline (after `100 Continue` when the client asked).
  // False when it could not be had: the server has answered (413, 400) or the client is
  // gone, and the connection closes.
  virtual boost::asio::awaitable<bool> ReadBody() = 0;
  // A whole response.
  virtual boost::asio::awaitable<void> Send(int status, std::string_view content_type,
                                            std::string body, HeaderList headers = {}) = 0;
  // A chunked response: Start, Write…, End. False once the client is gone.
  virtual boost::asio::awaitable<bool> Start(int status, std::string_view content_type,
                                             HeaderList headers) = 0;
  virtual boost::asio::awaitable<bool> Write(std::string data) = 0;
  virtual boost::asio::awaitable<void> End() = 0;
  // Calls `on_gone` once, on this loop, if the client hangs up while the request is
  // served (seen while nothing is being written, too). One watcher per exchange.
  virtual void WatchClient(std::function<void()> on_gone) = 0;
  virtual bool client_gone() const = 0;
  virtual bool started() const = 0;
  virtual int status() const = 0;
  virtual int64_t bytes_written() const = 0;
};

using AsyncHandler = std::function<boost::asio::awaitable<void>(HttpExchange&)>;
// The body of an error the server answers itself (413, 431, 400, 503, …), in the
// protocol of the request's path.
using ErrorBodyFn = std::function<std::string(std::string_view path, int status,
                                              const std::string& message, const std::string& code)>;

class HttpServer {
 public:
  struct Options {
    std::string listen;  // host:port
    int64_t max_body_bytes = 16 << 20;
    int idle_timeout_seconds = 120;  // keep-alive connection with no request
    int header_timeout_ms = 10000;   // from a request's first byte to its last header
    int body_timeout_ms = 60000;     // the whole body
    int send_timeout_seconds = 120;  // one write to a client that does not read
    int max_header_bytes = 64 << 10;
    int max_header_count = 100;
    int max_connections = 20000;  // lowered to what the descriptor limit can serve
    // Descriptors a client connection may take in this process: 2 where the connector's
    // upstream connections are opened here too (all-in-one), else 1.
    int fds_per_connection = 1;
    int max_connections_per_ip = 0;  // 0: no cap
    bool reuse_port = false;  // SO_REUSEPORT: several gateway processes share the port
  };
  HttpServer(Options options, EventLoops& loops, AsyncHandler handler, ErrorBodyFn error_body = nullptr);
  ~HttpServer();

  absl::Status Start();
  int port() const { return port_; }
  // Stops accepting, closes idle keep-alive connections, waits up to `grace_seconds` for
  // in-flight requests and streams, then closes what is left.
  void Drain(int grace_seconds);
  int active_connections() const;

  struct Connection;  // one accepted connection (defined in the .cc)
  struct Shared;      // what the loops share: counts, caps, drain state

 private:
  Options options_;
  EventLoops& loops_;
  std::shared_ptr<Shared> shared_;
  // One low-priority loop for requests whose header is slow to arrive (see the .cc).
  std::unique_ptr<EventLoops> intake_;
  int port_ = 0;
};

// Percent-decodes a URL component ('+' as space when `form`).
std::string UrlDecode(std::string_view in, bool form = true);

}  // namespace nexusflow::gateway

#pragma once
// The edge's HTTP/1.1 server (Boost.Beast): keep-alive, bounded bodies, whole responses
// and chunked streams (SSE). Each connection is served by its own thread, which runs the
// handler and may block on gRPC calls; a drain stops accepting, closes idle connections
// and lets in-flight requests and streams finish.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace nexusflow::gateway {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // "GET", "POST", …
  std::string target;  // as received, with the query
  std::string path;    // without the query
  std::map<std::string, std::string> query;  // decoded
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string remote;  // peer address

  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// How a handler answers: once with Send, or as a stream with Start/Write/End.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  virtual void Send(int status, std::string_view content_type, std::string_view body,
                    const HeaderList& headers = {}) = 0;
  // Starts a chunked response. False when the client is gone.
  virtual bool Start(int status, std::string_view content_type, const HeaderList& headers) = 0;
  // Writes one chunk and flushes it. False when the client is gone (later calls no-ops).
  virtual bool Write(std::string_view data) = 0;
  virtual void End() = 0;
  virtual bool started() const = 0;
  virtual int status() const = 0;
  virtual int64_t bytes_written() const = 0;
};

using Handler = std::function<void(const HttpRequest&, ResponseWriter&)>;

class HttpServer {
 public:
  struct Options {
    std::string listen;  // host:port
    int64_t max_body_bytes = 16 << 20;
    int idle_timeout_seconds = 120;
    int max_connections = 20000;  // each is a thread; beyond this, 503 and close
  };
  HttpServer(Options options, Handler handler);
  ~HttpServer();

  absl::Status Start();
  int port() const { return port_; }
  // Stops accepting, closes idle keep-alive connections, waits up to `grace_seconds` for
  // in-flight requests and streams, then closes what is left.
  void Drain(int grace_seconds);
  int active_connections() const;

 private:
  struct Connection;
  void AcceptLoop();
  void Serve(std::shared_ptr<Connection> conn);

  Options options_;
  Handler handler_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::atomic<bool> draining_{false};
  std::thread accept_thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_set<std::shared_ptr<Connection>> connections_;
};

// Percent-decodes a URL component ('+' as space when `form`).
std::string UrlDecode(std::string_view in, bool form = true);

}  // namespace nexusflow::gateway

#pragma once
// An HTTP client for upstream calls: one libcurl multi handle driven by one thread, so
// thousands of concurrent requests (and streams) share keep-alive connection pools.
// Callbacks run on that thread and must not block.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace nexusflow::connector {

struct HttpCall {
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;                  // POST body; empty with get = true
  bool get = false;
  long connect_timeout_ms = 5000;
  long timeout_ms = 600000;  // whole transfer
  // Body bytes as they arrive (status is known by then). Return false to abort.
  std::function<bool(long status, std::string_view bytes)> on_body;
  // Once, at the end. `transport_error` is empty on a complete HTTP exchange (any status).
  std::function<void(long status, const std::string& transport_error, bool timed_out)> on_done;
};

class HttpClient {
 public:
  explicit HttpClient(long max_connections_per_host);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;

  // Starts a call; returns its id for Cancel.
  uint64_t Start(std::shared_ptr<HttpCall> call);
  // Aborts a call; its on_done runs with transport_error "cancelled".
  void Cancel(uint64_t id);

  struct Transfer;  // one call in flight (defined in the .cc)

 private:
  void Loop();
  void Complete(Transfer* t, int curl_code);

  void* multi_;  // CURLM*
  long max_per_host_;
  std::mutex mu_;
  std::vector<std::pair<uint64_t, std::shared_ptr<HttpCall>>> pending_;
  std::vector<uint64_t> cancels_;
  std::unordered_map<uint64_t, Transfer*> active_;  // loop thread only
  std::atomic<uint64_t> next_id_{1};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace nexusflow::connector

#pragma once
// An HTTP client for upstream calls, driven by the process's event loops: one libcurl
// multi handle per loop, its sockets and timer watched by that loop's Asio reactor
// (curl_multi_socket_action), so an upstream read and whatever it feeds run on the
// loop thread that started the call. Thousands of concurrent calls share keep-alive
// pools (one per loop). Callbacks run on the call's loop and must not block.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nexusflow {
class EventLoops;
}

namespace nexusflow::connector {

// What a body callback asks of the transfer.
enum class BodyAction {
  kContinue,
  kPause,  // the bytes were not taken: they come again after Resume
  kAbort,
};

struct HttpCall {
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;                  // POST body; empty with get = true
  bool get = false;
  long connect_timeout_ms = 5000;
  long timeout_ms = 600000;  // whole transfer
  // No response byte (its status line) within this ends the call timed out; 0 = no limit
  // but timeout_ms.
  long first_byte_timeout_ms = 0;
  // Body bytes as they arrive (status is known by then).
  std::function<BodyAction(long status, std::string_view bytes)> on_body;
  // Once, at the end. `transport_error` is empty on a complete HTTP exchange (any status).
  std::function<void(long status, const std::string& transport_error, bool timed_out)> on_done;
  // Set before on_done: the response's Retry-After and retry-after-ms values, if it sent them.
  std::string retry_after;
  std::string retry_after_ms;
};

class HttpClient {
 public:
  HttpClient(EventLoops& loops, long max_connections_per_host);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;

  // Starts a call on the calling thread's loop (or the next loop, off the loops);
  // returns its id for Cancel and Resume.
  uint64_t Start(std::shared_ptr<HttpCall> call);
  // Aborts a call; its on_done runs with transport_error "cancelled". Any thread.
  void Cancel(uint64_t id);
  // Continues a call paused by kPause. Any thread.
  void Resume(uint64_t id);

  class Multi;  // one loop's multi handle (defined in the .cc)

 private:
  EventLoops& loops_;
  std::vector<std::shared_ptr<Multi>> multis_;  // by loop index
};

}  // namespace nexusflow::connector

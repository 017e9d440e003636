// nexusflow-loadgen's modes. Each runs for a bounded time, prints one JSON object on stdout
// and returns the process exit code.
#pragma once

#include <cstdint>
#include <string>

namespace nexusflow::loadgen {

struct StreamOptions {
  std::string url;   // http://host:port/path
  std::string key;   // sent as `Authorization: Bearer <key>`; empty → no header
  std::string body;  // the JSON posted (should hold "stream":true)
  int streams = 100;          // concurrent connections, one stream at a time each
  double duration_s = 10;     // no request starts after this (counted from the start)
  double ramp_s = 0;          // connection i starts at ramp_s * i / streams
  int threads = 1;            // one io_context each
  bool repeat = true;         // false: one request per connection
  double timeout_s = 60;      // longest silence on a connection before it counts as timed out
  double grace_s = 10;        // after duration_s, how long running streams may finish
};

struct SlowlorisOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string path = "/v1/chat/completions";
  int connections = 100;
  int interval_ms = 1000;   // one header byte per interval
  double duration_s = 10;
  double ramp_s = 0;
  int threads = 1;
  bool reconnect = false;   // replace a connection the server closed with a new one
};

struct TasksOptions {
  std::string url;     // http://host:port/v1/tasks: POSTed to create, `url/{id}` polled
  std::string target;  // the path of url (set by RunTasks)
  std::string key;     // sent as `Authorization: Bearer <key>`; empty → no header
  std::string body;    // the JSON posted to create one task
  int tasks = 100;        // tasks created, each once
  int connections = 32;   // concurrent keep-alive connections, creating then polling
  int poll_ms = 3000;     // a task is polled this long after its creation or last poll
  double duration_s = 60;  // nothing starts after this; tasks not final then are reported
};

int RunStream(const StreamOptions& options);
int RunSlowloris(const SlowlorisOptions& options);
int RunTasks(const TasksOptions& options);

// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the soft limit in force.
std::uint64_t RaiseFileLimit();

}  // namespace nexusflow::loadgen

// --mode=slowloris: N connections that send a valid request line and then one header byte
// per interval, never ending the headers, to see whether and when the server gives up on
// them and whether it keeps serving others meanwhile.
//
// Each connection is a writer coroutine (the byte drip) plus a reader coroutine that waits
// for whatever the server sends: its first line is kept as the answer, and EOF or an error
// is the server closing. With reconnect, a connection the server closed is replaced at once,
// so the count stays at N. At duration_s every connection still open is closed from this side.
#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/json.hpp>

#include "common.h"
#include "core.h"
#include "loadgen.h"

namespace nexusflow::loadgen {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace json = boost::json;
using tcp = asio::ip::tcp;

constexpr auto kConnectTimeout = std::chrono::seconds(10);
constexpr auto kReconnectPause = std::chrono::milliseconds(100);
constexpr std::size_t kMaxStatusLine = 200;
// Dripped one byte at a time, over and over: header lines that never include the empty line.
constexpr std::string_view kDrip = "X-Slow: a\r\n";

struct SlowRun {
  SlowlorisOptions options;
  tcp::endpoint endpoint;
  std::string request_line;
  Clock::time_point start;
  Clock::time_point end;
};

struct SlowTally {
  std::int64_t accepted = 0;
  std::int64_t connect_failed = 0;
  std::int64_t closed_by_server = 0;
  std::int64_t still_open = 0;
  std::int64_t bytes_sent = 0;
  std::map<std::string, std::int64_t> answers;  // first line the server sent → connections
  Histogram close_after;                        // µs from connect to the server's close
};

struct SlowWorker {
  asio::io_context context{1};
  SlowTally tally;
};

struct SlowConnection {
  explicit SlowConnection(tcp::socket s) : socket(std::move(s)) {}
  tcp::socket socket;
  Clock::time_point connected;
  bool closed = false;   // by the server (or found broken)
  bool ending = false;   // closed by us at the end
  std::string first_line;
  bool first_line_done = false;
};

void MarkClosed(SlowTally& t, SlowConnection& c) {
  if (c.closed || c.ending) return;
  c.closed = true;
  ++t.closed_by_server;
  t.close_after.Record(Micros(Clock::now() - c.connected));
}

asio::awaitable<void> ReadAnswers(SlowWorker& worker, std::shared_ptr<SlowConnection> c) {
  char buf[2048];
  for (;;) {
    auto [ec, n] = co_await c->socket.async_read_some(asio::buffer(buf), kNoThrow);
    for (std::size_t i = 0; i < n && !c->first_line_done; ++i) {
      if (buf[i] == '\r' || buf[i] == '\n' || c->first_line.size() >= kMaxStatusLine) {
        c->first_line_done = true;
      } else {
        c->first_line += buf[i];
      }
    }
    if (ec) {
      MarkClosed(worker.tally, *c);
      break;
    }
  }
  if (!c->first_line.empty()) ++worker.tally.answers[c->first_line];
}

// One connection slot: connect, drip until the server closes or the run ends; with
// `reconnect`, a slot the server closed connects again.
asio::awaitable<void> Drip(SlowRun& run, SlowWorker& worker, int index) {
  auto executor = co_await asio::this_coro::executor;
  SlowTally& t = worker.tally;
  asio::steady_timer tick(executor);
  tick.expires_at(run.start + Seconds(run.options.ramp_s * index / run.options.connections));
  co_await tick.async_wait(kNoThrow);

  while (Clock::now() < run.end) {
    beast::tcp_stream connecting(executor);
    connecting.expires_at(std::min(Clock::now() + kConnectTimeout, run.end));
    auto [connect_ec] = co_await connecting.async_connect(run.endpoint, kNoThrow);
    if (connect_ec) {
      if (Clock::now() >= run.end) break;
      ++t.connect_failed;
      if (!run.options.reconnect) break;
      tick.expires_at(std::min(Clock::now() + kReconnectPause, run.end));
      co_await tick.async_wait(kNoThrow);
      continue;
    }
    ++t.accepted;
    auto c = std::make_shared<SlowConnection>(connecting.release_socket());
    c->connected = Clock::now();
    asio::co_spawn(executor, ReadAnswers(worker, c), asio::detached);

    auto [line_ec, line_bytes] =
        co_await asio::async_write(c->socket, asio::buffer(run.request_line), kNoThrow);
    t.bytes_sent += static_cast<std::int64_t>(line_bytes);
    if (line_ec) MarkClosed(t, *c);
    for (std::size_t next = 0; !c->closed;) {
      tick.expires_at(
          std::min(Clock::now() + std::chrono::milliseconds(run.options.interval_ms), run.end));
      co_await tick.async_wait(kNoThrow);
      if (c->closed || Clock::now() >= run.end) break;
      auto [byte_ec, byte_bytes] = co_await asio::async_write(
          c->socket, asio::buffer(&kDrip[next++ % kDrip.size()], 1), kNoThrow);
      t.bytes_sent += static_cast<std::int64_t>(byte_bytes);
      if (byte_ec) MarkClosed(t, *c);
    }
    const bool closed_by_server = c->closed;
    if (!closed_by_server) {
      ++t.still_open;
      c->ending = true;
    }
    beast::error_code ignored;
    c->socket.shutdown(tcp::socket::shutdown_both, ignored);
    c->socket.close(ignored);
    if (!closed_by_server || !run.options.reconnect) break;
  }
}

}  // namespace

int RunSlowloris(const SlowlorisOptions& options) {
  const std::uint64_t file_limit = RaiseFileLimit();
  if (file_limit < static_cast<std::uint64_t>(options.connections) + 64) {
    std::cerr << "loadgen: warning: RLIMIT_NOFILE is " << file_limit << ", below "
              << options.connections << " connections; connects will fail\n";
  }
  auto run = std::make_unique<SlowRun>();
  run->options = options;
  {
    asio::io_context resolve_context;
    tcp::resolver resolver(resolve_context);
    beast::error_code ec;
    auto results = resolver.resolve(options.host, std::to_string(options.port), ec);
    if (ec || results.empty()) {
      std::cerr << "loadgen: cannot resolve " << options.host << ": " << ec.message() << '\n';
      return 1;
    }
    run->endpoint = results.begin()->endpoint();
  }
  run->request_line = "GET " + options.path + " HTTP/1.1\r\nHost: " + options.host + "\r\n";

  const int thread_count = std::max(1, std::min(options.threads, options.connections));
  std::vector<std::unique_ptr<SlowWorker>> workers;
  for (int i = 0; i < thread_count; ++i) workers.push_back(std::make_unique<SlowWorker>());
  run->start = Clock::now() + std::chrono::milliseconds(20);
  run->end = run->start + Seconds(options.duration_s);
  for (int i = 0; i < options.connections; ++i) {
    SlowWorker& worker = *workers[static_cast<std::size_t>(i % thread_count)];
    asio::co_spawn(worker.context, Drip(*run, worker, i), asio::detached);
  }
  std::vector<std::thread> threads;
  for (auto& worker : workers) {
    threads.emplace_back([&context = worker->context] { context.run(); });
  }
  for (auto& thread : threads) thread.join();

  SlowTally total;
  for (auto& worker : workers) {
    const SlowTally& t = worker->tally;
    total.accepted += t.accepted;
    total.connect_failed += t.connect_failed;
    total.closed_by_server += t.closed_by_server;
    total.still_open += t.still_open;
    total.bytes_sent += t.bytes_sent;
    for (const auto& [line, n] : t.answers) total.answers[line] += n;
    total.close_after.Merge(t.close_after);
  }
  json::object answers;
  for (const auto& [line, n] : total.answers) answers[line] = n;
  json::object report;
  report["mode"] = "slowloris";
  report["host"] = options.host;
  report["port"] = options.port;
  report["path"] = options.path;
  report["connections"] = options.connections;
  report["interval_ms"] = options.interval_ms;
  report["reconnect"] = options.reconnect;
  report["duration_s"] = options.duration_s;
  report["accepted"] = total.accepted;
  report["connect_failed"] = total.connect_failed;
  report["closed_by_server"] = total.closed_by_server;
  report["close_after_s"] =
      json::object{{"p50", Round3(total.close_after.Percentile(0.5) / 1e6)},
                   {"max", Round3(total.close_after.max() / 1e6)}};
  report["still_open"] = total.still_open;
  report["answered"] = std::move(answers);
  report["bytes_sent"] = total.bytes_sent;
  std::cout << ReportJson(report) << std::endl;
  return 0;
}

}  // namespace nexusflow::loadgen

// --mode=stream: N connections, each POSTing a streaming chat body and reading the SSE
// answer, frame by frame, with the time each frame arrived.
//
// Every connection is a coroutine on one of `threads` io_contexts (one thread each, so a
// connection needs no strand). A connection starts at ramp_s * i / N, then sends a request,
// reads the answer to its end and (with repeat) sends the next one until duration_s. No
// request starts after duration_s; grace_s later every socket still open is closed by its
// expiry timer and its stream counted as cut, so the run always ends by itself.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <limits>
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
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include "common.h"
#include "core.h"
#include "loadgen.h"

namespace nexusflow::loadgen {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;

constexpr std::size_t kBodyChunk = 4 * 1024;
constexpr auto kConnectTimeout = std::chrono::seconds(10);
constexpr auto kRetryPause = std::chrono::milliseconds(200);
constexpr auto kWatchdogSlack = std::chrono::seconds(5);

struct Run {
  StreamOptions options;
  tcp::endpoint endpoint;
  std::string request;  // the bytes of one request, the same for every stream
  Clock::time_point start;
  Clock::time_point stop_requests;  // start + duration_s
  Clock::time_point hard_stop;      // stop_requests + grace_s
  std::atomic<std::int64_t> open{0};
  std::atomic<std::int64_t> peak{0};

  // An I/O deadline: `timeout_s` of silence, never past the hard stop.
  Clock::time_point Deadline() const {
    return std::min(Clock::now() + Seconds(options.timeout_s), hard_stop);
  }
};

// Counts of one thread, merged after the run.
struct Tally {
  std::int64_t requests = 0;
  std::int64_t ok = 0;          // 200, [DONE] received, body ended cleanly
  std::int64_t failed = 0;      // everything else but cut
  std::int64_t done = 0;        // [DONE] received
  std::int64_t no_done = 0;     // 200 whose body ended without [DONE]
  std::int64_t cut = 0;         // still running at the hard stop
  std::int64_t connect_errors = 0;
  std::int64_t write_errors = 0;
  std::int64_t read_errors = 0;  // EOF, reset or malformed HTTP before the answer ended
  std::int64_t timeouts = 0;
  std::map<unsigned, std::int64_t> non200;
  std::int64_t bytes_in = 0;
  std::int64_t bytes_out = 0;
  Histogram ttft;  // µs from the request's last byte sent to the first content frame
  Histogram gaps;  // µs between successive data frames of a stream

  void Merge(const Tally& o) {
    requests += o.requests;
    ok += o.ok;
    failed += o.failed;
    done += o.done;
    no_done += o.no_done;
    cut += o.cut;
    connect_errors += o.connect_errors;
    write_errors += o.write_errors;
    read_errors += o.read_errors;
    timeouts += o.timeouts;
    for (const auto& [status, n] : o.non200) non200[status] += n;
    bytes_in += o.bytes_in;
    bytes_out += o.bytes_out;
    ttft.Merge(o.ttft);
    gaps.Merge(o.gaps);
  }
};

struct Worker {
  asio::io_context context{1};
  Tally tally;
  int live = 0;  // connections not yet finished
  asio::steady_timer watchdog{context};
};

enum class Phase { kConnect, kWrite, kRead };

void CountError(const Run& run, Tally& t, const beast::error_code& ec, Phase phase) {
  if (Clock::now() >= run.hard_stop) {
    ++t.cut;
    return;
  }
  ++t.failed;
  if (ec == beast::error::timeout) {
    ++t.timeouts;
  } else if (phase == Phase::kConnect) {
    ++t.connect_errors;
  } else if (phase == Phase::kWrite) {
    ++t.write_errors;
  } else {
    ++t.read_errors;
  }
}

void StreamOpened(Run& run) {
  const std::int64_t now = run.open.fetch_add(1) + 1;
  std::int64_t peak = run.peak.load();
  while (now > peak && !run.peak.compare_exchange_weak(peak, now)) {
  }
}

// One request and its answer; returns whether the connection can carry the next one.
// (Coroutines here co_await only calls whose arguments are named objects or trivially
// destructible values: GCC 12 may destroy temporaries in a co_await expression twice.)
asio::awaitable<bool> OneStream(Run& run, Tally& t, beast::tcp_stream& stream,
                                beast::flat_buffer& buffer, std::vector<char>& body,
                                std::vector<SseEvent>& events) {
  ++t.requests;
  stream.expires_at(run.Deadline());
  auto [write_ec, written] = co_await asio::async_write(stream, asio::buffer(run.request), kNoThrow);
  t.bytes_out += static_cast<std::int64_t>(written);
  if (write_ec) {
    CountError(run, t, write_ec, Phase::kWrite);
    co_return false;
  }
  const Clock::time_point sent = Clock::now();

  http::response_parser<http::buffer_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  stream.expires_at(run.Deadline());
  auto [header_ec, header_bytes] = co_await http::async_read_header(stream, buffer, parser, kNoThrow);
  t.bytes_in += static_cast<std::int64_t>(header_bytes);
  if (header_ec) {
    CountError(run, t, header_ec, Phase::kRead);
    co_return false;
  }
  const unsigned status = parser.get().result_int();
  const bool sse = status == 200;
  if (sse) StreamOpened(run);

  SseScanner scanner;
  bool waiting_for_content = true;
  bool done = false;
  Clock::time_point last_frame{};
  beast::error_code failure;
  while (!parser.is_done()) {
    parser.get().body().data = body.data();
    parser.get().body().size = body.size();
    stream.expires_at(run.Deadline());
    auto [read_ec, read_bytes] = co_await http::async_read_some(stream, buffer, parser, kNoThrow);
    t.bytes_in += static_cast<std::int64_t>(read_bytes);
    const std::size_t got = body.size() - parser.get().body().size;
    if (sse && got > 0) {
      const Clock::time_point now = Clock::now();
      events.clear();
      scanner.Feed(std::string_view(body.data(), got), events);
      for (const SseEvent& event : events) {
        if (last_frame != Clock::time_point{}) t.gaps.Record(Micros(now - last_frame));
        last_frame = now;
        if (event.done) {
          done = true;
        } else if (event.content && waiting_for_content) {
          waiting_for_content = false;
          t.ttft.Record(Micros(now - sent));
        }
      }
    }
    if (read_ec && read_ec != http::error::need_buffer) {
      failure = read_ec;
      break;
    }
  }
  if (sse) run.open.fetch_sub(1);
  if (done) ++t.done;
  if (failure) {
    CountError(run, t, failure, Phase::kRead);
    co_return false;
  }
  if (!sse) {
    ++t.failed;
    ++t.non200[status];
  } else if (!done) {
    ++t.failed;
    ++t.no_done;
  } else {
    ++t.ok;
  }
  co_return parser.keep_alive();
}

asio::awaitable<void> Connection(Run& run, Worker& worker, int index) {
  auto executor = co_await asio::this_coro::executor;
  Tally& t = worker.tally;
  asio::steady_timer pause(executor);
  pause.expires_at(run.start + Seconds(run.options.ramp_s * index / run.options.streams));
  co_await pause.async_wait(kNoThrow);

  std::unique_ptr<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  std::vector<char> body(kBodyChunk);
  std::vector<SseEvent> events;
  while (Clock::now() < run.stop_requests) {
    if (!stream) {
      stream = std::make_unique<beast::tcp_stream>(executor);
      stream->expires_at(std::min(Clock::now() + kConnectTimeout, run.hard_stop));
      auto [connect_ec] = co_await stream->async_connect(run.endpoint, kNoThrow);
      if (connect_ec) {
        ++t.requests;
        CountError(run, t, connect_ec, Phase::kConnect);
        stream.reset();
        if (!run.options.repeat) break;
        pause.expires_at(std::min(Clock::now() + kRetryPause, run.stop_requests));
        co_await pause.async_wait(kNoThrow);
        continue;
      }
      beast::error_code ignored;
      stream->socket().set_option(tcp::no_delay(true), ignored);
    }
    const bool reuse = co_await OneStream(run, t, *stream, buffer, body, events);
    if (!reuse) {
      stream.reset();
      buffer.clear();
    }
    if (!run.options.repeat) break;
  }
  if (--worker.live == 0) worker.watchdog.cancel();
}

json::object HistogramMs(const Histogram& h, std::initializer_list<std::pair<const char*, double>> quantiles) {
  json::object out;
  out["count"] = h.count();
  for (const auto& [name, q] : quantiles) out[name] = Round3(h.Percentile(q) / 1000.0);
  out["max"] = Round3(h.max() / 1000.0);
  return out;
}

}  // namespace

int RunStream(const StreamOptions& options) {
  const std::optional<HttpUrl> url = ParseHttpUrl(options.url);
  if (!url) {
    std::cerr << "loadgen: --url must be http://host:port/path, got '" << options.url << "'\n";
    return 2;
  }
  const std::uint64_t file_limit = RaiseFileLimit();
  if (file_limit < static_cast<std::uint64_t>(options.streams) + 64) {
    std::cerr << "loadgen: warning: RLIMIT_NOFILE is " << file_limit << ", below " << options.streams
              << " streams; connects will fail\n";
  }

  auto run = std::make_unique<Run>();
  run->options = options;
  {
    asio::io_context resolve_context;
    tcp::resolver resolver(resolve_context);
    beast::error_code ec;
    auto results = resolver.resolve(url->host, std::to_string(url->port), ec);
    if (ec || results.empty()) {
      std::cerr << "loadgen: cannot resolve " << url->host << ": " << ec.message() << '\n';
      return 1;
    }
    run->endpoint = results.begin()->endpoint();
  }
  run->request = "POST " + url->target + " HTTP/1.1\r\nHost: " + url->host + ":" +
                 std::to_string(url->port) +
                 "\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n";
  if (!options.key.empty()) run->request += "Authorization: Bearer " + options.key + "\r\n";
  run->request += "Content-Length: " + std::to_string(options.body.size()) + "\r\n\r\n";
  run->request += options.body;

  const int thread_count = std::max(1, std::min(options.threads, options.streams));
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < thread_count; ++i) workers.push_back(std::make_unique<Worker>());
  run->start = Clock::now() + std::chrono::milliseconds(20);
  run->stop_requests = run->start + Seconds(options.duration_s);
  run->hard_stop = run->stop_requests + Seconds(options.grace_s);
  for (int i = 0; i < options.streams; ++i) {
    Worker& worker = *workers[static_cast<std::size_t>(i % thread_count)];
    ++worker.live;
    asio::co_spawn(worker.context, Connection(*run, worker, i), asio::detached);
  }
  // Belt and braces: every wait above ends by the hard stop; should one not, the context
  // is stopped a little later anyway.
  for (auto& worker : workers) {
    worker->watchdog.expires_at(run->hard_stop + kWatchdogSlack);
    worker->watchdog.async_wait([&context = worker->context](const beast::error_code& ec) {
      if (!ec) {
        std::cerr << "loadgen: watchdog: stopping a thread still busy after the hard stop\n";
        context.stop();
      }
    });
  }
  std::vector<std::thread> threads;
  for (auto& worker : workers) threads.emplace_back([&context = worker->context] { context.run(); });
  for (auto& thread : threads) thread.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - run->start).count();

  Tally total;
  for (auto& worker : workers) total.Merge(worker->tally);
  json::object non200;
  for (const auto& [status, n] : total.non200) non200[std::to_string(status)] = n;
  json::object report;
  report["mode"] = "stream";
  report["url"] = options.url;
  report["streams"] = options.streams;
  report["threads"] = thread_count;
  report["duration_s"] = options.duration_s;
  report["ramp_s"] = options.ramp_s;
  report["repeat"] = options.repeat;
  report["elapsed_s"] = Round3(elapsed);
  report["requests"] = total.requests;
  report["ok"] = total.ok;
  report["failed"] = total.failed;
  report["non_200"] = std::move(non200);
  report["socket_errors"] =
      total.connect_errors + total.write_errors + total.read_errors + total.timeouts;
  report["socket_error_kinds"] = json::object{{"connect", total.connect_errors},
                                              {"write", total.write_errors},
                                              {"read", total.read_errors},
                                              {"timeout", total.timeouts}};
  report["no_done"] = total.no_done;
  report["cut_at_end"] = total.cut;
  report["streams_completed"] = total.done;
  report["peak_concurrent"] = run->peak.load();
  report["ttft_ms"] = HistogramMs(total.ttft, {{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}});
  report["gap_ms"] = HistogramMs(total.gaps, {{"p50", 0.50}, {"p99", 0.99}});
  report["bytes_received"] = total.bytes_in;
  report["bytes_sent"] = total.bytes_out;
  std::cout << ReportJson(report) << std::endl;
  return 0;
}

}  // namespace nexusflow::loadgen

// --mode=tasks: creates N async media tasks (POST /v1/tasks) over C keep-alive connections,
// then polls each one (GET /v1/tasks/{id}) every poll_ms until it is final, like a client
// of the tasks API. Reports how fast the tasks were created, when they all became final and
// with which status.
//
// One io_context, one thread: the connections are coroutines sharing the run's state
// without locks. A connection creates while tasks remain to be created, then takes the
// task whose poll is due first. Nothing starts after duration_s; a task not final by then
// is counted in `not_final`, so the run always ends by itself.
#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <queue>
#include <string>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
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

constexpr auto kCallTimeout = std::chrono::seconds(30);
constexpr auto kIdlePause = std::chrono::milliseconds(20);

struct TaskRecord {
  std::string id;
  Clock::time_point created;     // the 202 arrived
  Clock::time_point final_seen;  // the first poll that saw a final status
  std::string status;
  std::int64_t created_at = 0;  // the task's own timestamps (unix seconds)
  std::int64_t updated_at = 0;
  bool final = false;
};

struct Due {
  Clock::time_point at;
  std::size_t task;
  bool operator>(const Due& o) const { return at > o.at; }
};

struct Run {
  TasksOptions options;
  std::string host_header;
  tcp::endpoint endpoint;
  Clock::time_point start;
  Clock::time_point hard_stop;
  std::int64_t start_unix_us = 0;

  int next_to_create = 0;
  int create_attempts_done = 0;  // answered or failed
  std::vector<TaskRecord> tasks;  // the created ones
  std::priority_queue<Due, std::vector<Due>, std::greater<>> due;
  std::size_t finals = 0;
  Clock::time_point last_created{};
  Clock::time_point all_final{};

  std::int64_t create_failed = 0;
  std::map<unsigned, std::int64_t> create_non202;
  std::int64_t polls = 0;
  std::map<unsigned, std::int64_t> poll_non200;
  std::int64_t socket_errors = 0;
  Histogram create_us;  // POST to 202
  Histogram poll_us;    // GET to 200
  Histogram final_us;   // 202 to the poll that saw the task final

  bool CreationDone() const { return create_attempts_done >= options.tasks; }
  bool AllSettled() const { return CreationDone() && finals == tasks.size(); }
};

bool IsFinal(std::string_view status) {
  return status == "succeeded" || status == "failed" || status == "canceled";
}

// One request on a kept-alive connection (opened when there is none); the status, or 0 on
// a socket error (the connection is dropped).
asio::awaitable<unsigned> Call(Run& run, std::unique_ptr<beast::tcp_stream>& stream, beast::flat_buffer& buffer,
                               http::request<http::string_body>& req, http::response<http::string_body>& res) {
  auto executor = co_await asio::this_coro::executor;
  const Clock::time_point deadline = std::min(Clock::now() + kCallTimeout, run.hard_stop);
  if (!stream) {
    stream = std::make_unique<beast::tcp_stream>(executor);
    stream->expires_at(deadline);
    auto [connect_ec] = co_await stream->async_connect(run.endpoint, kNoThrow);
    if (connect_ec) {
      stream.reset();
      ++run.socket_errors;
      co_return 0;
    }
    beast::error_code ignored;
    stream->socket().set_option(tcp::no_delay(true), ignored);
  }
  stream->expires_at(deadline);
  auto [write_ec, written] = co_await http::async_write(*stream, req, kNoThrow);
  if (write_ec) {
    stream.reset();
    buffer.clear();
    ++run.socket_errors;
    co_return 0;
  }
  res = {};
  auto [read_ec, read] = co_await http::async_read(*stream, buffer, res, kNoThrow);
  if (read_ec) {
    stream.reset();
    buffer.clear();
    ++run.socket_errors;
    co_return 0;
  }
  if (!res.keep_alive()) {
    stream.reset();
    buffer.clear();
  }
  co_return res.result_int();
}

// The task object's members this mode reads; false when the body is not a task object.
bool ReadTask(const std::string& body, TaskRecord& t) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return false;
  const json::object& o = v.get_object();
  const json::value* id = o.if_contains("id");
  const json::value* status = o.if_contains("status");
  if (!id || !id->is_string() || !status || !status->is_string()) return false;
  t.id = std::string(id->get_string());
  t.status = std::string(status->get_string());
  if (const json::value* c = o.if_contains("created_at"); c && c->is_int64()) t.created_at = c->as_int64();
  if (const json::value* u = o.if_contains("updated_at"); u && u->is_int64()) t.updated_at = u->as_int64();
  return true;
}

void NoteFinal(Run& run, TaskRecord& t, Clock::time_point now) {
  if (t.final || !IsFinal(t.status)) return;
  t.final = true;
  t.final_seen = now;
  ++run.finals;
  run.final_us.Record(Micros(now - t.created));
  if (run.AllSettled()) run.all_final = now;
}

asio::awaitable<void> Connection(Run& run) {
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer pause(executor);
  std::unique_ptr<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  const std::string auth = run.options.key.empty() ? "" : "Bearer " + run.options.key;

  while (Clock::now() < run.hard_stop && !run.AllSettled()) {
    if (run.next_to_create < run.options.tasks) {
      ++run.next_to_create;
      http::request<http::string_body> req{http::verb::post, run.options.target, 11};
      req.set(http::field::host, run.host_header);
      req.set(http::field::content_type, "application/json");
      if (!auth.empty()) req.set(http::field::authorization, auth);
      req.body() = run.options.body;
      req.prepare_payload();
      const Clock::time_point sent = Clock::now();
      const unsigned status = co_await Call(run, stream, buffer, req, res);
      const Clock::time_point now = Clock::now();
      ++run.create_attempts_done;
      TaskRecord t;
      if (status == 202 && ReadTask(res.body(), t)) {
        run.create_us.Record(Micros(now - sent));
        t.created = now;
        run.last_created = now;
        run.tasks.push_back(std::move(t));
        run.due.push({now + std::chrono::milliseconds(run.options.poll_ms), run.tasks.size() - 1});
        NoteFinal(run, run.tasks.back(), now);
      } else {
        ++run.create_failed;
        if (status != 0) ++run.create_non202[status];
      }
      if (run.AllSettled()) run.all_final = now;
      continue;
    }
    if (run.due.empty()) {  // the rest are being created or polled by other connections
      pause.expires_after(kIdlePause);
      co_await pause.async_wait(kNoThrow);
      continue;
    }
    const Due next = run.due.top();
    run.due.pop();
    if (next.at > Clock::now()) {
      pause.expires_at(std::min(next.at, run.hard_stop));
      co_await pause.async_wait(kNoThrow);
      if (Clock::now() >= run.hard_stop) break;
    }
    // run.tasks has its full capacity reserved: an index stays valid while others create.
    const std::string id = run.tasks[next.task].id;
    http::request<http::string_body> req{http::verb::get, run.options.target + "/" + id, 11};
    req.set(http::field::host, run.host_header);
    if (!auth.empty()) req.set(http::field::authorization, auth);
    const Clock::time_point sent = Clock::now();
    const unsigned status = co_await Call(run, stream, buffer, req, res);
    const Clock::time_point now = Clock::now();
    ++run.polls;
    TaskRecord fresh;
    if (status == 200 && ReadTask(res.body(), fresh) && fresh.id == id) {
      run.poll_us.Record(Micros(now - sent));
      TaskRecord& task = run.tasks[next.task];
      task.status = fresh.status;
      task.updated_at = fresh.updated_at;
      NoteFinal(run, task, now);
      if (task.final) continue;
    } else if (status != 0) {
      ++run.poll_non200[status];
    }
    run.due.push({now + std::chrono::milliseconds(run.options.poll_ms), next.task});
  }
}

json::object HistogramMs(const Histogram& h) {
  return json::object{{"count", h.count()},
                      {"p50", Round3(h.Percentile(0.50) / 1000.0)},
                      {"p99", Round3(h.Percentile(0.99) / 1000.0)},
                      {"max", Round3(h.max() / 1000.0)}};
}

double SecondsBetween(Clock::time_point a, Clock::time_point b) {
  return Round3(std::chrono::duration<double>(b - a).count());
}

}  // namespace

int RunTasks(const TasksOptions& options) {
  const std::optional<HttpUrl> url = ParseHttpUrl(options.url);
  if (!url) {
    std::cerr << "loadgen: --url must be http://host:port/path, got '" << options.url << "'\n";
    return 2;
  }
  auto run = std::make_unique<Run>();
  run->options = options;
  run->options.target = url->target;
  while (run->options.target.size() > 1 && run->options.target.back() == '/') run->options.target.pop_back();
  run->host_header = url->host + ":" + std::to_string(url->port);
  asio::io_context context{1};
  {
    tcp::resolver resolver(context);
    beast::error_code ec;
    auto results = resolver.resolve(url->host, std::to_string(url->port), ec);
    if (ec || results.empty()) {
      std::cerr << "loadgen: cannot resolve " << url->host << ": " << ec.message() << '\n';
      return 1;
    }
    run->endpoint = results.begin()->endpoint();
  }
  run->tasks.reserve(static_cast<std::size_t>(options.tasks));
  run->start = Clock::now();
  run->start_unix_us = std::chrono::duration_cast<std::chrono::microseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  run->hard_stop = run->start + Seconds(options.duration_s);
  const int connections = std::max(1, std::min(options.connections, options.tasks));
  for (int i = 0; i < connections; ++i) asio::co_spawn(context, Connection(*run), asio::detached);
  context.run();
  const Clock::time_point end = Clock::now();

  json::object statuses;
  std::map<std::string, std::int64_t> by_status;
  std::int64_t first_created_at = 0, last_updated_at = 0;
  for (const TaskRecord& t : run->tasks) {
    ++by_status[t.status];
    if (first_created_at == 0 || (t.created_at > 0 && t.created_at < first_created_at)) first_created_at = t.created_at;
    if (t.final) last_updated_at = std::max(last_updated_at, t.updated_at);
  }
  for (const auto& [status, n] : by_status) statuses[status] = n;
  json::object create_non202, poll_non200;
  for (const auto& [status, n] : run->create_non202) create_non202[std::to_string(status)] = n;
  for (const auto& [status, n] : run->poll_non200) poll_non200[std::to_string(status)] = n;
  const bool all_final = run->AllSettled() && !run->tasks.empty();
  const double create_s = run->tasks.empty() ? 0 : SecondsBetween(run->start, run->last_created);

  json::object report;
  report["mode"] = "tasks";
  report["url"] = options.url;
  report["tasks"] = options.tasks;
  report["connections"] = connections;
  report["poll_ms"] = options.poll_ms;
  report["duration_s"] = options.duration_s;
  report["start_unix_us"] = run->start_unix_us;
  report["elapsed_s"] = SecondsBetween(run->start, end);
  report["created"] = static_cast<std::int64_t>(run->tasks.size());
  report["create_failed"] = run->create_failed;
  report["create_non_202"] = std::move(create_non202);
  report["create_s"] = create_s;
  report["created_per_s"] = create_s > 0 ? Round3(static_cast<double>(run->tasks.size()) / create_s) : 0.0;
  report["create_ms"] = HistogramMs(run->create_us);
  report["statuses"] = std::move(statuses);
  report["final"] = static_cast<std::int64_t>(run->finals);
  report["not_final"] = static_cast<std::int64_t>(run->tasks.size() - run->finals);
  report["all_final_s"] = all_final ? json::value(SecondsBetween(run->start, run->all_final)) : json::value(nullptr);
  report["all_final_unix_us"] =
      all_final ? json::value(run->start_unix_us + Micros(run->all_final - run->start)) : json::value(nullptr);
  report["server_final_s"] =
      all_final && first_created_at > 0 ? json::value(last_updated_at - first_created_at) : json::value(nullptr);
  report["final_after_create_ms"] = HistogramMs(run->final_us);
  report["polls"] = run->polls;
  report["poll_non_200"] = std::move(poll_non200);
  report["poll_ms_latency"] = HistogramMs(run->poll_us);
  report["socket_errors"] = run->socket_errors;
  std::cout << ReportJson(report) << std::endl;
  return 0;
}

}  // namespace nexusflow::loadgen

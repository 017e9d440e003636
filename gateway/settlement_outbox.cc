#include "gateway/settlement_outbox.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>

#include <algorithm>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <set>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "libs/common/ids.h"
#include "libs/common/status_map.h"
#include "libs/metrics/metrics.h"
#include "libs/store/sqlite.h"

namespace nexusflow::gateway {
namespace net = boost::asio;
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kStarted = 1;  // the request was sending output; usage not known yet
constexpr int kFinal = 2;    // the usage is known: the row holds the real SettleRequest

// Commits between two checkpoints of the WAL into the database file, at most.
constexpr int kCheckpointEvery = 1000;
// An idle outbox checkpoints after this long without a commit.
constexpr auto kIdleCheckpoint = std::chrono::seconds(5);

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS settlements (
  request_id TEXT PRIMARY KEY,
  state INTEGER NOT NULL,               -- 1 started, 2 final
  request BLOB NOT NULL,                -- nexusflow.billing.v1.SettleRequest (no usage while started)
  input_estimate INTEGER NOT NULL,      -- prompt tokens estimated at admission
  max_output_tokens INTEGER NOT NULL,   -- the request's output limit; 0 = none
  output_allowance INTEGER NOT NULL,    -- bytes of output text the client may have received
  attempts INTEGER NOT NULL DEFAULT 0,  -- settlements billing answered with an error
  created_at INTEGER NOT NULL,          -- unix seconds
  updated_at INTEGER NOT NULL           -- unix seconds
);
CREATE TABLE IF NOT EXISTS dead_letters (
  request_id TEXT PRIMARY KEY,
  request BLOB NOT NULL,                -- the SettleRequest billing refused
  attempts INTEGER NOT NULL,
  code INTEGER NOT NULL,                -- gRPC status code of the last answer
  error TEXT NOT NULL,                  -- its message
  dead_at INTEGER NOT NULL              -- unix seconds
);
)sql";

struct Families {
  prometheus::Gauge& pending;
  prometheus::Family<prometheus::Counter>& dead_letters;
  prometheus::Family<prometheus::Counter>& recovered;
  prometheus::Counter& write_errors;
};

Families& Metrics() {
  static Families f{
      prometheus::BuildGauge()
          .Name("nexusflow_gateway_settlements_pending")
          .Help("Settlements the outbox holds for a retry (billing did not acknowledge them yet)")
          .Register(MetricsRegistry())
          .Add({}),
      prometheus::BuildCounter()
          .Name("nexusflow_gateway_settlements_dead_letter_total")
          .Help("Settlements set aside as never accepted by billing, by the last status code")
          .Register(MetricsRegistry()),
      prometheus::BuildCounter()
          .Name("nexusflow_gateway_settlements_recovered_total")
          .Help("Outbox entries a previous gateway process left, found at start, by state "
                "(started, final)")
          .Register(MetricsRegistry()),
      prometheus::BuildCounter()
          .Name("nexusflow_gateway_outbox_write_errors_total")
          .Help("Outbox commits that failed (the request path still settles directly)")
          .Register(MetricsRegistry())
          .Add({})};
  return f;
}

}  // namespace

std::chrono::milliseconds RetryDelay(int failures, std::chrono::milliseconds first,
                                     std::chrono::milliseconds max, double unit) {
  int64_t ms = std::max<int64_t>(first.count(), 1);
  for (int i = 1; i < failures && ms < max.count(); ++i) ms *= 2;
  ms = std::min<int64_t>(ms, std::max<int64_t>(max.count(), 1));
  unit = std::clamp(unit, 0.0, 1.0);
  return std::chrono::milliseconds(
      std::max<int64_t>(1, static_cast<int64_t>(ms * (0.5 + unit / 2))));
}

bool IsPoisonSettlement(grpc::StatusCode code) {
  switch (code) {
    case grpc::INVALID_ARGUMENT:
    case grpc::NOT_FOUND:
    case grpc::FAILED_PRECONDITION:
    case grpc::PERMISSION_DENIED:
    case grpc::UNIMPLEMENTED:
      return true;
    default:
      return false;
  }
}

bool IsUnreachable(grpc::StatusCode code) {
  return code == grpc::UNAVAILABLE || code == grpc::DEADLINE_EXCEEDED || code == grpc::CANCELLED;
}

int64_t OutputTokensOfAllowance(int64_t allowance_bytes, int64_t max_output_tokens) {
  int64_t tokens = std::max<int64_t>(allowance_bytes, 0);
  if (max_output_tokens > 0) tokens = std::min(tokens, max_output_tokens);
  return tokens;
}

int64_t NextOutputAllowance(int64_t sent_bytes, int64_t step) {
  if (sent_bytes <= 0) return 0;
  return (sent_bytes + step - 1) / step * step;
}

int64_t OutputTextBytes(const ChatAnswer& answer) {
  size_t n = 0;
  for (size_t i = 0; i < answer.choice_count(); ++i) {  // every choice (n > 1) was sent
    const ChoiceContent& c = answer.choice(i);
    n += c.text.size() + c.reasoning.size();
    for (const auto& t : c.tool_calls) n += t.name.size() + t.arguments.size();
  }
  return static_cast<int64_t>(n);
}

struct SettlementOutbox::Op {
  enum class Kind { kStarted, kProgress, kFinal, kDelete, kRetry, kAttempts, kDeadLetter };
  Kind kind = Kind::kDelete;
  std::string request_id;
  billing::v1::SettleRequest req;          // kStarted (template), kFinal, kRetry, kDeadLetter
  int64_t input_estimate = 0;              // kStarted
  int64_t max_output_tokens = 0;           // kStarted
  int64_t allowance = 0;                   // kStarted, kProgress
  int attempts = 0;                        // kAttempts, kDeadLetter
  grpc::Status status;                     // kRetry, kDeadLetter: billing's last answer
  std::function<void(absl::Status)> done;  // runs after the commit, on the outbox thread
};

// What the outbox thread and the other threads share, under `mu`. Settlements answered
// after the outbox is gone still find it (billing's callbacks hold a reference).
struct SettlementOutbox::Shared {
  mutable std::mutex mu;
  std::condition_variable wake;          // the outbox thread: ops, results, stop
  mutable std::condition_variable idle;  // WaitIdle
  std::vector<Op> ops;
  struct Result {
    std::string request_id;
    grpc::Status status;
  };
  std::vector<Result> results;
  bool stop = false;
  bool busy = false;  // the thread holds a batch
  Stats stats;
};

// The outbox thread's own view of the settlements it retries.
struct SettlementOutbox::Schedule {
  struct Pending {
    billing::v1::SettleRequest req;
    int attempts = 0;  // answered by billing with an error (persisted)
    int failures = 0;  // every failure, for the backoff
    Clock::time_point due;
    bool in_flight = false;
  };
  std::unordered_map<std::string, Pending> pending;
  std::set<std::pair<Clock::time_point, std::string>> due;
  int in_flight = 0;
  std::mt19937_64 rng{std::random_device{}()};
  int commits_since_checkpoint = 0;
  Clock::time_point last_commit;
  bool synchronous_full = true;
  Clock::time_point last_error_log;
};

absl::StatusOr<std::unique_ptr<SettlementOutbox>> SettlementOutbox::Open(Options options,
                                                                         Settler settler) {
  auto db = SqliteDb::Open(options.path);
  if (!db.ok() && db.status().code() == absl::StatusCode::kUnavailable)
    return absl::UnavailableError(absl::StrCat(
        "settlement outbox ", options.path,
        " is locked by another process (one file per gateway): ", db.status().message()));
  if (!db.ok()) return db.status();
  // One process per file: the lock is taken by the first write below and held until the
  // process ends (the kernel drops it when the process dies, however it dies).
  for (const char* pragma : {"PRAGMA locking_mode=EXCLUSIVE", "PRAGMA synchronous=FULL",
                             "PRAGMA wal_autocheckpoint=0"}) {
    if (auto s = (*db)->Exec(pragma); !s.ok()) return s;
  }
  if (auto s = (*db)->Exec(kSchema); !s.ok())
    return absl::Status(s.code(),
                        absl::StrCat("settlement outbox ", options.path, ": ", s.message()));
  std::unique_ptr<SettlementOutbox> outbox(
      new SettlementOutbox(std::move(options), std::move(settler), std::move(*db)));
  if (auto s = outbox->Recover(); !s.ok()) return s;
  outbox->thread_ = std::thread([o = outbox.get()] { o->Loop(); });
  return outbox;
}

SettlementOutbox::SettlementOutbox(Options options, Settler settler, std::unique_ptr<SqliteDb> db)
    : options_(std::move(options)),
      settler_(std::move(settler)),
      db_(std::move(db)),
      shared_(std::make_shared<Shared>()),
      schedule_(std::make_unique<Schedule>()) {
  Metrics();
}

SettlementOutbox::~SettlementOutbox() {
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->stop = true;
  }
  shared_->wake.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status SettlementOutbox::Recover() {
  // Everything in the file now was left by an earlier process: this one has written
  // nothing yet.
  if (auto s = db_->Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  struct Row {
    billing::v1::SettleRequest req;
    int state;
    int attempts;
  };
  std::vector<Row> rows;
  {
    auto st = db_->Prepare(
        "SELECT request_id, state, request, input_estimate, max_output_tokens, "
        "output_allowance, attempts FROM settlements ORDER BY created_at");
    if (!st.ok()) return st.status();
    while (true) {
      auto row = st->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      Row r;
      std::string blob = st->Text(2);
      if (!r.req.ParseFromString(blob)) {
        fprintf(stderr, "nexusflow: settlement outbox: entry %s is unreadable; left in the file\n",
                st->Text(0).c_str());
        continue;
      }
      r.req.set_request_id(st->Text(0));
      r.state = static_cast<int>(st->Int(1));
      r.attempts = static_cast<int>(st->Int(6));
      if (r.state == kStarted) {
        // The gateway died while the answer was going out: the prompt estimate, and the
        // output the client may have received.
        auto* u = r.req.mutable_usage();
        u->Clear();
        u->set_input_tokens(st->Int(3));
        u->set_output_tokens(OutputTokensOfAllowance(st->Int(5), st->Int(4)));
      }
      rows.push_back(std::move(r));
    }
  }
  int64_t now = UnixNow();
  for (const auto& r : rows) {
    CounterFor(Metrics().recovered, {{"state", r.state == kStarted ? "started" : "final"}})
        .Increment();
    if (r.state != kStarted) continue;
    // Written as final, so a second crash settles the same usage.
    auto st = db_->Prepare(
        "UPDATE settlements SET state = 2, request = ?2, updated_at = ?3 WHERE request_id = ?1");
    if (!st.ok()) return st.status();
    st->Bind(1, r.req.request_id()).BindBlob(2, r.req.SerializeAsString()).Bind(3, now);
    if (auto s = st->Run(); !s.ok()) return s;
  }
  if (auto s = db_->Exec("COMMIT"); !s.ok()) return s;
  if (auto s = db_->Exec("PRAGMA wal_checkpoint(TRUNCATE)"); !s.ok()) return s;
  auto& sched = *schedule_;
  Clock::time_point now_steady = Clock::now();
  for (auto& r : rows) {
    std::string id = r.req.request_id();
    auto& p = sched.pending[id];
    p.req = std::move(r.req);
    p.attempts = r.attempts;
    p.due = now_steady;
    sched.due.emplace(p.due, id);
  }
  if (!rows.empty())
    fprintf(stderr,
            "nexusflow: settlement outbox: %zu settlements left by the previous process, settling "
            "them\n",
            rows.size());
  std::lock_guard<std::mutex> lock(shared_->mu);
  shared_->stats.recovered = static_cast<int64_t>(rows.size());
  shared_->stats.pending = static_cast<int64_t>(sched.pending.size());
  Metrics().pending.Increment(static_cast<double>(rows.size()));
  return absl::OkStatus();
}

void SettlementOutbox::Enqueue(Op op) {
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->ops.push_back(std::move(op));
  }
  shared_->wake.notify_one();
}

net::awaitable<absl::Status> SettlementOutbox::Await(Op& op) {
  auto ex = co_await net::this_coro::executor;
  co_return co_await net::async_initiate<decltype(net::use_awaitable), void(absl::Status)>(
      [this, ex, &op](auto handler) {
        // std::function copies its target; the coroutine's handler can only move.
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        op.done = [ex, h](absl::Status s) {
          net::post(ex, [h, s = std::move(s)]() mutable { (*h)(std::move(s)); });
        };
        Enqueue(std::move(op));
      },
      net::use_awaitable);
}

net::awaitable<absl::Status> SettlementOutbox::RecordStarted(const billing::v1::SettleRequest& tmpl,
                                                             int64_t input_estimate,
                                                             int64_t max_output_tokens,
                                                             int64_t output_allowance) {
  Op op;
  op.kind = Op::Kind::kStarted;
  op.request_id = tmpl.request_id();
  op.req = tmpl;
  op.req.clear_usage();
  op.input_estimate = input_estimate;
  op.max_output_tokens = max_output_tokens;
  op.allowance = output_allowance;
  co_return co_await Await(op);
}

net::awaitable<absl::Status> SettlementOutbox::RecordProgress(const std::string& request_id,
                                                              int64_t output_allowance) {
  Op op;
  op.kind = Op::Kind::kProgress;
  op.request_id = request_id;
  op.allowance = output_allowance;
  co_return co_await Await(op);
}

void SettlementOutbox::RecordFinal(const billing::v1::SettleRequest& req) {
  Op op;
  op.kind = Op::Kind::kFinal;
  op.request_id = req.request_id();
  op.req = req;
  Enqueue(std::move(op));
}

void SettlementOutbox::Settled(const std::string& request_id) {
  Op op;
  op.kind = Op::Kind::kDelete;
  op.request_id = request_id;
  Enqueue(std::move(op));
}

net::awaitable<absl::Status> SettlementOutbox::Retry(const billing::v1::SettleRequest& req,
                                                     const grpc::Status& last) {
  Op op;
  op.kind = Op::Kind::kRetry;
  op.request_id = req.request_id();
  op.req = req;
  op.status = last;
  co_return co_await Await(op);
}

SettlementOutbox::Stats SettlementOutbox::stats() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->stats;
}

bool SettlementOutbox::WaitIdle(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(shared_->mu);
  return shared_->idle.wait_for(lock, timeout, [this] {
    return shared_->ops.empty() && shared_->results.empty() && !shared_->busy &&
           shared_->stats.pending == 0;
  });
}

void SettlementOutbox::Loop() {
  Shared& sh = *shared_;
  Schedule& sched = *schedule_;
  std::unique_lock<std::mutex> lock(sh.mu);
  // Once stopping, settlements still out get this long to answer (each has its own
  // deadline; a settler that never answers must not hold the process).
  constexpr auto kStopWait = std::chrono::seconds(10);
  Clock::time_point stop_deadline = Clock::time_point::max();
  while (true) {
    if (sh.stop && stop_deadline == Clock::time_point::max())
      stop_deadline = Clock::now() + kStopWait;
    // Sleep until there is something to write or an answer to handle, the next entry is
    // due (when another may go out), or an idle checkpoint is owed.
    Clock::time_point wake_at = Clock::time_point::max();
    if (!sh.stop && sched.in_flight < options_.max_in_flight) {
      for (const auto& [due, id] : sched.due) {
        auto it = sched.pending.find(id);
        if (it != sched.pending.end() && !it->second.in_flight) {
          wake_at = due;
          break;
        }
      }
    }
    if (sched.commits_since_checkpoint > 0)
      wake_at = std::min(wake_at, sched.last_commit + kIdleCheckpoint);
    wake_at = std::min(wake_at, stop_deadline);
    auto ready = [&] {
      return !sh.ops.empty() || !sh.results.empty() ||
             (sh.stop && (sched.in_flight == 0 || stop_deadline == Clock::time_point::max()));
    };
    if (wake_at == Clock::time_point::max()) {
      sh.wake.wait(lock, ready);
    } else {
      sh.wake.wait_until(lock, wake_at, ready);
    }
    std::vector<Op> batch;
    batch.swap(sh.ops);
    std::vector<Shared::Result> results;
    results.swap(sh.results);
    bool stopping = sh.stop;
    sh.busy = true;
    lock.unlock();

    // Billing's answers to retried settlements.
    Clock::time_point now = Clock::now();
    int64_t settled = 0, dead = 0;
    for (auto& r : results) {
      --sched.in_flight;
      auto it = sched.pending.find(r.request_id);
      if (it == sched.pending.end()) continue;
      auto& p = it->second;
      p.in_flight = false;
      if (r.status.ok()) {
        Op op;
        op.kind = Op::Kind::kDelete;
        op.request_id = r.request_id;
        batch.push_back(std::move(op));
        sched.pending.erase(it);
        ++settled;
        continue;
      }
      ++p.failures;
      if (!IsUnreachable(r.status.error_code())) ++p.attempts;
      if (IsPoisonSettlement(r.status.error_code()) || p.attempts >= options_.max_attempts) {
        Op op;
        op.kind = Op::Kind::kDeadLetter;
        op.request_id = r.request_id;
        op.req = std::move(p.req);
        op.attempts = p.attempts;
        op.status = r.status;
        batch.push_back(std::move(op));
        sched.pending.erase(it);
        ++dead;
        continue;
      }
      if (!IsUnreachable(r.status.error_code())) {
        Op op;
        op.kind = Op::Kind::kAttempts;
        op.request_id = r.request_id;
        op.attempts = p.attempts;
        batch.push_back(std::move(op));
      }
      std::uniform_real_distribution<double> unit(0.0, 1.0);
      p.due =
          now + RetryDelay(p.failures, options_.first_retry, options_.max_retry, unit(sched.rng));
      sched.due.emplace(p.due, r.request_id);
    }

    // Settlements the request path hands over.
    for (auto& op : batch) {
      if (op.kind != Op::Kind::kRetry) continue;
      auto& p = sched.pending[op.request_id];
      if (p.in_flight) continue;  // already being retried
      p.req = op.req;
      p.failures = std::max(p.failures, 1);
      if (IsPoisonSettlement(op.status.error_code())) {
        // Set aside at once: written as a dead letter instead of a retry.
        op.kind = Op::Kind::kDeadLetter;
        op.attempts = ++p.attempts;
        sched.pending.erase(op.request_id);
        ++dead;
        continue;
      }
      std::uniform_real_distribution<double> unit(0.0, 1.0);
      p.due =
          now + RetryDelay(p.failures, options_.first_retry, options_.max_retry, unit(sched.rng));
      sched.due.emplace(p.due, op.request_id);
    }

    if (!batch.empty()) Commit(batch);
    if (batch.empty() && sched.commits_since_checkpoint > 0 &&
        (stopping || Clock::now() >= sched.last_commit + kIdleCheckpoint))
      Checkpoint();

    // Due entries go out, oldest due first, up to the in-flight limit.
    std::vector<std::pair<std::string, billing::v1::SettleRequest>> out;
    now = Clock::now();
    while (!stopping && !sched.due.empty() && sched.in_flight < options_.max_in_flight) {
      auto first = sched.due.begin();
      if (first->first > now) break;
      std::string id = first->second;
      sched.due.erase(first);
      auto it = sched.pending.find(id);
      // Stale: settled, set aside, rescheduled or already out.
      if (it == sched.pending.end() || it->second.in_flight || it->second.due != first->first)
        continue;
      it->second.in_flight = true;
      ++sched.in_flight;
      out.emplace_back(id, it->second.req);
    }
    for (auto& [id, req] : out) {
      std::weak_ptr<Shared> weak = shared_;
      settler_(req, [weak, id = id](const grpc::Status& s) {
        auto sh = weak.lock();
        if (!sh) return;
        {
          std::lock_guard<std::mutex> lock(sh->mu);
          sh->results.push_back(Shared::Result{id, s});
        }
        sh->wake.notify_one();
      });
    }

    lock.lock();
    sh.busy = false;
    int64_t before = sh.stats.pending;
    sh.stats.pending = static_cast<int64_t>(sched.pending.size());
    sh.stats.settled += settled;
    sh.stats.dead_letters += dead;
    Metrics().pending.Increment(static_cast<double>(sh.stats.pending - before));
    sh.idle.notify_all();
    // Stopping: done once everything queued is written and every settlement out has
    // answered (each carries its own deadline).
    if (stopping && sh.ops.empty() && sh.results.empty() &&
        (sched.in_flight == 0 || Clock::now() >= stop_deadline)) {
      Metrics().pending.Decrement(static_cast<double>(sh.stats.pending));
      if (sched.commits_since_checkpoint > 0) {
        lock.unlock();
        Checkpoint();
        lock.lock();
      }
      return;
    }
  }
}

void SettlementOutbox::Commit(std::vector<Op>& batch) {
  Schedule& sched = *schedule_;
  // A settlement billing did not acknowledge (and a dead letter) is money only this file
  // knows of: fsynced. The request path's own entries need to survive the process, not a
  // power loss (no fsync delays an answer): written, not synced.
  bool full = std::any_of(batch.begin(), batch.end(), [](const Op& op) {
    return op.kind == Op::Kind::kRetry || op.kind == Op::Kind::kDeadLetter;
  });
  if (full != sched.synchronous_full) {
    if (db_->Exec(full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=OFF").ok())
      sched.synchronous_full = full;
  }
  int64_t now = UnixNow();
  std::vector<absl::Status> statuses(batch.size());
  absl::Status tx = db_->Run("BEGIN IMMEDIATE");
  for (size_t i = 0; tx.ok() && i < batch.size(); ++i) {
    Op& op = batch[i];
    auto run = [&](std::string_view sql, auto bind) -> absl::Status {
      auto st = db_->Prepare(sql);
      if (!st.ok()) return st.status();
      bind(*st);
      return st->Run();
    };
    switch (op.kind) {
      case Op::Kind::kStarted:
        statuses[i] =
            run("INSERT INTO settlements (request_id, state, request, input_estimate, "
                "max_output_tokens, "
                "output_allowance, created_at, updated_at) VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?6) "
                "ON CONFLICT (request_id) DO UPDATE SET output_allowance = "
                "max(settlements.output_allowance, excluded.output_allowance), updated_at = "
                "excluded.updated_at "
                "WHERE settlements.state = 1",
                [&](SqliteStatement& st) {
                  st.Bind(1, op.request_id)
                      .BindBlob(2, op.req.SerializeAsString())
                      .Bind(3, op.input_estimate)
                      .Bind(4, op.max_output_tokens)
                      .Bind(5, op.allowance)
                      .Bind(6, now);
                });
        break;
      case Op::Kind::kProgress:
        statuses[i] = run(
            "UPDATE settlements SET output_allowance = max(output_allowance, ?2), updated_at = ?3 "
            "WHERE request_id = ?1 AND state = 1",
            [&](SqliteStatement& st) {
              st.Bind(1, op.request_id).Bind(2, op.allowance).Bind(3, now);
            });
        break;
      case Op::Kind::kFinal:
      case Op::Kind::kRetry:
        statuses[i] =
            run("INSERT INTO settlements (request_id, state, request, input_estimate, "
                "max_output_tokens, "
                "output_allowance, created_at, updated_at) VALUES (?1, 2, ?2, 0, 0, 0, ?3, ?3) "
                "ON CONFLICT (request_id) DO UPDATE SET state = 2, request = excluded.request, "
                "updated_at = excluded.updated_at",
                [&](SqliteStatement& st) {
                  st.Bind(1, op.request_id).BindBlob(2, op.req.SerializeAsString()).Bind(3, now);
                });
        break;
      case Op::Kind::kDelete:
        statuses[i] = run("DELETE FROM settlements WHERE request_id = ?1",
                          [&](SqliteStatement& st) { st.Bind(1, op.request_id); });
        break;
      case Op::Kind::kAttempts:
        statuses[i] =
            run("UPDATE settlements SET attempts = ?2 WHERE request_id = ?1",
                [&](SqliteStatement& st) { st.Bind(1, op.request_id).Bind(2, op.attempts); });
        break;
      case Op::Kind::kDeadLetter:
        statuses[i] =
            run("INSERT OR REPLACE INTO dead_letters (request_id, request, attempts, code, error, "
                "dead_at) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                [&](SqliteStatement& st) {
                  st.Bind(1, op.request_id)
                      .BindBlob(2, op.req.SerializeAsString())
                      .Bind(3, op.attempts)
                      .Bind(4, static_cast<int64_t>(op.status.error_code()))
                      .Bind(5, op.status.error_message())
                      .Bind(6, now);
                });
        if (statuses[i].ok())
          statuses[i] = run("DELETE FROM settlements WHERE request_id = ?1",
                            [&](SqliteStatement& st) { st.Bind(1, op.request_id); });
        break;
    }
  }
  if (tx.ok()) tx = db_->Run("COMMIT");
  if (!tx.ok()) (void)db_->Run("ROLLBACK");
  int64_t failed = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    Op& op = batch[i];
    absl::Status s = tx.ok() ? statuses[i] : tx;
    if (!s.ok()) ++failed;
    if (op.kind == Op::Kind::kDeadLetter) {
      // Logged once, here: the entry leaves the retries whether or not the write held.
      std::string code(GrpcCodeName(op.status.error_code()));
      fprintf(stderr,
              "nexusflow: settlement of %s set aside after %d attempts (%s: %s); it is in the "
              "outbox's dead_letters table\n",
              op.request_id.c_str(), op.attempts, code.c_str(), op.status.error_message().c_str());
      CounterFor(Metrics().dead_letters, {{"code", code}}).Increment();
    }
    if (op.done) op.done(s);
  }
  if (failed > 0) {
    Metrics().write_errors.Increment(static_cast<double>(failed));
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->stats.write_errors += failed;
    }
    Clock::time_point now_steady = Clock::now();
    if (now_steady - sched.last_error_log > std::chrono::minutes(1)) {
      sched.last_error_log = now_steady;
      fprintf(stderr, "nexusflow: settlement outbox %s: %lld writes failed: %s\n",
              options_.path.c_str(), static_cast<long long>(failed),
              std::string((tx.ok() ? absl::OkStatus() : tx).message()).c_str());
    }
  }
  sched.last_commit = Clock::now();
  if (++sched.commits_since_checkpoint >= kCheckpointEvery) Checkpoint();
}

void SettlementOutbox::Checkpoint() {
  Schedule& sched = *schedule_;
  // With synchronous=FULL the database file is synced before the WAL is reset.
  if (!sched.synchronous_full && db_->Exec("PRAGMA synchronous=FULL").ok())
    sched.synchronous_full = true;
  if (sched.synchronous_full && db_->Exec("PRAGMA wal_checkpoint(TRUNCATE)").ok()) {
    sched.commits_since_checkpoint = 0;
  } else {
    sched.last_commit = Clock::now();  // try again after the idle interval
  }
}

}  // namespace nexusflow::gateway

#include "libs/store/postgres.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace nexusflow {

bool IsPostgresUrl(std::string_view setting) {
  return setting.substr(0, 13) == "postgresql://" || setting.substr(0, 11) == "postgres://";
}

PgParam::PgParam(int64_t v) : value_(absl::StrCat(v)) {}

PgParam PgParam::Bytes(std::string_view v) {
  PgParam p;
  p.value_ = std::string(v);
  p.binary_ = true;
  return p;
}

void PgResult::Clear::operator()(PGresult* r) const { PQclear(r); }

PgResult::PgResult(PGresult* r) : r_(r) {}
PgResult::~PgResult() = default;

int PgResult::rows() const { return PQntuples(r_.get()); }

bool PgResult::IsNull(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }

std::string PgResult::Text(int row, int col) const {
  return std::string(PQgetvalue(r_.get(), row, col),
                     static_cast<size_t>(PQgetlength(r_.get(), row, col)));
}

int64_t PgResult::Int(int row, int col) const {
  int64_t v = 0;
  if (!IsNull(row, col)) (void)absl::SimpleAtoi(PQgetvalue(r_.get(), row, col), &v);
  return v;
}

std::string PgResult::Bytes(int row, int col) const {
  size_t n = 0;
  unsigned char* raw = PQunescapeBytea(
      reinterpret_cast<const unsigned char*>(PQgetvalue(r_.get(), row, col)), &n);
  if (!raw) return {};
  std::string out(reinterpret_cast<const char*>(raw), n);
  PQfreemem(raw);
  return out;
}

absl::StatusOr<std::unique_ptr<PgConnection>> PgConnection::Open(const std::string& conninfo,
                                                                 bool synchronous_commit) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (!conn) return absl::ResourceExhaustedError("postgres: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    // The message names host and port, never the password.
    absl::Status s = absl::UnavailableError(absl::StrCat("postgres: ", PQerrorMessage(conn)));
    PQfinish(conn);
    return s;
  }
  std::unique_ptr<PgConnection> out(new PgConnection(conn));
  // libpq would print server notices on stderr; the errors that matter reach the caller
  // as statuses. What arrives between statements is a notice, or the FATAL with which
  // the server ends the session (shutdown, restart, terminated backend): remembered, so
  // the pool drops the connection before anyone uses it.
  PQsetNoticeProcessor(
      conn,
      [](void* self, const char* message) {
        if (std::string_view(message).substr(0, 6) == "FATAL:")
          static_cast<PgConnection*>(self)->closing_ = true;
      },
      out.get());
  // Acknowledged means on the server's disk, whatever the server's default says (unless
  // the caller opted out).
  if (auto s = out->Exec(synchronous_commit
                             ? "SET synchronous_commit = on; SET client_min_messages = warning"
                             : "SET synchronous_commit = off; SET client_min_messages = warning");
      !s.ok())
    return s;
  return out;
}

PgConnection::~PgConnection() { PQfinish(conn_); }

bool PgConnection::broken() const { return PQstatus(conn_) != CONNECTION_OK; }

bool PgConnection::Alive() {
  // An idle session receives nothing but notices, or the reason the server closes it and
  // then the end of the stream: read while there is something, until libpq sees the end.
  for (int i = 0; i < 8 && !broken(); ++i) {
    pollfd p{PQsocket(conn_), POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) break;  // nothing pending
    if (PQconsumeInput(conn_) == 0) return false;
    (void)PQisBusy(conn_);  // parses what was read: a notice reaches the processor
  }
  return !closing_ && !broken();
}

absl::Status PgConnection::Fail(PGresult* r, std::string_view what) {
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  sqlstate_ = state ? state : (broken() ? "08006" : "XX000");
  std::string msg = absl::StrCat("postgres ", std::string(what), ": ",
                                 r ? PQresultErrorMessage(r) : PQerrorMessage(conn_));
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  PQclear(r);
  if (sqlstate_ == "23505") return absl::AlreadyExistsError(msg);
  if (sqlstate_ == "40001" || sqlstate_ == "40P01") return absl::AbortedError(msg);
  if (absl::StartsWith(sqlstate_, "08") || absl::StartsWith(sqlstate_, "57P") || broken())
    return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

absl::Status PgConnection::Exec(std::string_view sql) {
  PGresult* r = PQexec(conn_, std::string(sql).c_str());
  auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Fail(r, "exec");
  PQclear(r);
  sqlstate_.clear();
  return absl::OkStatus();
}

absl::StatusOr<PgResult> PgConnection::Query(std::string_view sql,
                                             std::initializer_list<PgParam> params) {
  return Run(sql, params.begin(), params.size());
}

absl::StatusOr<PgResult> PgConnection::Query(std::string_view sql,
                                             const std::vector<PgParam>& params) {
  return Run(sql, params.data(), params.size());
}

absl::StatusOr<std::string> PgConnection::Prepared(std::string_view sql, size_t n) {
  std::string key(sql);
  auto it = prepared_.find(key);
  if (it != prepared_.end()) return it->second;
  std::string name = absl::StrCat("nf_", prepared_.size());
  PGresult* r = PQprepare(conn_, name.c_str(), key.c_str(), static_cast<int>(n), nullptr);
  if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) return Fail(r, "prepare");
  PQclear(r);
  prepared_.emplace(std::move(key), name);
  return name;
}

PgConnection::Bound PgConnection::Bind(const PgParam* params, size_t n) {
  Bound b;
  b.values.resize(n);
  b.lengths.resize(n);
  b.formats.resize(n);
  for (size_t i = 0; i < n; ++i) {
    b.values[i] = params[i].value_.data();
    b.lengths[i] = static_cast<int>(params[i].value_.size());
    b.formats[i] = params[i].binary_ ? 1 : 0;
  }
  return b;
}

absl::StatusOr<PgResult> PgConnection::Run(std::string_view sql, const PgParam* params,
                                           size_t n) {
  auto name = Prepared(sql, n);
  if (!name.ok()) return name.status();
  Bound b = Bind(params, n);
  PGresult* r = PQexecPrepared(conn_, name->c_str(), static_cast<int>(n), b.values.data(),
                               b.lengths.data(), b.formats.data(), /*resultFormat=*/0);
  auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Fail(r, "query");
  sqlstate_.clear();
  return PgResult(r);
}

absl::StatusOr<std::vector<PgResult>> PgConnection::QueryEach(
    std::string_view sql, const std::vector<std::vector<PgParam>>& param_lists) {
  std::vector<PgResult> out;
  out.reserve(param_lists.size());
  if (param_lists.empty()) return out;
  auto name = Prepared(sql, param_lists.front().size());
  if (!name.ok()) return name.status();
  // Chunks keep what is in flight small, so neither side ever blocks on a full socket
  // buffer while the other waits for it (libpq's blocking mode would deadlock then).
  constexpr size_t kChunk = 64;
  for (size_t start = 0; start < param_lists.size(); start += kChunk) {
    size_t end = std::min(param_lists.size(), start + kChunk);
    if (PQenterPipelineMode(conn_) != 1) return Fail(nullptr, "pipeline");
    bool sent = true;
    for (size_t i = start; i < end && sent; ++i) {
      Bound b = Bind(param_lists[i].data(), param_lists[i].size());
      sent = PQsendQueryPrepared(conn_, name->c_str(), static_cast<int>(b.values.size()),
                                 b.values.data(), b.lengths.data(), b.formats.data(), 0) == 1;
    }
    if (!sent || PQpipelineSync(conn_) != 1) {
      absl::Status s = Fail(nullptr, "pipeline send");
      (void)PQexitPipelineMode(conn_);
      return s;
    }
    // Per statement: its result, then a null. The first error wins; the server skips
    // the statements after it (PIPELINE_ABORTED) up to the sync, which comes last.
    absl::Status failed;
    for (size_t i = start; i < end; ++i) {
      PGresult* r = PQgetResult(conn_);
      auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
      if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        out.emplace_back(r);
      } else if (failed.ok() && st != PGRES_PIPELINE_ABORTED) {
        failed = Fail(r, "query");  // takes r
      } else {
        PQclear(r);
      }
      if (!r) break;  // the connection is gone
      while (PGresult* extra = PQgetResult(conn_)) PQclear(extra);
    }
    std::string state = sqlstate_;
    while (PGresult* r = PQgetResult(conn_)) {
      bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
      PQclear(r);
      if (sync) break;
    }
    (void)PQexitPipelineMode(conn_);
    if (!failed.ok()) {
      sqlstate_ = state;
      return failed;
    }
  }
  sqlstate_.clear();
  return out;
}

absl::Status PgTransaction(PgConnection& conn, const std::function<absl::Status()>& body,
                           int attempts) {
  absl::Status last;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    if (auto s = conn.Exec("BEGIN"); !s.ok()) return s;
    absl::Status s = body();
    if (s.ok()) s = conn.Exec("COMMIT");
    if (s.ok()) return s;
    std::string state = conn.sqlstate();
    if (!conn.broken()) (void)conn.Exec("ROLLBACK");
    if (state != "40001" && state != "40P01") return s;
    last = s;
  }
  return last;
}

PgPool::Lease::~Lease() {
  if (pool_ && conn_) pool_->Return(std::move(conn_));
}

absl::StatusOr<PgPool::Lease> PgPool::Acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !idle_.empty() || open_ < size_; });
  while (!idle_.empty()) {
    auto conn = std::move(idle_.back());
    idle_.pop_back();
    if (conn->Alive()) return Lease(this, std::move(conn));
    --open_;  // gone while idle: open a new one instead
  }
  ++open_;
  lock.unlock();
  auto conn = PgConnection::Open(conninfo_, synchronous_commit_);
  if (!conn.ok()) {
    lock.lock();
    --open_;
    cv_.notify_one();
    return conn.status();
  }
  return Lease(this, std::move(*conn));
}

void PgPool::Return(std::unique_ptr<PgConnection> conn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn->broken()) {
      --open_;
      conn.reset();
    } else {
      idle_.push_back(std::move(conn));
    }
  }
  cv_.notify_one();
}

}  // namespace nexusflow

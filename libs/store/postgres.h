#pragma once
// A thin layer over libpq, the PostgreSQL counterpart of sqlite.h: a connection with
// parameterised statements (each prepared once per connection), transactions retried on
// serialization failure and deadlock, and a small pool so that threads share a server
// without sharing a connection. Connections commit synchronously
// (`synchronous_commit = on`: an acknowledged commit is on the server's disk) unless
// opened for state that may be lost in a server crash.
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;

namespace nexusflow {

// `postgresql://…` or `postgres://…`: a store setting that names a PostgreSQL server
// (anything else names an SQLite file).
bool IsPostgresUrl(std::string_view setting);

// One statement parameter: numbers and text travel as text, bytes as binary.
class PgParam {
 public:
  PgParam(int64_t v);  // NOLINT: implicit, so a call reads Query(sql, {id, amount})
  PgParam(int v) : PgParam(static_cast<int64_t>(v)) {}  // NOLINT
  PgParam(std::string_view v) : value_(v) {}             // NOLINT
  PgParam(const std::string& v) : value_(v) {}           // NOLINT
  PgParam(const char* v) : value_(v) {}                  // NOLINT
  static PgParam Bytes(std::string_view v);

 private:
  friend class PgConnection;
  PgParam() = default;
  std::string value_;
  bool binary_ = false;
};

class PgResult {
 public:
  explicit PgResult(PGresult* r);
  PgResult(PgResult&&) noexcept = default;
  PgResult& operator=(PgResult&&) noexcept = default;
  ~PgResult();

  int rows() const;
  bool IsNull(int row, int col) const;
  std::string Text(int row, int col) const;
  int64_t Int(int row, int col) const;  // NULL → 0
  std::string Bytes(int row, int col) const;  // a bytea column, decoded

 private:
  struct Clear {
    void operator()(PGresult* r) const;
  };
  std::unique_ptr<PGresult, Clear> r_;
};

class PgConnection {
 public:
  // `conninfo`: a URL (postgresql://user@host:port/db?…) or libpq keywords
  // (host=… dbname=…); PGPASSWORD and the other libpq variables fill what it leaves out.
  // `synchronous_commit` false: a commit returns before the WAL reaches the disk (it is
  // atomic and visible at once; a server crash may lose the last fraction of a second).
  static absl::StatusOr<std::unique_ptr<PgConnection>> Open(const std::string& conninfo,
                                                           bool synchronous_commit = true);
  PgConnection(const PgConnection&) = delete;
  ~PgConnection();

  // Simple-query protocol: one or more statements without parameters.
  absl::Status Exec(std::string_view sql);
  // One statement, prepared on this connection the first time it is seen.
  absl::StatusOr<PgResult> Query(std::string_view sql, std::initializer_list<PgParam> params = {});
  absl::StatusOr<PgResult> Query(std::string_view sql, const std::vector<PgParam>& params);
  // The statement once per parameter list, pipelined (libpq pipeline mode: a round trip
  // per 64 statements, not per statement); results in order. The first failure fails
  // the call, and the server skips what follows it. Inside a transaction it stays one.
  absl::StatusOr<std::vector<PgResult>> QueryEach(
      std::string_view sql, const std::vector<std::vector<PgParam>>& param_lists);
  // SQLSTATE of the last statement that failed ("" when the last one succeeded):
  // "23505" unique violation, "40001" serialization failure, "40P01" deadlock.
  const std::string& sqlstate() const { return sqlstate_; }
  // The connection is gone (server restart, network); the pool replaces it.
  bool broken() const;
  // Reads what the server sent while the connection was idle (without blocking): false
  // when it has gone meanwhile (a restarted server closes its sessions).
  bool Alive();

 private:
  explicit PgConnection(PGconn* conn) : conn_(conn) {}
  absl::Status Fail(PGresult* r, std::string_view what);
  // The name of `sql` prepared on this connection (prepared on first use).
  absl::StatusOr<std::string> Prepared(std::string_view sql, size_t n);
  struct Bound {  // libpq's parallel arrays for one parameter list
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
  };
  static Bound Bind(const PgParam* params, size_t n);
  absl::StatusOr<PgResult> Run(std::string_view sql, const PgParam* params, size_t n);

  PGconn* conn_;
  std::unordered_map<std::string, std::string> prepared_;  // SQL → statement name
  std::string sqlstate_;
  bool closing_ = false;  // the server said it ends this session
};

// Runs `body` between BEGIN and COMMIT on `conn`, rolling back when it fails. A
// serialization failure or deadlock (the server chose this transaction to abort) reruns
// the whole body, up to `attempts` times, so `body` must only act through `conn`.
absl::Status PgTransaction(PgConnection& conn, const std::function<absl::Status()>& body,
                           int attempts = 10);

// Up to `size` connections to one server, opened on demand; a connection found broken
// is dropped and a new one opened by the next caller.
class PgPool {
 public:
  class Lease {
   public:
    Lease(PgPool* pool, std::unique_ptr<PgConnection> conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&&) noexcept = default;
    ~Lease();
    PgConnection& operator*() { return *conn_; }
    PgConnection* operator->() { return conn_.get(); }

   private:
    PgPool* pool_;
    std::unique_ptr<PgConnection> conn_;
  };

  PgPool(std::string conninfo, int size, bool synchronous_commit = true)
      : conninfo_(std::move(conninfo)), size_(size), synchronous_commit_(synchronous_commit) {}
  // Waits for a free connection; UNAVAILABLE when a new one cannot be opened.
  absl::StatusOr<Lease> Acquire();

 private:
  void Return(std::unique_ptr<PgConnection> conn);

  const std::string conninfo_;
  const int size_;
  const bool synchronous_commit_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<PgConnection>> idle_;
  int open_ = 0;  // idle and leased
};

}  // namespace nexusflow

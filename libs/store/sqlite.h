#pragma once
// A thin RAII layer over SQLite: a connection opened in WAL mode with a busy timeout,
// and prepared statements with typed binds and columns. Not thread-safe by itself: the
// stores built on it serialise access with their own mutex.
#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nexusflow {

class SqliteStatement {
 public:
  // `cached`: the statement belongs to the connection's cache and is only reset here.
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt, bool cached = false)
      : db_(db), stmt_(stmt), cached_(cached) {}
  SqliteStatement(SqliteStatement&& o) noexcept : db_(o.db_), stmt_(o.stmt_), cached_(o.cached_) {
    o.stmt_ = nullptr;
  }
  SqliteStatement(const SqliteStatement&) = delete;
  ~SqliteStatement() {
    if (!stmt_) return;
    if (cached_) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    } else {
      sqlite3_finalize(stmt_);
    }
  }

  SqliteStatement& Bind(int index, int64_t v);
  SqliteStatement& Bind(int index, std::string_view v);
  SqliteStatement& BindBlob(int index, std::string_view v);
  SqliteStatement& BindNull(int index);

  // Next row: true when a row is ready, false when done.
  absl::StatusOr<bool> Step();
  // Runs to completion.
  absl::Status Run();

  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) const;
  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  bool cached_;
};

// How a commit reaches the disk in WAL mode. kFull syncs the WAL at every commit, so an
// acknowledged transaction survives a power loss (money, keys); kNormal syncs only at
// checkpoints, so the last commits may roll back on power loss (not on a process crash).
enum class SqliteSync { kFull, kNormal };

// How long a connection waits for another's lock before a call answers busy.
inline constexpr int kBusyTimeoutMs = 5000;

class SqliteDb {
 public:
  // Opens (creating) `path`; ":memory:" for a private in-memory database. Creates the
  // parent directory when missing.
  // `caller_serializes`: every use of the connection is under one lock of the caller's,
  // so SQLite's own per-call mutex is left out.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path,
                                                        SqliteSync sync = SqliteSync::kFull,
                                                        bool caller_serializes = false);
  ~SqliteDb();

  absl::Status Exec(std::string_view sql);
  // One statement without results, prepared once and reused (BEGIN, COMMIT, SAVEPOINT…
  // on a hot path, where Exec would parse the text every time).
  absl::Status Run(std::string_view sql);
  // Prepared once per connection and reused (callers serialise access to the
  // connection, and a statement is in use by one caller at a time).
  absl::StatusOr<SqliteStatement> Prepare(std::string_view sql);
  int64_t Changes() const { return sqlite3_changes64(db_); }
  // How long a call waits for another connection's lock before answering busy
  // (kBusyTimeoutMs from Open; 0: never waits).
  void SetBusyTimeout(int ms) { sqlite3_busy_timeout(db_, ms); }

  // One WAL checkpoint (sqlite3_wal_checkpoint_v2; with kRestart, once every frame is in
  // the database the next write starts the WAL over). The frames the WAL held; busy
  // (another connection's lock) is not an error: it copied what it could.
  enum class CheckpointMode { kPassive = SQLITE_CHECKPOINT_PASSIVE, kRestart = SQLITE_CHECKPOINT_RESTART };
  absl::StatusOr<int64_t> Checkpoint(CheckpointMode mode);

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
};

// The SQLite error as a status: busy/locked → UNAVAILABLE, constraint → ALREADY_EXISTS.
absl::Status SqliteError(sqlite3* db, int rc, std::string_view what);

}  // namespace nexusflow

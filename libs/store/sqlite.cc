#include "libs/store/sqlite.h"

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace nexusflow {

absl::Status SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string msg = absl::StrCat(std::string(what), ": ", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return absl::UnavailableError(msg);
    case SQLITE_CONSTRAINT: return absl::AlreadyExistsError(msg);
    default: return absl::InternalError(msg);
  }
}

SqliteStatement& SqliteStatement::Bind(int index, int64_t v) {
  sqlite3_bind_int64(stmt_, index, v);
  return *this;
}

SqliteStatement& SqliteStatement::Bind(int index, std::string_view v) {
  sqlite3_bind_text(stmt_, index, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}

SqliteStatement& SqliteStatement::BindBlob(int index, std::string_view v) {
  sqlite3_bind_blob(stmt_, index, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}

SqliteStatement& SqliteStatement::BindNull(int index) {
  sqlite3_bind_null(stmt_, index);
  return *this;
}

absl::StatusOr<bool> SqliteStatement::Step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(db_, rc, "sqlite step");
}

absl::Status SqliteStatement::Run() {
  while (true) {
    auto row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

std::string SqliteStatement::Text(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
}

absl::StatusOr<std::unique_ptr<SqliteDb>> SqliteDb::Open(const std::string& path,
                                                        SqliteSync sync, bool caller_serializes) {
  if (path != ":memory:") {
    std::error_code ec;
    auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                               (caller_serializes ? SQLITE_OPEN_NOMUTEX : SQLITE_OPEN_FULLMUTEX),
                           nullptr);
  if (rc != SQLITE_OK) {
    absl::Status s = SqliteError(db, rc, absl::StrCat("open ", path));
    sqlite3_close(db);
    return s;
  }
  std::unique_ptr<SqliteDb> out(new SqliteDb(db));
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  if (path != ":memory:") {
    if (auto s = out->Exec("PRAGMA journal_mode=WAL"); !s.ok()) return s;
    if (auto s = out->Exec(sync == SqliteSync::kFull ? "PRAGMA synchronous=FULL"
                                                     : "PRAGMA synchronous=NORMAL");
        !s.ok())
      return s;
  }
  if (auto s = out->Exec("PRAGMA foreign_keys=ON"); !s.ok()) return s;
  return out;
}

absl::StatusOr<int64_t> SqliteDb::Checkpoint(CheckpointMode mode) {
  int log = 0, copied = 0;
  int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, static_cast<int>(mode), &log, &copied);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) return SqliteError(db_, rc, "wal checkpoint");
  return log;
}

SqliteDb::~SqliteDb() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  sqlite3_close(db_);
}

absl::Status SqliteDb::Exec(std::string_view sql) {
  char* err = nullptr;
  std::string s(sql);
  int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    absl::Status st = SqliteError(db_, rc, absl::StrCat("exec: ", err ? err : ""));
    sqlite3_free(err);
    return st;
  }
  return absl::OkStatus();
}

absl::Status SqliteDb::Run(std::string_view sql) {
  auto st = Prepare(sql);
  if (!st.ok()) return st.status();
  return st->Run();
}

absl::StatusOr<SqliteStatement> SqliteDb::Prepare(std::string_view sql) {
  std::string key(sql);
  if (auto it = cache_.find(key); it != cache_.end()) return SqliteStatement(db_, it->second, true);
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db_, rc, absl::StrCat("prepare: ", std::string(sql)));
  cache_.emplace(std::move(key), stmt);
  return SqliteStatement(db_, stmt, true);
}

}  // namespace nexusflow

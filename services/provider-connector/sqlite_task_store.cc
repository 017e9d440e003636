// The embedded TaskStore on SQLite. Each transition is a conditional UPDATE (status and, for
// a worker, lease owner in its WHERE clause) inside a BEGIN IMMEDIATE transaction, so the
// write lock is held from the check to the write: two stores on one file (two processes)
// serialise on it and a claim is never handed out twice. synchronous=FULL: a transition
// that returned is on disk, also after a power loss.
#include <charconv>
#include <mutex>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "libs/common/ids.h"
#include "libs/store/sqlite.h"
#include "services/provider-connector/task_store.h"

namespace nexusflow::connector {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS tasks (
  id TEXT PRIMARY KEY,                       -- task_…
  account_id TEXT NOT NULL,
  key_id TEXT NOT NULL,
  model TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('image', 'video')),
  request TEXT NOT NULL,                     -- canonical parameters, JSON
  status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
  upstream_job_id TEXT NOT NULL DEFAULT '',
  deployment TEXT NOT NULL DEFAULT '',
  result TEXT NOT NULL DEFAULT '',           -- JSON once succeeded
  error_code TEXT NOT NULL DEFAULT '',
  error_message TEXT NOT NULL DEFAULT '',
  usage_images INTEGER NOT NULL DEFAULT 0,
  usage_seconds INTEGER NOT NULL DEFAULT 0,  -- seconds of video
  hold_id TEXT NOT NULL DEFAULT '',
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_us INTEGER NOT NULL,               -- unix microseconds
  updated_us INTEGER NOT NULL,
  lease_owner TEXT NOT NULL DEFAULT '',      -- '' when no worker holds it
  lease_expires_us INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_by_account ON tasks(account_id, created_us DESC, id DESC);
-- Only live tasks are claimable: the claim scans this small index, oldest first.
CREATE INDEX IF NOT EXISTS live_tasks ON tasks(created_us, id) WHERE status IN ('queued', 'running');
)sql";

constexpr char kColumns[] =
    "id, account_id, key_id, model, kind, request, status, upstream_job_id, deployment, result, "
    "error_code, error_message, usage_images, usage_seconds, hold_id, cancel_requested, "
    "created_us, "
    "updated_us, lease_owner, lease_expires_us, attempts";

constexpr int kMaxPage = 100;

int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }

// This Abseil's string_view is its own type, not std::string_view.
absl::string_view Abseil(std::string_view s) { return {s.data(), s.size()}; }

Task ReadTask(const SqliteStatement& row) {
  Task task;
  task.id = row.Text(0);
  task.account_id = row.Text(1);
  task.key_id = row.Text(2);
  task.model = row.Text(3);
  task.kind = ParseTaskKind(row.Text(4)).value_or(TaskKind::kImage);
  task.request = row.Text(5);
  task.status = ParseTaskStatus(row.Text(6)).value_or(TaskStatus::kFailed);
  task.upstream_job_id = row.Text(7);
  task.deployment = row.Text(8);
  task.result = row.Text(9);
  task.error_code = row.Text(10);
  task.error_message = row.Text(11);
  task.usage.images = row.Int(12);
  task.usage.seconds = row.Int(13);
  task.hold_id = row.Text(14);
  task.cancel_requested = row.Int(15) != 0;
  task.created_at = absl::FromUnixMicros(row.Int(16));
  task.updated_at = absl::FromUnixMicros(row.Int(17));
  task.lease_owner = row.Text(18);
  task.lease_expires_at = absl::FromUnixMicros(row.Int(19));
  task.attempts = row.Int(20);
  return task;
}

// BEGIN IMMEDIATE: the write lock from the first read, so a check and its write are one step.
class Transaction {
 public:
  explicit Transaction(SqliteDb& db) : db_(db) { status_ = db_.Exec("BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (status_.ok() && !done_) (void)db_.Exec("ROLLBACK");
  }
  const absl::Status& status() const { return status_; }
  absl::Status Commit() {
    done_ = true;
    return db_.Exec("COMMIT");
  }

 private:
  SqliteDb& db_;
  absl::Status status_;
  bool done_ = false;
};

std::string EncodeCursor(const Task& last) {
  return absl::WebSafeBase64Escape(absl::StrCat(Micros(last.created_at), ":", last.id));
}

bool DecodeCursor(std::string_view cursor, int64_t& created_us, std::string& id) {
  std::string raw;
  if (!absl::WebSafeBase64Unescape(Abseil(cursor), &raw)) return false;
  const size_t colon = raw.find(':');
  if (colon == std::string::npos || colon + 1 == raw.size()) return false;
  auto [end, ec] = std::from_chars(raw.data(), raw.data() + colon, created_us);
  if (ec != std::errc() || end != raw.data() + colon) return false;
  id = raw.substr(colon + 1);
  return true;
}

class SqliteTaskStore final : public TaskStore {
 public:
  explicit SqliteTaskStore(std::unique_ptr<SqliteDb> db) : db_(std::move(db)) {}

  absl::StatusOr<Task> Create(const NewTask& fresh, absl::Time now) override {
    if (fresh.account_id.empty() || fresh.model.empty()) {
      return absl::InvalidArgumentError("a task needs an account and a model");
    }
    const std::string id = fresh.id.empty() ? NewId("task_") : fresh.id;
    std::lock_guard lock(mu_);
    auto insert = db_->Prepare(
        "INSERT INTO tasks (id, account_id, key_id, model, kind, request, status, hold_id, "
        "created_us, "
        "updated_us) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)");
    if (!insert.ok()) return insert.status();
    insert->Bind(1, id)
        .Bind(2, fresh.account_id)
        .Bind(3, fresh.key_id)
        .Bind(4, fresh.model)
        .Bind(5, TaskKindName(fresh.kind))
        .Bind(6, fresh.request)
        .Bind(7, fresh.hold_id)
        .Bind(8, Micros(now))
        .Bind(9, Micros(now));
    if (absl::Status s = insert->Run(); !s.ok()) {
      if (absl::IsAlreadyExists(s))
        return absl::AlreadyExistsError(absl::StrCat("task ", id, " already exists"));
      return s;
    }
    return LoadLocked(id);
  }

  absl::StatusOr<Task> Get(std::string_view account_id, std::string_view task_id) override {
    std::lock_guard lock(mu_);
    absl::StatusOr<Task> task = LoadLocked(task_id);
    if (task.ok() && task->account_id != account_id) return NotFound(task_id);
    return task;
  }

  absl::StatusOr<TaskPage> List(std::string_view account_id, int limit,
                                std::string_view cursor) override {
    if (limit < 1 || limit > kMaxPage) {
      return absl::InvalidArgumentError(absl::StrCat("limit must be between 1 and ", kMaxPage));
    }
    int64_t after_us = INT64_MAX;
    std::string after_id;
    if (!cursor.empty() && !DecodeCursor(cursor, after_us, after_id)) {
      return absl::InvalidArgumentError("invalid cursor");
    }
    std::lock_guard lock(mu_);
    auto select = db_->Prepare(absl::StrCat(
        "SELECT ", kColumns,
        " FROM tasks WHERE account_id = ? AND (created_us < ? OR (created_us = ? AND id < ?)) "
        "ORDER BY created_us DESC, id DESC LIMIT ?"));
    if (!select.ok()) return select.status();
    select->Bind(1, account_id).Bind(2, after_us).Bind(3, after_us).Bind(4, after_id);
    select->Bind(5, int64_t{limit} + 1);
    TaskPage page;
    for (;;) {
      absl::StatusOr<bool> row = select->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      page.tasks.push_back(ReadTask(*select));
    }
    if (page.tasks.size() > static_cast<size_t>(limit)) {
      page.tasks.pop_back();
      page.next_cursor = EncodeCursor(page.tasks.back());
    }
    return page;
  }

  absl::StatusOr<std::optional<Task>> ClaimNext(std::string_view worker, absl::Duration lease,
                                                absl::Time now, int max_per_key) override {
    if (worker.empty()) return absl::InvalidArgumentError("a worker needs a name");
    std::lock_guard lock(mu_);
    Transaction tx(*db_);
    if (!tx.status().ok()) return tx.status();
    std::string id;
    {
      auto candidate = db_->Prepare(
          "SELECT id FROM tasks t WHERE status IN ('queued', 'running') AND "
          "(lease_owner = '' OR lease_expires_us <= ?1) AND (?2 <= 0 OR "
          "(SELECT COUNT(*) FROM tasks u WHERE u.key_id = t.key_id AND "
          "u.status IN ('queued', 'running') AND u.lease_owner != '' AND "
          "u.lease_expires_us > ?1) < ?2) ORDER BY created_us, id LIMIT 1");
      if (!candidate.ok()) return candidate.status();
      candidate->Bind(1, Micros(now)).Bind(2, static_cast<int64_t>(max_per_key));
      absl::StatusOr<bool> row = candidate->Step();
      if (!row.ok()) return row.status();
      if (!*row) return std::optional<Task>();
      id = candidate->Text(0);
    }
    {
      auto claim = db_->Prepare(
          "UPDATE tasks SET lease_owner = ?, lease_expires_us = ?, attempts = attempts + 1, "
          "updated_us = ? "
          "WHERE id = ? AND status IN ('queued', 'running') AND (lease_owner = '' OR "
          "lease_expires_us <= ?)");
      if (!claim.ok()) return claim.status();
      claim->Bind(1, worker)
          .Bind(2, Micros(now + lease))
          .Bind(3, Micros(now))
          .Bind(4, id)
          .Bind(5, Micros(now));
      if (absl::Status s = claim->Run(); !s.ok()) return s;
      if (db_->Changes() != 1)
        return absl::InternalError("claimed task changed under the write lock");
    }
    absl::StatusOr<Task> task = LoadLocked(id);
    if (!task.ok()) return task.status();
    if (absl::Status s = tx.Commit(); !s.ok()) return s;
    return std::optional<Task>(std::move(*task));
  }

  absl::StatusOr<Task> RenewLease(std::string_view task_id, std::string_view worker,
                                  absl::Duration lease, absl::Time now) override {
    std::lock_guard lock(mu_);
    Transaction tx(*db_);
    if (!tx.status().ok()) return tx.status();
    auto renew = db_->Prepare(
        "UPDATE tasks SET lease_expires_us = ?, updated_us = ? "
        "WHERE id = ? AND lease_owner = ? AND status IN ('queued', 'running')");
    if (!renew.ok()) return renew.status();
    renew->Bind(1, Micros(now + lease)).Bind(2, Micros(now)).Bind(3, task_id).Bind(4, worker);
    return ApplyOrExplain(tx, *renew, task_id, worker);
  }

  absl::StatusOr<Task> RecordSubmitted(std::string_view task_id, std::string_view worker,
                                       std::string_view upstream_job_id,
                                       std::string_view deployment, absl::Time now) override {
    if (upstream_job_id.empty())
      return absl::InvalidArgumentError("an upstream job id is required");
    std::lock_guard lock(mu_);
    Transaction tx(*db_);
    if (!tx.status().ok()) return tx.status();
    auto submitted = db_->Prepare(
        "UPDATE tasks SET status = 'running', upstream_job_id = ?, deployment = ?, updated_us = ? "
        "WHERE id = ? AND lease_owner = ? AND status = 'queued'");
    if (!submitted.ok()) return submitted.status();
    submitted->Bind(1, upstream_job_id)
        .Bind(2, deployment)
        .Bind(3, Micros(now))
        .Bind(4, task_id)
        .Bind(5, worker);
    return ApplyOrExplain(tx, *submitted, task_id, worker);
  }

  absl::StatusOr<TaskTransition> Finish(std::string_view task_id, std::string_view worker,
                                        const TaskOutcome& outcome, absl::Time now) override {
    if (outcome.status != TaskStatus::kSucceeded && outcome.status != TaskStatus::kFailed) {
      return absl::InvalidArgumentError("a task finishes succeeded or failed");
    }
    std::lock_guard lock(mu_);
    Transaction tx(*db_);
    if (!tx.status().ok()) return tx.status();
    auto finish = db_->Prepare(
        "UPDATE tasks SET status = ?, result = ?, error_code = ?, error_message = ?, usage_images "
        "= ?, "
        "usage_seconds = ?, lease_owner = '', lease_expires_us = 0, updated_us = ? "
        "WHERE id = ? AND lease_owner = ? AND status IN ('queued', 'running')");
    if (!finish.ok()) return finish.status();
    finish->Bind(1, TaskStatusName(outcome.status))
        .Bind(2, outcome.result)
        .Bind(3, outcome.error_code)
        .Bind(4, outcome.error_message)
        .Bind(5, outcome.usage.images)
        .Bind(6, outcome.usage.seconds)
        .Bind(7, Micros(now))
        .Bind(8, task_id)
        .Bind(9, worker);
    return EndOrReport(tx, *finish, task_id, worker);
  }

  absl::StatusOr<TaskTransition> RequestCancel(std::string_view account_id,
                                               std::string_view task_id, absl::Time now) override {
    std::lock_guard lock(mu_);
    Transaction tx(*db_);
    if (!tx.status().ok()) return tx.status();
    absl::StatusOr<Task> before = LoadLocked(task_id);
    if (!before.ok()) return before.status();
    if (before->account_id != account_id) return NotFound(task_id);
    if (IsFinal(before->status)) return TaskTransition{std::move(*before), false};
    bool applied = false;
    {
      // Nobody works on it: it ends here.
      auto cancel = db_->Prepare(
          "UPDATE tasks SET status = 'canceled', cancel_requested = 1, lease_owner = '', "
          "lease_expires_us = 0, "
          "updated_us = ? WHERE id = ? AND status = 'queued' AND (lease_owner = '' OR "
          "lease_expires_us <= ?)");
      if (!cancel.ok()) return cancel.status();
      cancel->Bind(1, Micros(now)).Bind(2, task_id).Bind(3, Micros(now));
      if (absl::Status s = cancel->Run(); !s.ok()) return s;
      applied = db_->Changes() == 1;
    }
    if (!applied) {
      // A worker holds it (or the task runs upstream): that worker ends it.
      auto mark = db_->Prepare(
          "UPDATE tasks SET cancel_requested = 1, updated_us = ? WHERE id = ? AND status IN "
          "('queued', 'running')");
      if (!mark.ok()) return mark.status();
      mark->Bind(1, Micros(now)).Bind(2, task_id);
      if (absl::Status s = mark->Run(); !s.ok()) return s;
    }
    absl::StatusOr<Task> after = LoadLocked(task_id);
    if (!after.ok()) return after.status();
    if (absl::Status s = tx.Commit(); !s.ok()) return s;
    return TaskTransition{std::move(*after), applied};
  }

  absl::StatusOr<TaskTransition> Cancel(std::string_view task_id, std::string_view worker,
                                        absl::Time now) override {
    std::lock_guard lock(mu_);
    Transaction tx(*db_);
    if (!tx.status().ok()) return tx.status();
    auto cancel = db_->Prepare(
        "UPDATE tasks SET status = 'canceled', lease_owner = '', lease_expires_us = 0, updated_us "
        "= ? "
        "WHERE id = ? AND lease_owner = ? AND status IN ('queued', 'running')");
    if (!cancel.ok()) return cancel.status();
    cancel->Bind(1, Micros(now)).Bind(2, task_id).Bind(3, worker);
    return EndOrReport(tx, *cancel, task_id, worker);
  }

  absl::StatusOr<TaskQueueStats> QueueStats() override {
    std::lock_guard lock(mu_);
    auto select = db_->Prepare(
        "SELECT status, COUNT(*), MIN(created_us) FROM tasks WHERE status IN ('queued', 'running') "
        "GROUP BY status");
    if (!select.ok()) return select.status();
    TaskQueueStats stats;
    for (;;) {
      absl::StatusOr<bool> row = select->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      if (select->Text(0) == "queued") {
        stats.queued = select->Int(1);
        stats.oldest_queued_at = absl::FromUnixMicros(select->Int(2));
      } else {
        stats.running = select->Int(1);
      }
    }
    return stats;
  }

 private:
  static absl::Status NotFound(std::string_view task_id) {
    return absl::NotFoundError(absl::StrCat("task ", Abseil(task_id), " not found"));
  }

  absl::StatusOr<Task> LoadLocked(std::string_view task_id) {
    auto select = db_->Prepare(absl::StrCat("SELECT ", kColumns, " FROM tasks WHERE id = ?"));
    if (!select.ok()) return select.status();
    select->Bind(1, task_id);
    absl::StatusOr<bool> row = select->Step();
    if (!row.ok()) return row.status();
    if (!*row) return NotFound(task_id);
    return ReadTask(*select);
  }

  // Why a worker's conditional update changed nothing.
  absl::Status Explain(std::string_view task_id, std::string_view worker) {
    absl::StatusOr<Task> task = LoadLocked(task_id);
    if (!task.ok()) return task.status();
    if (IsFinal(task->status)) {
      return absl::FailedPreconditionError(absl::StrCat("task ", Abseil(task_id), " is already ",
                                                        Abseil(TaskStatusName(task->status))));
    }
    if (task->lease_owner != worker) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker ", Abseil(worker), " does not hold task ", Abseil(task_id)));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "task ", Abseil(task_id), " is ", Abseil(TaskStatusName(task->status)), ", not queued"));
  }

  // Runs a worker's update; the task after it, or why it did not apply.
  absl::StatusOr<Task> ApplyOrExplain(Transaction& tx, SqliteStatement& update,
                                      std::string_view task_id, std::string_view worker) {
    if (absl::Status s = update.Run(); !s.ok()) return s;
    if (db_->Changes() != 1) return Explain(task_id, worker);
    absl::StatusOr<Task> task = LoadLocked(task_id);
    if (!task.ok()) return task.status();
    if (absl::Status s = tx.Commit(); !s.ok()) return s;
    return task;
  }

  // Runs an update that ends the task: applied once; a final task is reported unchanged.
  absl::StatusOr<TaskTransition> EndOrReport(Transaction& tx, SqliteStatement& update,
                                             std::string_view task_id, std::string_view worker) {
    if (absl::Status s = update.Run(); !s.ok()) return s;
    const bool applied = db_->Changes() == 1;
    absl::StatusOr<Task> task = LoadLocked(task_id);
    if (!task.ok()) return task.status();
    if (!applied && !IsFinal(task->status)) return Explain(task_id, worker);
    if (applied) {
      if (absl::Status s = tx.Commit(); !s.ok()) return s;
    }
    return TaskTransition{std::move(*task), applied};
  }

  std::mutex mu_;  // one connection, used by one caller at a time
  std::unique_ptr<SqliteDb> db_;
};

}  // namespace

std::string_view TaskKindName(TaskKind kind) {
  return kind == TaskKind::kVideo ? "video" : "image";
}

std::string_view TaskStatusName(TaskStatus status) {
  switch (status) {
    case TaskStatus::kQueued:
      return "queued";
    case TaskStatus::kRunning:
      return "running";
    case TaskStatus::kSucceeded:
      return "succeeded";
    case TaskStatus::kFailed:
      return "failed";
    case TaskStatus::kCanceled:
      return "canceled";
  }
  return "failed";
}

std::optional<TaskKind> ParseTaskKind(std::string_view name) {
  if (name == "image") return TaskKind::kImage;
  if (name == "video") return TaskKind::kVideo;
  return std::nullopt;
}

std::optional<TaskStatus> ParseTaskStatus(std::string_view name) {
  for (TaskStatus status : {TaskStatus::kQueued, TaskStatus::kRunning, TaskStatus::kSucceeded,
                            TaskStatus::kFailed, TaskStatus::kCanceled}) {
    if (TaskStatusName(status) == name) return status;
  }
  return std::nullopt;
}

bool IsFinal(TaskStatus status) {
  return status == TaskStatus::kSucceeded || status == TaskStatus::kFailed ||
         status == TaskStatus::kCanceled;
}

absl::StatusOr<std::unique_ptr<TaskStore>> OpenSqliteTaskStore(const std::string& path) {
  auto db = SqliteDb::Open(path);
  if (!db.ok()) return db.status();
  if (path != ":memory:") {
    if (absl::Status s = (*db)->Exec("PRAGMA synchronous=FULL"); !s.ok()) return s;
  }
  if (absl::Status s = (*db)->Exec(kSchema); !s.ok()) return s;
  return std::unique_ptr<TaskStore>(new SqliteTaskStore(std::move(*db)));
}

}  // namespace nexusflow::connector

// The scale-out TaskStore on PostgreSQL, shared by any number of connector replicas.
//
// Every transition is one conditional UPDATE … RETURNING whose WHERE clause names the
// current status and, for a worker's transitions, the lease owner: of two replicas racing
// one transition, the second waits on the row lock, re-checks the condition against the
// row the first committed, and changes nothing. Commits are synchronous (the pool's
// connections run with synchronous_commit = on), so an acknowledged transition survives a
// server crash.
//
// Claims. ClaimNext picks its task with `SELECT … ORDER BY created_us, id LIMIT 1 FOR
// UPDATE SKIP LOCKED` (in the UPDATE's WHERE, or ahead of it in the same transaction): the
// row is locked from the pick to the write, and a concurrent claimer skips it and takes
// the next one, so no task is handed to two workers and claimers do not queue behind each
// other.
//
// The per-key cap. Counting a key's live leases and taking one more must be one step, or
// two claimers could each count one lease under a cap of two and both claim. A claim with
// max_per_key > 0 therefore runs as one transaction: pick a candidate (its key below the
// cap as far as the committed rows show, row locked), take a transaction-scoped advisory
// lock on the hash of the candidate's key, then claim it with an UPDATE whose condition
// counts the key's live leases again. That UPDATE is a new statement with a new snapshot
// (READ COMMITTED), taken after the lock was granted; the lock is released only after the
// previous holder's commit is visible, so it sees every claim of that key made under the
// lock. When the key turned out full, the transaction ends (releasing both locks) and the
// claim tries again without that key. A transaction holds at most one advisory lock and
// waits on nothing else, so claimers cannot deadlock. Claims of different keys (unless
// their hashes collide) do not wait for each other. Claims with max_per_key <= 0 take no
// advisory lock: the cap holds among the claimers that ask for it.
#include <charconv>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "libs/common/ids.h"
#include "libs/store/postgres.h"
#include "services/provider-connector/task_store.h"

namespace nexusflow::connector {
namespace {

// Ids compare bytewise (COLLATE "C"), as in SQLite, whatever the database's collation.
constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS tasks (
  id TEXT COLLATE "C" PRIMARY KEY,           -- task_…
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
  usage_images BIGINT NOT NULL DEFAULT 0,
  usage_seconds BIGINT NOT NULL DEFAULT 0,   -- seconds of video
  hold_id TEXT NOT NULL DEFAULT '',
  cancel_requested BOOLEAN NOT NULL DEFAULT false,
  created_us BIGINT NOT NULL,                -- unix microseconds
  updated_us BIGINT NOT NULL,
  lease_owner TEXT NOT NULL DEFAULT '',      -- '' when no worker holds it
  lease_expires_us BIGINT NOT NULL DEFAULT 0,
  attempts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_by_account ON tasks(account_id, created_us DESC, id DESC);
-- Only live tasks are claimable: the claim scans this small index, oldest first.
CREATE INDEX IF NOT EXISTS live_tasks ON tasks(created_us, id) WHERE status IN ('queued', 'running');
-- The per-key cap counts a key's leased live tasks.
CREATE INDEX IF NOT EXISTS leased_tasks_by_key ON tasks(key_id, lease_expires_us)
  WHERE status IN ('queued', 'running') AND lease_owner <> '';
)sql";

// Serialises schema creation between replicas starting together.
constexpr char kSchemaLock[] = "SELECT pg_advisory_xact_lock(7420150003)";

// The claims of one API key take this advisory lock (two-int form: its own key space, apart
// from the single-bigint schema locks) on the hash of the key id.
constexpr char kKeyLock[] = "SELECT pg_advisory_xact_lock(74201503, hashtext($1::text))";

constexpr int kPoolSize = 4;
constexpr int kMaxPage = 100;

// A capped claim that finds its candidate's key full retries without that key; this many
// keys found full by racing claimers in one call, and it answers "nothing to claim" (the
// worker asks again on its next poll).
constexpr int kMaxFullKeys = 16;

constexpr char kColumns[] =
    "id, account_id, key_id, model, kind, request, status, upstream_job_id, deployment, result, "
    "error_code, error_message, usage_images, usage_seconds, hold_id, cancel_requested, "
    "created_us, updated_us, lease_owner, lease_expires_us, attempts";

// A task is claimable at `now` when it is live (queued or running) and has no lease or an
// expired one; a key's live leases at `now` are those of its live tasks with an owner and
// an expiry after `now`.

// $1 worker, $2 lease end, $3 now.
constexpr char kClaimAny[] =
    "UPDATE tasks SET lease_owner = $1, lease_expires_us = $2, attempts = attempts + 1, "
    "updated_us = $3 "
    "WHERE id = (SELECT id FROM tasks WHERE status IN ('queued', 'running') "
    "            AND (lease_owner = '' OR lease_expires_us <= $3) "
    "            ORDER BY created_us, id LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "AND status IN ('queued', 'running') AND (lease_owner = '' OR lease_expires_us <= $3)";

// $1 now, $2 keys found full (text[]), $3 max_per_key.
constexpr char kPickCapped[] =
    "SELECT id, key_id FROM tasks t "
    "WHERE status IN ('queued', 'running') AND (lease_owner = '' OR lease_expires_us <= $1) "
    "AND NOT (key_id = ANY($2::text[])) "
    "AND (SELECT count(*) FROM tasks u WHERE u.key_id = t.key_id "
    "     AND u.status IN ('queued', 'running') AND u.lease_owner <> '' "
    "     AND u.lease_expires_us > $1) < $3 "
    "ORDER BY created_us, id LIMIT 1 FOR UPDATE OF t SKIP LOCKED";

// $1 id, $2 worker, $3 lease end, $4 now, $5 max_per_key.
constexpr char kClaimCapped[] =
    "UPDATE tasks SET lease_owner = $2, lease_expires_us = $3, attempts = attempts + 1, "
    "updated_us = $4 "
    "WHERE id = $1 AND status IN ('queued', 'running') "
    "AND (lease_owner = '' OR lease_expires_us <= $4) "
    "AND (SELECT count(*) FROM tasks u WHERE u.key_id = tasks.key_id "
    "     AND u.status IN ('queued', 'running') AND u.lease_owner <> '' "
    "     AND u.lease_expires_us > $4) < $5";

// $1 lease end, $2 now, $3 id, $4 worker.
constexpr char kRenew[] =
    "UPDATE tasks SET lease_expires_us = $1, updated_us = $2 "
    "WHERE id = $3 AND lease_owner = $4 AND lease_owner <> '' "
    "AND status IN ('queued', 'running')";

// $1 upstream job, $2 deployment, $3 now, $4 id, $5 worker.
constexpr char kSubmitted[] =
    "UPDATE tasks SET status = 'running', upstream_job_id = $1, deployment = $2, updated_us = $3 "
    "WHERE id = $4 AND lease_owner = $5 AND lease_owner <> '' AND status = 'queued'";

// $1 status, $2 result, $3 error code, $4 error message, $5 images, $6 seconds, $7 now,
// $8 id, $9 worker.
constexpr char kFinish[] =
    "UPDATE tasks SET status = $1, result = $2, error_code = $3, error_message = $4, "
    "usage_images = $5, usage_seconds = $6, lease_owner = '', lease_expires_us = 0, "
    "updated_us = $7 "
    "WHERE id = $8 AND lease_owner = $9 AND lease_owner <> '' "
    "AND status IN ('queued', 'running')";

// $1 now, $2 id, $3 worker.
constexpr char kCancel[] =
    "UPDATE tasks SET status = 'canceled', lease_owner = '', lease_expires_us = 0, "
    "updated_us = $1 "
    "WHERE id = $2 AND lease_owner = $3 AND lease_owner <> '' "
    "AND status IN ('queued', 'running')";

// The owner's request, one statement: a queued task nobody holds ends here; a task a worker
// holds (or one running upstream) is marked for its worker. The conditions are on the row
// being updated (SET reads it as it was), which a concurrent claim may have changed after
// this statement began: it waits for the claim's row lock and then sees the claim. The row
// returned is canceled only when this call ended it. $1 now, $2 id, $3 account.
constexpr char kRequestCancel[] =
    "UPDATE tasks SET cancel_requested = true, updated_us = $1, "
    "status = CASE WHEN status = 'queued' AND (lease_owner = '' OR lease_expires_us <= $1) "
    "         THEN 'canceled' ELSE status END, "
    "lease_owner = CASE WHEN status = 'queued' AND (lease_owner = '' OR lease_expires_us <= $1) "
    "              THEN '' ELSE lease_owner END, "
    "lease_expires_us = CASE WHEN status = 'queued' AND "
    "                   (lease_owner = '' OR lease_expires_us <= $1) "
    "                   THEN 0 ELSE lease_expires_us END "
    "WHERE id = $2 AND account_id = $3 AND status IN ('queued', 'running')";

int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }

// This Abseil's string_view is its own type, not std::string_view.
absl::string_view Abseil(std::string_view s) { return {s.data(), s.size()}; }

Task ReadTask(const PgResult& r, int row) {
  Task task;
  task.id = r.Text(row, 0);
  task.account_id = r.Text(row, 1);
  task.key_id = r.Text(row, 2);
  task.model = r.Text(row, 3);
  task.kind = ParseTaskKind(r.Text(row, 4)).value_or(TaskKind::kImage);
  task.request = r.Text(row, 5);
  task.status = ParseTaskStatus(r.Text(row, 6)).value_or(TaskStatus::kFailed);
  task.upstream_job_id = r.Text(row, 7);
  task.deployment = r.Text(row, 8);
  task.result = r.Text(row, 9);
  task.error_code = r.Text(row, 10);
  task.error_message = r.Text(row, 11);
  task.usage.images = r.Int(row, 12);
  task.usage.seconds = r.Int(row, 13);
  task.hold_id = r.Text(row, 14);
  task.cancel_requested = r.Text(row, 15) == "t";
  task.created_at = absl::FromUnixMicros(r.Int(row, 16));
  task.updated_at = absl::FromUnixMicros(r.Int(row, 17));
  task.lease_owner = r.Text(row, 18);
  task.lease_expires_at = absl::FromUnixMicros(r.Int(row, 19));
  task.attempts = r.Int(row, 20);
  return task;
}

// The same cursor as the SQLite store's: base64url of "created_us:id" of a page's last task.
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

// A text[] literal: every element quoted, so commas, braces and quotes in it stay its own.
std::string TextArray(const std::vector<std::string>& items) {
  std::string out = "{";
  for (const std::string& item : items) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (char ch : item) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  out += '}';
  return out;
}

absl::Status NotFound(std::string_view task_id) {
  return absl::NotFoundError(absl::StrCat("task ", Abseil(task_id), " not found"));
}

// Why a worker's conditional update of `task` changed nothing.
absl::Status Refusal(const Task& task, std::string_view worker) {
  if (IsFinal(task.status)) {
    return absl::FailedPreconditionError(
        absl::StrCat("task ", task.id, " is already ", Abseil(TaskStatusName(task.status))));
  }
  if (worker.empty() || task.lease_owner != worker) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", Abseil(worker), " does not hold task ", task.id));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("task ", task.id, " is ", Abseil(TaskStatusName(task.status)), ", not queued"));
}

class PostgresTaskStore final : public TaskStore {
 public:
  explicit PostgresTaskStore(const std::string& conninfo) : pool_(conninfo, kPoolSize) {}

  absl::Status CreateSchema() {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    return PgTransaction(**c, [&]() -> absl::Status {
      if (absl::Status s = (*c)->Exec(kSchemaLock); !s.ok()) return s;
      return (*c)->Exec(kSchema);
    });
  }

  absl::StatusOr<Task> Create(const NewTask& fresh, absl::Time now) override {
    if (fresh.account_id.empty() || fresh.model.empty()) {
      return absl::InvalidArgumentError("a task needs an account and a model");
    }
    const std::string id = fresh.id.empty() ? NewId("task_") : fresh.id;
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(
        absl::StrCat("INSERT INTO tasks (id, account_id, key_id, model, kind, request, status, "
                     "hold_id, created_us, updated_us) VALUES ($1, $2, $3, $4, $5, $6, 'queued', "
                     "$7, $8, $8) RETURNING ",
                     kColumns),
        {id, fresh.account_id, fresh.key_id, fresh.model, TaskKindName(fresh.kind), fresh.request,
         fresh.hold_id, Micros(now)});
    if (!r.ok()) {
      if (absl::IsAlreadyExists(r.status()))
        return absl::AlreadyExistsError(absl::StrCat("task ", id, " already exists"));
      return r.status();
    }
    return ReadTask(*r, 0);
  }

  absl::StatusOr<Task> Get(std::string_view account_id, std::string_view task_id) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(
        absl::StrCat("SELECT ", kColumns, " FROM tasks WHERE id = $1 AND account_id = $2"),
        {task_id, account_id});
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return NotFound(task_id);
    return ReadTask(*r, 0);
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
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    // With no cursor, every id is below the start (created_us < INT64_MAX holds for all).
    auto r = (*c)->Query(
        absl::StrCat("SELECT ", kColumns,
                     " FROM tasks WHERE account_id = $1 AND (created_us, id) < ($2::bigint, "
                     "$3::text COLLATE \"C\") ORDER BY created_us DESC, id DESC LIMIT $4"),
        {account_id, after_us, after_id, int64_t{limit} + 1});
    if (!r.ok()) return r.status();
    TaskPage page;
    for (int i = 0; i < r->rows(); ++i) page.tasks.push_back(ReadTask(*r, i));
    if (page.tasks.size() > static_cast<size_t>(limit)) {
      page.tasks.pop_back();
      page.next_cursor = EncodeCursor(page.tasks.back());
    }
    return page;
  }

  absl::StatusOr<std::optional<Task>> ClaimNext(std::string_view worker, absl::Duration lease,
                                                absl::Time now, int max_per_key) override {
    if (worker.empty()) return absl::InvalidArgumentError("a worker needs a name");
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    PgConnection& conn = **c;
    if (max_per_key <= 0) {
      auto r = conn.Query(absl::StrCat(kClaimAny, " RETURNING ", kColumns),
                          {worker, Micros(now + lease), Micros(now)});
      if (!r.ok()) return r.status();
      if (r->rows() == 0) return std::optional<Task>();
      return std::optional<Task>(ReadTask(*r, 0));
    }
    std::vector<std::string> full_keys;  // keys found at their cap under the lock
    while (full_keys.size() < static_cast<size_t>(kMaxFullKeys)) {
      std::optional<Task> claimed;
      bool nothing = false;
      absl::Status s = PgTransaction(conn, [&]() -> absl::Status {
        claimed.reset();
        nothing = false;
        auto pick = conn.Query(kPickCapped, {Micros(now), TextArray(full_keys), max_per_key});
        if (!pick.ok()) return pick.status();
        if (pick->rows() == 0) {
          nothing = true;
          return absl::OkStatus();
        }
        const std::string id = pick->Text(0, 0);
        const std::string key = pick->Text(0, 1);
        if (auto locked = conn.Query(kKeyLock, {key}); !locked.ok()) return locked.status();
        auto claim = conn.Query(absl::StrCat(kClaimCapped, " RETURNING ", kColumns),
                                {id, worker, Micros(now + lease), Micros(now), max_per_key});
        if (!claim.ok()) return claim.status();
        if (claim->rows() == 1) {
          claimed = ReadTask(*claim, 0);
        } else {
          full_keys.push_back(key);  // the row is ours: only the key's count can refuse
        }
        return absl::OkStatus();
      });
      if (!s.ok()) return s;
      if (claimed || nothing) return claimed;
    }
    return std::optional<Task>();
  }

  absl::StatusOr<Task> RenewLease(std::string_view task_id, std::string_view worker,
                                  absl::Duration lease, absl::Time now) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(absl::StrCat(kRenew, " RETURNING ", kColumns),
                         {Micros(now + lease), Micros(now), task_id, worker});
    return AppliedOrRefused(**c, r, task_id, worker);
  }

  absl::StatusOr<Task> RecordSubmitted(std::string_view task_id, std::string_view worker,
                                       std::string_view upstream_job_id,
                                       std::string_view deployment, absl::Time now) override {
    if (upstream_job_id.empty())
      return absl::InvalidArgumentError("an upstream job id is required");
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(absl::StrCat(kSubmitted, " RETURNING ", kColumns),
                         {upstream_job_id, deployment, Micros(now), task_id, worker});
    return AppliedOrRefused(**c, r, task_id, worker);
  }

  absl::StatusOr<TaskTransition> Finish(std::string_view task_id, std::string_view worker,
                                        const TaskOutcome& outcome, absl::Time now) override {
    if (outcome.status != TaskStatus::kSucceeded && outcome.status != TaskStatus::kFailed) {
      return absl::InvalidArgumentError("a task finishes succeeded or failed");
    }
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(
        absl::StrCat(kFinish, " RETURNING ", kColumns),
        {TaskStatusName(outcome.status), outcome.result, outcome.error_code, outcome.error_message,
         outcome.usage.images, outcome.usage.seconds, Micros(now), task_id, worker});
    return EndedOrReported(**c, r, task_id, worker);
  }

  absl::StatusOr<TaskTransition> RequestCancel(std::string_view account_id,
                                               std::string_view task_id, absl::Time now) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(absl::StrCat(kRequestCancel, " RETURNING ", kColumns),
                         {Micros(now), task_id, account_id});
    if (!r.ok()) return r.status();
    if (r->rows() == 1) {
      Task task = ReadTask(*r, 0);
      const bool applied = task.status == TaskStatus::kCanceled;
      return TaskTransition{std::move(task), applied};
    }
    // Not live, or not this account's: a final task is answered as it is.
    absl::StatusOr<Task> task = Load(**c, task_id);
    if (!task.ok()) return task.status();
    if (task->account_id != account_id) return NotFound(task_id);
    return TaskTransition{std::move(*task), false};
  }

  absl::StatusOr<TaskTransition> Cancel(std::string_view task_id, std::string_view worker,
                                        absl::Time now) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r =
        (*c)->Query(absl::StrCat(kCancel, " RETURNING ", kColumns), {Micros(now), task_id, worker});
    return EndedOrReported(**c, r, task_id, worker);
  }

  absl::StatusOr<TaskQueueStats> QueueStats() override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(
        "SELECT status, count(*), min(created_us) FROM tasks WHERE status IN ('queued', "
        "'running') GROUP BY status");
    if (!r.ok()) return r.status();
    TaskQueueStats stats;
    for (int i = 0; i < r->rows(); ++i) {
      if (r->Text(i, 0) == "queued") {
        stats.queued = r->Int(i, 1);
        stats.oldest_queued_at = absl::FromUnixMicros(r->Int(i, 2));
      } else {
        stats.running = r->Int(i, 1);
      }
    }
    return stats;
  }

 private:
  static absl::StatusOr<Task> Load(PgConnection& conn, std::string_view task_id) {
    auto r = conn.Query(absl::StrCat("SELECT ", kColumns, " FROM tasks WHERE id = $1"), {task_id});
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return NotFound(task_id);
    return ReadTask(*r, 0);
  }

  // A worker's update: the task after it, or why it did not apply.
  static absl::StatusOr<Task> AppliedOrRefused(PgConnection& conn,
                                               const absl::StatusOr<PgResult>& r,
                                               std::string_view task_id, std::string_view worker) {
    if (!r.ok()) return r.status();
    if (r->rows() == 1) return ReadTask(*r, 0);
    absl::StatusOr<Task> task = Load(conn, task_id);
    if (!task.ok()) return task.status();
    return Refusal(*task, worker);
  }

  // An update that ends the task: applied once; a task already final is reported unchanged.
  static absl::StatusOr<TaskTransition> EndedOrReported(PgConnection& conn,
                                                        const absl::StatusOr<PgResult>& r,
                                                        std::string_view task_id,
                                                        std::string_view worker) {
    if (!r.ok()) return r.status();
    if (r->rows() == 1) return TaskTransition{ReadTask(*r, 0), true};
    absl::StatusOr<Task> task = Load(conn, task_id);
    if (!task.ok()) return task.status();
    if (!IsFinal(task->status)) return Refusal(*task, worker);
    return TaskTransition{std::move(*task), false};
  }

  PgPool pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TaskStore>> OpenPostgresTaskStore(const std::string& conninfo) {
  auto store = std::make_unique<PostgresTaskStore>(conninfo);
  if (absl::Status s = store->CreateSchema(); !s.ok()) return s;
  return std::unique_ptr<TaskStore>(std::move(store));
}

}  // namespace nexusflow::connector

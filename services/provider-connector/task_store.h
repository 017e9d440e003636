#pragma once
// TaskStore: the durable record of async media tasks (images, video), one interface for the
// embedded store (SQLite) and the scale-out one (PostgreSQL).
//
// A task is created `queued`. A worker claims it with a lease (ClaimNext), submits it
// upstream and records the upstream job (RecordSubmitted → `running`), keeps the lease
// alive while it polls (RenewLease), and ends it exactly once (Finish → `succeeded` |
// `failed`, or Cancel → `canceled`). A worker that dies leaves its lease to expire; the next
// ClaimNext hands the task to another worker, which continues with the same upstream job
// (a `running` task is never resubmitted). Every transition is one conditional update whose
// condition names the current status and, for a worker's transitions, the lease owner, so
// two replicas can never both apply it.
//
// Time is always passed in (`now`), never read from a clock here.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace nexusflow::connector {

enum class TaskKind { kImage, kVideo };
enum class TaskStatus { kQueued, kRunning, kSucceeded, kFailed, kCanceled };

// The wire names: "image" | "video"; "queued" | "running" | "succeeded" | "failed" | "canceled".
std::string_view TaskKindName(TaskKind kind);
std::string_view TaskStatusName(TaskStatus status);
std::optional<TaskKind> ParseTaskKind(std::string_view name);
std::optional<TaskStatus> ParseTaskStatus(std::string_view name);
bool IsFinal(TaskStatus status);

// What the upstream produced, as it reported it (what is billed).
struct TaskUsage {
  int64_t images = 0;   // images produced
  int64_t seconds = 0;  // seconds of video produced
};

struct Task {
  std::string id;          // "task_…"
  std::string account_id;  // the owner; only it sees the task
  std::string key_id;      // the API key that created it
  std::string model;
  TaskKind kind = TaskKind::kImage;
  // The canonical parameters (prompt, size, n, duration, resolution…) as JSON text.
  std::string request;
  TaskStatus status = TaskStatus::kQueued;
  std::string upstream_job_id;  // the upstream's task id once submitted; empty before
  std::string deployment;       // the deployment it was submitted to; empty before
  std::string result;           // JSON text once succeeded (URLs, expiry); empty otherwise
  std::string error_code;       // once failed (or canceled with a reason)
  std::string error_message;
  TaskUsage usage;
  std::string hold_id;            // the billing hold taken at submission
  bool cancel_requested = false;  // the owner asked to cancel; the lease holder acts on it
  absl::Time created_at;
  absl::Time updated_at;
  std::string lease_owner;      // the worker holding the task; empty when none
  absl::Time lease_expires_at;  // meaningful only with a lease owner
  int64_t attempts = 0;         // how many times a worker claimed it
};

// What Create needs; the rest starts empty. An empty id gets a new "task_…" id.
struct NewTask {
  std::string id;
  std::string account_id;
  std::string key_id;
  std::string model;
  TaskKind kind = TaskKind::kImage;
  std::string request;
  std::string hold_id;
};

// The end of a task as its worker reports it.
struct TaskOutcome {
  TaskStatus status = TaskStatus::kSucceeded;  // kSucceeded or kFailed
  std::string result;                          // JSON text, for kSucceeded
  std::string error_code;                      // for kFailed
  std::string error_message;
  TaskUsage usage;  // also on failure, when the upstream billed something
};

// The task after a transition, and whether this call made it: false means the task was
// already in a final state (or, for RequestCancel, the cancel is only requested) and nothing
// changed, so whatever follows a transition (settling, releasing a hold) must not run again.
struct TaskTransition {
  Task task;
  bool applied = false;
};

// The live part of the queue, for metrics (depth, age of the oldest queued task).
struct TaskQueueStats {
  int64_t queued = 0;
  int64_t running = 0;
  std::optional<absl::Time> oldest_queued_at;  // created_at of the oldest queued task
};

struct TaskPage {
  std::vector<Task> tasks;  // newest first
  std::string next_cursor;  // empty on the last page
};

class TaskStore {
 public:
  virtual ~TaskStore() = default;

  // A new `queued` task created at `now`. ALREADY_EXISTS when the id is taken.
  virtual absl::StatusOr<Task> Create(const NewTask& task, absl::Time now) = 0;

  // The task, when it belongs to `account_id`; NOT_FOUND otherwise (also for another
  // account's task, so ids do not leak).
  virtual absl::StatusOr<Task> Get(std::string_view account_id, std::string_view task_id) = 0;

  // An account's tasks, newest first, `limit` (1–100) at a time; `cursor` is a previous
  // page's next_cursor (empty for the first page). INVALID_ARGUMENT for a bad cursor.
  virtual absl::StatusOr<TaskPage> List(std::string_view account_id, int limit,
                                        std::string_view cursor) = 0;

  // Atomically claims the oldest task that is `queued` or `running` and has no live lease
  // (none, or expired at `now`): `worker` holds it until now + `lease`, attempts + 1.
  // With `max_per_key` > 0, a task whose API key already has that many tasks under a live
  // lease (any worker's) waits: one key's burst cannot take every worker. nullopt when
  // there is nothing to claim. A `running` task keeps its upstream job id.
  virtual absl::StatusOr<std::optional<Task>> ClaimNext(std::string_view worker,
                                                        absl::Duration lease, absl::Time now,
                                                        int max_per_key) = 0;

  // Extends `worker`'s lease to now + `lease`; the task as it is now (the worker reads
  // cancel_requested from it). FAILED_PRECONDITION when `worker` no longer holds it or it
  // is final; NOT_FOUND for an unknown id.
  virtual absl::StatusOr<Task> RenewLease(std::string_view task_id, std::string_view worker,
                                          absl::Duration lease, absl::Time now) = 0;

  // The upstream accepted the task: records its job id and deployment, `queued` → `running`.
  // Only the lease holder of a queued task; FAILED_PRECONDITION otherwise.
  virtual absl::StatusOr<Task> RecordSubmitted(std::string_view task_id, std::string_view worker,
                                               std::string_view upstream_job_id,
                                               std::string_view deployment, absl::Time now) = 0;

  // Ends the task as `outcome` says, exactly once, and drops the lease. A task already final
  // answers applied=false, unchanged. FAILED_PRECONDITION when `worker` does not hold the
  // lease of a live task; INVALID_ARGUMENT for an outcome that is not succeeded or failed.
  virtual absl::StatusOr<TaskTransition> Finish(std::string_view task_id, std::string_view worker,
                                                const TaskOutcome& outcome, absl::Time now) = 0;

  // The owner asks to cancel. A queued task nobody holds is canceled at once (applied);
  // a task a worker holds is marked cancel_requested for that worker to act on (the upstream
  // job may need canceling first), applied=false; a final task is returned unchanged.
  // NOT_FOUND for another account's task.
  virtual absl::StatusOr<TaskTransition> RequestCancel(std::string_view account_id,
                                                       std::string_view task_id,
                                                       absl::Time now) = 0;

  // The lease holder ends the task `canceled` (after canceling the upstream job), exactly
  // once: like Finish.
  virtual absl::StatusOr<TaskTransition> Cancel(std::string_view task_id, std::string_view worker,
                                                absl::Time now) = 0;

  // How many tasks are queued and running, and since when the oldest one waits.
  virtual absl::StatusOr<TaskQueueStats> QueueStats() = 0;
};

// The embedded store: SQLite at `path` (WAL, synchronous=FULL), ":memory:" for a private
// one. Several stores (and processes) may open the same file; claims stay exclusive.
absl::StatusOr<std::unique_ptr<TaskStore>> OpenSqliteTaskStore(const std::string& path);

// The scale-out store: PostgreSQL at `conninfo` (a postgresql:// URL or libpq keywords),
// shared by every connector replica; the schema is created when missing and commits are
// synchronous. Claims stay exclusive across replicas, and so does the per-key cap.
absl::StatusOr<std::unique_ptr<TaskStore>> OpenPostgresTaskStore(const std::string& conninfo);

}  // namespace nexusflow::connector

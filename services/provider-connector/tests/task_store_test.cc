// The TaskStore contract, written once for every backend: a backend supplies a fresh database
// and opens any number of stores (connections) on it; every case runs against SQLite
// (Sqlite/…) and PostgreSQL (Postgres/…, through tools/lib/with-postgres.sh). Time is passed
// in, so leases expire when the test says so.
#include "services/provider-connector/task_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "libs/store/postgres.h"
#include "libs/store/testing/pg_test_database.h"

namespace nexusflow::connector {
namespace {

// One empty database of a backend; every Open() is another store on it.
class TaskDatabase {
 public:
  virtual ~TaskDatabase() = default;
  virtual std::unique_ptr<TaskStore> Open() = 0;
};

struct Backend {
  std::string name;
  std::function<std::unique_ptr<TaskDatabase>()> make;
};
void PrintTo(const Backend& backend, std::ostream* os) { *os << backend.name; }

class SqliteTaskDatabase final : public TaskDatabase {
 public:
  SqliteTaskDatabase() {
    static std::atomic<int> sequence{0};
    path_ = std::filesystem::path(testing::TempDir()) /
            ("task_store_" + std::to_string(getpid()) + "_" + std::to_string(sequence++) + ".db");
  }
  ~SqliteTaskDatabase() override {
    for (const char* suffix : {"", "-wal", "-shm"})
      std::filesystem::remove(path_.string() + suffix);
  }
  std::unique_ptr<TaskStore> Open() override {
    absl::StatusOr<std::unique_ptr<TaskStore>> store = OpenSqliteTaskStore(path_.string());
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

 private:
  std::filesystem::path path_;
};

// A fresh database on the test server; every store opened on it is a replica's.
class PostgresTaskDatabase final : public TaskDatabase {
 public:
  static std::unique_ptr<TaskDatabase> Make() {
    absl::StatusOr<std::unique_ptr<PgTestDatabase>> db = PgTestDatabase::Create();
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return nullptr;
    return std::unique_ptr<TaskDatabase>(new PostgresTaskDatabase(std::move(*db)));
  }
  std::unique_ptr<TaskStore> Open() override {
    absl::StatusOr<std::unique_ptr<TaskStore>> store = OpenPostgresTaskStore(db_->conninfo());
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }
  // Ends every other session on the test database and waits until they are gone.
  absl::Status DropSessions() {
    absl::StatusOr<std::unique_ptr<PgConnection>> c = PgConnection::Open(db_->conninfo());
    if (!c.ok()) return c.status();
    constexpr char kOthers[] =
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    if (absl::Status s = (*c)->Exec(absl::StrCat("SELECT pg_terminate_backend(pid) ", kOthers));
        !s.ok())
      return s;
    for (;;) {
      absl::StatusOr<PgResult> left = (*c)->Query(absl::StrCat("SELECT count(*) ", kOthers));
      if (!left.ok()) return left.status();
      if (left->Int(0, 0) == 0) return absl::OkStatus();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

 private:
  explicit PostgresTaskDatabase(std::unique_ptr<PgTestDatabase> db) : db_(std::move(db)) {}
  std::unique_ptr<PgTestDatabase> db_;
};

const absl::Time kT0 = absl::FromUnixSeconds(1'790'000'000);
const absl::Duration kLease = absl::Seconds(30);

class TaskStoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    database_ = GetParam().make();
    ASSERT_NE(database_, nullptr);
    store_ = database_->Open();
    ASSERT_NE(store_, nullptr);
  }

  Task MustCreate(const std::string& account, absl::Time now, TaskKind kind = TaskKind::kVideo,
                  const std::string& id = {}) {
    NewTask fresh;
    fresh.id = id;
    fresh.account_id = account;
    fresh.key_id = "key_" + account;
    fresh.model = kind == TaskKind::kVideo ? "happyhorse-1.0-t2v" : "wan2.6-t2i";
    fresh.kind = kind;
    fresh.request = R"({"prompt":"waves","duration":10,"resolution":"720P"})";
    fresh.hold_id = "hold_" + account;
    absl::StatusOr<Task> task = store_->Create(fresh, now);
    EXPECT_TRUE(task.ok()) << task.status();
    return task.ok() ? *task : Task{};
  }

  // Claims and expects a task.
  Task MustClaim(TaskStore& store, const std::string& worker, absl::Time now) {
    absl::StatusOr<std::optional<Task>> claimed = store.ClaimNext(worker, kLease, now, 0);
    EXPECT_TRUE(claimed.ok()) << claimed.status();
    EXPECT_TRUE(claimed.ok() && claimed->has_value()) << "nothing to claim";
    return claimed.ok() && claimed->has_value() ? **claimed : Task{};
  }

  bool NothingToClaim(TaskStore& store, const std::string& worker, absl::Time now) {
    absl::StatusOr<std::optional<Task>> claimed = store.ClaimNext(worker, kLease, now, 0);
    EXPECT_TRUE(claimed.ok()) << claimed.status();
    return claimed.ok() && !claimed->has_value();
  }

  static TaskOutcome Succeeded(int64_t images, int64_t seconds) {
    TaskOutcome outcome;
    outcome.status = TaskStatus::kSucceeded;
    outcome.result = R"({"urls":["http://mock/v.mp4"]})";
    outcome.usage = {images, seconds};
    return outcome;
  }

  std::unique_ptr<TaskDatabase> database_;
  std::unique_ptr<TaskStore> store_;
};

TEST_P(TaskStoreTest, CreatedTaskIsQueuedAndReadByItsAccount) {
  const Task created = MustCreate("acct_a", kT0, TaskKind::kImage);
  EXPECT_TRUE(created.id.starts_with("task_")) << created.id;
  absl::StatusOr<Task> got = store_->Get("acct_a", created.id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->account_id, "acct_a");
  EXPECT_EQ(got->key_id, "key_acct_a");
  EXPECT_EQ(got->model, "wan2.6-t2i");
  EXPECT_EQ(got->kind, TaskKind::kImage);
  EXPECT_EQ(got->request, R"({"prompt":"waves","duration":10,"resolution":"720P"})");
  EXPECT_EQ(got->status, TaskStatus::kQueued);
  EXPECT_EQ(got->hold_id, "hold_acct_a");
  EXPECT_EQ(got->created_at, kT0);
  EXPECT_EQ(got->updated_at, kT0);
  EXPECT_TRUE(got->upstream_job_id.empty());
  EXPECT_TRUE(got->lease_owner.empty());
  EXPECT_EQ(got->attempts, 0);
  EXPECT_FALSE(got->cancel_requested);
}

TEST_P(TaskStoreTest, AGivenIdIsKeptAndCannotBeReused) {
  MustCreate("acct_a", kT0, TaskKind::kVideo, "task_fixed");
  NewTask again{"task_fixed", "acct_b", "key_b", "m", TaskKind::kImage, "{}", ""};
  EXPECT_EQ(store_->Create(again, kT0).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->Get("acct_a", "task_fixed")->account_id, "acct_a");
}

TEST_P(TaskStoreTest, AnotherAccountsTaskIsNotFound) {
  const Task task = MustCreate("acct_a", kT0);
  EXPECT_EQ(store_->Get("acct_b", task.id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Get("acct_a", "task_missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->RequestCancel("acct_b", task.id, kT0).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Get("acct_a", task.id)->status, TaskStatus::kQueued);  // not canceled by B
  absl::StatusOr<TaskPage> page = store_->List("acct_b", 10, "");
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->tasks.empty());
}

TEST_P(TaskStoreTest, ListIsNewestFirstAndPagesThroughEveryTaskOnce) {
  std::vector<std::string> expected;  // newest first
  for (int i = 0; i < 5; ++i)
    expected.insert(expected.begin(), MustCreate("acct_a", kT0 + absl::Seconds(i)).id);
  // Two created in the same microsecond: ordered by id, still each exactly once.
  const Task tie1 = MustCreate("acct_a", kT0 + absl::Seconds(9), TaskKind::kImage, "task_tie_1");
  const Task tie2 = MustCreate("acct_a", kT0 + absl::Seconds(9), TaskKind::kImage, "task_tie_2");
  expected.insert(expected.begin(), {tie2.id, tie1.id});
  MustCreate("acct_b", kT0 + absl::Seconds(3));

  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    absl::StatusOr<TaskPage> page = store_->List("acct_a", 2, cursor);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->tasks.size(), 2u);
    for (const Task& task : page->tasks) {
      EXPECT_EQ(task.account_id, "acct_a");
      seen.push_back(task.id);
    }
    cursor = page->next_cursor;
    ASSERT_LT(++pages, 10);
  } while (!cursor.empty());
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(pages, 4);

  absl::StatusOr<TaskPage> all = store_->List("acct_a", 100, "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->tasks.size(), 7u);
  EXPECT_TRUE(all->next_cursor.empty());
}

TEST_P(TaskStoreTest, ListRejectsABadCursorOrLimit) {
  EXPECT_EQ(store_->List("acct_a", 10, "not a cursor!").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->List("acct_a", 0, "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->List("acct_a", 101, "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(TaskStoreTest, ClaimTakesTheOldestQueuedTaskWithALease) {
  const Task older = MustCreate("acct_a", kT0);
  const Task newer = MustCreate("acct_b", kT0 + absl::Seconds(1));
  const absl::Time now = kT0 + absl::Seconds(5);
  const Task first = MustClaim(*store_, "worker-1", now);
  EXPECT_EQ(first.id, older.id);
  EXPECT_EQ(first.lease_owner, "worker-1");
  EXPECT_EQ(first.lease_expires_at, now + kLease);
  EXPECT_EQ(first.attempts, 1);
  EXPECT_EQ(first.status, TaskStatus::kQueued);
  EXPECT_EQ(MustClaim(*store_, "worker-2", now).id, newer.id);
  EXPECT_TRUE(NothingToClaim(*store_, "worker-3", now));
}

TEST_P(TaskStoreTest, ALiveLeaseIsNotClaimedUntilItExpires) {
  const Task task = MustCreate("acct_a", kT0);
  MustClaim(*store_, "worker-1", kT0);
  EXPECT_TRUE(NothingToClaim(*store_, "worker-2", kT0 + kLease - absl::Microseconds(1)));
  // The worker died before submitting: the queued task goes to another worker.
  const Task again = MustClaim(*store_, "worker-2", kT0 + kLease);
  EXPECT_EQ(again.id, task.id);
  EXPECT_EQ(again.lease_owner, "worker-2");
  EXPECT_EQ(again.attempts, 2);
  EXPECT_EQ(again.status, TaskStatus::kQueued);
}

TEST_P(TaskStoreTest, ARunningTaskWhoseWorkerDiedKeepsItsUpstreamJob) {
  const Task task = MustCreate("acct_a", kT0);
  MustClaim(*store_, "worker-1", kT0);
  absl::StatusOr<Task> submitted =
      store_->RecordSubmitted(task.id, "worker-1", "job-1", "dashscope-1", kT0);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  EXPECT_EQ(submitted->status, TaskStatus::kRunning);
  EXPECT_EQ(submitted->upstream_job_id, "job-1");
  EXPECT_EQ(submitted->deployment, "dashscope-1");

  EXPECT_TRUE(NothingToClaim(*store_, "worker-2", kT0 + absl::Seconds(29)));
  const Task taken = MustClaim(*store_, "worker-2", kT0 + absl::Seconds(31));
  EXPECT_EQ(taken.id, task.id);
  EXPECT_EQ(taken.status, TaskStatus::kRunning);  // poll, never resubmit
  EXPECT_EQ(taken.upstream_job_id, "job-1");
  EXPECT_EQ(taken.deployment, "dashscope-1");
  EXPECT_EQ(taken.attempts, 2);

  // The old worker comes back: every one of its transitions is refused.
  const absl::Time later = kT0 + absl::Seconds(32);
  EXPECT_EQ(store_->RenewLease(task.id, "worker-1", kLease, later).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->RecordSubmitted(task.id, "worker-1", "job-2", "d", later).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Finish(task.id, "worker-1", Succeeded(0, 10), later).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Cancel(task.id, "worker-1", later).status().code(),
            absl::StatusCode::kFailedPrecondition);

  absl::StatusOr<TaskTransition> finished =
      store_->Finish(task.id, "worker-2", Succeeded(0, 10), later);
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_TRUE(finished->applied);
  EXPECT_EQ(store_->Get("acct_a", task.id)->upstream_job_id, "job-1");
}

TEST_P(TaskStoreTest, OnlyTheLeaseHolderRecordsTheSubmissionAndOnlyOnce) {
  const Task task = MustCreate("acct_a", kT0);
  EXPECT_EQ(store_->RecordSubmitted(task.id, "worker-1", "job-1", "d", kT0).status().code(),
            absl::StatusCode::kFailedPrecondition);  // not claimed
  MustClaim(*store_, "worker-1", kT0);
  EXPECT_EQ(store_->RecordSubmitted(task.id, "worker-2", "job-1", "d", kT0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store_->RecordSubmitted(task.id, "worker-1", "job-1", "d", kT0).ok());
  EXPECT_EQ(store_->RecordSubmitted(task.id, "worker-1", "job-2", "d", kT0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Get("acct_a", task.id)->upstream_job_id, "job-1");
  EXPECT_EQ(store_->RecordSubmitted("task_missing", "worker-1", "job-1", "d", kT0).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(TaskStoreTest, RenewingMovesTheExpiryAndShowsACancelRequest) {
  const Task task = MustCreate("acct_a", kT0);
  MustClaim(*store_, "worker-1", kT0);
  absl::StatusOr<Task> renewed =
      store_->RenewLease(task.id, "worker-1", kLease, kT0 + absl::Seconds(20));
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(renewed->lease_expires_at, kT0 + absl::Seconds(50));
  EXPECT_FALSE(renewed->cancel_requested);
  EXPECT_TRUE(NothingToClaim(*store_, "worker-2", kT0 + absl::Seconds(49)));

  ASSERT_TRUE(store_->RequestCancel("acct_a", task.id, kT0 + absl::Seconds(21)).ok());
  renewed = store_->RenewLease(task.id, "worker-1", kLease, kT0 + absl::Seconds(22));
  ASSERT_TRUE(renewed.ok());
  EXPECT_TRUE(renewed->cancel_requested);
  EXPECT_EQ(store_->RenewLease("task_missing", "worker-1", kLease, kT0).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(TaskStoreTest, AKeyAtItsCapWaitsWhileOtherKeysAreClaimed) {
  // Key "acct_a" has three tasks, "acct_b" one, created in that order; two at a time per key.
  const Task a1 = MustCreate("acct_a", kT0);
  const Task a2 = MustCreate("acct_a", kT0 + absl::Seconds(1));
  const Task a3 = MustCreate("acct_a", kT0 + absl::Seconds(2));
  const Task b1 = MustCreate("acct_b", kT0 + absl::Seconds(3));
  const absl::Time now = kT0 + absl::Seconds(10);
  std::vector<std::string> order;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<std::optional<Task>> claimed = store_->ClaimNext("w1", kLease, now, 2);
    ASSERT_TRUE(claimed.ok()) << claimed.status();
    if (!claimed->has_value()) break;
    order.push_back((*claimed)->id);
  }
  EXPECT_EQ(order, (std::vector<std::string>{a1.id, a2.id, b1.id}));
  // One of the key's tasks ends: the third is claimable.
  ASSERT_TRUE(store_->Finish(a1.id, "w1", Succeeded(0, 10), now).ok());
  absl::StatusOr<std::optional<Task>> next = store_->ClaimNext("w1", kLease, now, 2);
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->id, a3.id);
  // Every live task is under a lease now.
  EXPECT_TRUE(NothingToClaim(*store_, "w1", now));
}

TEST_P(TaskStoreTest, ManyClaimersAtOnceNeverHoldMoreThanTheCapOfAKey) {
  // Two keys with a backlog each; eight workers on four stores (replicas) claim at the same
  // moment, round after round, with two at a time per key. Within a round nobody finishes,
  // so what the workers hold together is what is under a live lease: never more than two of
  // a key, and the cap is no tighter than that either (two of each key while it has them).
  constexpr int kPerKey = 2;
  constexpr int kTasksPerKey = 21;
  constexpr int kWorkers = 8;
  constexpr int kStores = 4;
  const std::string keys[2] = {"key_acct_a", "key_acct_b"};
  std::set<std::string> created;
  for (int i = 0; i < kTasksPerKey; ++i) {
    created.insert(MustCreate("acct_a", kT0 + absl::Microseconds(2 * i)).id);
    created.insert(MustCreate("acct_b", kT0 + absl::Microseconds(2 * i + 1)).id);
  }
  std::unique_ptr<TaskStore> stores[kStores];
  for (auto& store : stores) {
    store = database_->Open();
    ASSERT_NE(store, nullptr);
  }

  const absl::Time now = kT0 + absl::Seconds(1);
  constexpr int kRounds = (kTasksPerKey + kPerKey - 1) / kPerKey;
  std::optional<Task> held[kWorkers];
  std::atomic<int> errors{0};
  // Three steps a round: claim together; the test counts what is held; the holders finish.
  std::barrier step(kWorkers + 1);
  auto work = [&](int w) {
    const std::string worker = "worker-" + std::to_string(w);
    TaskStore& store = *stores[w % kStores];
    for (int round = 0; round < kRounds; ++round) {
      step.arrive_and_wait();
      absl::StatusOr<std::optional<Task>> claimed = store.ClaimNext(worker, kLease, now, kPerKey);
      if (!claimed.ok()) ++errors;
      held[w] = claimed.ok() ? *claimed : std::nullopt;
      step.arrive_and_wait();
      step.arrive_and_wait();
      if (held[w]) {
        absl::StatusOr<TaskTransition> done =
            store.Finish(held[w]->id, worker, Succeeded(0, 5), now);
        if (!done.ok() || !done->applied) ++errors;
      }
    }
  };
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) workers.emplace_back(work, w);

  std::vector<std::string> claimed_ids;
  int left[2] = {kTasksPerKey, kTasksPerKey};
  for (int round = 0; round < kRounds; ++round) {
    step.arrive_and_wait();
    step.arrive_and_wait();  // every worker has claimed or found nothing
    int holding[2] = {0, 0};
    for (const std::optional<Task>& task : held) {
      if (!task) continue;
      claimed_ids.push_back(task->id);
      for (int k = 0; k < 2; ++k) holding[k] += task->key_id == keys[k];
    }
    for (int k = 0; k < 2; ++k) {
      EXPECT_LE(holding[k], kPerKey) << keys[k] << " in round " << round;
      EXPECT_EQ(holding[k], std::min(kPerKey, left[k])) << keys[k] << " in round " << round;
      left[k] -= holding[k];
    }
    step.arrive_and_wait();
  }
  for (std::thread& t : workers) t.join();

  EXPECT_EQ(errors.load(), 0);
  std::set<std::string> once;
  for (const std::string& id : claimed_ids)
    EXPECT_TRUE(once.insert(id).second) << id << " claimed twice";
  EXPECT_EQ(once, created);
  EXPECT_TRUE(NothingToClaim(*store_, "worker-9", now));
}

TEST_P(TaskStoreTest, FinishAppliesExactlyOnce) {
  const Task task = MustCreate("acct_a", kT0, TaskKind::kImage);
  MustClaim(*store_, "worker-1", kT0);
  ASSERT_TRUE(store_->RecordSubmitted(task.id, "worker-1", "job-1", "d", kT0).ok());
  const absl::Time end = kT0 + absl::Seconds(10);
  absl::StatusOr<TaskTransition> first = store_->Finish(task.id, "worker-1", Succeeded(2, 0), end);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->applied);
  EXPECT_EQ(first->task.status, TaskStatus::kSucceeded);
  EXPECT_EQ(first->task.result, R"({"urls":["http://mock/v.mp4"]})");
  EXPECT_EQ(first->task.usage.images, 2);
  EXPECT_EQ(first->task.updated_at, end);
  EXPECT_TRUE(first->task.lease_owner.empty());

  TaskOutcome failed;
  failed.status = TaskStatus::kFailed;
  failed.error_code = "upstream_error";
  absl::StatusOr<TaskTransition> second =
      store_->Finish(task.id, "worker-1", failed, end + absl::Seconds(1));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->applied);
  EXPECT_EQ(second->task.status, TaskStatus::kSucceeded);
  EXPECT_EQ(second->task.usage.images, 2);
  EXPECT_EQ(second->task.updated_at, end);

  EXPECT_TRUE(NothingToClaim(*store_, "worker-2", end + absl::Hours(1)));
  EXPECT_EQ(store_->RenewLease(task.id, "worker-1", kLease, end).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_P(TaskStoreTest, AFailedTaskKeepsItsErrorAndWhatWasBilled) {
  const Task task = MustCreate("acct_a", kT0);
  MustClaim(*store_, "worker-1", kT0);
  TaskOutcome failed;
  failed.status = TaskStatus::kFailed;
  failed.error_code = "upstream_failed";
  failed.error_message = "InternalError.Algo";
  absl::StatusOr<TaskTransition> done = store_->Finish(task.id, "worker-1", failed, kT0);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(done->applied);
  const Task got = *store_->Get("acct_a", task.id);
  EXPECT_EQ(got.status, TaskStatus::kFailed);
  EXPECT_EQ(got.error_code, "upstream_failed");
  EXPECT_EQ(got.error_message, "InternalError.Algo");
  EXPECT_TRUE(got.result.empty());
  EXPECT_EQ(got.usage.seconds, 0);

  TaskOutcome queued;
  queued.status = TaskStatus::kQueued;
  EXPECT_EQ(store_->Finish(task.id, "worker-1", queued, kT0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(TaskStoreTest, CancelOfAnUnclaimedTaskEndsItAtOnceOnce) {
  const Task task = MustCreate("acct_a", kT0);
  absl::StatusOr<TaskTransition> canceled =
      store_->RequestCancel("acct_a", task.id, kT0 + absl::Seconds(1));
  ASSERT_TRUE(canceled.ok()) << canceled.status();
  EXPECT_TRUE(canceled->applied);
  EXPECT_EQ(canceled->task.status, TaskStatus::kCanceled);
  absl::StatusOr<TaskTransition> again =
      store_->RequestCancel("acct_a", task.id, kT0 + absl::Seconds(2));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->applied);
  EXPECT_EQ(again->task.status, TaskStatus::kCanceled);
  EXPECT_TRUE(NothingToClaim(*store_, "worker-1", kT0 + absl::Seconds(3)));
}

TEST_P(TaskStoreTest, CancelOfAClaimedTaskIsLeftToItsWorker) {
  const Task task = MustCreate("acct_a", kT0);
  MustClaim(*store_, "worker-1", kT0);
  ASSERT_TRUE(store_->RecordSubmitted(task.id, "worker-1", "job-1", "d", kT0).ok());
  absl::StatusOr<TaskTransition> requested =
      store_->RequestCancel("acct_a", task.id, kT0 + absl::Seconds(1));
  ASSERT_TRUE(requested.ok()) << requested.status();
  EXPECT_FALSE(requested->applied);
  EXPECT_EQ(requested->task.status, TaskStatus::kRunning);
  EXPECT_TRUE(requested->task.cancel_requested);

  EXPECT_EQ(store_->Cancel(task.id, "worker-2", kT0 + absl::Seconds(2)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<TaskTransition> canceled =
      store_->Cancel(task.id, "worker-1", kT0 + absl::Seconds(2));
  ASSERT_TRUE(canceled.ok()) << canceled.status();
  EXPECT_TRUE(canceled->applied);
  EXPECT_EQ(canceled->task.status, TaskStatus::kCanceled);
  absl::StatusOr<TaskTransition> twice =
      store_->Cancel(task.id, "worker-1", kT0 + absl::Seconds(3));
  ASSERT_TRUE(twice.ok());
  EXPECT_FALSE(twice->applied);
  // A Finish racing the cancel changes nothing either.
  absl::StatusOr<TaskTransition> late =
      store_->Finish(task.id, "worker-1", Succeeded(0, 10), kT0 + absl::Seconds(3));
  ASSERT_TRUE(late.ok());
  EXPECT_FALSE(late->applied);
  EXPECT_EQ(late->task.status, TaskStatus::kCanceled);
}

TEST_P(TaskStoreTest, CancelOfAQueuedTaskWhoseWorkerDiedEndsIt) {
  const Task task = MustCreate("acct_a", kT0);
  MustClaim(*store_, "worker-1", kT0);
  absl::StatusOr<TaskTransition> canceled = store_->RequestCancel("acct_a", task.id, kT0 + kLease);
  ASSERT_TRUE(canceled.ok());
  EXPECT_TRUE(canceled->applied);
  EXPECT_EQ(canceled->task.status, TaskStatus::kCanceled);
}

TEST_P(TaskStoreTest, QueueStatsCountLiveTasksAndTheOldestWait) {
  absl::StatusOr<TaskQueueStats> empty = store_->QueueStats();
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->queued, 0);
  EXPECT_FALSE(empty->oldest_queued_at.has_value());

  const Task first = MustCreate("acct_a", kT0);
  MustCreate("acct_b", kT0 + absl::Seconds(1));
  MustCreate("acct_a", kT0 + absl::Seconds(2));
  MustClaim(*store_, "worker-1", kT0 + absl::Seconds(3));
  ASSERT_TRUE(
      store_->RecordSubmitted(first.id, "worker-1", "job-1", "d", kT0 + absl::Seconds(3)).ok());
  absl::StatusOr<TaskQueueStats> stats = store_->QueueStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->queued, 2);
  EXPECT_EQ(stats->running, 1);
  EXPECT_EQ(stats->oldest_queued_at, kT0 + absl::Seconds(1));
  ASSERT_TRUE(store_->Finish(first.id, "worker-1", Succeeded(0, 10), kT0 + absl::Seconds(4)).ok());
  EXPECT_EQ(store_->QueueStats()->running, 0);
}

TEST_P(TaskStoreTest, TasksOutliveTheStoreThatWroteThem) {
  const Task task = MustCreate("acct_a", kT0);
  MustClaim(*store_, "worker-1", kT0);
  ASSERT_TRUE(store_->RecordSubmitted(task.id, "worker-1", "job-1", "d", kT0).ok());
  store_.reset();  // the process goes away
  std::unique_ptr<TaskStore> reopened = database_->Open();
  ASSERT_NE(reopened, nullptr);
  absl::StatusOr<Task> got = reopened->Get("acct_a", task.id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->status, TaskStatus::kRunning);
  EXPECT_EQ(got->upstream_job_id, "job-1");
  EXPECT_EQ(MustClaim(*reopened, "worker-2", kT0 + kLease).id, task.id);
}

TEST_P(TaskStoreTest, TwoStoresClaimingConcurrentlyNeverShareATask) {
  constexpr int kRounds = 100;
  std::set<std::string> created;
  for (int i = 0; i < 2 * kRounds; ++i)
    created.insert(MustCreate("acct_a", kT0 + absl::Microseconds(i)).id);

  std::unique_ptr<TaskStore> stores[2] = {database_->Open(), database_->Open()};
  ASSERT_NE(stores[0], nullptr);
  ASSERT_NE(stores[1], nullptr);
  std::vector<std::string> claimed[2];
  std::atomic<int> errors{0};
  const absl::Time now = kT0 + absl::Seconds(1);
  // Every round both stores claim at the same moment, so each claim races the other one;
  // each must get a task of its own, and the two together every task exactly once.
  std::barrier round(2);
  auto work = [&](int w) {
    const std::string worker = "worker-" + std::to_string(w);
    for (int i = 0; i < kRounds; ++i) {
      round.arrive_and_wait();
      absl::StatusOr<std::optional<Task>> task = stores[w]->ClaimNext(worker, kLease, now, 0);
      if (!task.ok() || !task->has_value()) {
        ++errors;
        continue;
      }
      claimed[w].push_back((*task)->id);
      absl::StatusOr<TaskTransition> done =
          stores[w]->Finish((*task)->id, worker, Succeeded(0, 5), now);
      if (!done.ok() || !done->applied) ++errors;
    }
  };
  std::thread first(work, 0);
  std::thread second(work, 1);
  first.join();
  second.join();

  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(claimed[0].size(), static_cast<size_t>(kRounds));
  EXPECT_EQ(claimed[1].size(), static_cast<size_t>(kRounds));
  std::set<std::string> union_of_claims;
  for (const auto& ids : claimed) {
    for (const std::string& id : ids)
      EXPECT_TRUE(union_of_claims.insert(id).second) << id << " claimed twice";
  }
  EXPECT_EQ(union_of_claims, created);
  EXPECT_TRUE(NothingToClaim(*store_, "worker-3", now));
}

TEST_P(TaskStoreTest, RacingFinishesFromTwoStoresApplyOnce) {
  const Task task = MustCreate("acct_a", kT0);
  MustClaim(*store_, "worker-1", kT0);
  std::unique_ptr<TaskStore> other = database_->Open();
  ASSERT_NE(other, nullptr);
  std::atomic<int> applied{0};
  auto finish = [&](TaskStore* store) {
    absl::StatusOr<TaskTransition> done = store->Finish(task.id, "worker-1", Succeeded(0, 5), kT0);
    if (done.ok() && done->applied) ++applied;
  };
  std::thread a(finish, store_.get());
  std::thread b(finish, other.get());
  a.join();
  b.join();
  EXPECT_EQ(applied.load(), 1);
}

INSTANTIATE_TEST_SUITE_P(
    Sqlite, TaskStoreTest,
    ::testing::Values(Backend{"sqlite", [] { return std::make_unique<SqliteTaskDatabase>(); }}),
    [](const ::testing::TestParamInfo<Backend>& info) { return info.param.name; });

// A server that drops its sessions (restart, failover) costs the store nothing: a pooled
// connection found dead is replaced before it is used, and the tasks are where they were.
class PostgresTaskSessionTest : public TaskStoreTest {};

TEST_P(PostgresTaskSessionTest, SessionsTheServerDroppedAreReopened) {
  const Task task = MustCreate("acct_a", kT0);
  MustClaim(*store_, "worker-1", kT0);
  auto* pg = dynamic_cast<PostgresTaskDatabase*>(database_.get());
  ASSERT_NE(pg, nullptr);
  ASSERT_TRUE(pg->DropSessions().ok());
  absl::StatusOr<Task> submitted =
      store_->RecordSubmitted(task.id, "worker-1", "job-1", "d", kT0 + absl::Seconds(1));
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  EXPECT_EQ(submitted->status, TaskStatus::kRunning);
  EXPECT_EQ(submitted->lease_owner, "worker-1");
  const Task next = MustCreate("acct_b", kT0 + absl::Seconds(2));
  ASSERT_TRUE(pg->DropSessions().ok());
  EXPECT_EQ(MustClaim(*store_, "worker-2", kT0 + absl::Seconds(3)).id, next.id);
}

INSTANTIATE_TEST_SUITE_P(Postgres, PostgresTaskSessionTest,
                         ::testing::Values(Backend{"postgres", &PostgresTaskDatabase::Make}),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param.name;
                         });

INSTANTIATE_TEST_SUITE_P(Postgres, TaskStoreTest,
                         ::testing::Values(Backend{"postgres", &PostgresTaskDatabase::Make}),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param.name;
                         });

TEST(TaskStoreNamesTest, StatusAndKindNamesRoundTrip) {
  for (TaskStatus status : {TaskStatus::kQueued, TaskStatus::kRunning, TaskStatus::kSucceeded,
                            TaskStatus::kFailed, TaskStatus::kCanceled}) {
    EXPECT_EQ(ParseTaskStatus(TaskStatusName(status)), status);
  }
  EXPECT_EQ(ParseTaskKind("video"), TaskKind::kVideo);
  EXPECT_EQ(ParseTaskKind("image"), TaskKind::kImage);
  EXPECT_FALSE(ParseTaskKind("audio"));
  EXPECT_FALSE(ParseTaskStatus("pending"));
  EXPECT_TRUE(IsFinal(TaskStatus::kCanceled));
  EXPECT_FALSE(IsFinal(TaskStatus::kRunning));
}

}  // namespace
}  // namespace nexusflow::connector

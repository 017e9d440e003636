#pragma once
// Async media tasks (images, video): the logic behind the connector's task RPCs, and the
// workers that drive each task from `queued` to a final state on DashScope's async
// protocol (PROTOCOL §D).
//
// Media never shares anything with chat: the task RPCs run on a small pool of their own
// (the store is a blocking client), and the workers are threads of their own with their
// own HTTP connections (one blocking libcurl handle each, keep-alive), their own limits
// (tasks in flight per process, per API key across replicas through the store's claim, per
// deployment) and their own store.
//
// A worker claims tasks with a lease and drives many at once: it submits a queued task to
// the first deployment that accepts it, records the upstream job (`running`), then polls it
// with backoff (poll_min_ms doubling up to poll_max_ms). A task's money ends before its
// status does: the worker settles what the upstream reports it produced (or releases the
// hold) and only then makes the final transition, so a worker killed in between leaves a
// live task that the next claimant finishes the same way; settlement is idempotent on the
// task id, so it is charged exactly once. A running task whose worker died is polled again
// on the same upstream job, never resubmitted.
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/thread_pool.hpp>

#include "absl/status/statusor.h"
#include "libs/config/config.h"
#include "nexusflow/billing/v1/billing.grpc.pb.h"
#include "nexusflow/connector/v1/connector.pb.h"
#include "services/provider-connector/task_store.h"

namespace nexusflow::connector {

class TaskService {
 public:
  // `billing` settles and releases the tasks' holds (an in-process or remote channel).
  TaskService(const Config::ProviderConnector& config, std::unique_ptr<TaskStore> store,
              std::unique_ptr<billing::v1::BillingLedgerService::StubInterface> billing);
  ~TaskService();  // stops the workers

  // Starts media.workers worker threads.
  void StartWorkers();
  void StopWorkers();

  // The RPCs' logic. Each runs `done` once, on the media RPC pool, never on the caller's
  // thread.
  using TaskDone = std::function<void(const absl::Status&, v1::Task)>;
  void Create(const v1::CreateTaskRequest& req, TaskDone done);
  void Get(const v1::GetTaskRequest& req, TaskDone done);
  void List(const v1::ListTasksRequest& req,
            std::function<void(const absl::Status&, v1::ListTasksResponse)> done);
  void Cancel(const v1::CancelTaskRequest& req, TaskDone done);
  void Content(const v1::GetTaskContentRequest& req,
               std::function<void(const absl::Status&, v1::TaskContent)> done);

  // Task id for a gateway request id: the same request creates the same task.
  static std::string TaskIdFor(std::string_view request_id);

  class Worker;  // one worker thread's state (defined in the .cc)

 private:
  void WorkerLoop(int index);
  void Wake();

  Config::ProviderConnector config_;
  std::unique_ptr<TaskStore> store_;
  std::unique_ptr<billing::v1::BillingLedgerService::StubInterface> billing_;
  boost::asio::thread_pool rpc_pool_{2};
  std::mutex mu_;
  std::condition_variable wake_;
  uint64_t wakeups_ = 0;  // guarded by mu_
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> workers_;
  std::thread stats_;  // queue depth and age for /metrics
};

// The public task object of a stored task (params as given, result and error when final).
v1::Task ToProto(const Task& task);

// Opens the task store media.task_store names (an SQLite path or a postgresql:// URL).
absl::StatusOr<std::unique_ptr<TaskStore>> OpenTaskStore(const std::string& location);

}  // namespace nexusflow::connector

// The task RPCs of ProviderConnectorService: each hands its request to the TaskService,
// which answers from the media pool.
#include "libs/common/status_map.h"
#include "libs/rpc/internal_auth.h"
#include "services/provider-connector/connector_service.h"

namespace nexusflow::connector {
namespace {

// Finishes `reactor` with what a TaskService call produced, copied into `out`.
template <class Message>
auto FinishWith(grpc::ServerUnaryReactor* reactor, Message* out) {
  return [reactor, out](const absl::Status& s, Message m) {
    if (s.ok()) *out = std::move(m);
    reactor->Finish(ToGrpcStatus(s));
  };
}

grpc::ServerUnaryReactor* NoTasks(grpc::CallbackServerContext* ctx) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status(grpc::UNAVAILABLE, "the media task service is starting"));
  return reactor;
}

}  // namespace

void ProviderConnectorService::EnableTasks(std::unique_ptr<TaskService> tasks) {
  tasks_ = std::move(tasks);
  tasks_->StartWorkers();
  tasks_ready_.store(tasks_.get(), std::memory_order_release);
}

grpc::ServerUnaryReactor* ProviderConnectorService::CreateTask(grpc::CallbackServerContext* ctx,
                                                               const pb::CreateTaskRequest* req, pb::Task* task) {
  NF_REQUIRE_INTERNAL(ctx);
  TaskService* tasks = tasks_ready_.load(std::memory_order_acquire);
  if (!tasks) return NoTasks(ctx);
  auto* reactor = ctx->DefaultReactor();
  tasks->Create(*req, FinishWith(reactor, task));
  return reactor;
}

grpc::ServerUnaryReactor* ProviderConnectorService::GetTask(grpc::CallbackServerContext* ctx,
                                                            const pb::GetTaskRequest* req, pb::Task* task) {
  NF_REQUIRE_INTERNAL(ctx);
  TaskService* tasks = tasks_ready_.load(std::memory_order_acquire);
  if (!tasks) return NoTasks(ctx);
  auto* reactor = ctx->DefaultReactor();
  tasks->Get(*req, FinishWith(reactor, task));
  return reactor;
}

grpc::ServerUnaryReactor* ProviderConnectorService::ListTasks(grpc::CallbackServerContext* ctx,
                                                              const pb::ListTasksRequest* req,
                                                              pb::ListTasksResponse* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  TaskService* tasks = tasks_ready_.load(std::memory_order_acquire);
  if (!tasks) return NoTasks(ctx);
  auto* reactor = ctx->DefaultReactor();
  tasks->List(*req, FinishWith(reactor, resp));
  return reactor;
}

grpc::ServerUnaryReactor* ProviderConnectorService::CancelTask(grpc::CallbackServerContext* ctx,
                                                               const pb::CancelTaskRequest* req, pb::Task* task) {
  NF_REQUIRE_INTERNAL(ctx);
  TaskService* tasks = tasks_ready_.load(std::memory_order_acquire);
  if (!tasks) return NoTasks(ctx);
  auto* reactor = ctx->DefaultReactor();
  tasks->Cancel(*req, FinishWith(reactor, task));
  return reactor;
}

grpc::ServerUnaryReactor* ProviderConnectorService::GetTaskContent(grpc::CallbackServerContext* ctx,
                                                                   const pb::GetTaskContentRequest* req,
                                                                   pb::TaskContent* content) {
  NF_REQUIRE_INTERNAL(ctx);
  TaskService* tasks = tasks_ready_.load(std::memory_order_acquire);
  if (!tasks) return NoTasks(ctx);
  auto* reactor = ctx->DefaultReactor();
  tasks->Content(*req, FinishWith(reactor, content));
  return reactor;
}

}  // namespace nexusflow::connector

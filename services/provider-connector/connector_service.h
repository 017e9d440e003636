#pragma once
// ProviderConnectorService: canonical chat → provider wire format over HTTP(S), with
// failover across the candidate deployments before the first byte reaches the caller.
#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "libs/config/config.h"
#include "libs/loop/event_loops.h"
#include "libs/rpc/stream_writer.h"
#include "nexusflow/connector/v1/connector.grpc.pb.h"
#include "services/provider-connector/deployment_health.h"
#include "services/provider-connector/http_client.h"
#include "services/provider-connector/task_service.h"

namespace nexusflow::connector {

namespace pb = ::nexusflow::connector::v1;

class ProviderConnectorService : public pb::ProviderConnectorService::CallbackService {
 public:
  // Upstream calls run on `loops` (the process's event loops): a call started on a loop
  // thread stays on it.
  ProviderConnectorService(const Config::ProviderConnector& config, EventLoops& loops);
  // With a loop of its own (tests, tools).
  explicit ProviderConnectorService(const Config::ProviderConnector& config);
  ~ProviderConnectorService() override;

  grpc::ServerWriteReactor<pb::ChatChunk>* Chat(grpc::CallbackServerContext* ctx,
                                               const pb::ChatCall* call) override;

  // The logic behind Chat, for a caller in the same process: chunks go to `sink`.
  void StartChat(pb::ChatCall call, std::shared_ptr<StreamSink<pb::ChatChunk>> sink);

  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* ctx, const pb::EmbedCall* call,
                                  llm::v1::EmbedResponse* response) override;
  // The logic behind Embed: `done` runs once, on a loop thread, with the vectors or why not.
  void StartEmbed(const pb::EmbedCall& call,
                  std::function<void(const grpc::Status&, llm::v1::EmbedResponse)> done);

  // Async media tasks (task_service.h): served once a TaskService is given; before, the
  // task RPCs answer UNAVAILABLE (the process is starting). Starts its workers.
  void EnableTasks(std::unique_ptr<TaskService> tasks);
  grpc::ServerUnaryReactor* CreateTask(grpc::CallbackServerContext* ctx, const pb::CreateTaskRequest* req,
                                       pb::Task* task) override;
  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* ctx, const pb::GetTaskRequest* req,
                                    pb::Task* task) override;
  grpc::ServerUnaryReactor* ListTasks(grpc::CallbackServerContext* ctx, const pb::ListTasksRequest* req,
                                      pb::ListTasksResponse* resp) override;
  grpc::ServerUnaryReactor* CancelTask(grpc::CallbackServerContext* ctx, const pb::CancelTaskRequest* req,
                                       pb::Task* task) override;
  grpc::ServerUnaryReactor* GetTaskContent(grpc::CallbackServerContext* ctx,
                                           const pb::GetTaskContentRequest* req,
                                           pb::TaskContent* content) override;
  // This replica's circuit breakers (deployment_health.h).
  grpc::ServerUnaryReactor* ListDeploymentHealth(grpc::CallbackServerContext* ctx,
                                                 const pb::ListDeploymentHealthRequest* request,
                                                 pb::ListDeploymentHealthResponse* response) override;
  DeploymentHealth& health() { return health_; }

 private:
  Config::ProviderConnector config_;
  std::unique_ptr<EventLoops> own_loops_;
  // Outlives http_: calls that http_ ends as it goes report to it.
  DeploymentHealth health_;
  HttpClient http_;
  std::unique_ptr<TaskService> tasks_;  // last member: its workers stop first
  // What the task RPCs use: set once tasks_ is ready (RPCs may arrive before).
  std::atomic<TaskService*> tasks_ready_{nullptr};
};

// Rough prompt size in tokens (about four characters a token), for holds and limits
// before the upstream reports the real count.
int64_t EstimatePromptTokens(const llm::v1::ChatRequest& request);

}  // namespace nexusflow::connector

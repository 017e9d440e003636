#pragma once
// AuthService: resolves API keys to identities, manages keys, and streams revocations.
// It knows nothing about ports or processes: wiring lives in cmd/nexusflow.
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "libs/rpc/stream_writer.h"
#include "nexusflow/auth/v1/auth.grpc.pb.h"
#include "services/auth/key_store.h"

namespace nexusflow::auth {

namespace pb = ::nexusflow::auth::v1;

class AuthService : public pb::AuthService::CallbackService {
 public:
  // `now` returns unix seconds (injected for tests).
  explicit AuthService(std::unique_ptr<KeyStore> store,
                       std::function<int64_t()> now = nullptr);
  ~AuthService() override;

  grpc::ServerUnaryReactor* Authenticate(grpc::CallbackServerContext* ctx,
                                         const pb::AuthenticateRequest* req,
                                         pb::AuthenticateResponse* resp) override;
  grpc::ServerWriteReactor<pb::RevocationEvent>* WatchRevocations(
      grpc::CallbackServerContext* ctx, const pb::WatchRevocationsRequest* req) override;
  grpc::ServerUnaryReactor* CreateKey(grpc::CallbackServerContext* ctx,
                                      const pb::CreateKeyRequest* req,
                                      pb::CreateKeyResponse* resp) override;
  grpc::ServerUnaryReactor* ListKeys(grpc::CallbackServerContext* ctx,
                                     const pb::ListKeysRequest* req,
                                     pb::ListKeysResponse* resp) override;
  grpc::ServerUnaryReactor* RevokeKey(grpc::CallbackServerContext* ctx,
                                      const pb::RevokeKeyRequest* req,
                                      pb::RevokeKeyResponse* resp) override;

 private:
  void Broadcast(const pb::RevocationEvent& event);
  // On a shared store: other replicas' revocations, read every 200 ms and broadcast.
  void FollowRevocations();

  std::unique_ptr<KeyStore> store_;
  std::function<int64_t()> now_;
  std::mutex watchers_mu_;
  std::vector<std::shared_ptr<QueuedWriter<pb::RevocationEvent>>> watchers_;
  std::mutex follow_mu_;
  std::condition_variable follow_cv_;
  bool stopping_ = false;
  std::thread follower_;
};

}  // namespace nexusflow::auth

#pragma once
// The calls on a chat request's path: admission (rate-limit lease and billing hold),
// the provider stream, settlement and release. A target in this process is called
// directly (no serialisation, no thread hops); a target elsewhere over gRPC. Which is
// which is decided per target when the process starts.
#include <chrono>
#include <memory>

#include <grpcpp/support/status.h>

#include "gateway/backends.h"

namespace nexusflow {
namespace ratelimit { class RateLimiterService; }
namespace billing { class BillingLedgerService; }
namespace connector { class ProviderConnectorService; }
}  // namespace nexusflow

namespace nexusflow::gateway {

// Targets that share the gateway's process (null when elsewhere).
struct LocalServices {
  ratelimit::RateLimiterService* ratelimit = nullptr;
  billing::BillingLedgerService* billing = nullptr;
  connector::ProviderConnectorService* connector = nullptr;
};

// The chunks of one answer, in order.
class ChatChunks {
 public:
  virtual ~ChatChunks() = default;
  virtual bool Next(connector::v1::ChatChunk* chunk) = 0;
  // After Next returned false: how the stream ended.
  virtual grpc::Status Finish() = 0;
};

class RequestPath {
 public:
  RequestPath(Backends& backends, LocalServices local) : backends_(backends), local_(local) {}

  // Acquire and Reserve; remote calls go out in parallel.
  void Admit(const ratelimit::v1::AcquireRequest& areq, ratelimit::v1::AcquireResponse* aresp,
             grpc::Status* astatus, const billing::v1::ReserveRequest& breq,
             billing::v1::ReserveResponse* bresp, grpc::Status* bstatus);
  // Fire and forget: a lease the limiter never hears of expires on its own.
  void ReleaseLease(const std::string& lease_id, int64_t actual_tokens);
  void ReleaseHold(const std::string& hold_id);
  // Returns once the settlement is committed (or failed).
  grpc::Status Settle(const billing::v1::SettleRequest& req, billing::v1::SettleResponse* resp);
  std::unique_ptr<ChatChunks> Chat(const connector::v1::ChatCall& call,
                                   std::chrono::system_clock::time_point deadline);

 private:
  Backends& backends_;
  LocalServices local_;
};

}  // namespace nexusflow::gateway

#pragma once
// RateLimiterService: plan limits (from config) applied through a CounterStore.
#include <functional>
#include <memory>

#include "absl/status/status.h"

#include "nexusflow/ratelimit/v1/ratelimit.grpc.pb.h"
#include "services/rate-limiter/counter_store.h"

namespace nexusflow::ratelimit {

namespace pb = ::nexusflow::ratelimit::v1;

class RateLimiterService : public pb::RateLimiterService::CallbackService {
 public:
  RateLimiterService(const Config::RateLimiter& config, std::unique_ptr<CounterStore> store,
                     std::function<Clock::time_point()> now = nullptr);

  grpc::ServerUnaryReactor* Acquire(grpc::CallbackServerContext* ctx,
                                    const pb::AcquireRequest* req,
                                    pb::AcquireResponse* resp) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx,
                                    const pb::ReleaseRequest* req,
                                    pb::ReleaseResponse* resp) override;

  // The logic behind the RPCs, for a caller in the same process.
  absl::Status AcquireLease(const pb::AcquireRequest& req, pb::AcquireResponse* resp);
  absl::Status ReleaseLease(const pb::ReleaseRequest& req);

 private:
  Config::RateLimiter config_;
  std::unique_ptr<CounterStore> store_;
  std::function<Clock::time_point()> now_;
};

}  // namespace nexusflow::ratelimit

#pragma once
// The calls on a chat request's path: admission (rate-limit lease and billing hold),
// the provider stream, settlement and release, each awaited by the request's coroutine
// without blocking its loop. A target in this process is called directly (no
// serialisation, no thread hops: the connector streams on the caller's loop); a target
// elsewhere over the gRPC callback API, resuming on the caller's loop.
#include <chrono>
#include <memory>

#include <boost/asio/awaitable.hpp>
#include <grpcpp/support/status.h>

#include "gateway/backends.h"
#include "gateway/chat_stream.h"

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

// A chat stream in progress, and the metrics of its call.
class ChatCall {
 public:
  ChatCall(std::shared_ptr<ChatStream> stream, bool local)
      : stream_(std::move(stream)), local_(local), start_(std::chrono::steady_clock::now()) {}
  ~ChatCall();  // cancels a stream still running (the caller left early)
  ChatStream& stream() { return *stream_; }
  std::shared_ptr<ChatStream> shared_stream() const { return stream_; }
  // After Next returned false: how the stream ended (counted like the RPC when local).
  grpc::Status Finish();

 private:
  std::shared_ptr<ChatStream> stream_;
  bool local_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

class RequestPath {
 public:
  RequestPath(Backends& backends, LocalServices local) : backends_(backends), local_(local) {}

  // Acquire and Reserve; remote calls go out in parallel.
  boost::asio::awaitable<void> Admit(const ratelimit::v1::AcquireRequest& areq,
                                     ratelimit::v1::AcquireResponse* aresp, grpc::Status* astatus,
                                     const billing::v1::ReserveRequest& breq,
                                     billing::v1::ReserveResponse* bresp, grpc::Status* bstatus);
  // Fire and forget: a lease the limiter never hears of expires on its own, and so does a
  // hold.
  void ReleaseLease(const std::string& lease_id, int64_t actual_tokens);
  void ReleaseHold(const std::string& hold_id);
  // Resumes once the settlement is committed (or failed).
  boost::asio::awaitable<grpc::Status> Settle(const billing::v1::SettleRequest& req,
                                              billing::v1::SettleResponse* resp);
  // Embeds on the connector; resumes on the calling coroutine's loop.
  boost::asio::awaitable<grpc::Status> Embed(const connector::v1::EmbedCall& call,
                                             llm::v1::EmbedResponse* response,
                                             std::chrono::system_clock::time_point deadline);
  // Starts the provider stream, delivered to the calling coroutine's loop.
  boost::asio::awaitable<std::unique_ptr<ChatCall>> Chat(
      connector::v1::ChatCall call, std::chrono::system_clock::time_point deadline);

 private:
  Backends& backends_;
  LocalServices local_;
};

}  // namespace nexusflow::gateway

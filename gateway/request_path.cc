#include "gateway/request_path.h"

#include <condition_variable>
#include <mutex>

#include "libs/common/status_map.h"
#include "libs/rpc/local_stream.h"
#include "services/billing-ledger/billing_service.h"
#include "services/provider-connector/connector_service.h"
#include "services/rate-limiter/rate_limiter_service.h"

namespace nexusflow::gateway {
namespace {

// Waits for a set of async completions.
class Latch {
 public:
  explicit Latch(int n) : n_(n) {}
  void CountDown() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--n_ == 0) cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return n_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
};

class LocalChatChunks : public ChatChunks {
 public:
  explicit LocalChatChunks(std::shared_ptr<LocalStream<connector::v1::ChatChunk>> stream)
      : stream_(std::move(stream)) {}
  ~LocalChatChunks() override { stream_->Cancel(); }  // no-op once the stream ended
  bool Next(connector::v1::ChatChunk* chunk) override { return stream_->Next(chunk); }
  grpc::Status Finish() override { return stream_->Wait(); }

 private:
  std::shared_ptr<LocalStream<connector::v1::ChatChunk>> stream_;
};

class GrpcChatChunks : public ChatChunks {
 public:
  GrpcChatChunks(connector::v1::ProviderConnectorService::Stub* stub,
                 const connector::v1::ChatCall& call,
                 std::chrono::system_clock::time_point deadline) {
    ctx_.set_deadline(deadline);
    reader_ = stub->Chat(&ctx_, call);
  }
  bool Next(connector::v1::ChatChunk* chunk) override { return reader_->Read(chunk); }
  grpc::Status Finish() override { return reader_->Finish(); }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<connector::v1::ChatChunk>> reader_;
};

}  // namespace

void RequestPath::Admit(const ratelimit::v1::AcquireRequest& areq,
                        ratelimit::v1::AcquireResponse* aresp, grpc::Status* astatus,
                        const billing::v1::ReserveRequest& breq,
                        billing::v1::ReserveResponse* bresp, grpc::Status* bstatus) {
  int remote = (local_.ratelimit ? 0 : 1) + (local_.billing ? 0 : 1);
  Latch latch(remote);
  grpc::ClientContext actx, bctx;
  auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(5);
  if (!local_.ratelimit) {
    actx.set_deadline(deadline);
    backends_.ratelimit->async()->Acquire(&actx, &areq, aresp, [&](grpc::Status s) {
      *astatus = std::move(s);
      latch.CountDown();
    });
  }
  if (!local_.billing) {
    bctx.set_deadline(deadline);
    backends_.billing->async()->Reserve(&bctx, &breq, bresp, [&](grpc::Status s) {
      *bstatus = std::move(s);
      latch.CountDown();
    });
  }
  if (local_.ratelimit) *astatus = ToGrpcStatus(local_.ratelimit->AcquireLease(areq, aresp));
  if (local_.billing) *bstatus = ToGrpcStatus(local_.billing->ReserveHold(breq, bresp));
  if (remote) latch.Wait();
}

void RequestPath::ReleaseLease(const std::string& lease_id, int64_t actual_tokens) {
  if (lease_id.empty()) return;
  ratelimit::v1::ReleaseRequest req;
  req.set_lease_id(lease_id);
  req.set_actual_tokens(actual_tokens);
  if (local_.ratelimit) {
    (void)local_.ratelimit->ReleaseLease(req);
    return;
  }
  struct Call {
    grpc::ClientContext ctx;
    ratelimit::v1::ReleaseRequest req;
    ratelimit::v1::ReleaseResponse resp;
  };
  auto* call = new Call;
  call->req = std::move(req);
  backends_.ratelimit->async()->Release(&call->ctx, &call->req, &call->resp,
                                        [call](grpc::Status) { delete call; });
}

void RequestPath::ReleaseHold(const std::string& hold_id) {
  if (hold_id.empty()) return;
  if (local_.billing) return local_.billing->CloseHold(hold_id);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  billing::v1::ReleaseHoldRequest req;
  req.set_hold_id(hold_id);
  billing::v1::ReleaseHoldResponse resp;
  (void)backends_.billing->ReleaseHold(&ctx, req, &resp);
}

grpc::Status RequestPath::Settle(const billing::v1::SettleRequest& req,
                                 billing::v1::SettleResponse* resp) {
  if (!local_.billing) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return backends_.billing->Settle(&ctx, req, resp);
  }
  Latch latch(1);
  absl::Status status;
  local_.billing->SettleUsage(req, resp, [&](const absl::Status& s) {
    status = s;
    latch.CountDown();
  });
  latch.Wait();
  return ToGrpcStatus(status);
}

std::unique_ptr<ChatChunks> RequestPath::Chat(const connector::v1::ChatCall& call,
                                              std::chrono::system_clock::time_point deadline) {
  if (!local_.connector)
    return std::make_unique<GrpcChatChunks>(backends_.connector.get(), call, deadline);
  auto stream = std::make_shared<LocalStream<connector::v1::ChatChunk>>();
  local_.connector->StartChat(call, stream);
  return std::make_unique<LocalChatChunks>(std::move(stream));
}

}  // namespace nexusflow::gateway

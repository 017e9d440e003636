#include "gateway/request_path.h"

#include <condition_variable>
#include <map>
#include <mutex>

#include "libs/common/status_map.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/local_stream.h"
#include "services/billing-ledger/billing_service.h"
#include "services/provider-connector/connector_service.h"
#include "services/rate-limiter/rate_limiter_service.h"

namespace nexusflow::gateway {
namespace {

// The recorder of one local call's metrics, made once per method.
RpcRecorder& Recorder(const char* service, const char* method);

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
      : stream_(std::move(stream)), start_(std::chrono::steady_clock::now()) {}
  ~LocalChatChunks() override { stream_->Cancel(); }  // no-op once the stream ended
  bool Next(connector::v1::ChatChunk* chunk) override { return stream_->Next(chunk); }
  grpc::Status Finish() override {
    grpc::Status s = stream_->Wait();
    static RpcRecorder& recorder = Recorder("nexusflow.connector.v1.ProviderConnectorService", "Chat");
    recorder.Record(s.error_code(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    return s;
  }

 private:
  std::shared_ptr<LocalStream<connector::v1::ChatChunk>> stream_;
  std::chrono::steady_clock::time_point start_;
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

// Times a direct call and counts it like its RPC.
class LocalCall {
 public:
  explicit LocalCall(RpcRecorder& recorder)
      : recorder_(recorder), start_(std::chrono::steady_clock::now()) {}
  void Done(grpc::StatusCode code) {
    recorder_.Record(code, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }

 private:
  RpcRecorder& recorder_;
  std::chrono::steady_clock::time_point start_;
};

RpcRecorder& Recorder(const char* service, const char* method) {
  static std::mutex mu;
  static std::map<std::pair<std::string, std::string>, std::unique_ptr<RpcRecorder>> recorders;
  std::lock_guard<std::mutex> lock(mu);
  auto& r = recorders[{service, method}];
  if (!r) r = std::make_unique<RpcRecorder>(service, method);
  return *r;
}

constexpr char kRateLimiter[] = "nexusflow.ratelimit.v1.RateLimiterService";
constexpr char kBilling[] = "nexusflow.billing.v1.BillingLedgerService";

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
  if (local_.ratelimit) {
    static RpcRecorder& recorder = Recorder(kRateLimiter, "Acquire");
    LocalCall call(recorder);
    *astatus = ToGrpcStatus(local_.ratelimit->AcquireLease(areq, aresp));
    call.Done(astatus->error_code());
  }
  if (local_.billing) {
    static RpcRecorder& recorder = Recorder(kBilling, "Reserve");
    LocalCall call(recorder);
    *bstatus = ToGrpcStatus(local_.billing->ReserveHold(breq, bresp));
    call.Done(bstatus->error_code());
  }
  if (remote) latch.Wait();
}

void RequestPath::ReleaseLease(const std::string& lease_id, int64_t actual_tokens) {
  if (lease_id.empty()) return;
  ratelimit::v1::ReleaseRequest req;
  req.set_lease_id(lease_id);
  req.set_actual_tokens(actual_tokens);
  if (local_.ratelimit) {
    static RpcRecorder& recorder = Recorder(kRateLimiter, "Release");
    LocalCall call(recorder);
    call.Done(ToGrpcStatus(local_.ratelimit->ReleaseLease(req)).error_code());
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
  if (local_.billing) {
    static RpcRecorder& recorder = Recorder(kBilling, "ReleaseHold");
    LocalCall call(recorder);
    local_.billing->CloseHold(hold_id);
    return call.Done(grpc::OK);
  }
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
  static RpcRecorder& recorder = Recorder(kBilling, "Settle");
  LocalCall call(recorder);
  Latch latch(1);
  absl::Status status;
  local_.billing->SettleUsage(req, resp, [&](const absl::Status& s) {
    status = s;
    latch.CountDown();
  });
  latch.Wait();
  grpc::Status out = ToGrpcStatus(status);
  call.Done(out.error_code());
  return out;
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

#include "gateway/request_path.h"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <grpcpp/support/client_callback.h>
#include <map>
#include <mutex>

#include "gateway/async_call.h"
#include "libs/common/status_map.h"
#include "libs/metrics/metrics.h"
#include "services/billing-ledger/billing_service.h"
#include "services/provider-connector/connector_service.h"
#include "services/rate-limiter/rate_limiter_service.h"

namespace nexusflow::gateway {
namespace net = boost::asio;
namespace {

// The recorder of one local call's metrics, made once per method.
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
constexpr char kConnector[] = "nexusflow.connector.v1.ProviderConnectorService";

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

// A remote Chat: reads one chunk at a time into the stream, and stops reading while the
// stream is full (gRPC's flow control then holds the connector back).
class GrpcChatReader : public grpc::ClientReadReactor<connector::v1::ChatChunk> {
 public:
  static void Start(connector::v1::ProviderConnectorService::Stub* stub,
                    connector::v1::ChatCall call,
                    std::chrono::system_clock::time_point deadline,
                    std::shared_ptr<ChatStream> stream) {
    auto r = std::shared_ptr<GrpcChatReader>(new GrpcChatReader(std::move(call), deadline, stream));
    r->self_ = r;
    std::weak_ptr<GrpcChatReader> weak = r;
    stream->SetOnCancel([r] { r->ctx_.TryCancel(); });
    stream->SetOnDrain([weak] {
      if (auto me = weak.lock()) me->Resume();
    });
    stub->async()->Chat(&r->ctx_, &r->call_, r.get());
    r->StartRead(&r->chunk_);
    r->StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (!call_released_) {
      // The connector answered, so it has the request: its prompt is not kept while the
      // stream lasts (swapped out and freed; Clear would keep the memory for reuse).
      connector::v1::ChatCall().Swap(&call_);
      call_released_ = true;
    }
    stream_->Push(std::move(chunk_));
    chunk_.Clear();
    if (stream_->full()) {
      paused_ = true;
      return;
    }
    StartRead(&chunk_);
  }

  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<GrpcChatReader> keep;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      keep.swap(self_);
    }
    stream_->Finish(status);  // drops the stream's callbacks, and with them this reader
  }

 private:
  GrpcChatReader(connector::v1::ChatCall call, std::chrono::system_clock::time_point deadline,
                 std::shared_ptr<ChatStream> stream)
      : call_(std::move(call)), stream_(std::move(stream)) {
    ctx_.set_deadline(deadline);
  }

  void Resume() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!paused_ || done_) return;
    paused_ = false;
    StartRead(&chunk_);
  }

  grpc::ClientContext ctx_;
  connector::v1::ChatCall call_;
  connector::v1::ChatChunk chunk_;
  std::shared_ptr<ChatStream> stream_;
  std::mutex mu_;
  bool paused_ = false;
  bool done_ = false;
  bool call_released_ = false;
  std::shared_ptr<GrpcChatReader> self_;  // alive until OnDone
};

}  // namespace

ChatCall::~ChatCall() {
  if (!finished_) stream_->Cancel();
}

grpc::Status ChatCall::Finish() {
  finished_ = true;
  grpc::Status s = stream_->status();
  if (local_) {
    static RpcRecorder& recorder = Recorder(kConnector, "Chat");
    recorder.Record(s.error_code(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  return s;
}

net::awaitable<void> RequestPath::Admit(const ratelimit::v1::AcquireRequest& areq,
                                        ratelimit::v1::AcquireResponse* aresp, grpc::Status* astatus,
                                        const billing::v1::ReserveRequest& breq,
                                        billing::v1::ReserveResponse* bresp, grpc::Status* bstatus) {
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
  auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(5);
  grpc::ClientContext actx, bctx;
  actx.set_deadline(deadline);
  bctx.set_deadline(deadline);
  auto acquire = [&]() -> net::awaitable<void> {
    *astatus = co_await AwaitGrpc([&](auto done) {
      backends_.ratelimit->async()->Acquire(&actx, &areq, aresp, std::move(done));
    });
  };
  auto reserve = [&]() -> net::awaitable<void> {
    *bstatus = co_await AwaitGrpc([&](auto done) {
      backends_.billing->async()->Reserve(&bctx, &breq, bresp, std::move(done));
    });
  };
  using namespace net::experimental::awaitable_operators;
  if (!local_.ratelimit && !local_.billing) {
    co_await (acquire() && reserve());
  } else if (!local_.ratelimit) {
    co_await acquire();
  } else if (!local_.billing) {
    co_await reserve();
  }
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
  call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
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
  struct Call {
    grpc::ClientContext ctx;
    billing::v1::ReleaseHoldRequest req;
    billing::v1::ReleaseHoldResponse resp;
  };
  auto* call = new Call;
  call->req.set_hold_id(hold_id);
  call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  backends_.billing->async()->ReleaseHold(&call->ctx, &call->req, &call->resp,
                                          [call](grpc::Status) { delete call; });
}

net::awaitable<grpc::Status> RequestPath::Settle(const billing::v1::SettleRequest& req,
                                                 billing::v1::SettleResponse* resp) {
  if (!local_.billing) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    co_return co_await AwaitGrpc([&](auto done) {
      backends_.billing->async()->Settle(&ctx, &req, resp, std::move(done));
    });
  }
  static RpcRecorder& recorder = Recorder(kBilling, "Settle");
  LocalCall call(recorder);
  // The ledger's writer thread commits (with others queued meanwhile); the loop goes on
  // serving until it has.
  grpc::Status out = co_await AwaitGrpc([&](auto done) {
    local_.billing->SettleUsage(
        req, resp, [done = std::move(done)](const absl::Status& s) { done(ToGrpcStatus(s)); },
        /*may_commit_here=*/false);
  });
  call.Done(out.error_code());
  co_return out;
}

net::awaitable<grpc::Status> RequestPath::Embed(const connector::v1::EmbedCall& call,
                                                llm::v1::EmbedResponse* response,
                                                std::chrono::system_clock::time_point deadline) {
  if (!local_.connector) {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    co_return co_await AwaitGrpc([&](auto done) {
      backends_.connector->async()->Embed(&ctx, &call, response, std::move(done));
    });
  }
  static RpcRecorder& recorder = Recorder(kConnector, "Embed");
  LocalCall local(recorder);
  grpc::Status out = co_await AwaitGrpc([&](auto done) {
    local_.connector->StartEmbed(call, [response, done = std::move(done)](const grpc::Status& s,
                                                                          llm::v1::EmbedResponse r) mutable {
      if (s.ok()) *response = std::move(r);
      done(s);
    });
  });
  local.Done(out.error_code());
  co_return out;
}

net::awaitable<std::unique_ptr<ChatCall>> RequestPath::Chat(
    connector::v1::ChatCall call, std::chrono::system_clock::time_point deadline) {
  auto stream = std::make_shared<ChatStream>(co_await net::this_coro::executor);
  if (local_.connector) {
    local_.connector->StartChat(std::move(call), stream);
    co_return std::make_unique<ChatCall>(std::move(stream), true);
  }
  GrpcChatReader::Start(backends_.connector.get(), std::move(call), deadline, stream);
  co_return std::make_unique<ChatCall>(std::move(stream), false);
}

}  // namespace nexusflow::gateway

#include "libs/rpc/server_host.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/client_interceptor.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/internal_auth.h"

namespace nexusflow {
namespace {

// Adds the internal token to every call of a channel.
class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* token) : token_(token) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA))
      methods->GetSendInitialMetadata()->insert({kInternalTokenHeader, *token_});
    methods->Proceed();
  }

 private:
  const std::string* token_;
};

class TokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::string token) : token_(std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&token_);
  }

 private:
  std::string token_;  // the channel keeps its factories as long as it lives
};

std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> TokenInterceptors(
    const std::string& token) {
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> out;
  if (!token.empty()) out.push_back(std::make_unique<TokenInterceptorFactory>(token));
  return out;
}

}  // namespace

bool IsLoopbackAddress(const std::string& host_port) {
  std::string host = host_port.substr(0, host_port.rfind(':'));
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

ServerHost::ServerHost() = default;

ServerHost::~ServerHost() {
  if (server_) Shutdown(0);
}

void ServerHost::AddService(grpc::Service* service) { services_.push_back(service); }

absl::Status ServerHost::Start(const std::string& address, const Options& options) {
  if (options.internal_token.empty() && !IsLoopbackAddress(address))
    return absl::InvalidArgumentError(absl::StrCat(
        "gRPC would listen on ", address, " without server.internal_token, open to anyone who can reach it "
        "(credits, keys): set the token, or listen on loopback"));
  token_ = options.internal_token;
  SetInternalToken(token_);
  SetAdminRpcToken(options.admin_rpc_token);
  grpc::EnableDefaultHealthCheckService(true);
  if (options.reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port_);
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.SetMaxSendMessageSize(64 << 20);
  for (auto* s : services_) builder.RegisterService(s);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(MakeRpcMetricsInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(factories));
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0)
    return absl::UnavailableError(absl::StrCat("gRPC server cannot listen on ", address));
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> ServerHost::InProcessChannel() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  if (token_.empty()) return server_->InProcessChannel(args);
  return server_->experimental().InProcessChannelWithInterceptors(args, TokenInterceptors(token_));
}

void ServerHost::SetServing(bool serving) {
  if (server_ && server_->GetHealthCheckService())
    server_->GetHealthCheckService()->SetServingStatus(serving);
}

void ServerHost::Shutdown(int grace_seconds) {
  if (!server_) return;
  SetServing(false);
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(grace_seconds));
  server_->Wait();
  server_.reset();
}

std::shared_ptr<grpc::Channel> DialTarget(const std::string& address, const std::string& token) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  // A stream's receive window stays small and fixed: a reader that stops (a gateway
  // whose client reads slowly) holds its sender back after this many bytes, instead of
  // letting bandwidth probing grow the window to megabytes per stream.
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 256 << 10);
  if (address.find(',') != std::string::npos) {
    // Several replicas ("host:port,host:port"): a connection to each, calls spread round
    // robin, a replica that goes away is skipped until it is back.
    args.SetLoadBalancingPolicyName("round_robin");
  }
  // Releases are fire and forget on the request path, and idempotent: one that a replica
  // could not carry out (UNAVAILABLE: it is going away, or cannot reach its store) is
  // retried, round robin taking it to the next replica. Lost, a lease would hold its
  // concurrency slot, and a hold its money, until it expires.
  args.SetServiceConfigJSON(R"({"methodConfig":[{
    "name":[{"service":"nexusflow.ratelimit.v1.RateLimiterService","method":"Release"},
            {"service":"nexusflow.billing.v1.BillingLedgerService","method":"ReleaseHold"}],
    "retryPolicy":{"maxAttempts":5,"initialBackoff":"0.05s","maxBackoff":"1s",
                   "backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]})");
  std::string target = address.find(',') != std::string::npos ? "ipv4:" + address : address;
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, grpc::InsecureChannelCredentials(), args,
                                                                 TokenInterceptors(token));
}

}  // namespace nexusflow

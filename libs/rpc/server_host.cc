#include "libs/rpc/server_host.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "libs/metrics/metrics.h"

namespace nexusflow {

ServerHost::ServerHost() = default;

ServerHost::~ServerHost() {
  if (server_) Shutdown(0);
}

void ServerHost::AddService(grpc::Service* service) { services_.push_back(service); }

absl::Status ServerHost::Start(const std::string& address) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
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
  return server_->InProcessChannel(args);
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

std::shared_ptr<grpc::Channel> DialTarget(const std::string& address) {
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
    return grpc::CreateCustomChannel("ipv4:" + address, grpc::InsecureChannelCredentials(), args);
  }
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

}  // namespace nexusflow

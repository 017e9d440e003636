#pragma once
// One gRPC server per process for all of its targets, with the standard health service,
// RPC metrics and (when enabled) reflection; in-process channels to the targets it hosts.
// Internal calls carry the internal token (internal_auth.h).
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/server.h>

#include "absl/status/status.h"

namespace nexusflow {

class ServerHost {
 public:
  ServerHost();
  ~ServerHost();

  // Before Start: services must outlive the host.
  void AddService(grpc::Service* service);
  struct Options {
    std::string internal_token;  // empty: calls need no token, and only loopback may listen
    std::string admin_rpc_token;  // the gateway's identity for admin RPCs; empty: none asked
    bool reflection = false;
  };
  // Listens on `address` (host:port; port 0 picks one, see port()). A non-loopback address
  // without a token is refused: internal RPCs are never open to the network.
  absl::Status Start(const std::string& address, const Options& options);
  absl::Status Start(const std::string& address) { return Start(address, Options()); }
  int port() const { return port_; }

  // A channel to this server that never leaves the process.
  std::shared_ptr<grpc::Channel> InProcessChannel();

  // Health: SERVING or NOT_SERVING for every service.
  void SetServing(bool serving);
  // Stops accepting RPCs; in-flight ones get until `grace_seconds`.
  void Shutdown(int grace_seconds);

 private:
  std::vector<grpc::Service*> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string token_;
};

// A channel to a target in another process: "host:port", or several replicas of it as
// "host:port,host:port" (IPv4), spread round robin. Every call carries `token` when set.
std::shared_ptr<grpc::Channel> DialTarget(const std::string& address, const std::string& token = "");

// True for 127.0.0.0/8, ::1 and localhost (host:port).
bool IsLoopbackAddress(const std::string& host_port);

}  // namespace nexusflow

#pragma once
// One gRPC server per process for all of its targets, with the standard health service,
// reflection and RPC metrics; in-process channels to the targets it hosts.
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
  // Listens on `address` (host:port; port 0 picks one, see port()).
  absl::Status Start(const std::string& address);
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
};

// A channel to a target in another process: "host:port", or several replicas of it as
// "host:port,host:port" (IPv4), spread round robin.
std::shared_ptr<grpc::Channel> DialTarget(const std::string& address);

}  // namespace nexusflow

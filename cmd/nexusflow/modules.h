#pragma once
// The targets of the nexusflow binary (Mimir-style modules): each one builds its service
// from config and registers it on the process's gRPC server; the gateway dials the
// others, in-process when they share the process.
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "libs/config/config.h"

namespace nexusflow {

// "all" or a comma list → the set of targets; unknown names are an error.
absl::StatusOr<std::set<std::string>> ParseTargets(const std::string& spec);

class Process {
 public:
  virtual ~Process() = default;
  // Ready for traffic (the gateway's caches are live; services as soon as they listen).
  virtual bool ready() const = 0;
  // Stops taking new work, lets in-flight work finish within the grace period, stops.
  virtual void Drain(int grace_seconds) = 0;
};

// Builds and starts the targets. Addresses: `grpc_listen` for this process's server,
// `config.services` for targets elsewhere. When `config_path` is given, routing reloads
// its catalog from that file when it changes.
absl::StatusOr<std::unique_ptr<Process>> StartProcess(const Config& config,
                                                      const std::set<std::string>& targets,
                                                      const std::string& config_path = "");

}  // namespace nexusflow

// Deployments of the mock and the faults a test sets on them (the control endpoint).
//
// A request whose path starts with /d/{name}/ belongs to deployment {name} (the rest of
// the path is routed as usual), any other to deployment "default"; so one mock serves any
// number of deployments, each a base URL of its own. A fault makes a share of a
// deployment's chat and embedding requests wait (stall) and/or answer an HTTP status; the
// share is spread evenly (with 50: the 2nd, 4th, 6th… request after the fault was set).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace nexusflow::mock {

struct Fault {
  int percent = 100;        // share of requests affected, 0–100
  int status = 0;           // answer this status (400–599); 0 = answer normally after the stall
  std::int64_t stall_ms = 0;  // wait before answering (0–600000)
  std::string retry_after;  // Retry-After sent with the status; empty = none ("1" on a 429)
};

// What happens to one request.
struct FaultDecision {
  int status = 0;
  std::int64_t stall_ms = 0;
  std::string retry_after;
};

class DeploymentFaults {
 public:
  // Counts a request of `deployment` and says what the fault does to it.
  FaultDecision Next(std::string_view deployment);
  // Sets a deployment's fault from a JSON body {"percent","status","stall_ms","retry_after"};
  // an error message when the body is not valid.
  std::optional<std::string> Set(std::string_view deployment, std::string_view json_body);
  // Removes the fault: the deployment recovers.
  void Clear(std::string_view deployment);
  // {"deployments":[{"name","fault":{…}|null,"requests","failed","stalled"}]}
  std::string Body() const;

 private:
  struct Deployment {
    std::optional<Fault> fault;
    std::uint64_t since_set = 0;  // requests since the fault was set
    std::uint64_t requests = 0;
    std::uint64_t failed = 0;   // answered the fault's status
    std::uint64_t stalled = 0;  // held back by the fault's stall
  };
  mutable std::mutex mu_;
  std::map<std::string, Deployment, std::less<>> deployments_;
};

// Splits /d/{name}/rest into {name} and /rest; "default" and the path itself otherwise.
std::pair<std::string_view, std::string_view> SplitDeployment(std::string_view path);

}  // namespace nexusflow::mock

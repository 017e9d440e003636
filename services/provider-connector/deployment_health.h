#pragma once
// DeploymentHealth: this connector replica's circuit breakers, one per deployment it has
// called, fed by the outcomes of its own upstream calls. Replicas share nothing: each
// ejects a failing deployment from what it sees itself (docs/ARCHITECTURE.md, "Deployment
// health"). Every state is exported on /metrics as nexusflow_connector_deployment_state
// and nexusflow_connector_deployment_ejections_total, labelled by deployment id.
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "libs/config/config.h"
#include "nexusflow/connector/v1/connector.pb.h"
#include "services/provider-connector/candidate_order.h"
#include "services/provider-connector/circuit_breaker.h"

namespace nexusflow::connector {

class DeploymentHealth {
 public:
  using Clock = CircuitBreaker::Clock;
  using Candidates = google::protobuf::RepeatedPtrField<routing::v1::Deployment>;

  // `now` and `jitter` (values in [0, 1)) are injectable for tests.
  explicit DeploymentHealth(const CircuitBreakerConfig& config,
                            std::function<Clock::time_point()> now = Clock::now,
                            std::function<double()> jitter = nullptr);
  ~DeploymentHealth();

  // The order in which a request tries `candidates` (candidate_order.h).
  CandidateOrder Order(const Candidates& candidates);

  // Lets a request to `deployment` through (or not); `panic` as CandidateOrder says.
  CircuitBreaker::Ticket Admit(const routing::v1::Deployment& deployment, bool panic);
  void Record(const std::string& deployment_id, const CircuitBreaker::Ticket& ticket,
              const CircuitBreaker::Outcome& outcome);
  void Abandon(const std::string& deployment_id, const CircuitBreaker::Ticket& ticket);
  // Time left until the first of these deployments still under a retry-after is free of
  // it; zero when none is.
  Clock::duration RetryAfterLeft(const Candidates& candidates);

  // Every deployment this replica has called, by id.
  v1::ListDeploymentHealthResponse List();

  Clock::time_point now() const { return now_(); }

 private:
  struct Entry;
  Entry& EntryFor(const routing::v1::Deployment& deployment);
  Entry* Find(const std::string& deployment_id);

  CircuitBreakerConfig config_;
  std::function<Clock::time_point()> now_;
  std::function<double()> jitter_;
  std::shared_mutex mu_;  // guards the map; each entry has a lock of its own
  std::unordered_map<std::string, std::unique_ptr<Entry>> entries_;
};

}  // namespace nexusflow::connector

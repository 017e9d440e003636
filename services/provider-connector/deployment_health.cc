#include "services/provider-connector/deployment_health.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "libs/metrics/metrics.h"

namespace nexusflow::connector {
namespace {

struct HealthFamilies {
  prometheus::Family<prometheus::Gauge>& state;
  prometheus::Family<prometheus::Counter>& ejections;
};

HealthFamilies& HealthMetrics() {
  static HealthFamilies f{
      prometheus::BuildGauge()
          .Name("nexusflow_connector_deployment_state")
          .Help("Circuit state of a deployment as this replica sees it: 0 closed, 1 half-open, 2 open")
          .Register(MetricsRegistry()),
      prometheus::BuildCounter()
          .Name("nexusflow_connector_deployment_ejections_total")
          .Help("Times a deployment was ejected (its circuit opened) by this replica")
          .Register(MetricsRegistry())};
  return f;
}

v1::CircuitState ToProto(CircuitState s) {
  switch (s) {
    case CircuitState::kClosed: return v1::CIRCUIT_STATE_CLOSED;
    case CircuitState::kHalfOpen: return v1::CIRCUIT_STATE_HALF_OPEN;
    case CircuitState::kOpen: return v1::CIRCUIT_STATE_OPEN;
  }
  return v1::CIRCUIT_STATE_UNSPECIFIED;
}

// A steady-clock time as wall-clock time, for people reading the admin API.
void SetWallTime(google::protobuf::Timestamp* out, CircuitBreaker::Clock::time_point t,
                 CircuitBreaker::Clock::time_point steady_now) {
  auto wall = std::chrono::system_clock::now() +
              std::chrono::duration_cast<std::chrono::system_clock::duration>(t - steady_now);
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wall.time_since_epoch()).count();
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

}  // namespace

struct DeploymentHealth::Entry {
  Entry(const CircuitBreakerConfig& config, std::function<double()> jitter, Clock::time_point now,
        std::string id, std::string provider)
      : breaker(config, std::move(jitter), now),
        provider(std::move(provider)),
        state(&HealthMetrics().state.Add({{"deployment", id}})),
        ejections(&HealthMetrics().ejections.Add({{"deployment", id}})) {
    state->Set(0);
  }
  // Brings the exported series up to the breaker; under mu.
  void Export() {
    state->Set(static_cast<double>(breaker.state()));
    if (int64_t more = breaker.ejections() - exported_ejections; more > 0) {
      ejections->Increment(static_cast<double>(more));
      exported_ejections = breaker.ejections();
    }
  }

  std::mutex mu;
  CircuitBreaker breaker;
  std::string provider;
  prometheus::Gauge* state;
  prometheus::Counter* ejections;
  int64_t exported_ejections = 0;
};

DeploymentHealth::DeploymentHealth(const CircuitBreakerConfig& config,
                                   std::function<Clock::time_point()> now,
                                   std::function<double()> jitter)
    : config_(config), now_(std::move(now)), jitter_(std::move(jitter)) {
  HealthMetrics();
  if (!jitter_) {
    auto rng = std::make_shared<std::mt19937_64>(std::random_device{}());
    auto rng_mu = std::make_shared<std::mutex>();
    jitter_ = [rng, rng_mu] {
      std::lock_guard<std::mutex> lock(*rng_mu);
      return std::uniform_real_distribution<double>(0.0, 1.0)(*rng);
    };
  }
}

DeploymentHealth::~DeploymentHealth() = default;

DeploymentHealth::Entry* DeploymentHealth::Find(const std::string& deployment_id) {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = entries_.find(deployment_id);
  return it == entries_.end() ? nullptr : it->second.get();
}

DeploymentHealth::Entry& DeploymentHealth::EntryFor(const routing::v1::Deployment& d) {
  if (Entry* e = Find(d.id())) return *e;
  std::unique_lock<std::shared_mutex> lock(mu_);
  auto& slot = entries_[d.id()];
  if (!slot) slot = std::make_unique<Entry>(config_, jitter_, now_(), d.id(), d.provider());
  return *slot;
}

CandidateOrder DeploymentHealth::Order(const Candidates& candidates) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  Clock::time_point now = now_();
  std::vector<CandidateView> views;
  views.reserve(candidates.size());
  for (const auto& d : candidates) {
    CandidateView v{d.priority(), d.weight(), true, false};
    if (Entry* e = Find(d.id())) {
      std::lock_guard<std::mutex> lock(e->mu);
      v.available = e->breaker.Available(now);
      v.blocked = e->breaker.Blocked(now);
    }
    views.push_back(v);
  }
  return OrderCandidates(views, rng);
}

CircuitBreaker::Ticket DeploymentHealth::Admit(const routing::v1::Deployment& deployment, bool panic) {
  Entry& e = EntryFor(deployment);
  Clock::time_point now = now_();
  std::lock_guard<std::mutex> lock(e.mu);
  CircuitBreaker::Ticket t = panic ? e.breaker.AdmitPanic(now) : e.breaker.Admit(now);
  e.Export();
  return t;
}

void DeploymentHealth::Record(const std::string& deployment_id, const CircuitBreaker::Ticket& ticket,
                              const CircuitBreaker::Outcome& outcome) {
  Entry* e = Find(deployment_id);
  if (!e) return;
  Clock::time_point now = now_();
  std::lock_guard<std::mutex> lock(e->mu);
  e->breaker.Record(ticket, outcome, now);
  e->Export();
}

void DeploymentHealth::Abandon(const std::string& deployment_id, const CircuitBreaker::Ticket& ticket) {
  Entry* e = Find(deployment_id);
  if (!e) return;
  std::lock_guard<std::mutex> lock(e->mu);
  e->breaker.Abandon(ticket);
}

DeploymentHealth::Clock::duration DeploymentHealth::RetryAfterLeft(const Candidates& candidates) {
  Clock::time_point now = now_();
  std::optional<Clock::time_point> earliest;
  for (const auto& d : candidates) {
    Entry* e = Find(d.id());
    if (!e) continue;
    std::lock_guard<std::mutex> lock(e->mu);
    if (!e->breaker.Blocked(now)) continue;
    Clock::time_point until = e->breaker.retry_after_until();
    earliest = earliest ? std::min(*earliest, until) : until;
  }
  return earliest ? *earliest - now : Clock::duration::zero();
}

v1::ListDeploymentHealthResponse DeploymentHealth::List() {
  v1::ListDeploymentHealthResponse out;
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  out.set_replica(absl::StrCat(host, "/", getpid()));
  Clock::time_point now = now_();
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<std::string> ids;
  for (const auto& [id, e] : entries_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (const auto& id : ids) {
    Entry& e = *entries_.at(id);
    std::lock_guard<std::mutex> entry_lock(e.mu);
    CircuitBreaker::Snapshot s = e.breaker.snapshot(now);
    auto* d = out.add_deployments();
    d->set_deployment_id(id);
    d->set_provider(e.provider);
    d->set_state(ToProto(s.state));
    d->set_ejections(s.ejections);
    d->set_consecutive_failures(s.consecutive_failures);
    d->set_window_requests(s.window_requests);
    d->set_window_failures(s.window_failures);
    if (s.next_probe_at) SetWallTime(d->mutable_next_probe_at(), *s.next_probe_at, now);
    if (s.retry_after_until) SetWallTime(d->mutable_retry_after_until(), *s.retry_after_until, now);
    if (s.first_byte_seconds) d->set_first_byte_seconds(*s.first_byte_seconds);
    d->set_last_error(s.last_error);
    SetWallTime(d->mutable_changed_at(), s.changed_at, now);
  }
  return out;
}

}  // namespace nexusflow::connector

#pragma once
// A circuit breaker for one upstream deployment: pure logic on an injected clock and an
// injected source of jitter, so its tests drive time themselves.
//
// Closed: every outcome is counted. `consecutive_failures` failures in a row, or a failure
// share of at least `error_percent` among at least `min_requests` outcomes of the last
// `window_seconds`, eject the deployment (open). Open: nothing is let through until the
// next probe time: open_ms, doubled for each ejection in a row (capped at max_open_ms),
// times a random factor in [0.75, 1.25) so that replicas which ejected together do not
// probe together. Then half-open: up to `half_open_probes` requests at once go through; a
// success closes the circuit, a failure opens it again for longer. Whatever the state, an
// upstream's retry-after keeps the deployment out until then (at most max_retry_after_ms).
//
// Failures are connect errors, timeouts, 429, 5xx, 401/403 (our credential refused), a
// broken stream and, when `slow_first_byte_ms` is set, a first byte later than that. Not
// thread-safe: the owner (DeploymentHealth) locks.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "libs/config/config.h"

namespace nexusflow::connector {

// The values of nexusflow_connector_deployment_state.
enum class CircuitState { kClosed = 0, kHalfOpen = 1, kOpen = 2 };

const char* CircuitStateName(CircuitState state);  // "closed", "half_open", "open"

class CircuitBreaker {
 public:
  using Clock = std::chrono::steady_clock;
  using Duration = Clock::duration;

  // What a request was let through as: its outcome is judged accordingly.
  enum class Pass {
    kNone,    // not let through
    kNormal,  // closed circuit: the outcome is counted
    kProbe,   // half-open probe: a success closes, a failure opens again
    kPanic,   // every candidate was ejected and this one was tried anyway: a success closes
  };
  struct Ticket {
    Pass pass = Pass::kNone;
    uint64_t epoch = 0;  // the state's generation when it was let through
    explicit operator bool() const { return pass != Pass::kNone; }
  };

  struct Outcome {
    bool failure = false;
    std::string error;                     // what failed ("HTTP 503", "timeout"), for the admin view
    std::optional<Duration> first_byte;    // time to the first response byte, when one came
    std::optional<Duration> retry_after;   // the upstream's retry-after, when it sent one
  };

  struct Snapshot {
    CircuitState state = CircuitState::kClosed;
    int64_t ejections = 0;
    int consecutive_failures = 0;
    int64_t window_requests = 0;
    int64_t window_failures = 0;
    std::optional<Clock::time_point> next_probe_at;      // when open
    std::optional<Clock::time_point> retry_after_until;  // while in the future
    std::optional<double> first_byte_seconds;            // moving average
    std::string last_error;
    Clock::time_point changed_at;
  };

  // `jitter` returns values in [0, 1).
  CircuitBreaker(const CircuitBreakerConfig& config, std::function<double()> jitter,
                 Clock::time_point now);

  // Whether a request could be let through now; takes nothing.
  bool Available(Clock::time_point now) const;
  // Whether an upstream retry-after forbids the deployment now.
  bool Blocked(Clock::time_point now) const { return now < retry_after_until_; }
  Clock::time_point retry_after_until() const { return retry_after_until_; }

  // Lets a request through if the state allows; an open circuit whose probe time has come
  // turns half-open here. A probe's slot is held until its Record or Abandon.
  Ticket Admit(Clock::time_point now);
  // For when none of a request's candidates is available: lets it through unless a
  // retry-after forbids it (ejection steers traffic; it does not refuse the last way out).
  Ticket AdmitPanic(Clock::time_point now);

  // The outcome of a request let through by `ticket`.
  void Record(const Ticket& ticket, const Outcome& outcome, Clock::time_point now);
  // A request let through ended without a verdict (its caller went away).
  void Abandon(const Ticket& ticket);

  CircuitState state() const { return state_; }
  int64_t ejections() const { return ejections_; }
  Snapshot snapshot(Clock::time_point now) const;

 private:
  struct Bucket {
    int64_t second = -1;
    int64_t requests = 0;
    int64_t failures = 0;
  };

  void Count(bool failure, Clock::time_point now);
  void WindowTotals(Clock::time_point now, int64_t* requests, int64_t* failures) const;
  void Open(Clock::time_point now);
  void Close(Clock::time_point now);
  void Enter(CircuitState state, Clock::time_point now);

  CircuitBreakerConfig config_;
  std::function<double()> jitter_;
  CircuitState state_ = CircuitState::kClosed;
  uint64_t epoch_ = 1;
  int consecutive_failures_ = 0;
  int ejections_in_row_ = 0;  // since the last close: doubles the open time
  int64_t ejections_ = 0;
  int probes_in_flight_ = 0;
  std::vector<Bucket> window_;  // one bucket per second, a ring
  Clock::time_point next_probe_at_;
  Clock::time_point retry_after_until_;
  Clock::time_point changed_at_;
  std::optional<double> first_byte_seconds_;
  std::string last_error_;
};

// A Retry-After (delta seconds, possibly fractional, or an HTTP date) or retry-after-ms
// value as a duration from `now_unix_seconds`; nullopt when unreadable or not positive.
std::optional<CircuitBreaker::Duration> ParseRetryAfter(std::string_view retry_after,
                                                        std::string_view retry_after_ms,
                                                        int64_t now_unix_seconds);

}  // namespace nexusflow::connector

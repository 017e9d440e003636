#include "services/provider-connector/circuit_breaker.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "absl/time/time.h"

namespace nexusflow::connector {

namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

int64_t SecondOf(CircuitBreaker::Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

}  // namespace

const char* CircuitStateName(CircuitState state) {
  switch (state) {
    case CircuitState::kClosed: return "closed";
    case CircuitState::kHalfOpen: return "half_open";
    case CircuitState::kOpen: return "open";
  }
  return "closed";
}

CircuitBreaker::CircuitBreaker(const CircuitBreakerConfig& config, std::function<double()> jitter,
                               Clock::time_point now)
    : config_(config),
      jitter_(std::move(jitter)),
      window_(static_cast<size_t>(std::max(1, config.window_seconds))),
      changed_at_(now) {}

bool CircuitBreaker::Available(Clock::time_point now) const {
  if (Blocked(now)) return false;
  switch (state_) {
    case CircuitState::kClosed: return true;
    case CircuitState::kOpen: return now >= next_probe_at_;
    case CircuitState::kHalfOpen: return probes_in_flight_ < config_.half_open_probes;
  }
  return false;
}

CircuitBreaker::Ticket CircuitBreaker::Admit(Clock::time_point now) {
  if (Blocked(now)) return {};
  if (state_ == CircuitState::kOpen) {
    if (now < next_probe_at_) return {};
    Enter(CircuitState::kHalfOpen, now);
  }
  if (state_ == CircuitState::kClosed) return {Pass::kNormal, epoch_};
  if (probes_in_flight_ >= config_.half_open_probes) return {};
  ++probes_in_flight_;
  return {Pass::kProbe, epoch_};
}

CircuitBreaker::Ticket CircuitBreaker::AdmitPanic(Clock::time_point now) {
  if (Blocked(now)) return {};
  if (Ticket t = Admit(now)) return t;
  return {Pass::kPanic, epoch_};
}

void CircuitBreaker::Record(const Ticket& ticket, const Outcome& given, Clock::time_point now) {
  if (!ticket) return;
  Outcome outcome = given;
  if (outcome.first_byte) {
    double s = std::chrono::duration<double>(*outcome.first_byte).count();
    first_byte_seconds_ = first_byte_seconds_ ? 0.8 * *first_byte_seconds_ + 0.2 * s : s;
    if (!outcome.failure && config_.slow_first_byte_ms > 0 &&
        *outcome.first_byte > std::chrono::milliseconds(config_.slow_first_byte_ms)) {
      outcome.failure = true;
      outcome.error = "slow first byte";
    }
  }
  if (outcome.retry_after && *outcome.retry_after > Duration::zero()) {
    Duration wait = std::min<Duration>(*outcome.retry_after,
                                       std::chrono::milliseconds(config_.max_retry_after_ms));
    retry_after_until_ = std::max(retry_after_until_, now + wait);
    if (state_ == CircuitState::kOpen) next_probe_at_ = std::max(next_probe_at_, retry_after_until_);
  }
  if (outcome.failure) last_error_ = outcome.error;

  bool current = ticket.epoch == epoch_;
  if (ticket.pass == Pass::kProbe && current && probes_in_flight_ > 0) --probes_in_flight_;
  switch (ticket.pass) {
    case Pass::kNone:
      return;
    case Pass::kNormal:
      // An answer to a request let through before the circuit opened says nothing new.
      if (state_ != CircuitState::kClosed) return;
      Count(outcome.failure, now);
      return;
    case Pass::kProbe:
      if (!current) return;
      if (outcome.failure) {
        Open(now);
      } else {
        Close(now);
      }
      return;
    case Pass::kPanic:
      // Tried although ejected: a success proves it back; a failure changes nothing.
      if (!outcome.failure && state_ != CircuitState::kClosed) Close(now);
      return;
  }
}

void CircuitBreaker::Abandon(const Ticket& ticket) {
  if (ticket.pass == Pass::kProbe && ticket.epoch == epoch_ && probes_in_flight_ > 0)
    --probes_in_flight_;
}

void CircuitBreaker::Count(bool failure, Clock::time_point now) {
  int64_t second = SecondOf(now);
  Bucket& b = window_[static_cast<size_t>(second % static_cast<int64_t>(window_.size()))];
  if (b.second != second) b = Bucket{second, 0, 0};
  ++b.requests;
  if (failure) {
    ++b.failures;
    ++consecutive_failures_;
  } else {
    consecutive_failures_ = 0;
  }
  if (!failure) return;
  if (config_.consecutive_failures > 0 && consecutive_failures_ >= config_.consecutive_failures)
    return Open(now);
  if (config_.error_percent > 0) {
    int64_t requests = 0, failures = 0;
    WindowTotals(now, &requests, &failures);
    if (requests >= config_.min_requests && failures * 100 >= requests * config_.error_percent)
      return Open(now);
  }
}

void CircuitBreaker::WindowTotals(Clock::time_point now, int64_t* requests, int64_t* failures) const {
  int64_t second = SecondOf(now);
  int64_t oldest = second - static_cast<int64_t>(window_.size()) + 1;
  for (const Bucket& b : window_) {
    if (b.second < oldest || b.second > second) continue;
    *requests += b.requests;
    *failures += b.failures;
  }
}

void CircuitBreaker::Open(Clock::time_point now) {
  ++ejections_;
  int doublings = std::min(ejections_in_row_, 30);
  ++ejections_in_row_;
  double base = std::min<double>(static_cast<double>(config_.open_ms) * std::ldexp(1.0, doublings),
                                 config_.max_open_ms);
  double factor = 0.75 + 0.5 * std::clamp(jitter_ ? jitter_() : 0.5, 0.0, 1.0);
  auto open_for = std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::milli>(base * factor));
  next_probe_at_ = std::max(now + open_for, retry_after_until_);
  Enter(CircuitState::kOpen, now);
}

void CircuitBreaker::Close(Clock::time_point now) {
  ejections_in_row_ = 0;
  Enter(CircuitState::kClosed, now);
}

void CircuitBreaker::Enter(CircuitState state, Clock::time_point now) {
  state_ = state;
  ++epoch_;
  probes_in_flight_ = 0;
  consecutive_failures_ = 0;
  std::fill(window_.begin(), window_.end(), Bucket{});
  changed_at_ = now;
}

CircuitBreaker::Snapshot CircuitBreaker::snapshot(Clock::time_point now) const {
  Snapshot s;
  s.state = state_;
  s.ejections = ejections_;
  s.consecutive_failures = consecutive_failures_;
  WindowTotals(now, &s.window_requests, &s.window_failures);
  if (state_ == CircuitState::kOpen) s.next_probe_at = next_probe_at_;
  if (Blocked(now)) s.retry_after_until = retry_after_until_;
  s.first_byte_seconds = first_byte_seconds_;
  s.last_error = last_error_;
  s.changed_at = changed_at_;
  return s;
}

std::optional<CircuitBreaker::Duration> ParseRetryAfter(std::string_view retry_after,
                                                        std::string_view retry_after_ms,
                                                        int64_t now_unix_seconds) {
  auto number = [](std::string_view text) -> std::optional<double> {
    text = Trim(text);
    if (text.empty()) return std::nullopt;
    double v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v) || v <= 0)
      return std::nullopt;
    return v;
  };
  using Ms = std::chrono::duration<double, std::milli>;
  if (auto ms = number(retry_after_ms))
    return std::chrono::duration_cast<CircuitBreaker::Duration>(Ms(*ms));
  if (auto s = number(retry_after))
    return std::chrono::duration_cast<CircuitBreaker::Duration>(Ms(*s * 1000));
  std::string text(Trim(retry_after));
  if (text.empty()) return std::nullopt;
  absl::Time when;
  std::string err;
  // IMF-fixdate, the form RFC 9110 requires of senders.
  if (!absl::ParseTime("%a, %d %b %Y %H:%M:%S GMT", text, absl::UTCTimeZone(), &when, &err))
    return std::nullopt;
  int64_t delta = absl::ToUnixSeconds(when) - now_unix_seconds;
  if (delta <= 0) return std::nullopt;
  return std::chrono::seconds(delta);
}

}  // namespace nexusflow::connector

#pragma once
// CounterStore: the live counters behind rate limits. The embedded implementation keeps
// them in memory; a Redis one (atomic Lua) shares them across replicas. Windows are
// sliding 60-second windows, exact: a request admitted at t counts until t + 60 s.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "libs/config/config.h"

namespace nexusflow::ratelimit {

using Clock = std::chrono::steady_clock;

enum class Denial { kNone, kRequests, kTokens, kConcurrency };

struct WindowState {
  int64_t limit = 0;  // 0 = unlimited
  int64_t remaining = 0;
  Clock::duration reset_after{};  // until the window is fully free again
};

struct Admission {
  Denial denied_by = Denial::kNone;
  std::string lease_id;          // set when admitted
  Clock::duration retry_after{};  // set when denied
  bool never_fits = false;        // denied, and no wait would admit it (over the limit alone)
  WindowState requests;
  WindowState tokens;
};

class CounterStore {
 public:
  virtual ~CounterStore() = default;
  // Admits one request of `tokens` estimated tokens for `subject` under `limits`.
  virtual Admission Acquire(const std::string& subject, const PlanLimits& limits,
                            int64_t tokens, Clock::time_point now) = 0;
  // Ends a lease; `actual_tokens` >= 0 replaces the estimate in the token window.
  virtual bool Release(const std::string& lease_id, int64_t actual_tokens,
                       Clock::time_point now) = 0;
};

// In-memory store; leases not released within `lease_ttl` are dropped (their slot freed).
std::unique_ptr<CounterStore> NewMemoryCounterStore(
    Clock::duration lease_ttl = std::chrono::minutes(15));

}  // namespace nexusflow::ratelimit

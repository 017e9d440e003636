#include "services/rate-limiter/counter_store.h"

namespace nexusflow::ratelimit {

absl::StatusOr<std::unique_ptr<CounterStore>> OpenCounterStore(const Config::RateLimiter& config) {
  if (config.store == "memory") return NewMemoryCounterStore();
  RedisStoreOptions options;
  options.url = config.store;
  options.fail_open = config.redis_failure != "closed";
  options.timeout = std::chrono::milliseconds(config.redis_timeout_ms);
  return NewRedisCounterStore(options);
}

const char* DenialName(Denial d) {
  switch (d) {
    case Denial::kNone:
      return "none";
    case Denial::kRequests:
      return "requests per minute";
    case Denial::kRequestsPerDay:
      return "requests per day";
    case Denial::kTokens:
      return "tokens per minute";
    case Denial::kConcurrency:
      return "concurrent requests";
    case Denial::kUnavailable:
      return "rate-limit store unavailable";
  }
  return "unknown";
}

}  // namespace nexusflow::ratelimit

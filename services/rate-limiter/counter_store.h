#pragma once
// CounterStore: the live counters behind rate limits. The embedded implementation keeps
// them in memory; the Redis one (one atomic Lua script per call) shares them across
// replicas. Both follow the same rules (README.md, "Windows"):
//   - requests per minute and tokens per minute slide over exactly 60 s: a request
//     admitted at t counts until t + 60 s;
//   - requests per day are a fixed UTC day, midnight to midnight;
//   - tokens count the estimate at admission; Release replaces it by the actual count,
//     and what is learned after the admission's minute is over counts from the release;
//   - a lease holds a concurrency slot until Release or until the lease TTL.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "libs/config/config.h"

namespace nexusflow::ratelimit {

// Wall-clock time: a UTC day needs it, and it is the clock Redis's TIME shares with
// every replica.
using Clock = std::chrono::system_clock;

inline constexpr Clock::duration kWindow = std::chrono::seconds(60);

enum class Denial {
  kNone,
  kRequests,        // requests per minute
  kRequestsPerDay,  // requests per UTC day
  kTokens,          // tokens per minute
  kConcurrency,     // requests in flight
  kUnavailable,     // the shared store is unreachable and the policy is fail-closed
};

// "requests per minute", "tokens per minute", ...: what a denial message names.
const char* DenialName(Denial d);

struct WindowState {
  int64_t limit = 0;  // 0 = unlimited
  int64_t remaining = 0;
  Clock::duration reset_after{};  // until the window is fully free again
};

struct Admission {
  Denial denied_by = Denial::kNone;
  std::string lease_id;           // set when admitted
  Clock::duration retry_after{};  // set when denied
  bool never_fits = false;        // denied, and no wait would admit it (over the limit alone)
  WindowState requests;
  WindowState requests_per_day;
  WindowState tokens;
};

class CounterStore {
 public:
  virtual ~CounterStore() = default;
  // Admits one request of `tokens` estimated tokens for `subject` under `limits`.
  // `now` is the caller's clock; the Redis store uses the Redis server's clock instead
  // (unless built for tests with `use_caller_clock`).
  virtual Admission Acquire(const std::string& subject, const PlanLimits& limits, int64_t tokens,
                            Clock::time_point now) = 0;
  // Ends a lease; `actual_tokens` >= 0 replaces the estimate in the token window.
  // NotFound: unknown, released or expired lease; Unavailable: the store is unreachable.
  virtual absl::Status Release(const std::string& lease_id, int64_t actual_tokens,
                               Clock::time_point now) = 0;
};

// In-memory store; leases not released within `lease_ttl` are dropped (their slot freed).
std::unique_ptr<CounterStore> NewMemoryCounterStore(
    Clock::duration lease_ttl = std::chrono::minutes(15));

struct RedisStoreOptions {
  std::string url;                         // redis://[:password@]host:port[/db]
  bool fail_open = true;                   // Redis unreachable: admit (true) or refuse
  std::chrono::milliseconds timeout{100};  // connect, and each command
  Clock::duration lease_ttl = std::chrono::minutes(15);
  // Reconnect attempts while Redis is down back off from 50 ms up to this.
  std::chrono::milliseconds max_backoff{2000};
  // Tests only: windows use the `now` given by the caller instead of Redis TIME.
  bool use_caller_clock = false;
};

// Counters in Redis, shared by every replica that points at the same server. Keys are
// `nf:{<subject>}:<counter>`: one hash slot per subject, so it runs on Redis Cluster.
// Thread-safe (a small pool of connections). Fails only on a malformed URL: an
// unreachable server is the failure policy's business, call by call.
absl::StatusOr<std::unique_ptr<CounterStore>> NewRedisCounterStore(
    const RedisStoreOptions& options);

// The store `config.store` names ("memory" or a redis:// URL), with its failure policy.
absl::StatusOr<std::unique_ptr<CounterStore>> OpenCounterStore(const Config::RateLimiter& config);

struct RedisAddress {
  std::string host;
  int port = 6379;
  int db = 0;
  std::string password;
};
absl::StatusOr<RedisAddress> ParseRedisUrl(absl::string_view url);

}  // namespace nexusflow::ratelimit

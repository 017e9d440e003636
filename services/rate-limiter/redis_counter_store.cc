// The shared CounterStore on Redis. Every Acquire and Release is one Lua script, so a
// decision and its counting are atomic however many replicas ask at once; windows run on
// the Redis server's clock (TIME), one clock for every replica.
//
// Keys of a subject (one hash slot, `{<subject>}` is the Cluster hash tag):
//   nf:{s}:req     sorted set  admission time (µs) by lease        requests per minute
//   nf:{s}:tok     sorted set  admission time (µs) by token entry  tokens per minute
//   nf:{s}:tokv    hash        token entry → tokens, "#sum" → their sum
//   nf:{s}:day     hash        "day" (UTC day number), "n" (admissions that day)
//   nf:{s}:leases  sorted set  deadline (µs) by lease              concurrency
//   nf:{s}:lease   hash        lease → tokens counted at admission (-1: none)
// Each key expires a little after the last thing it can hold leaves its window, so an
// idle subject costs nothing.
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <prometheus/counter.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "libs/common/ids.h"
#include "libs/metrics/metrics.h"
#include "services/rate-limiter/counter_store.h"

namespace nexusflow::ratelimit {
namespace {

// Shared by both scripts: the clock, and dropping what left its window.
constexpr char kPrelude[] = R"lua(
local function I(x) return string.format('%d', x) end
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local window = tonumber(ARGV[2])
local cutoff = I(now - window)
local keep_ms = I(math.floor(window / 1000) + 1000)
-- Token entries admitted at or before the cutoff leave the window; returns the sum left.
local function drop_tokens()
  local sum = tonumber(redis.call('HGET', KEYS[3], '#sum')) or 0
  local dropped = false
  while true do
    local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff, 'LIMIT', 0, 500)
    if #old == 0 then break end
    local vals = redis.call('HMGET', KEYS[3], unpack(old))
    for i = 1, #old do sum = sum - (tonumber(vals[i]) or 0) end
    redis.call('HDEL', KEYS[3], unpack(old))
    redis.call('ZREM', KEYS[2], unpack(old))
    dropped = true
  end
  if dropped then redis.call('HSET', KEYS[3], '#sum', I(sum)) end
  return sum
end
-- Leases past their deadline free their slot.
local function drop_leases()
  while true do
    local dead = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', I(now), 'LIMIT', 0, 500)
    if #dead == 0 then break end
    redis.call('HDEL', KEYS[6], unpack(dead))
    redis.call('ZREM', KEYS[5], unpack(dead))
  end
end
)lua";

// ARGV: now_us ('' = TIME), window_us, rpm, rpd, tpm, concurrency, tokens, lease, lease_ttl_us
// Returns {denial, retry_after_us, never_fits, requests, day_count, token_sum,
//          requests_reset_us, tokens_reset_us, day_reset_us}.
constexpr char kAcquireBody[] = R"lua(
local rpm, rpd, tpm, conc = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens = tonumber(ARGV[7])
local lease = ARGV[8]
local ttl = tonumber(ARGV[9])
local day_us = 86400000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
local sum = drop_tokens()
drop_leases()
local day = math.floor(now / day_us)
local dayn = 0
local d = redis.call('HMGET', KEYS[4], 'day', 'n')
if tonumber(d[1]) == day then dayn = tonumber(d[2]) or 0 end
local nreq = redis.call('ZCARD', KEYS[1])
local denied, retry, never = 0, 0, 0
if rpm > 0 and nreq >= rpm then
  denied = 1
  local e = redis.call('ZRANGE', KEYS[1], nreq - rpm, nreq - rpm, 'WITHSCORES')
  retry = tonumber(e[2]) + window - now
elseif rpd > 0 and dayn >= rpd then
  denied = 2
  retry = (day + 1) * day_us - now
elseif tpm > 0 and sum + tokens > tpm then
  denied = 3
  if tokens > tpm then
    never = 1
  else
    -- Oldest first: when enough has left the window, this request fits. A denial reads
    -- at most 1,000 entries; past them the answer is the last one's exit (a lower bound:
    -- the retry is told again), so a caller hammering a busy key costs bounded work.
    local need = sum + tokens - tpm
    local off = 0
    while need > 0 and off < 1000 do
      local es = redis.call('ZRANGE', KEYS[2], off, off + 499, 'WITHSCORES')
      if #es == 0 then break end
      local ids = {}
      for i = 1, #es, 2 do ids[#ids + 1] = es[i] end
      local vals = redis.call('HMGET', KEYS[3], unpack(ids))
      for i = 1, #ids do
        need = need - (tonumber(vals[i]) or 0)
        retry = tonumber(es[2 * i]) + window - now
        if need <= 0 then break end
      end
      off = off + 500
    end
  end
elseif conc > 0 and redis.call('ZCARD', KEYS[5]) >= conc then
  denied = 4
  retry = 1000000
else
  if rpm > 0 then
    redis.call('ZADD', KEYS[1], I(now), lease)
    redis.call('PEXPIRE', KEYS[1], keep_ms)
    nreq = nreq + 1
  end
  if rpd > 0 then
    dayn = dayn + 1
    redis.call('HSET', KEYS[4], 'day', I(day), 'n', I(dayn))
    redis.call('PEXPIRE', KEYS[4], I(2 * day_us / 1000))
  end
  local est = -1
  if tpm > 0 then
    sum = sum + tokens
    redis.call('ZADD', KEYS[2], I(now), lease)
    redis.call('HSET', KEYS[3], lease, I(tokens), '#sum', I(sum))
    redis.call('PEXPIRE', KEYS[2], keep_ms)
    redis.call('PEXPIRE', KEYS[3], keep_ms)
    est = tokens
  end
  redis.call('ZADD', KEYS[5], I(now + ttl), lease)
  redis.call('HSET', KEYS[6], lease, I(est))
  local lease_keep = I(math.floor(ttl / 1000) + 1000)
  redis.call('PEXPIRE', KEYS[5], lease_keep)
  redis.call('PEXPIRE', KEYS[6], lease_keep)
end
local function reset(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #last == 0 then return 0 end
  return tonumber(last[2]) + window - now
end
local day_reset = 0
if dayn > 0 then day_reset = (day + 1) * day_us - now end
return {denied, retry, never, nreq, dayn, sum, reset(KEYS[1]), reset(KEYS[2]), day_reset}
)lua";

// ARGV: now_us ('' = TIME), window_us, lease, actual_tokens (-1 = keep the estimate)
// Returns 1 when the lease was live, 0 when unknown, released or expired.
constexpr char kReleaseBody[] = R"lua(
local lease = ARGV[3]
local actual = tonumber(ARGV[4])
drop_leases()
local est = redis.call('HGET', KEYS[6], lease)
if not est then return 0 end
redis.call('ZREM', KEYS[5], lease)
redis.call('HDEL', KEYS[6], lease)
est = tonumber(est)
if est >= 0 and actual >= 0 then
  local sum = drop_tokens()
  local cur = redis.call('HGET', KEYS[3], lease)
  if cur then
    sum = sum + actual - tonumber(cur)
    redis.call('HSET', KEYS[3], lease, I(actual), '#sum', I(sum))
  elseif actual > est then
    -- The admission's minute is over: what it did not count counts from now.
    local late = lease .. '+'
    sum = sum + actual - est
    redis.call('ZADD', KEYS[2], I(now), late)
    redis.call('HSET', KEYS[3], late, I(actual - est), '#sum', I(sum))
  else
    return 1
  end
  redis.call('PEXPIRE', KEYS[2], keep_ms)
  redis.call('PEXPIRE', KEYS[3], keep_ms)
end
return 1
)lua";

constexpr char kLeasePrefix[] = "lease_";
constexpr char kOpenLeasePrefix[] = "open_";  // admitted while Redis was unreachable

std::string Sha1Hex(const std::string& text) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return HexEncode(std::string_view(reinterpret_cast<char*>(digest), sizeof digest));
}

struct Script {
  explicit Script(const char* body) : text(absl::StrCat(kPrelude, body)), sha(Sha1Hex(text)) {}
  std::string text;
  std::string sha;
};

const Script& AcquireScript() {
  static const Script s(kAcquireBody);
  return s;
}
const Script& ReleaseScript() {
  static const Script s(kReleaseBody);
  return s;
}

int64_t Micros(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

int64_t Micros(Clock::time_point t) { return Micros(t.time_since_epoch()); }

prometheus::Family<prometheus::Counter>& StoreErrors() {
  static auto& family =
      prometheus::BuildCounter()
          .Name("nexusflow_ratelimit_store_errors_total")
          .Help("Calls to the shared counter store (Redis) that failed, by operation")
          .Register(MetricsRegistry());
  return family;
}

prometheus::Counter& FailOpenAdmissions() {
  static auto& counter = prometheus::BuildCounter()
                             .Name("nexusflow_ratelimit_fail_open_total")
                             .Help(
                                 "Requests admitted unchecked because Redis was unreachable "
                                 "(rate_limiter.redis_failure: open)")
                             .Register(MetricsRegistry())
                             .Add({});
  return counter;
}

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Connection = std::unique_ptr<redisContext, ContextFree>;

// Idle connections for any thread to borrow, and the reconnect backoff while Redis is down.
class ConnectionPool {
 public:
  ConnectionPool(RedisAddress address, std::chrono::milliseconds timeout,
                 std::chrono::milliseconds max_backoff)
      : address_(std::move(address)), timeout_(timeout), max_backoff_(max_backoff) {}

  // A pooled connection (`reused` true) or a new one; null while Redis is unreachable.
  Connection Take(bool* reused, std::string* error) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        Connection c = std::move(idle_.back());
        idle_.pop_back();
        *reused = true;
        return c;
      }
      if (std::chrono::steady_clock::now() < retry_at_) {
        *error = last_error_;
        return nullptr;
      }
    }
    *reused = false;
    Connection c = Connect(error);
    std::lock_guard<std::mutex> lock(mu_);
    if (c) {
      backoff_ = kFirstBackoff;
    } else {
      last_error_ = *error;
      retry_at_ = std::chrono::steady_clock::now() + backoff_;
      backoff_ =
          std::min(backoff_ * 2,
                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(max_backoff_));
    }
    return c;
  }

  void Give(Connection c) {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.size() < kMaxIdle) idle_.push_back(std::move(c));
  }

  // A connection broke: the idle ones are probably dead too.
  void Broken() {
    std::vector<Connection> dead;
    std::lock_guard<std::mutex> lock(mu_);
    dead.swap(idle_);
  }

 private:
  static constexpr size_t kMaxIdle = 32;
  static constexpr std::chrono::steady_clock::duration kFirstBackoff =
      std::chrono::milliseconds(50);

  Connection Connect(std::string* error) {
    timeval tv{};
    tv.tv_sec = timeout_.count() / 1000;
    tv.tv_usec = (timeout_.count() % 1000) * 1000;
    Connection c(redisConnectWithTimeout(address_.host.c_str(), address_.port, tv));
    if (!c) {
      *error = "out of memory";
      return nullptr;
    }
    if (c->err) {
      *error = c->errstr;
      return nullptr;
    }
    redisSetTimeout(c.get(), tv);
    auto simple = [&](std::vector<std::string> argv) {
      std::vector<const char*> p;
      std::vector<size_t> n;
      for (const auto& a : argv) {
        p.push_back(a.data());
        n.push_back(a.size());
      }
      Reply r(static_cast<redisReply*>(
          redisCommandArgv(c.get(), static_cast<int>(argv.size()), p.data(), n.data())));
      if (!r) {
        *error = c->errstr;
        return false;
      }
      if (r->type == REDIS_REPLY_ERROR) {
        *error = std::string(r->str, r->len);
        return false;
      }
      return true;
    };
    if (!address_.password.empty() && !simple({"AUTH", address_.password})) return nullptr;
    if (address_.db != 0 && !simple({"SELECT", std::to_string(address_.db)})) return nullptr;
    return c;
  }

  const RedisAddress address_;
  const std::chrono::milliseconds timeout_;
  const std::chrono::milliseconds max_backoff_;
  std::mutex mu_;
  std::vector<Connection> idle_;
  std::chrono::steady_clock::time_point retry_at_{};
  std::chrono::steady_clock::duration backoff_ = kFirstBackoff;
  std::string last_error_;
};

// Says that Redis is unreachable at most once per interval, with how often since.
class OutageLog {
 public:
  void Note(const char* op, const std::string& error, bool fail_open) {
    down_.store(true, std::memory_order_relaxed);
    ++since_;
    int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count();
    int64_t next = next_ms_.load(std::memory_order_relaxed);
    if (now < next || !next_ms_.compare_exchange_strong(next, now + kIntervalMs)) return;
    std::fprintf(stderr,
                 "nexusflow: rate-limiter: Redis unreachable (%s: %s); %s; %lld failed calls "
                 "since the last report\n",
                 op, error.c_str(),
                 fail_open ? "admitting without limits (redis_failure: open)"
                           : "refusing requests with 503 (redis_failure: closed)",
                 static_cast<long long>(since_.exchange(0)));
  }

  // A call reached Redis: says so once after an outage.
  void Reached() {
    if (!down_.load(std::memory_order_relaxed) || !down_.exchange(false)) return;
    std::fprintf(stderr,
                 "nexusflow: rate-limiter: Redis reachable again; limits apply (%lld failed "
                 "calls since the last report)\n",
                 static_cast<long long>(since_.exchange(0)));
    next_ms_.store(0);
  }

 private:
  static constexpr int64_t kIntervalMs = 10'000;
  std::atomic<bool> down_{false};
  std::atomic<int64_t> next_ms_{0};
  std::atomic<int64_t> since_{0};
};

class RedisCounterStore : public CounterStore {
 public:
  RedisCounterStore(const RedisStoreOptions& options, RedisAddress address)
      : options_(options),
        pool_(std::move(address), options.timeout, options.max_backoff),
        acquire_errors_(&CounterFor(StoreErrors(), {{"op", "acquire"}})),
        release_errors_(&CounterFor(StoreErrors(), {{"op", "release"}})),
        fail_open_(&FailOpenAdmissions()) {}

  Admission Acquire(const std::string& subject, const PlanLimits& limits, int64_t tokens,
                    Clock::time_point now) override {
    std::string lease = NewId("", 8);
    auto keys = Keys(subject);
    int64_t window_us = Micros(kWindow);
    std::vector<std::string> args = {ClockArg(now),
                                     std::to_string(window_us),
                                     std::to_string(limits.rpm),
                                     std::to_string(limits.rpd),
                                     std::to_string(limits.tpm),
                                     std::to_string(limits.concurrency),
                                     std::to_string(tokens),
                                     lease,
                                     std::to_string(Micros(options_.lease_ttl))};
    std::string error;
    Reply r = Run(AcquireScript(), keys, args, &error);
    if (!r && error.empty()) error = "no reply";
    int64_t v[9];
    if (r && !Parse(*r, v, 9)) error = "unexpected reply to the acquire script";
    Admission a;
    a.requests.limit = limits.rpm;
    a.requests_per_day.limit = limits.rpd;
    a.tokens.limit = limits.tpm;
    if (!error.empty()) {
      acquire_errors_->Increment();
      log_.Note("acquire", error, options_.fail_open);
      if (options_.fail_open) {
        fail_open_->Increment();
        a.lease_id = NewId(kOpenLeasePrefix, 8);
        // Nothing is known about the windows: report them full.
        a.requests.remaining = limits.rpm;
        a.requests_per_day.remaining = limits.rpd;
        a.tokens.remaining = limits.tpm;
      } else {
        a.denied_by = Denial::kUnavailable;
        a.retry_after = std::chrono::seconds(1);
      }
      return a;
    }
    log_.Reached();
    static constexpr Denial kDenials[] = {Denial::kNone, Denial::kRequests, Denial::kRequestsPerDay,
                                          Denial::kTokens, Denial::kConcurrency};
    a.denied_by = v[0] >= 0 && v[0] <= 4 ? kDenials[v[0]] : Denial::kUnavailable;
    a.retry_after = std::chrono::microseconds(v[1]);
    a.never_fits = v[2] != 0;
    if (a.denied_by == Denial::kNone) a.lease_id = absl::StrCat(kLeasePrefix, lease, ".", subject);
    auto remaining = [](int64_t limit, int64_t used) {
      return limit > 0 ? std::max<int64_t>(0, limit - used) : 0;
    };
    a.requests.remaining = remaining(limits.rpm, v[3]);
    a.requests.reset_after = std::chrono::microseconds(v[6]);
    a.requests_per_day.remaining = remaining(limits.rpd, v[4]);
    a.requests_per_day.reset_after = std::chrono::microseconds(v[8]);
    a.tokens.remaining = remaining(limits.tpm, v[5]);
    a.tokens.reset_after = std::chrono::microseconds(v[7]);
    return a;
  }

  absl::Status Release(const std::string& lease_id, int64_t actual_tokens,
                       Clock::time_point now) override {
    if (lease_id.rfind(kOpenLeasePrefix, 0) == 0) return absl::OkStatus();  // never counted
    if (lease_id.rfind(kLeasePrefix, 0) != 0) return absl::NotFoundError("unknown lease");
    size_t dot = lease_id.find('.');
    if (dot == std::string::npos) return absl::NotFoundError("unknown lease");
    std::string lease = lease_id.substr(sizeof kLeasePrefix - 1, dot - (sizeof kLeasePrefix - 1));
    std::string subject = lease_id.substr(dot + 1);
    std::vector<std::string> args = {ClockArg(now), std::to_string(Micros(kWindow)), lease,
                                     std::to_string(actual_tokens < 0 ? -1 : actual_tokens)};
    std::string error;
    Reply r = Run(ReleaseScript(), Keys(subject), args, &error);
    if (!r && error.empty()) error = "no reply";
    if (r && r->type != REDIS_REPLY_INTEGER) error = "unexpected reply to the release script";
    if (!error.empty()) {
      release_errors_->Increment();
      log_.Note("release", error, options_.fail_open);
      // The lease TTL frees the slot if this release never lands.
      return absl::UnavailableError(absl::StrCat("rate-limit store: ", error));
    }
    if (r->integer == 0) return absl::NotFoundError("unknown or expired lease");
    return absl::OkStatus();
  }

 private:
  std::string ClockArg(Clock::time_point now) const {
    return options_.use_caller_clock ? std::to_string(Micros(now)) : std::string();
  }

  static std::vector<std::string> Keys(const std::string& subject) {
    std::string p = absl::StrCat("nf:{", subject, "}:");
    return {p + "req", p + "tok", p + "tokv", p + "day", p + "leases", p + "lease"};
  }

  static bool Parse(const redisReply& r, int64_t* out, size_t n) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements != n) return false;
    for (size_t i = 0; i < n; ++i) {
      if (r.element[i]->type != REDIS_REPLY_INTEGER) return false;
      out[i] = r.element[i]->integer;
    }
    return true;
  }

  // EVALSHA, then EVAL when the server does not have the script (a restart, SCRIPT FLUSH).
  // A pooled connection that turns out dead (Redis restarted) is retried once on a new one.
  Reply Run(const Script& script, const std::vector<std::string>& keys,
            const std::vector<std::string>& args, std::string* error) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      bool reused = false;
      Connection c = pool_.Take(&reused, error);
      if (!c) return nullptr;
      Reply r = Eval(c.get(), "EVALSHA", script.sha, keys, args);
      if (r && r->type == REDIS_REPLY_ERROR &&
          absl::string_view(r->str, r->len).substr(0, 8) == "NOSCRIPT")
        r = Eval(c.get(), "EVAL", script.text, keys, args);
      if (r) {
        if (r->type == REDIS_REPLY_ERROR) {
          *error = std::string(r->str, r->len);
          pool_.Give(std::move(c));
          return nullptr;
        }
        error->clear();
        pool_.Give(std::move(c));
        return r;
      }
      *error = c->errstr;
      bool timed_out = c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
      pool_.Broken();
      if (!reused || timed_out) return nullptr;
    }
    return nullptr;
  }

  static Reply Eval(redisContext* c, const char* verb, const std::string& script,
                    const std::vector<std::string>& keys, const std::vector<std::string>& args) {
    std::string nkeys = std::to_string(keys.size());
    std::vector<const char*> p = {verb, script.data(), nkeys.data()};
    std::vector<size_t> n = {std::strlen(verb), script.size(), nkeys.size()};
    for (const auto* list : {&keys, &args}) {
      for (const auto& s : *list) {
        p.push_back(s.data());
        n.push_back(s.size());
      }
    }
    return Reply(static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(p.size()), p.data(), n.data())));
  }

  const RedisStoreOptions options_;
  ConnectionPool pool_;
  prometheus::Counter* acquire_errors_;
  prometheus::Counter* release_errors_;
  prometheus::Counter* fail_open_;
  OutageLog log_;
};

}  // namespace

absl::StatusOr<RedisAddress> ParseRedisUrl(absl::string_view url) {
  constexpr absl::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme)
    return absl::InvalidArgumentError(absl::StrCat("'", url, "' is not a redis:// URL"));
  absl::string_view rest = url.substr(kScheme.size());
  RedisAddress a;
  if (auto at = rest.rfind('@'); at != absl::string_view::npos) {
    absl::string_view auth = rest.substr(0, at);
    // redis://:password@host or redis://user:password@host (the user is not used).
    auto colon = auth.find(':');
    a.password = std::string(colon == absl::string_view::npos ? auth : auth.substr(colon + 1));
    rest = rest.substr(at + 1);
  }
  absl::string_view hostport = rest;
  if (auto slash = rest.find('/'); slash != absl::string_view::npos) {
    hostport = rest.substr(0, slash);
    absl::string_view db = rest.substr(slash + 1);
    if (!db.empty() && (!absl::SimpleAtoi(db, &a.db) || a.db < 0))
      return absl::InvalidArgumentError(absl::StrCat("'", url, "': the database must be a number"));
  }
  if (auto colon = hostport.rfind(':'); colon != absl::string_view::npos) {
    if (!absl::SimpleAtoi(hostport.substr(colon + 1), &a.port) || a.port <= 0 || a.port > 65535)
      return absl::InvalidArgumentError(absl::StrCat("'", url, "': bad port"));
    hostport = hostport.substr(0, colon);
  }
  if (hostport.empty()) return absl::InvalidArgumentError(absl::StrCat("'", url, "': no host"));
  a.host = std::string(hostport);
  return a;
}

absl::StatusOr<std::unique_ptr<CounterStore>> NewRedisCounterStore(
    const RedisStoreOptions& options) {
  auto address = ParseRedisUrl(options.url);
  if (!address.ok()) return address.status();
  return std::unique_ptr<CounterStore>(
      std::make_unique<RedisCounterStore>(options, std::move(*address)));
}

}  // namespace nexusflow::ratelimit

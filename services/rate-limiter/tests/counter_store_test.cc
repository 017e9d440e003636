// The CounterStore conformance suite: the same cases for every store.
//   Memory/...  the embedded store;
//   Redis/...   the Redis store on NEXUSFLOW_TEST_REDIS_URL (tests/with_redis.sh starts a
//               throwaway server; without the variable these cases are skipped, and CTest
//               always runs them through the wrapper).
// Time comes from the test: the Redis stores are built with `use_caller_clock`, so the
// scripts run on the test's clock instead of Redis TIME (except where a case says it runs
// on the server's clock). No case asserts how long anything took.
#include "services/rate-limiter/counter_store.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "libs/common/ids.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/server_host.h"
#include "services/rate-limiter/rate_limiter_service.h"

namespace nexusflow::ratelimit {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

const char* RedisUrl() { return std::getenv("NEXUSFLOW_TEST_REDIS_URL"); }

// 2026-11-27 12:00:00 UTC.
const Clock::time_point kNoon =
    Clock::time_point(std::chrono::sys_days{std::chrono::year{2026} / 11 / 27}) + hours(12);

struct StoreSpec {
  Clock::duration lease_ttl = minutes(15);
  bool server_clock = false;  // Redis: windows on Redis TIME, as in production
};

class CounterStoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "redis" && !RedisUrl())
      GTEST_SKIP()
          << "NEXUSFLOW_TEST_REDIS_URL is not set (CTest runs this through tests/with_redis.sh)";
    subject_ = NewId("key_", 8);
  }

  // A store sharing its counters with every other store of the test: a replica. In
  // memory that is the one store of the process.
  std::shared_ptr<CounterStore> Replica(StoreSpec spec = {}) {
    if (GetParam() == "memory") {
      if (!memory_) memory_ = NewMemoryCounterStore(spec.lease_ttl);
      return memory_;
    }
    RedisStoreOptions options;
    options.url = RedisUrl();
    options.fail_open = false;  // a broken connection must fail the test, not pass it
    options.lease_ttl = spec.lease_ttl;
    options.use_caller_clock = !spec.server_clock;
    options.timeout = std::chrono::milliseconds(2000);
    auto store = NewRedisCounterStore(options);
    EXPECT_TRUE(store.ok()) << store.status();
    return std::shared_ptr<CounterStore>(std::move(*store));
  }

  const std::string& subject() const { return subject_; }

 private:
  std::string subject_;
  std::shared_ptr<CounterStore> memory_;
};

PlanLimits Rpm(int64_t n) {
  PlanLimits l;
  l.rpm = n;
  return l;
}
PlanLimits Tpm(int64_t n) {
  PlanLimits l;
  l.tpm = n;
  return l;
}
PlanLimits Concurrency(int64_t n) {
  PlanLimits l;
  l.concurrency = n;
  return l;
}

TEST_P(CounterStoreTest, RpmIsExactOverASlidingMinute) {
  auto store = Replica();
  for (int i = 0; i < 3; ++i) {
    auto a = store->Acquire(subject(), Rpm(3), 10, kNoon + seconds(i));
    ASSERT_EQ(a.denied_by, Denial::kNone);
    EXPECT_EQ(a.requests.remaining, 2 - i);
    EXPECT_TRUE(store->Release(a.lease_id, -1, kNoon + seconds(i)).ok());
  }
  auto denied = store->Acquire(subject(), Rpm(3), 10, kNoon + seconds(10));
  EXPECT_EQ(denied.denied_by, Denial::kRequests);
  EXPECT_EQ(denied.retry_after, seconds(50));  // the first admission leaves at +60 s
  EXPECT_EQ(denied.requests.remaining, 0);
  EXPECT_EQ(denied.requests.reset_after, seconds(52));  // the last one leaves at +62 s
  EXPECT_EQ(store->Acquire(subject(), Rpm(3), 10, kNoon + seconds(59)).denied_by,
            Denial::kRequests);
  EXPECT_EQ(store->Acquire(subject(), Rpm(3), 10, kNoon + seconds(60)).denied_by, Denial::kNone);
  // Another subject has its own window.
  EXPECT_EQ(store->Acquire(subject() + "-other", Rpm(3), 10, kNoon + seconds(10)).denied_by,
            Denial::kNone);
}

TEST_P(CounterStoreTest, ExactlyTheLimitIsAdmittedFromManyConcurrentCallsOnTwoReplicas) {
  // Production clock: on Redis the windows run on the server's TIME.
  auto one = Replica({.server_clock = true});
  auto two = Replica({.server_clock = true});
  constexpr int kLimit = 60, kThreads = 8, kPerThread = 50;
  std::atomic<int> admitted{0}, denied{0}, wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      CounterStore& store = t % 2 ? *one : *two;
      for (int i = 0; i < kPerThread; ++i) {
        auto now = Clock::now();
        auto a = store.Acquire(subject(), Rpm(kLimit), 1, now);
        if (a.denied_by == Denial::kNone) {
          ++admitted;
          if (!store.Release(a.lease_id, 1, now).ok()) ++wrong;
        } else if (a.denied_by == Denial::kRequests) {
          ++denied;
        } else {
          ++wrong;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(admitted.load(), kLimit);
  EXPECT_EQ(denied.load(), kThreads * kPerThread - kLimit);
  EXPECT_EQ(wrong.load(), 0);
}

TEST_P(CounterStoreTest, AConcurrencyLimitOfFiveNeverSeesASixthLease) {
  auto one = Replica();
  auto two = Replica();
  std::atomic<int> holding{0}, most{0}, admitted{0}, bad_release{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      CounterStore& store = t % 2 ? *one : *two;
      for (int i = 0; i < 60; ++i) {
        auto a = store.Acquire(subject(), Concurrency(5), 1, kNoon);
        if (a.denied_by != Denial::kNone) {
          EXPECT_EQ(a.denied_by, Denial::kConcurrency);
          continue;
        }
        ++admitted;
        int now_holding = ++holding;
        int seen = most.load();
        while (now_holding > seen && !most.compare_exchange_weak(seen, now_holding)) {
        }
        std::this_thread::yield();
        --holding;
        if (!store.Release(a.lease_id, 1, kNoon).ok()) ++bad_release;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(most.load(), 5);
  EXPECT_GT(admitted.load(), 0);
  EXPECT_EQ(bad_release.load(), 0);
  // Every slot came back: five leases fit again, a sixth does not.
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(one->Acquire(subject(), Concurrency(5), 1, kNoon).denied_by, Denial::kNone);
  EXPECT_EQ(two->Acquire(subject(), Concurrency(5), 1, kNoon).denied_by, Denial::kConcurrency);
}

TEST_P(CounterStoreTest, ReleaseReplacesTheEstimateWithinTheWindow) {
  auto store = Replica();
  auto a = store->Acquire(subject(), Tpm(1000), 900, kNoon);
  ASSERT_EQ(a.denied_by, Denial::kNone);
  EXPECT_EQ(a.tokens.remaining, 100);
  EXPECT_EQ(store->Acquire(subject(), Tpm(1000), 200, kNoon).denied_by, Denial::kTokens);
  ASSERT_TRUE(store->Release(a.lease_id, 100, kNoon + seconds(5)).ok());  // really used 100
  auto b = store->Acquire(subject(), Tpm(1000), 900, kNoon + seconds(6));
  EXPECT_EQ(b.denied_by, Denial::kNone);
  EXPECT_EQ(b.tokens.remaining, 0);
  // A correction downwards frees tokens, upwards takes them, both at the admission's time.
  ASSERT_TRUE(store->Release(b.lease_id, 950, kNoon + seconds(7)).ok());
  auto c = store->Acquire(subject(), Tpm(1000), 1, kNoon + seconds(8));
  EXPECT_EQ(c.denied_by, Denial::kTokens);
  EXPECT_EQ(c.retry_after, seconds(52));  // a's 100 leave at +60 s: 1050 - 100 + 1 fits
}

TEST_P(CounterStoreTest, OutputWithoutAnEstimateCountsAtRelease) {
  auto store = Replica();
  auto a = store->Acquire(subject(), Tpm(1000), 0, kNoon);  // no max_tokens: estimate 0
  ASSERT_EQ(a.denied_by, Denial::kNone);
  ASSERT_TRUE(store->Release(a.lease_id, 800, kNoon + seconds(10)).ok());
  auto denied = store->Acquire(subject(), Tpm(1000), 300, kNoon + seconds(11));
  EXPECT_EQ(denied.denied_by, Denial::kTokens);
  EXPECT_EQ(denied.retry_after, seconds(49));  // counted from the admission at +0 s
  EXPECT_EQ(store->Acquire(subject(), Tpm(1000), 200, kNoon + seconds(11)).denied_by,
            Denial::kNone);
}

TEST_P(CounterStoreTest, TokensLearnedAfterTheWindowCountFromTheRelease) {
  auto store = Replica();
  auto a = store->Acquire(subject(), Tpm(1000), 100, kNoon);
  ASSERT_EQ(a.denied_by, Denial::kNone);
  // A long answer: released 90 s later with 700 tokens. Its estimate of 100 counted
  // from +0 s to +60 s; the other 600 count from the release, until +150 s.
  ASSERT_TRUE(store->Release(a.lease_id, 700, kNoon + seconds(90)).ok());
  auto denied = store->Acquire(subject(), Tpm(1000), 500, kNoon + seconds(91));
  EXPECT_EQ(denied.denied_by, Denial::kTokens);
  EXPECT_FALSE(denied.never_fits);
  EXPECT_EQ(denied.retry_after, seconds(59));
  EXPECT_EQ(denied.tokens.remaining, 400);
  auto b = store->Acquire(subject(), Tpm(1000), 400, kNoon + seconds(91));
  ASSERT_EQ(b.denied_by, Denial::kNone);
  EXPECT_EQ(store->Acquire(subject(), Tpm(1000), 1, kNoon + seconds(149)).denied_by,
            Denial::kTokens);
  // At +150 s the 600 are gone; b's 400 stay until +151 s.
  EXPECT_EQ(store->Acquire(subject(), Tpm(1000), 600, kNoon + seconds(150)).denied_by,
            Denial::kNone);
}

TEST_P(CounterStoreTest, ALateReleaseBelowTheEstimateGivesNothingBack) {
  auto store = Replica();
  auto a = store->Acquire(subject(), Tpm(1000), 600, kNoon);
  ASSERT_EQ(a.denied_by, Denial::kNone);
  ASSERT_TRUE(store->Release(a.lease_id, 100, kNoon + seconds(70)).ok());
  // The estimate already counted for its whole minute; nothing more counts now.
  auto b = store->Acquire(subject(), Tpm(1000), 1000, kNoon + seconds(71));
  EXPECT_EQ(b.denied_by, Denial::kNone);
}

TEST_P(CounterStoreTest, ARequestOverTheTpmByItselfNeverFits) {
  auto store = Replica();
  auto a = store->Acquire(subject(), Tpm(1000), 1001, kNoon);
  EXPECT_EQ(a.denied_by, Denial::kTokens);
  EXPECT_TRUE(a.never_fits);  // no retry-after can help
  auto b = store->Acquire(subject(), Tpm(1000), 600, kNoon);
  ASSERT_EQ(b.denied_by, Denial::kNone);
  auto c = store->Acquire(subject(), Tpm(1000), 600, kNoon + seconds(1));  // fits when b leaves
  EXPECT_EQ(c.denied_by, Denial::kTokens);
  EXPECT_FALSE(c.never_fits);
  EXPECT_EQ(c.retry_after, seconds(59));
}

TEST_P(CounterStoreTest, AnExpiredLeaseFreesItsSlot) {
  auto store = Replica({.lease_ttl = seconds(30)});
  auto a = store->Acquire(subject(), Concurrency(1), 1, kNoon);
  ASSERT_EQ(a.denied_by, Denial::kNone);
  auto denied = store->Acquire(subject(), Concurrency(1), 1, kNoon + seconds(29));
  EXPECT_EQ(denied.denied_by, Denial::kConcurrency);
  EXPECT_GT(denied.retry_after, Clock::duration::zero());
  // Never released (its holder died): after the lease TTL the slot comes back.
  auto b = store->Acquire(subject(), Concurrency(1), 1, kNoon + seconds(31));
  EXPECT_EQ(b.denied_by, Denial::kNone);
  EXPECT_TRUE(absl::IsNotFound(store->Release(a.lease_id, 1, kNoon + seconds(32))));
  EXPECT_TRUE(store->Release(b.lease_id, 1, kNoon + seconds(32)).ok());
}

TEST_P(CounterStoreTest, ReleasingTwiceIsNotFound) {
  auto store = Replica();
  auto a = store->Acquire(subject(), Concurrency(1), 1, kNoon);
  ASSERT_EQ(a.denied_by, Denial::kNone);
  EXPECT_TRUE(store->Release(a.lease_id, 1, kNoon).ok());
  EXPECT_TRUE(absl::IsNotFound(store->Release(a.lease_id, 1, kNoon)));
  EXPECT_TRUE(absl::IsNotFound(store->Release("lease_nonsense", 1, kNoon)));
  EXPECT_EQ(store->Acquire(subject(), Concurrency(1), 1, kNoon).denied_by, Denial::kNone);
}

TEST_P(CounterStoreTest, RequestsPerDayIsAFixedUtcDay) {
  auto store = Replica();
  PlanLimits limits;
  limits.rpd = 2;
  const auto late = kNoon + hours(11) + minutes(59);  // 23:59 UTC
  auto a = store->Acquire(subject(), limits, 1, kNoon);
  ASSERT_EQ(a.denied_by, Denial::kNone);
  EXPECT_EQ(a.requests_per_day.remaining, 1);
  ASSERT_EQ(store->Acquire(subject(), limits, 1, late).denied_by, Denial::kNone);
  auto denied = store->Acquire(subject(), limits, 1, late);
  EXPECT_EQ(denied.denied_by, Denial::kRequestsPerDay);
  EXPECT_EQ(denied.retry_after, minutes(1));  // until midnight UTC
  EXPECT_EQ(denied.requests_per_day.remaining, 0);
  EXPECT_STREQ(DenialName(denied.denied_by), "requests per day");
  // A new day, a new count, though the last admission was a minute ago.
  auto next = store->Acquire(subject(), limits, 1, late + minutes(1));
  EXPECT_EQ(next.denied_by, Denial::kNone);
  EXPECT_EQ(next.requests_per_day.remaining, 1);
}

TEST_P(CounterStoreTest, EachLimitNamesItself) {
  auto store = Replica();
  PlanLimits limits;
  limits.rpm = 1;
  limits.rpd = 100;
  limits.tpm = 100;
  limits.concurrency = 1;
  auto a = store->Acquire(subject(), limits, 10, kNoon);
  ASSERT_EQ(a.denied_by, Denial::kNone);
  EXPECT_EQ(store->Acquire(subject(), limits, 10, kNoon).denied_by, Denial::kRequests);
  limits.rpm = 0;
  EXPECT_EQ(store->Acquire(subject(), limits, 95, kNoon).denied_by, Denial::kTokens);
  EXPECT_EQ(store->Acquire(subject(), limits, 10, kNoon).denied_by, Denial::kConcurrency);
  limits.rpd = 1;
  EXPECT_EQ(store->Acquire(subject(), limits, 10, kNoon).denied_by, Denial::kRequestsPerDay);
}

TEST_P(CounterStoreTest, UnlimitedPlanAdmitsEverything) {
  auto store = Replica();
  for (int i = 0; i < 2000; ++i)
    ASSERT_EQ(store->Acquire(subject(), PlanLimits{}, 100, kNoon).denied_by, Denial::kNone);
}

INSTANTIATE_TEST_SUITE_P(Memory, CounterStoreTest, ::testing::Values("memory"));
INSTANTIATE_TEST_SUITE_P(Redis, CounterStoreTest, ::testing::Values("redis"));

// The value of a counter without labels in the /metrics text.
double MetricValue(const std::string& name) {
  for (absl::string_view line : absl::StrSplit(SerializeMetrics(), '\n')) {
    if (absl::ConsumePrefix(&line, name) && absl::ConsumePrefix(&line, " ")) {
      double v = 0;
      if (absl::SimpleAtod(line, &v)) return v;
    }
  }
  return 0;
}

// Redis stopped under the stores, then started again (NEXUSFLOW_TEST_REDIS_CTL).
TEST(RedisOutageTest, FailOpenAdmitsFailClosedRefusesAndLimitsResumeWhenRedisReturns) {
  const char* url = RedisUrl();
  const char* ctl = std::getenv("NEXUSFLOW_TEST_REDIS_CTL");
  if (!url || !ctl) GTEST_SKIP() << "needs tests/with_redis.sh (NEXUSFLOW_TEST_REDIS_URL, _CTL)";
  RedisStoreOptions options;
  options.url = url;
  options.max_backoff = std::chrono::milliseconds(100);
  auto open = NewRedisCounterStore(options);
  options.fail_open = false;
  auto closed = NewRedisCounterStore(options);
  ASSERT_TRUE(open.ok() && closed.ok());
  std::string subject = NewId("key_", 8);
  auto held = (*closed)->Acquire(subject, Rpm(1), 1, Clock::now());
  ASSERT_EQ(held.denied_by, Denial::kNone);
  ASSERT_EQ((*open)->Acquire(subject, Rpm(1), 1, Clock::now()).denied_by, Denial::kRequests);

  ASSERT_EQ(std::system((std::string(ctl) + " stop").c_str()), 0);
  double before = MetricValue("nexusflow_ratelimit_fail_open_total");
  // Open: admitted although the minute's one request is used, and counted.
  for (int i = 0; i < 3; ++i) {
    auto a = (*open)->Acquire(subject, Rpm(1), 1, Clock::now());
    EXPECT_EQ(a.denied_by, Denial::kNone);
    EXPECT_FALSE(a.lease_id.empty());
    EXPECT_TRUE((*open)->Release(a.lease_id, 1, Clock::now()).ok());
  }
  EXPECT_EQ(MetricValue("nexusflow_ratelimit_fail_open_total"), before + 3);
  // Closed: refused as unavailable, which is not a limit.
  auto refused = (*closed)->Acquire(subject, Rpm(1), 1, Clock::now());
  EXPECT_EQ(refused.denied_by, Denial::kUnavailable);
  EXPECT_TRUE(refused.lease_id.empty());
  EXPECT_TRUE(absl::IsUnavailable((*closed)->Release(held.lease_id, 1, Clock::now())));

  ASSERT_EQ(std::system((std::string(ctl) + " start").c_str()), 0);
  // Both stores reconnect by themselves (the restarted server has lost every counter).
  std::string fresh = NewId("key_", 8);
  Admission first;
  for (int i = 0; i < 1000; ++i) {  // a bound, not a timing assertion
    first = (*closed)->Acquire(fresh, Rpm(1), 1, Clock::now());
    if (first.denied_by != Denial::kUnavailable) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(first.denied_by, Denial::kNone);
  EXPECT_EQ((*closed)->Acquire(fresh, Rpm(1), 1, Clock::now()).denied_by, Denial::kRequests);
  Denial again = Denial::kNone;
  for (int i = 0; i < 1000 && again == Denial::kNone; ++i) {
    again = (*open)->Acquire(fresh, Rpm(1), 1, Clock::now()).denied_by;
    if (again == Denial::kNone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(again, Denial::kRequests);  // the open store counts again too
}

// Every key of a subject carries the subject as its hash tag (one Cluster slot) and
// expires by itself, so an idle subject leaves nothing behind.
TEST(RedisKeysTest, ASubjectsKeysShareItsHashTagAndExpire) {
  const char* url = RedisUrl();
  if (!url) GTEST_SKIP() << "NEXUSFLOW_TEST_REDIS_URL is not set";
  auto address = ParseRedisUrl(url);
  ASSERT_TRUE(address.ok());
  RedisStoreOptions options;
  options.url = url;
  options.fail_open = false;
  auto store = NewRedisCounterStore(options);
  ASSERT_TRUE(store.ok());
  std::string subject = NewId("key_", 8) + ".with:odd}chars";
  PlanLimits limits;
  limits.rpm = 10;
  limits.rpd = 10;
  limits.tpm = 1000;
  limits.concurrency = 2;
  auto a = (*store)->Acquire(subject, limits, 10, Clock::now());
  ASSERT_EQ(a.denied_by, Denial::kNone);
  auto b = (*store)->Acquire(subject, limits, 10, Clock::now());
  ASSERT_EQ(b.denied_by, Denial::kNone);
  ASSERT_TRUE((*store)->Release(a.lease_id, 20, Clock::now()).ok());

  redisContext* c = redisConnect(address->host.c_str(), address->port);
  ASSERT_TRUE(c != nullptr && c->err == 0);
  std::string prefix = "nf:{" + subject + "}:";
  auto* keys = static_cast<redisReply*>(redisCommand(c, "KEYS %b*", prefix.data(), prefix.size()));
  ASSERT_TRUE(keys != nullptr && keys->type == REDIS_REPLY_ARRAY);
  EXPECT_EQ(keys->elements, 6u);
  for (size_t i = 0; i < keys->elements; ++i) {
    std::string key(keys->element[i]->str, keys->element[i]->len);
    auto* ttl = static_cast<redisReply*>(redisCommand(c, "PTTL %b", key.data(), key.size()));
    ASSERT_TRUE(ttl != nullptr && ttl->type == REDIS_REPLY_INTEGER);
    EXPECT_GT(ttl->integer, 0) << key << " never expires";
    freeReplyObject(ttl);
  }
  freeReplyObject(keys);
  redisFree(c);
}

// Two rate-limiter replicas (each its own gRPC server on loopback and its own Redis
// store, on the server clock) in front of one Redis: callers spread over both get exactly
// the plan's requests per minute, and the rest are denied naming the limit.
TEST(RedisReplicasTest, TwoLimiterReplicasOverGrpcAdmitExactlyThePlansRpm) {
  const char* url = RedisUrl();
  if (!url) GTEST_SKIP() << "NEXUSFLOW_TEST_REDIS_URL is not set";
  Config::RateLimiter config;
  config.plans["default"] = PlanLimits{};
  config.plans["metered"] = Rpm(30);
  config.store = url;
  config.redis_failure = "closed";
  config.redis_timeout_ms = 2000;
  struct Replica {
    std::unique_ptr<RateLimiterService> service;
    ServerHost host;
  };
  Replica replicas[2];
  for (auto& r : replicas) {
    auto store = OpenCounterStore(config);
    ASSERT_TRUE(store.ok()) << store.status();
    r.service = std::make_unique<RateLimiterService>(config, std::move(*store));
    r.host.AddService(r.service.get());
    ASSERT_TRUE(r.host.Start("127.0.0.1:0").ok());
  }
  std::string key = NewId("key_", 8);
  std::atomic<int> allowed{0}, denied_rpm{0}, other{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      auto limiter = pb::RateLimiterService::NewStub(
          DialTarget("127.0.0.1:" + std::to_string(replicas[c % 2].host.port())));
      for (int i = 0; i < 20; ++i) {
        grpc::ClientContext ctx;
        pb::AcquireRequest req;
        req.set_key_id(key);
        req.set_plan("metered");
        req.set_estimated_tokens(10);
        pb::AcquireResponse resp;
        grpc::Status s = limiter->Acquire(&ctx, req, &resp);
        if (s.ok() && resp.decision() == pb::DECISION_ALLOWED) {
          ++allowed;
        } else if (s.ok() && resp.denied_by() == pb::LIMIT_KIND_REQUESTS &&
                   resp.retry_after().seconds() + resp.retry_after().nanos() > 0) {
          ++denied_rpm;
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(allowed.load(), 30);
  EXPECT_EQ(denied_rpm.load(), 8 * 20 - 30);
  EXPECT_EQ(other.load(), 0);
  for (auto& r : replicas) r.host.Shutdown(0);
}

}  // namespace
}  // namespace nexusflow::ratelimit

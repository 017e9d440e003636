// RateLimiterService over a scripted store (what each denial becomes on the wire), the
// rate_limiter config section, and Redis URLs. The stores themselves are covered by the
// conformance suite (counter_store_test.cc).
#include <gtest/gtest.h>

#include "services/rate-limiter/counter_store.h"
#include "services/rate-limiter/rate_limiter_service.h"

namespace nexusflow::ratelimit {
namespace {

// Answers every Acquire with `next`.
class ScriptedStore : public CounterStore {
 public:
  Admission next;
  Admission Acquire(const std::string&, const PlanLimits&, int64_t, Clock::time_point) override {
    return next;
  }
  absl::Status Release(const std::string&, int64_t, Clock::time_point) override {
    return absl::UnavailableError("down");
  }
};

class ServiceTest : public ::testing::Test {
 protected:
  ServiceTest() {
    Config::RateLimiter config;
    config.plans["default"] = PlanLimits{};
    auto store = std::make_unique<ScriptedStore>();
    store_ = store.get();
    service_ = std::make_unique<RateLimiterService>(config, std::move(store));
  }
  pb::AcquireRequest Request() {
    pb::AcquireRequest req;
    req.set_key_id("key_1");
    req.set_estimated_tokens(10);
    return req;
  }
  ScriptedStore* store_;
  std::unique_ptr<RateLimiterService> service_;
};

TEST_F(ServiceTest, FailClosedIsUnavailableNotALimit) {
  store_->next.denied_by = Denial::kUnavailable;
  pb::AcquireResponse resp;
  absl::Status s = service_->AcquireLease(Request(), &resp);
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;  // the gateway's 503, not a 429
}

TEST_F(ServiceTest, RequestsPerDayDenialIsNamedWithItsState) {
  store_->next.denied_by = Denial::kRequestsPerDay;
  store_->next.retry_after = std::chrono::minutes(90);
  store_->next.requests_per_day = {1000, 0, std::chrono::minutes(90)};
  pb::AcquireResponse resp;
  ASSERT_TRUE(service_->AcquireLease(Request(), &resp).ok());
  EXPECT_EQ(resp.decision(), pb::DECISION_DENIED);
  EXPECT_EQ(resp.denied_by(), pb::LIMIT_KIND_REQUESTS_PER_DAY);
  EXPECT_EQ(resp.retry_after().seconds(), 5400);
  EXPECT_EQ(resp.requests_per_day().limit(), 1000);
  EXPECT_EQ(resp.requests_per_day().remaining(), 0);
}

TEST_F(ServiceTest, NeverFitsCarriesNoRetryAfter) {
  store_->next.denied_by = Denial::kTokens;
  store_->next.never_fits = true;
  pb::AcquireResponse resp;
  ASSERT_TRUE(service_->AcquireLease(Request(), &resp).ok());
  EXPECT_EQ(resp.denied_by(), pb::LIMIT_KIND_TOKENS);
  EXPECT_TRUE(resp.never_fits());
  EXPECT_FALSE(resp.has_retry_after());
}

TEST_F(ServiceTest, AReleaseTheStoreCannotTakeIsUnavailable) {
  pb::ReleaseRequest req;
  req.set_lease_id("lease_x.key_1");
  EXPECT_TRUE(absl::IsUnavailable(service_->ReleaseLease(req)));
}

// Redis unreachable (nothing listens on port 1): the policy decides, the service carries it.
TEST(RedisFailurePolicyTest, ClosedIsUnavailableAndOpenAdmits) {
  Config::RateLimiter config;
  config.plans["default"] = PlanLimits{1, 0, 0};
  config.store = "redis://127.0.0.1:1";
  config.redis_failure = "closed";
  auto closed = OpenCounterStore(config);
  ASSERT_TRUE(closed.ok()) << closed.status();  // an unreachable server is no start-up error
  RateLimiterService refusing(config, std::move(*closed));
  pb::AcquireRequest req;
  req.set_key_id("key_1");
  pb::AcquireResponse resp;
  EXPECT_TRUE(absl::IsUnavailable(refusing.AcquireLease(req, &resp)));

  config.redis_failure = "open";
  auto open = OpenCounterStore(config);
  ASSERT_TRUE(open.ok());
  RateLimiterService admitting(config, std::move(*open));
  for (int i = 0; i < 3; ++i) {  // rpm 1, yet admitted: nothing can be checked
    pb::AcquireResponse r;
    ASSERT_TRUE(admitting.AcquireLease(req, &r).ok());
    EXPECT_EQ(r.decision(), pb::DECISION_ALLOWED);
    pb::ReleaseRequest rel;
    rel.set_lease_id(r.lease_id());
    EXPECT_TRUE(admitting.ReleaseLease(rel).ok());
  }
}

TEST(DenialNameTest, EveryLimitHasItsName) {
  EXPECT_STREQ(DenialName(Denial::kRequests), "requests per minute");
  EXPECT_STREQ(DenialName(Denial::kRequestsPerDay), "requests per day");
  EXPECT_STREQ(DenialName(Denial::kTokens), "tokens per minute");
  EXPECT_STREQ(DenialName(Denial::kConcurrency), "concurrent requests");
}

TEST(RateLimiterConfigTest, StorePolicyAndRequestsPerDayParse) {
  auto c = ParseConfig(R"(
rate_limiter:
  store: redis://:s3cret@10.0.0.7:6380/2
  redis_failure: closed
  redis_timeout_ms: 50
  plans:
    free: {rpm: 10, rpd: 200}
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rate_limiter.store, "redis://:s3cret@10.0.0.7:6380/2");
  EXPECT_EQ(c->rate_limiter.redis_failure, "closed");
  EXPECT_EQ(c->rate_limiter.redis_timeout_ms, 50);
  EXPECT_EQ(c->rate_limiter.plans.at("free").rpd, 200);
  auto defaults = ParseConfig("rate_limiter: {}\n");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->rate_limiter.store, "memory");
  EXPECT_EQ(defaults->rate_limiter.redis_failure, "open");
  EXPECT_FALSE(ParseConfig("rate_limiter: {store: memcached://x}\n").ok());
  EXPECT_FALSE(ParseConfig("rate_limiter: {redis_failure: maybe}\n").ok());
}

TEST(RedisUrlTest, HostPortDatabaseAndPassword) {
  auto a = ParseRedisUrl("redis://:s3cret@10.0.0.7:6380/2");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "10.0.0.7");
  EXPECT_EQ(a->port, 6380);
  EXPECT_EQ(a->db, 2);
  EXPECT_EQ(a->password, "s3cret");
  auto b = ParseRedisUrl("redis://redis.default.svc");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->port, 6379);
  EXPECT_EQ(b->db, 0);
  EXPECT_FALSE(ParseRedisUrl("http://x:1").ok());
  EXPECT_FALSE(ParseRedisUrl("redis://x:port").ok());
  EXPECT_FALSE(ParseRedisUrl("redis://x:1/db").ok());
  EXPECT_FALSE(ParseRedisUrl("redis://:1").ok());
}

TEST(OpenCounterStoreTest, MemoryByDefaultAndABadUrlFailsAtStart) {
  Config::RateLimiter config;
  EXPECT_TRUE(OpenCounterStore(config).ok());
  config.store = "redis://x:99999";
  EXPECT_FALSE(OpenCounterStore(config).ok());
}

}  // namespace
}  // namespace nexusflow::ratelimit

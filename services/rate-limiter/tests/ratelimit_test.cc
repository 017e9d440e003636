#include <gtest/gtest.h>

#include "services/rate-limiter/counter_store.h"

namespace nexusflow::ratelimit {
namespace {

using std::chrono::seconds;

TEST(MemoryCounterStoreTest, RpmIsExactOverASlidingMinute) {
  auto store = NewMemoryCounterStore();
  PlanLimits limits{3, 0, 0};
  Clock::time_point t0{};
  t0 += std::chrono::hours(1);
  for (int i = 0; i < 3; ++i) {
    auto a = store->Acquire("k", limits, 10, t0 + seconds(i));
    ASSERT_EQ(a.denied_by, Denial::kNone);
    store->Release(a.lease_id, -1, t0 + seconds(i));
  }
  auto denied = store->Acquire("k", limits, 10, t0 + seconds(10));
  EXPECT_EQ(denied.denied_by, Denial::kRequests);
  EXPECT_EQ(denied.retry_after, seconds(50));  // first admission leaves at t0+60
  EXPECT_EQ(denied.requests.remaining, 0);
  EXPECT_EQ(store->Acquire("k", limits, 10, t0 + seconds(60)).denied_by, Denial::kNone);
  // Another key has its own window.
  EXPECT_EQ(store->Acquire("other", limits, 10, t0 + seconds(10)).denied_by, Denial::kNone);
}

TEST(MemoryCounterStoreTest, TpmCountsActualTokensAfterRelease) {
  auto store = NewMemoryCounterStore();
  PlanLimits limits{0, 1000, 0};
  Clock::time_point t{};
  auto a = store->Acquire("k", limits, 900, t);
  ASSERT_EQ(a.denied_by, Denial::kNone);
  EXPECT_EQ(store->Acquire("k", limits, 200, t).denied_by, Denial::kTokens);
  store->Release(a.lease_id, 100, t);  // really used 100
  EXPECT_EQ(store->Acquire("k", limits, 200, t).denied_by, Denial::kNone);
}

TEST(MemoryCounterStoreTest, ARequestOverTheTpmByItselfNeverFits) {
  auto store = NewMemoryCounterStore();
  PlanLimits limits{0, 1000, 0};
  Clock::time_point t{};
  auto a = store->Acquire("k", limits, 1001, t);
  EXPECT_EQ(a.denied_by, Denial::kTokens);
  EXPECT_TRUE(a.never_fits);  // no retry-after can help
  auto b = store->Acquire("k", limits, 600, t);
  ASSERT_EQ(b.denied_by, Denial::kNone);
  auto c = store->Acquire("k", limits, 600, t);  // fits once b's tokens leave the window
  EXPECT_EQ(c.denied_by, Denial::kTokens);
  EXPECT_FALSE(c.never_fits);
  EXPECT_GT(c.retry_after, Clock::duration::zero());
}

TEST(MemoryCounterStoreTest, ConcurrencyFreesOnReleaseAndLeaseExpiry) {
  auto store = NewMemoryCounterStore(seconds(30));
  PlanLimits limits{0, 0, 1};
  Clock::time_point t{};
  auto a = store->Acquire("k", limits, 1, t);
  ASSERT_EQ(a.denied_by, Denial::kNone);
  EXPECT_EQ(store->Acquire("k", limits, 1, t).denied_by, Denial::kConcurrency);
  EXPECT_TRUE(store->Release(a.lease_id, 1, t));
  EXPECT_FALSE(store->Release(a.lease_id, 1, t));  // twice is a no-op
  auto b = store->Acquire("k", limits, 1, t);
  ASSERT_EQ(b.denied_by, Denial::kNone);
  // Never released: after the lease TTL the slot comes back.
  EXPECT_EQ(store->Acquire("k", limits, 1, t + seconds(31)).denied_by, Denial::kNone);
}

TEST(MemoryCounterStoreTest, UnlimitedPlanAdmitsEverything) {
  auto store = NewMemoryCounterStore();
  Clock::time_point t{};
  for (int i = 0; i < 10000; ++i)
    ASSERT_EQ(store->Acquire("k", PlanLimits{}, 100, t).denied_by, Denial::kNone);
}

}  // namespace
}  // namespace nexusflow::ratelimit

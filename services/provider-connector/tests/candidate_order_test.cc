// The order a request tries its deployments in: tiers, weights, ejections, retry-after.
#include "services/provider-connector/candidate_order.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace nexusflow::connector {
namespace {

CandidateView Dep(int priority, int weight, bool available = true, bool blocked = false) {
  return CandidateView{priority, weight, available, blocked};
}

// How often each candidate comes first in `draws` orders.
std::map<int, int> FirstCounts(const std::vector<CandidateView>& c, int draws, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::map<int, int> first;
  for (int i = 0; i < draws; ++i) {
    auto order = OrderCandidates(c, rng);
    if (!order.indexes.empty()) ++first[order.indexes[0]];
  }
  return first;
}

TEST(CandidateOrderTest, WeightsThreeToOneSplitFourThousandRequestsWithinFivePercent) {
  for (uint64_t seed : {1u, 2u, 3u}) {
    auto first = FirstCounts({Dep(0, 3), Dep(0, 1)}, 4000, seed);
    EXPECT_NEAR(first[0], 3000, 150) << "seed " << seed;
    EXPECT_NEAR(first[1], 1000, 150) << "seed " << seed;
    EXPECT_EQ(first[0] + first[1], 4000);
  }
}

TEST(CandidateOrderTest, EveryCandidateIsInTheOrderOnce) {
  std::mt19937_64 rng(7);
  auto order = OrderCandidates({Dep(1, 1), Dep(0, 5), Dep(0, 2), Dep(2, 1)}, rng);
  ASSERT_EQ(order.indexes.size(), 4u);
  EXPECT_FALSE(order.panic);
  // Tier 0 (indexes 1 and 2) first, then tier 1, then tier 2.
  EXPECT_TRUE((order.indexes[0] == 1 && order.indexes[1] == 2) ||
              (order.indexes[0] == 2 && order.indexes[1] == 1));
  EXPECT_EQ(order.indexes[2], 0);
  EXPECT_EQ(order.indexes[3], 3);
}

TEST(CandidateOrderTest, TheBestPriorityTierTakesEverythingWhileHealthy) {
  auto first = FirstCounts({Dep(1, 100), Dep(0, 1)}, 1000, 11);
  EXPECT_EQ(first[1], 1000);
}

TEST(CandidateOrderTest, AnEjectedDeploymentIsLeftOutAndItsTierShareGoesToTheOthers) {
  // Weights 2:1:1 with the heavy one ejected: the other two share 50/50.
  auto first = FirstCounts({Dep(0, 2, false), Dep(0, 1), Dep(0, 1)}, 4000, 5);
  EXPECT_EQ(first.count(0), 0u);
  EXPECT_NEAR(first[1], 2000, 150);
  EXPECT_NEAR(first[2], 2000, 150);
  std::mt19937_64 rng(5);
  EXPECT_EQ(OrderCandidates({Dep(0, 2, false), Dep(0, 1), Dep(0, 1)}, rng).indexes.size(), 2u);
}

TEST(CandidateOrderTest, WhenTheBestTierIsEjectedTheNextTierServes) {
  std::mt19937_64 rng(3);
  auto order = OrderCandidates({Dep(0, 1, false), Dep(0, 1, false), Dep(1, 1)}, rng);
  EXPECT_FALSE(order.panic);
  EXPECT_EQ(order.indexes, std::vector<int>{2});
}

TEST(CandidateOrderTest, WhenEverythingIsEjectedAllAreTriedInOrderButNotThoseUnderRetryAfter) {
  std::mt19937_64 rng(3);
  auto order = OrderCandidates({Dep(1, 1, false), Dep(0, 1, false, true), Dep(0, 1, false)}, rng);
  EXPECT_TRUE(order.panic);
  EXPECT_EQ(order.indexes, (std::vector<int>{2, 0}));
}

TEST(CandidateOrderTest, RetryAfterExcludesEvenAnAvailableLookingCandidate) {
  std::mt19937_64 rng(3);
  auto order = OrderCandidates({Dep(0, 1, true, true), Dep(0, 1)}, rng);
  EXPECT_EQ(order.indexes, std::vector<int>{1});
  order = OrderCandidates({Dep(0, 1, false, true)}, rng);
  EXPECT_TRUE(order.indexes.empty());
}

TEST(CandidateOrderTest, AWeightOfZeroIsAStandbyOfItsTier) {
  auto first = FirstCounts({Dep(0, 0), Dep(0, 1)}, 500, 9);
  EXPECT_EQ(first[1], 500);
  first = FirstCounts({Dep(0, 0), Dep(0, 1, false)}, 500, 9);
  EXPECT_EQ(first[0], 500);
}

}  // namespace
}  // namespace nexusflow::connector

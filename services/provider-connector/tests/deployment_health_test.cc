// DeploymentHealth: the breakers of one connector replica, their order of candidates,
// their admin view and their series on /metrics.
#include "services/provider-connector/deployment_health.h"

#include <gtest/gtest.h>

#include "libs/metrics/metrics.h"

namespace nexusflow::connector {
namespace {

using namespace std::chrono_literals;
using Clock = CircuitBreaker::Clock;

class DeploymentHealthTest : public ::testing::Test {
 protected:
  DeploymentHealthTest() : health_(Config(), [this] { return now_; }, [] { return 0.5; }) {}
  static CircuitBreakerConfig Config() {
    CircuitBreakerConfig c;
    c.consecutive_failures = 3;
    c.open_ms = 2000;
    return c;
  }
  void AddCandidate(const std::string& id, int weight = 1) {
    auto* d = candidates_.Add();
    d->set_id(id);
    d->set_provider(id.substr(id.find('@') + 1));
    d->set_weight(weight);
  }
  // One attempt on candidate `i`; false when it was not let through.
  bool Attempt(int i, bool failure, std::optional<Clock::duration> retry_after = std::nullopt) {
    auto t = health_.Admit(candidates_[i], false);
    if (!t) return false;
    CircuitBreaker::Outcome o;
    o.failure = failure;
    o.error = failure ? "HTTP 500" : "";
    o.retry_after = retry_after;
    health_.Record(candidates_[i].id(), t, o);
    return true;
  }
  static double Metric(const std::string& series) {
    std::string page = SerializeMetrics();
    size_t at = page.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    return std::strtod(page.c_str() + at + series.size() + 2, nullptr);
  }

  Clock::time_point now_ = Clock::time_point() + 100h;
  DeploymentHealth health_;
  DeploymentHealth::Candidates candidates_;
};

TEST_F(DeploymentHealthTest, AFailingDeploymentIsEjectedLeftOutOfTheOrderAndShownOpen) {
  AddCandidate("dh-model@east");
  AddCandidate("dh-model@west");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Attempt(0, true));
  ASSERT_TRUE(Attempt(1, false));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(health_.Order(candidates_).indexes, std::vector<int>{1});
  EXPECT_EQ(Metric(R"(nexusflow_connector_deployment_state{deployment="dh-model@east"})"), 2);
  EXPECT_EQ(Metric(R"(nexusflow_connector_deployment_ejections_total{deployment="dh-model@east"})"), 1);
  EXPECT_EQ(Metric(R"(nexusflow_connector_deployment_state{deployment="dh-model@west"})"), 0);

  auto list = health_.List();
  ASSERT_EQ(list.deployments_size(), 2);
  EXPECT_EQ(list.deployments(0).deployment_id(), "dh-model@east");
  EXPECT_EQ(list.deployments(0).provider(), "east");
  EXPECT_EQ(list.deployments(0).state(), v1::CIRCUIT_STATE_OPEN);
  EXPECT_EQ(list.deployments(0).ejections(), 1);
  EXPECT_EQ(list.deployments(0).last_error(), "HTTP 500");
  EXPECT_TRUE(list.deployments(0).has_next_probe_at());
  EXPECT_EQ(list.deployments(1).state(), v1::CIRCUIT_STATE_CLOSED);
  EXPECT_FALSE(list.replica().empty());
}

TEST_F(DeploymentHealthTest, AfterTheOpenTimeAProbeBringsItBack) {
  AddCandidate("dh-probe@east");
  AddCandidate("dh-probe@west");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Attempt(0, true));
  now_ += 1999ms;
  EXPECT_FALSE(Attempt(0, false));
  now_ += 1ms;
  EXPECT_EQ(health_.Order(candidates_).indexes.size(), 2u);  // due for a probe
  auto probe = health_.Admit(candidates_[0], false);
  ASSERT_TRUE(probe);
  EXPECT_EQ(Metric(R"(nexusflow_connector_deployment_state{deployment="dh-probe@east"})"), 1);
  // The probe is out: the order leaves it out again until it answers.
  EXPECT_EQ(health_.Order(candidates_).indexes, std::vector<int>{1});
  health_.Record("dh-probe@east", probe, {});
  EXPECT_EQ(Metric(R"(nexusflow_connector_deployment_state{deployment="dh-probe@east"})"), 0);
  EXPECT_EQ(health_.List().deployments(0).state(), v1::CIRCUIT_STATE_CLOSED);
}

TEST_F(DeploymentHealthTest, EverythingEjectedIsStillTriedAsALastResort) {
  AddCandidate("dh-panic@only");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Attempt(0, true));
  auto order = health_.Order(candidates_);
  EXPECT_TRUE(order.panic);
  EXPECT_EQ(order.indexes, std::vector<int>{0});
  auto t = health_.Admit(candidates_[0], true);
  ASSERT_TRUE(t);
  health_.Record("dh-panic@only", t, {});
  EXPECT_EQ(health_.List().deployments(0).state(), v1::CIRCUIT_STATE_CLOSED);
}

TEST_F(DeploymentHealthTest, RetryAfterKeepsEveryCandidateBackAndSaysForHowLong) {
  AddCandidate("dh-limited@east");
  AddCandidate("dh-limited@west");
  ASSERT_TRUE(Attempt(0, true, 4s));
  ASSERT_TRUE(Attempt(1, true, 2s));
  EXPECT_TRUE(health_.Order(candidates_).indexes.empty());
  EXPECT_EQ(health_.RetryAfterLeft(candidates_), 2s);
  now_ += 2s;
  EXPECT_EQ(health_.Order(candidates_).indexes, std::vector<int>{1});
  EXPECT_EQ(health_.RetryAfterLeft(candidates_), 2s);  // east's, the one still held back
  now_ += 2s;
  EXPECT_EQ(health_.RetryAfterLeft(candidates_), 0s);
  EXPECT_EQ(health_.Order(candidates_).indexes.size(), 2u);
}

TEST_F(DeploymentHealthTest, ADeploymentNeverCalledIsAvailable) {
  AddCandidate("dh-new@a", 3);
  AddCandidate("dh-new@b", 1);
  auto order = health_.Order(candidates_);
  EXPECT_FALSE(order.panic);
  EXPECT_EQ(order.indexes.size(), 2u);
  EXPECT_EQ(health_.List().deployments_size(), 0);
}

}  // namespace
}  // namespace nexusflow::connector

// The circuit breaker on a clock the test moves by hand.
#include "services/provider-connector/circuit_breaker.h"

#include <gtest/gtest.h>

namespace nexusflow::connector {
namespace {

using namespace std::chrono_literals;
using Clock = CircuitBreaker::Clock;

CircuitBreaker::Outcome Failure(const char* error = "HTTP 500") {
  CircuitBreaker::Outcome o;
  o.failure = true;
  o.error = error;
  return o;
}
CircuitBreaker::Outcome Success() { return {}; }

class CircuitBreakerTest : public ::testing::Test {
 protected:
  CircuitBreakerTest() {
    config_.consecutive_failures = 5;
    config_.error_percent = 50;
    config_.window_seconds = 10;
    config_.min_requests = 20;
    config_.open_ms = 5000;
    config_.max_open_ms = 60000;
    config_.half_open_probes = 1;
  }
  CircuitBreaker Make() {
    return CircuitBreaker(config_, [this] { return jitter_; }, now_);
  }
  // One request through the breaker with the given outcome; false when it was not let through.
  bool Send(CircuitBreaker& b, const CircuitBreaker::Outcome& o) {
    auto t = b.Admit(now_);
    if (!t) return false;
    b.Record(t, o, now_);
    return true;
  }

  CircuitBreakerConfig config_;
  double jitter_ = 0.5;  // a factor of exactly 1
  Clock::time_point now_ = Clock::time_point() + 1000h;
};

TEST_F(CircuitBreakerTest, FiveFailuresInARowEject) {
  CircuitBreaker b = Make();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(Send(b, Failure()));
  EXPECT_EQ(b.state(), CircuitState::kClosed);
  EXPECT_EQ(b.ejections(), 0);
  ASSERT_TRUE(Send(b, Failure()));
  EXPECT_EQ(b.state(), CircuitState::kOpen);
  EXPECT_EQ(b.ejections(), 1);
  EXPECT_FALSE(b.Available(now_));
  EXPECT_FALSE(b.Admit(now_));
  EXPECT_EQ(b.snapshot(now_).last_error, "HTTP 500");
}

TEST_F(CircuitBreakerTest, ASuccessRestartsTheCountOfFailuresInARow) {
  CircuitBreaker b = Make();
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(Send(b, Failure()));
    ASSERT_TRUE(Send(b, Success()));
  }
  EXPECT_EQ(b.state(), CircuitState::kClosed);
  EXPECT_EQ(b.snapshot(now_).consecutive_failures, 0);
}

TEST_F(CircuitBreakerTest, HalfTheRequestsFailingInTheWindowEject) {
  config_.consecutive_failures = 0;  // only the share counts
  CircuitBreaker b = Make();
  // 19 outcomes, 10 of them failures: below min_requests, however bad the share.
  for (int i = 0; i < 19; ++i) {
    ASSERT_TRUE(Send(b, i % 2 == 0 ? Failure() : Success()));
    now_ += 100ms;
  }
  EXPECT_EQ(b.state(), CircuitState::kClosed);
  EXPECT_EQ(b.snapshot(now_).window_requests, 19);
  EXPECT_EQ(b.snapshot(now_).window_failures, 10);
  ASSERT_TRUE(Send(b, Failure()));  // 11 of 20
  EXPECT_EQ(b.state(), CircuitState::kOpen);
}

TEST_F(CircuitBreakerTest, AShareBelowTheThresholdKeepsItIn) {
  config_.consecutive_failures = 0;
  CircuitBreaker b = Make();
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(Send(b, i % 3 == 0 ? Failure() : Success()));  // a third fails
    now_ += 50ms;
  }
  EXPECT_EQ(b.state(), CircuitState::kClosed);
}

TEST_F(CircuitBreakerTest, FailuresOlderThanTheWindowAreForgotten) {
  config_.consecutive_failures = 0;
  CircuitBreaker b = Make();
  for (int i = 0; i < 15; ++i) ASSERT_TRUE(Send(b, Failure()));
  now_ += 11s;
  EXPECT_EQ(b.snapshot(now_).window_requests, 0);
  for (int i = 0; i < 15; ++i) ASSERT_TRUE(Send(b, Failure()));
  EXPECT_EQ(b.state(), CircuitState::kClosed);  // 15 < min_requests in the window
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Send(b, Failure()));
  EXPECT_EQ(b.state(), CircuitState::kOpen);
}

TEST_F(CircuitBreakerTest, OpenUntilTheProbeTimeThenOneProbeAtATime) {
  CircuitBreaker b = Make();
  for (int i = 0; i < 5; ++i) Send(b, Failure());
  ASSERT_EQ(b.state(), CircuitState::kOpen);
  now_ += 4999ms;
  EXPECT_FALSE(b.Available(now_));
  EXPECT_FALSE(b.Admit(now_));
  now_ += 1ms;
  EXPECT_TRUE(b.Available(now_));
  auto probe = b.Admit(now_);
  ASSERT_TRUE(probe);
  EXPECT_EQ(probe.pass, CircuitBreaker::Pass::kProbe);
  EXPECT_EQ(b.state(), CircuitState::kHalfOpen);
  // While the probe is out, nothing else goes.
  EXPECT_FALSE(b.Available(now_));
  EXPECT_FALSE(b.Admit(now_));
  b.Record(probe, Success(), now_);
  EXPECT_EQ(b.state(), CircuitState::kClosed);
  EXPECT_TRUE(b.Admit(now_));
}

TEST_F(CircuitBreakerTest, AFailedProbeReopensForTwiceAsLongUpToTheCap) {
  config_.max_open_ms = 15000;
  CircuitBreaker b = Make();
  for (int i = 0; i < 5; ++i) Send(b, Failure());
  std::vector<Clock::duration> open_for;
  for (int round = 0; round < 4; ++round) {
    auto next = *b.snapshot(now_).next_probe_at;
    open_for.push_back(next - now_);
    now_ = next;
    auto probe = b.Admit(now_);
    ASSERT_TRUE(probe);
    b.Record(probe, Failure(), now_);
    ASSERT_EQ(b.state(), CircuitState::kOpen);
  }
  EXPECT_EQ(open_for[0], 5s);
  EXPECT_EQ(open_for[1], 10s);
  EXPECT_EQ(open_for[2], 15s);
  EXPECT_EQ(open_for[3], 15s);
  EXPECT_EQ(b.ejections(), 5);
  // A success closes, and the next ejection starts from open_ms again.
  now_ = *b.snapshot(now_).next_probe_at;
  auto probe = b.Admit(now_);
  b.Record(probe, Success(), now_);
  ASSERT_EQ(b.state(), CircuitState::kClosed);
  for (int i = 0; i < 5; ++i) Send(b, Failure());
  EXPECT_EQ(*b.snapshot(now_).next_probe_at - now_, 5s);
}

TEST_F(CircuitBreakerTest, JitterSpreadsTheProbeTime) {
  jitter_ = 0.0;
  CircuitBreaker early = Make();
  for (int i = 0; i < 5; ++i) Send(early, Failure());
  EXPECT_EQ(*early.snapshot(now_).next_probe_at - now_, 3750ms);
  jitter_ = 0.999;
  CircuitBreaker late = Make();
  for (int i = 0; i < 5; ++i) Send(late, Failure());
  auto wait = *late.snapshot(now_).next_probe_at - now_;
  EXPECT_GT(wait, 6200ms);
  EXPECT_LT(wait, 6250ms);
}

TEST_F(CircuitBreakerTest, RetryAfterHoldsItBackWhateverTheState) {
  CircuitBreaker b = Make();
  auto t = b.Admit(now_);
  CircuitBreaker::Outcome limited = Failure("HTTP 429");
  limited.retry_after = 3s;
  b.Record(t, limited, now_);
  EXPECT_EQ(b.state(), CircuitState::kClosed);  // one failure does not eject
  EXPECT_TRUE(b.Blocked(now_));
  EXPECT_FALSE(b.Available(now_));
  EXPECT_FALSE(b.Admit(now_));
  EXPECT_FALSE(b.AdmitPanic(now_));  // not even as a last resort
  now_ += 2999ms;
  EXPECT_FALSE(b.Admit(now_));
  now_ += 1ms;
  EXPECT_TRUE(b.Admit(now_));
}

TEST_F(CircuitBreakerTest, RetryAfterIsCappedAndDelaysTheProbe) {
  config_.max_retry_after_ms = 20000;
  CircuitBreaker b = Make();
  for (int i = 0; i < 4; ++i) Send(b, Failure());
  auto t = b.Admit(now_);
  CircuitBreaker::Outcome o = Failure("HTTP 503");
  o.retry_after = 3600s;
  b.Record(t, o, now_);
  ASSERT_EQ(b.state(), CircuitState::kOpen);
  EXPECT_EQ(*b.snapshot(now_).next_probe_at - now_, 20s);  // not 5 s, not an hour
  now_ += 20s;
  EXPECT_TRUE(b.Admit(now_));
}

TEST_F(CircuitBreakerTest, AnAnswerToARequestSentBeforeTheEjectionChangesNothing) {
  CircuitBreaker b = Make();
  auto early = b.Admit(now_);
  for (int i = 0; i < 5; ++i) Send(b, Failure());
  ASSERT_EQ(b.state(), CircuitState::kOpen);
  b.Record(early, Success(), now_);
  EXPECT_EQ(b.state(), CircuitState::kOpen);
}

TEST_F(CircuitBreakerTest, TriedAnywayWhenNothingElseIsLeftAndASuccessBringsItBack) {
  CircuitBreaker b = Make();
  for (int i = 0; i < 5; ++i) Send(b, Failure());
  auto panic = b.AdmitPanic(now_);
  ASSERT_TRUE(panic);
  EXPECT_EQ(panic.pass, CircuitBreaker::Pass::kPanic);
  b.Record(panic, Failure(), now_);
  EXPECT_EQ(b.state(), CircuitState::kOpen);
  EXPECT_EQ(b.ejections(), 1);  // a failure while ejected is not another ejection
  panic = b.AdmitPanic(now_);
  b.Record(panic, Success(), now_);
  EXPECT_EQ(b.state(), CircuitState::kClosed);
}

TEST_F(CircuitBreakerTest, AnAbandonedProbeGivesItsSlotBack) {
  CircuitBreaker b = Make();
  for (int i = 0; i < 5; ++i) Send(b, Failure());
  now_ += 5s;
  auto probe = b.Admit(now_);
  ASSERT_TRUE(probe);
  EXPECT_FALSE(b.Admit(now_));
  b.Abandon(probe);
  EXPECT_EQ(b.state(), CircuitState::kHalfOpen);
  EXPECT_TRUE(b.Admit(now_));
}

TEST_F(CircuitBreakerTest, SeveralProbesWhenConfigured) {
  config_.half_open_probes = 3;
  CircuitBreaker b = Make();
  for (int i = 0; i < 5; ++i) Send(b, Failure());
  now_ += 5s;
  int let_through = 0;
  for (int i = 0; i < 10; ++i) let_through += b.Admit(now_) ? 1 : 0;
  EXPECT_EQ(let_through, 3);
}

TEST_F(CircuitBreakerTest, ASlowFirstByteCountsAsAFailureWhenConfigured) {
  config_.slow_first_byte_ms = 2000;
  CircuitBreaker b = Make();
  CircuitBreaker::Outcome slow;
  slow.first_byte = 2500ms;
  CircuitBreaker::Outcome quick;
  quick.first_byte = 1500ms;
  for (int i = 0; i < 4; ++i) Send(b, slow);
  Send(b, quick);
  for (int i = 0; i < 4; ++i) Send(b, slow);
  EXPECT_EQ(b.state(), CircuitState::kClosed);
  Send(b, slow);
  EXPECT_EQ(b.state(), CircuitState::kOpen);
  EXPECT_EQ(b.snapshot(now_).last_error, "slow first byte");
  ASSERT_TRUE(b.snapshot(now_).first_byte_seconds.has_value());
  EXPECT_GT(*b.snapshot(now_).first_byte_seconds, 1.5);
}

TEST(ParseRetryAfterTest, SecondsMillisecondsAndDates) {
  using std::chrono::milliseconds;
  EXPECT_EQ(ParseRetryAfter("2", "", 0), milliseconds(2000));
  EXPECT_EQ(ParseRetryAfter(" 1.5 ", "", 0), milliseconds(1500));
  EXPECT_EQ(ParseRetryAfter("30", "250", 0), milliseconds(250));  // the finer one wins
  // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
  EXPECT_EQ(ParseRetryAfter("Sun, 06 Nov 1994 08:49:37 GMT", "", 784111777 - 7), milliseconds(7000));
  EXPECT_FALSE(ParseRetryAfter("Sun, 06 Nov 1994 08:49:37 GMT", "", 784111777 + 1));  // past
  EXPECT_FALSE(ParseRetryAfter("", "", 0));
  EXPECT_FALSE(ParseRetryAfter("0", "", 0));
  EXPECT_FALSE(ParseRetryAfter("-3", "", 0));
  EXPECT_FALSE(ParseRetryAfter("soon", "", 0));
}

}  // namespace
}  // namespace nexusflow::connector

#include <gtest/gtest.h>

#include <cstdlib>

#include "libs/config/config.h"

namespace nexusflow {
namespace {

constexpr char kMinimal[] = R"(
provider_connector:
  providers:
    mock: {kind: openai, base_url: "http://127.0.0.1:9100/v1/"}
routing:
  models:
    - id: m1
      pricing: {input: "3.00", output: "15"}
      deployments: [{provider: mock}]
rate_limiter:
  plans:
    tiny: {rpm: 3}
)";

TEST(ConfigTest, ParsesModelsPricesAndDefaults) {
  auto c = ParseConfig(kMinimal);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->routing.models.size(), 1u);
  const auto& m = c->routing.models[0];
  EXPECT_EQ(m.price.input, 3'000'000'000);
  EXPECT_EQ(m.price.output, 15'000'000'000);
  EXPECT_EQ(m.price.cache_read, 300'000'000);    // 0.1x input
  EXPECT_EQ(m.price.cache_write, 3'750'000'000);  // 1.25x input
  EXPECT_EQ(m.deployments[0].upstream_model, "m1");
  EXPECT_EQ(c->provider_connector.providers.at("mock").base_url, "http://127.0.0.1:9100/v1");
  EXPECT_EQ(c->rate_limiter.plans.at("tiny").rpm, 3);
  EXPECT_TRUE(c->rate_limiter.plans.count("default"));
}

TEST(ConfigTest, UnknownKeyIsRejectedWithItsPath) {
  auto c = ParseConfig(std::string(kMinimal) + "gateway:\n  admin_kye: x\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("gateway.admin_kye"), std::string::npos) << c.status();
}

TEST(ConfigTest, BadValueIsRejectedWithItsPath) {
  auto c = ParseConfig(R"(
provider_connector:
  providers:
    mock: {kind: openai, base_url: "http://x"}
routing:
  models:
    - id: m1
      pricing: {input: "abc"}
      deployments: [{provider: mock}]
)");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("routing.models[0].pricing.input"), std::string::npos)
      << c.status();
}

TEST(ConfigTest, DeploymentMustNameAKnownProvider) {
  auto c = ParseConfig(R"(
routing:
  models:
    - id: m1
      pricing: {input: "1"}
      deployments: [{provider: nowhere}]
)");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("deployments[0].provider"), std::string::npos);
}

TEST(ConfigTest, BadPortIsRejected) {
  auto c = ParseConfig("server:\n  http_listen: 'localhost:99999'\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("server.http_listen"), std::string::npos);
}

TEST(ConfigTest, EnvironmentIsSubstituted) {
  setenv("NF_TEST_SECRET", "s3cret", 1);
  unsetenv("NF_TEST_UNSET");
  auto e = ExpandEnv("a: ${NF_TEST_SECRET}\nb: ${NF_TEST_UNSET:-fallback}\n");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(*e, "a: s3cret\nb: fallback\n");
  auto missing = ExpandEnv("x: 1\nb: ${NF_TEST_UNSET}\n");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("line 2"), std::string::npos);
  EXPECT_NE(missing.status().message().find("NF_TEST_UNSET"), std::string::npos);
}

TEST(ConfigTest, ADefaultMayNameAnotherVariable) {
  setenv("NF_TEST_DIR", "/data", 1);
  unsetenv("NF_TEST_UNSET");
  auto e = ExpandEnv("db: ${NF_TEST_UNSET:-${NF_TEST_DIR:-./var}/ledger.db}\n");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(*e, "db: /data/ledger.db\n");
  setenv("NF_TEST_UNSET", "postgresql://ledger@db/ledger", 1);
  e = ExpandEnv("db: ${NF_TEST_UNSET:-${NF_TEST_DIR:-./var}/ledger.db}\n");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(*e, "db: postgresql://ledger@db/ledger\n");
  unsetenv("NF_TEST_UNSET");
}

TEST(ConfigTest, LedgerOverdraftIsDecimalUsd) {
  auto c = ParseConfig(std::string(kMinimal) +
                       "billing_ledger:\n  database: \"postgresql://nf@127.0.0.1/ledger\"\n"
                       "  overdraft_usd: \"2.50\"\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->billing_ledger.overdraft, 2'500'000'000);
  EXPECT_EQ(c->billing_ledger.database, "postgresql://nf@127.0.0.1/ledger");
  auto defaults = ParseConfig(kMinimal);
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->billing_ledger.overdraft, 0);
  auto negative = ParseConfig(std::string(kMinimal) + "billing_ledger:\n  overdraft_usd: \"-1\"\n");
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.status().message().find("billing_ledger.overdraft_usd"), std::string::npos);
}

TEST(ConfigTest, GatewayOutboxAndSettlementAttempts) {
  auto defaults = ParseConfig(kMinimal);
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->gateway.outbox, "./var/outbox.db");
  EXPECT_EQ(defaults->gateway.settlement_max_attempts, 50);
  auto c = ParseConfig(std::string(kMinimal) +
                       "gateway:\n  outbox: /data/gw-1/outbox.db\n  settlement_max_attempts: 7\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->gateway.outbox, "/data/gw-1/outbox.db");
  EXPECT_EQ(c->gateway.settlement_max_attempts, 7);
  auto zero = ParseConfig(std::string(kMinimal) + "gateway:\n  settlement_max_attempts: 0\n");
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.status().message().find("gateway.settlement_max_attempts"), std::string::npos);
}

TEST(ConfigTest, RetryBudgetAndCircuitBreaker) {
  auto defaults = ParseConfig(kMinimal);
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->provider_connector.max_attempts, 3);
  EXPECT_EQ(defaults->provider_connector.circuit_breaker.consecutive_failures, 5);
  EXPECT_EQ(defaults->routing.models[0].deployments[0].weight, 1);
  EXPECT_EQ(defaults->routing.models[0].deployments[0].priority, 0);
  std::string text = kMinimal;
  text.replace(text.find("provider_connector:\n"), 20,
               "provider_connector:\n  max_attempts: 2\n  retry_deadline_ms: 900\n  first_byte_timeout_ms: 700\n"
               "  circuit_breaker: {consecutive_failures: 0, error_percent: 25, window_seconds: 30,"
               " min_requests: 8, open_ms: 100, max_open_ms: 800, max_retry_after_ms: 5000,"
               " half_open_probes: 2, slow_first_byte_ms: 3000}\n");
  auto c = ParseConfig(text);
  ASSERT_TRUE(c.ok()) << c.status();
  const auto& pc = c->provider_connector;
  EXPECT_EQ(pc.max_attempts, 2);
  EXPECT_EQ(pc.retry_deadline_ms, 900);
  EXPECT_EQ(pc.first_byte_timeout_ms, 700);
  EXPECT_EQ(pc.circuit_breaker.consecutive_failures, 0);
  EXPECT_EQ(pc.circuit_breaker.error_percent, 25);
  EXPECT_EQ(pc.circuit_breaker.window_seconds, 30);
  EXPECT_EQ(pc.circuit_breaker.min_requests, 8);
  EXPECT_EQ(pc.circuit_breaker.open_ms, 100);
  EXPECT_EQ(pc.circuit_breaker.max_open_ms, 800);
  EXPECT_EQ(pc.circuit_breaker.max_retry_after_ms, 5000);
  EXPECT_EQ(pc.circuit_breaker.half_open_probes, 2);
  EXPECT_EQ(pc.circuit_breaker.slow_first_byte_ms, 3000);
  std::string bad_text = kMinimal;
  bad_text.replace(bad_text.find("provider_connector:\n"), 20,
                   "provider_connector:\n  circuit_breaker: {error_percent: 150}\n");
  auto bad = ParseConfig(bad_text);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("provider_connector.circuit_breaker.error_percent"), std::string::npos)
      << bad.status();
  auto shorter = ParseConfig(R"(
provider_connector:
  circuit_breaker: {open_ms: 1000, max_open_ms: 10}
  providers:
    mock: {kind: openai, base_url: "http://x"}
)");
  ASSERT_FALSE(shorter.ok());
  EXPECT_NE(shorter.status().message().find("provider_connector.circuit_breaker.max_open_ms"), std::string::npos)
      << shorter.status();
}

}  // namespace
}  // namespace nexusflow

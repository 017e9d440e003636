#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>

#include "libs/config/config.h"
#include "libs/config/config_reference.h"

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

namespace nexusflow {
namespace {

// The configuration reference and the parser cannot disagree: the reference's example
// config (every key set) parses, and every mapping the parser checks allows exactly the
// keys the reference lists under it.
TEST(ConfigReferenceTest, EveryDocumentedKeyParsesAndNoUndocumentedKeyIsAccepted) {
  std::map<std::string, std::set<std::string>> documented;
  std::set<std::string> paths;
  for (const ConfigKey& k : ConfigReference()) {
    std::string path = k.path;
    ASSERT_TRUE(paths.insert(path).second) << "listed twice: " << path;
    size_t dot = path.rfind('.');
    std::string parent = dot == std::string::npos ? "" : path.substr(0, dot);
    std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
    documented[parent].insert(name);
    EXPECT_TRUE(parent.empty() || paths.count(parent) || paths.count(parent.substr(0, parent.size() - 2)))
        << path << " is listed before its parent";
  }
  std::map<std::string, std::set<std::string>> accepted;
  SetMappingObserver([&](const std::string& path, const std::set<std::string>& allowed) {
    std::string normal;
    for (size_t i = 0; i < path.size(); ++i) {
      normal.push_back(path[i]);
      if (path[i] == '[') {  // "[0]" → "[]"
        while (i + 1 < path.size() && path[i + 1] != ']') ++i;
      }
    }
    accepted[normal].insert(allowed.begin(), allowed.end());
  });
  const std::string example = ExampleConfigYaml();
  auto config = ParseConfig(example);
  SetMappingObserver(nullptr);
  ASSERT_TRUE(config.ok()) << config.status() << "\n" << example;
  for (const auto& [path, keys] : accepted) {
    // The list items' mappings are documented under "list[]".
    EXPECT_EQ(keys, documented[path]) << "the mapping at '" << path << "'";
  }
  for (const auto& [path, keys] : documented) {
    bool leaf_parent = true;
    for (const ConfigKey& k : ConfigReference())
      if (path == k.path && std::string(k.type) != "section" && std::string(k.type) != "list") leaf_parent = false;
    // A mapping of names the user chooses ("<plan>") takes any key.
    const bool named = keys.size() == 1 && keys.begin()->front() == '<';
    if (leaf_parent && !named) EXPECT_TRUE(accepted.count(path)) << "'" << path << "' is documented but never parsed";
  }
  // The example sets what it says it sets.
  EXPECT_EQ(config->provider_connector.media.max_per_key, 16);
  ASSERT_EQ(config->routing.models.size(), 1u);
  EXPECT_EQ(config->routing.models[0].price.image, 30'000'000);
  EXPECT_EQ(config->rate_limiter.plans.at("<plan>").rpm, 60);
}

TEST(ConfigReferenceTest, DefaultsAreTheParsersDefaults) {
  auto config = ParseConfig("");
  ASSERT_TRUE(config.ok());
  std::map<std::string, std::string> actual = {
      {"server.http_listen", config->server.http_listen},
      {"server.grpc_listen", config->server.grpc_listen},
      {"server.drain_grace_seconds", std::to_string(config->server.drain_grace_seconds)},
      {"server.io_threads", std::to_string(config->server.io_threads)},
      {"server.idle_timeout_seconds", std::to_string(config->server.idle_timeout_seconds)},
      {"server.header_timeout_ms", std::to_string(config->server.header_timeout_ms)},
      {"server.body_timeout_ms", std::to_string(config->server.body_timeout_ms)},
      {"server.send_timeout_seconds", std::to_string(config->server.send_timeout_seconds)},
      {"server.max_header_bytes", std::to_string(config->server.max_header_bytes)},
      {"server.max_header_count", std::to_string(config->server.max_header_count)},
      {"server.max_connections", std::to_string(config->server.max_connections)},
      {"server.max_connections_per_ip", std::to_string(config->server.max_connections_per_ip)},
      {"gateway.auth_cache_ttl_seconds", std::to_string(config->gateway.auth_cache_ttl_seconds)},
      {"gateway.max_body_bytes", std::to_string(config->gateway.max_body_bytes)},
      {"gateway.default_max_output_tokens", std::to_string(config->gateway.default_max_output_tokens)},
      {"gateway.outbox", config->gateway.outbox},
      {"gateway.settlement_max_attempts", std::to_string(config->gateway.settlement_max_attempts)},
      {"gateway.image_wait_seconds", std::to_string(config->gateway.image_wait_seconds)},
      {"auth.database", config->auth.database},
      {"rate_limiter.store", config->rate_limiter.store},
      {"rate_limiter.redis_failure", config->rate_limiter.redis_failure},
      {"rate_limiter.redis_timeout_ms", std::to_string(config->rate_limiter.redis_timeout_ms)},
      {"billing_ledger.database", config->billing_ledger.database},
      {"provider_connector.connect_timeout_ms", std::to_string(config->provider_connector.connect_timeout_ms)},
      {"provider_connector.request_timeout_ms", std::to_string(config->provider_connector.request_timeout_ms)},
      {"provider_connector.max_connections_per_host",
       std::to_string(config->provider_connector.max_connections_per_host)},
      {"provider_connector.max_attempts", std::to_string(config->provider_connector.max_attempts)},
      {"provider_connector.retry_deadline_ms", std::to_string(config->provider_connector.retry_deadline_ms)},
      {"provider_connector.first_byte_timeout_ms", std::to_string(config->provider_connector.first_byte_timeout_ms)},
      {"provider_connector.circuit_breaker.consecutive_failures",
       std::to_string(config->provider_connector.circuit_breaker.consecutive_failures)},
      {"provider_connector.circuit_breaker.error_percent",
       std::to_string(config->provider_connector.circuit_breaker.error_percent)},
      {"provider_connector.circuit_breaker.window_seconds",
       std::to_string(config->provider_connector.circuit_breaker.window_seconds)},
      {"provider_connector.circuit_breaker.min_requests",
       std::to_string(config->provider_connector.circuit_breaker.min_requests)},
      {"provider_connector.circuit_breaker.open_ms", std::to_string(config->provider_connector.circuit_breaker.open_ms)},
      {"provider_connector.circuit_breaker.max_open_ms",
       std::to_string(config->provider_connector.circuit_breaker.max_open_ms)},
      {"provider_connector.circuit_breaker.max_retry_after_ms",
       std::to_string(config->provider_connector.circuit_breaker.max_retry_after_ms)},
      {"provider_connector.circuit_breaker.half_open_probes",
       std::to_string(config->provider_connector.circuit_breaker.half_open_probes)},
      {"provider_connector.circuit_breaker.slow_first_byte_ms",
       std::to_string(config->provider_connector.circuit_breaker.slow_first_byte_ms)},
      {"provider_connector.media.task_store", config->provider_connector.media.task_store},
      {"provider_connector.media.workers", std::to_string(config->provider_connector.media.workers)},
      {"provider_connector.media.max_in_flight", std::to_string(config->provider_connector.media.max_in_flight)},
      {"provider_connector.media.max_per_key", std::to_string(config->provider_connector.media.max_per_key)},
      {"provider_connector.media.max_per_deployment",
       std::to_string(config->provider_connector.media.max_per_deployment)},
      {"provider_connector.media.lease_seconds", std::to_string(config->provider_connector.media.lease_seconds)},
      {"provider_connector.media.poll_min_ms", std::to_string(config->provider_connector.media.poll_min_ms)},
      {"provider_connector.media.poll_max_ms", std::to_string(config->provider_connector.media.poll_max_ms)},
      {"provider_connector.media.task_timeout_seconds",
       std::to_string(config->provider_connector.media.task_timeout_seconds)},
      {"provider_connector.media.result_ttl_hours",
       std::to_string(config->provider_connector.media.result_ttl_hours)},
  };
  int checked = 0;
  for (const ConfigKey& k : ConfigReference()) {
    auto it = actual.find(k.path);
    if (it == actual.end()) continue;
    EXPECT_EQ(it->second, k.default_value) << k.path;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(actual.size()));
  EXPECT_EQ(config->server.reuse_port ? "true" : "false", std::string("false"));
  EXPECT_TRUE(config->gateway.access_log);
}

}  // namespace
}  // namespace nexusflow

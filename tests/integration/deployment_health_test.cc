// Deployment health end to end: the real nexusflow binary (all targets in one process) in
// front of the real mock provider serving two deployments of one model, "duo@east" and
// "duo@west" (the mock's /d/east and /d/west base URLs). The mock's control endpoint makes
// east fail, stall or ask to wait; clients never see an error, east is ejected after a
// bounded number of failures, shows as open in GET /admin/v1/deployments and on /metrics,
// and comes back once it recovers. A second model, "trio", splits traffic 3:1 by weight
// inside its best priority tier.
//
// Ports (fixed for this test): gateway HTTP 23080, gRPC 23090, mock provider 23100.
#include <curl/curl.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/harness.h"
#include "tests/integration/http_get.h"
#include "tests/integration/ports.h"

namespace {

using nexusflow::testing::WaitFor;
using nexusflow::testing::MetricValue;

namespace json = boost::json;
using nexusflow::testing::HttpGet;
using nexusflow::testing::Listening;

std::string g_binary, g_mock;

constexpr int kHttpPort = 23080;
constexpr int kGrpcPort = 23090;
constexpr int kMockPort = 23100;
constexpr char kAdminKey[] = "nf-admin-deployment-health-test";

using nexusflow::testing::HttpResult;

HttpResult Http(const std::string& method, const std::string& url, const std::string& body,
                const std::string& bearer = "") {
  return nexusflow::testing::HttpRequest(method, url, body, bearer);
}

std::string Gateway(const std::string& path) { return "http://127.0.0.1:" + std::to_string(kHttpPort) + path; }
std::string Mock(const std::string& path) { return "http://127.0.0.1:" + std::to_string(kMockPort) + path; }

// What the mock counted for one of its deployments.
struct MockDeployment {
  int64_t requests = 0;
  int64_t failed = 0;
  int64_t stalled = 0;
};

MockDeployment MockCounts(const std::string& name) {
  MockDeployment out;
  boost::system::error_code ec;
  json::value v = json::parse(HttpGet(Mock("/mock/deployments")), ec);
  if (ec) return out;
  for (const auto& d : v.at("deployments").as_array()) {
    if (d.at("name").as_string() != name) continue;
    out.requests = d.at("requests").as_int64();
    out.failed = d.at("failed").as_int64();
    out.stalled = d.at("stalled").as_int64();
  }
  return out;
}

class DeploymentHealthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/nf-deployment-health-XXXXXX";
    dir_ = mkdtemp(tmpl);
    for (int port : {kHttpPort, kGrpcPort, kMockPort}) ASSERT_FALSE(Listening(port)) << "port " << port << " is taken";
    std::string config = dir_ + "/nexusflow.yaml";
    std::string mock = "http://127.0.0.1:" + std::to_string(kMockPort);
    std::ofstream(config)
        << "server:\n"
        << "  http_listen: \"127.0.0.1:" << kHttpPort << "\"\n"
        << "  grpc_listen: \"127.0.0.1:" << kGrpcPort << "\"\n"
        << "gateway:\n"
        << "  admin_key: \"" << kAdminKey << "\"\n"
        << "  access_log: false\n"
        << "  outbox: \"" << dir_ << "/outbox.db\"\n"
        << "auth:\n  database: \"" << dir_ << "/auth.db\"\n"
        << "billing_ledger:\n  database: \"" << dir_ << "/ledger.db\"\n"
        << "rate_limiter:\n  plans:\n    unlimited: {}\n"
        << "provider_connector:\n"
        << "  connect_timeout_ms: 1000\n"
        << "  request_timeout_ms: 10000\n"
        << "  first_byte_timeout_ms: 1000\n"
        << "  max_attempts: 2\n"
        << "  circuit_breaker: {consecutive_failures: 3, error_percent: 0, open_ms: 300, max_open_ms: 1200}\n"
        << "  providers:\n"
        << "    east: {kind: openai, base_url: \"" << mock << "/d/east/v1\", api_key: up-key}\n"
        << "    west: {kind: openai, base_url: \"" << mock << "/d/west/v1\", api_key: up-key}\n"
        << "    south: {kind: openai, base_url: \"" << mock << "/d/south/v1\", api_key: up-key}\n"
        << "routing:\n  models:\n"
        << "    - id: duo\n"
        << "      capabilities: [chat]\n"
        << "      context_window: 8192\n"
        << "      max_output_tokens: 256\n"
        << "      pricing: {input: \"1.00\", output: \"2.00\"}\n"
        << "      deployments: [{provider: east, model: duo-east}, {provider: west, model: duo-west}]\n"
        << "    - id: trio\n"
        << "      capabilities: [chat]\n"
        << "      context_window: 8192\n"
        << "      max_output_tokens: 256\n"
        << "      pricing: {input: \"1.00\", output: \"2.00\"}\n"
        << "      deployments: [{provider: east, model: trio-east, weight: 3},\n"
        << "                    {provider: west, model: trio-west, weight: 1},\n"
        << "                    {provider: south, model: trio, priority: 1}]\n";
    pids_.push_back(Spawn("mock", {g_mock, "--port=" + std::to_string(kMockPort), "--api-key=up-key"}));
    ASSERT_TRUE(WaitFor([] { return Listening(kMockPort); }, 30));
    pids_.push_back(Spawn("nexusflow", {g_binary, "--config=" + config, "--target=all"}));
    ASSERT_TRUE(WaitFor([] { return HttpGet(Gateway("/readyz")) == "ready\n"; }, 60))
        << "the gateway did not become ready";
    auto account = Http("POST", Gateway("/admin/v1/accounts"), R"({"name":"health"})", kAdminKey);
    ASSERT_EQ(account.status, 201) << account.body;
    std::string account_id(json::parse(account.body).at("id").as_string());
    auto credit = Http("POST", Gateway("/admin/v1/accounts/" + account_id + "/credits"),
                       R"({"amount":"100.00","idempotency_key":"seed"})", kAdminKey);
    ASSERT_EQ(credit.status, 200) << credit.body;
    auto key = Http("POST", Gateway("/admin/v1/keys"),
                    R"({"account_id":")" + account_id + R"(","plan":"unlimited"})", kAdminKey);
    ASSERT_EQ(key.status, 201) << key.body;
    key_ = std::string(json::parse(key.body).at("key").as_string());
  }

  void TearDown() override {
    for (pid_t pid : pids_) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  pid_t Spawn(const std::string& name, const std::vector<std::string>& args) {
    return nexusflow::testing::SpawnLogged(dir_ + "/" + name + ".log", args);
  }

  // One chat request; its HTTP status.
  long Chat(bool stream = false, const std::string& model = "duo") {
    std::string body = R"({"model":")" + model + R"(","max_tokens":32,"stream":)" + (stream ? "true" : "false") +
                       R"(,"messages":[{"role":"user","content":"hello [mock:words=4]"}]})";
    auto r = Http("POST", Gateway("/v1/chat/completions"), body, key_);
    if (r.status != 200) ADD_FAILURE() << "HTTP " << r.status << ": " << r.body;
    return r.status;
  }

  void SetFault(const std::string& deployment, const std::string& fault) {
    auto r = Http("PUT", Mock("/mock/deployments/" + deployment), fault);
    ASSERT_EQ(r.status, 200) << r.body;
  }
  void Recover(const std::string& deployment) {
    auto r = Http("DELETE", Mock("/mock/deployments/" + deployment), "");
    ASSERT_EQ(r.status, 200) << r.body;
  }

  // The admin view of one deployment.
  json::object AdminDeployment(const std::string& id) {
    auto r = Http("GET", Gateway("/admin/v1/deployments"), "", kAdminKey);
    EXPECT_EQ(r.status, 200) << r.body;
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (ec) return {};
    for (const auto& d : v.at("data").as_array())
      if (d.at("id").as_string() == id) return d.as_object();
    return {};
  }
  std::string AdminState(const std::string& id) {
    json::object d = AdminDeployment(id);
    return d.contains("state") ? std::string(d.at("state").as_string()) : "";
  }
  double Metric(const std::string& series) { return MetricValue(HttpGet(Gateway("/metrics")), series); }

  std::string dir_;
  std::vector<pid_t> pids_;
  std::string key_;
};

const char kEastState[] = R"(nexusflow_connector_deployment_state{deployment="duo@east"})";
const char kWestState[] = R"(nexusflow_connector_deployment_state{deployment="duo@west"})";
const char kEastEjections[] = R"(nexusflow_connector_deployment_ejections_total{deployment="duo@east"})";

TEST_F(DeploymentHealthTest, AFailingDeploymentIsEjectedWithoutClientErrorsAndComesBackAfterItRecovers) {
  // Both deployments serve while healthy (equal weights).
  for (int i = 0; i < 40; ++i) ASSERT_EQ(Chat(i % 2 == 0), 200);
  EXPECT_GT(MockCounts("east").requests, 0);
  EXPECT_GT(MockCounts("west").requests, 0);
  EXPECT_EQ(AdminState("duo@east"), "closed");

  // East fails every request with 500: every client request still succeeds, on west.
  SetFault("east", R"({"status":500})");
  MockDeployment east0 = MockCounts("east"), west0 = MockCounts("west");
  constexpr int kRequests = 40;
  for (int i = 0; i < kRequests; ++i) ASSERT_EQ(Chat(i % 2 == 0), 200);
  MockDeployment east1 = MockCounts("east"), west1 = MockCounts("west");
  EXPECT_EQ(west1.requests - west0.requests, kRequests);  // each answered by west
  // Three failures in a row eject east; after that only its probes reach it, and each
  // failed probe ejects it again: every failure beyond the first three is one ejection.
  int64_t east_failures = east1.failed - east0.failed;
  EXPECT_EQ(east1.requests - east0.requests, east_failures);
  double ejections = Metric(kEastEjections);
  EXPECT_GE(east_failures, 3);
  EXPECT_EQ(ejections, static_cast<double>(east_failures - 2));
  EXPECT_LT(east_failures, kRequests / 2);

  // Open in the admin API and on /metrics; west stays closed.
  json::object east = AdminDeployment("duo@east");
  ASSERT_FALSE(east.empty());
  EXPECT_EQ(east.at("state").as_string(), "open");
  EXPECT_EQ(east.at("model").as_string(), "duo");
  EXPECT_EQ(east.at("provider").as_string(), "east");
  EXPECT_EQ(east.at("last_error").as_string(), "HTTP 500");
  EXPECT_EQ(east.at("ejections").as_int64(), static_cast<int64_t>(ejections));
  EXPECT_TRUE(east.at("next_probe_at").is_string());
  EXPECT_EQ(AdminState("duo@west"), "closed");
  EXPECT_EQ(Metric(kEastState), 2);
  EXPECT_EQ(Metric(kWestState), 0);

  // East recovers: a probe finds it well and it takes traffic again.
  Recover("east");
  ASSERT_TRUE(WaitFor(
      [&] {
        Chat();
        return AdminState("duo@east") == "closed";
      },
      30))
      << "east did not come back";
  EXPECT_EQ(Metric(kEastState), 0);
  MockDeployment east2 = MockCounts("east");
  for (int i = 0; i < 40; ++i) ASSERT_EQ(Chat(), 200);
  MockDeployment east3 = MockCounts("east");
  EXPECT_GT(east3.requests, east2.requests);
  EXPECT_EQ(east3.failed, east2.failed);
}

TEST_F(DeploymentHealthTest, WeightsThreeToOneSplitFourThousandRequestsWithinFivePercent) {
  // trio: east weight 3 and west weight 1 in the first tier, south alone in the second.
  constexpr int kThreads = 4, kEach = 1000;
  std::vector<std::thread> clients;
  std::atomic<int> failed{0};
  for (int t = 0; t < kThreads; ++t)
    clients.emplace_back([&] {
      for (int i = 0; i < kEach; ++i)
        if (Chat(false, "trio") != 200) ++failed;
    });
  for (auto& c : clients) c.join();
  EXPECT_EQ(failed.load(), 0);
  MockDeployment east = MockCounts("east"), west = MockCounts("west");
  EXPECT_EQ(east.requests + west.requests, kThreads * kEach);
  EXPECT_NEAR(static_cast<double>(east.requests), 3000, 150);
  EXPECT_NEAR(static_cast<double>(west.requests), 1000, 150);
  EXPECT_EQ(MockCounts("south").requests, 0);  // a worse tier while the best one is healthy
}

TEST_F(DeploymentHealthTest, AnUpstreamRetryAfterKeepsTheDeploymentOutUntilThen) {
  SetFault("east", R"({"status":429,"retry_after":"120"})");
  // Requests until one has met east's 429 (and went on to west).
  ASSERT_TRUE(WaitFor(
      [&] {
        Chat();
        return MockCounts("east").failed == 1;
      },
      30));
  MockDeployment east0 = MockCounts("east");
  for (int i = 0; i < 30; ++i) ASSERT_EQ(Chat(), 200);
  EXPECT_EQ(MockCounts("east").requests, east0.requests);  // not tried again
  json::object east = AdminDeployment("duo@east");
  ASSERT_FALSE(east.empty());
  EXPECT_EQ(east.at("state").as_string(), "closed");  // one failure does not eject
  EXPECT_TRUE(east.at("retry_after_until").is_string());
  EXPECT_EQ(east.at("last_error").as_string(), "HTTP 429");
}

// The stall outlasts first_byte_timeout_ms (1 s), not request_timeout_ms (10 s).
TEST_F(DeploymentHealthTest, AStalledDeploymentTimesOutIntoAnotherAndIsEjected) {
  SetFault("east", R"({"stall_ms":5000})");
  ASSERT_TRUE(WaitFor(
      [&] {
        Chat();
        return AdminState("duo@east") == "open";
      },
      60));
  json::object east = AdminDeployment("duo@east");
  EXPECT_EQ(east.at("last_error").as_string(), "timeout");
  EXPECT_GE(MockCounts("east").stalled, 3);
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 3) {
    fprintf(stderr, "usage: deployment_health_test NEXUSFLOW_BINARY MOCK_PROVIDER_BINARY\n");
    return 2;
  }
  g_binary = argv[1];
  g_mock = argv[2];
  curl_global_init(CURL_GLOBAL_ALL);
  return RUN_ALL_TESTS();
}

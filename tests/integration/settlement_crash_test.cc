// Split mode, one real process per target: charges survive a billing outage and gateway
// crashes. Requests answered while billing-ledger is down are charged exactly once after
// the gateway is SIGKILLed and both are restarted; a stream cut by a SIGKILLed gateway is
// charged at least for the output its client received.
//
// Ports (fixed for this test, below the ephemeral range): gateway HTTP 14080 and gRPC
// 15090, the services' gRPC 15091–15095 and /metrics 15301–15305, the mock provider 15100.
#include <curl/curl.h>
#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "nexusflow/billing/v1/billing.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/integration/http_get.h"
#include "tests/integration/ports.h"

namespace {

using nexusflow::testing::WaitFor;
using nexusflow::testing::MetricValue;

namespace json = boost::json;
using nexusflow::testing::Listening;
namespace billing = nexusflow::billing::v1;

std::string g_binary, g_mock, g_config;

constexpr int kHttpPort = 14080;
constexpr int kGatewayGrpcPort = 15090;
constexpr int kMockPort = 15100;
constexpr char kAdminKey[] = "nf-admin-settlement-crash-test";
// The services in start order, with their gRPC port (+210 for /metrics).
const std::vector<std::pair<std::string, int>> kServices = {{"auth", 15091},
                                                            {"routing", 15092},
                                                            {"rate-limiter", 15093},
                                                            {"billing-ledger", 15094},
                                                            {"provider-connector", 15095}};

int ServicePort(const std::string& target) {
  for (const auto& [name, port] : kServices)
    if (name == target) return port;
  return 0;
}

using nexusflow::testing::HttpResult;

// One request to the gateway; `on_data` (optional) sees the body as it arrives.
HttpResult Http(const std::string& method, const std::string& path, const std::string& body,
                const std::string& bearer, long timeout_s = 60,
                std::function<void(const std::string&)> on_data = nullptr) {
  return nexusflow::testing::HttpRequest(
      method, "http://127.0.0.1:" + std::to_string(kHttpPort) + path, body, bearer, timeout_s,
      std::move(on_data));
}

// Bytes of output text in an OpenAI SSE body, counted as the body grows (complete frames
// only).
class StreamedText {
 public:
  int64_t Feed(const std::string& sse) {
    while (true) {
      size_t start = sse.find("data: ", pos_);
      if (start == std::string::npos) break;
      size_t end = sse.find("\n\n", start);
      if (end == std::string::npos) break;
      pos_ = end + 2;
      std::string_view data(sse.data() + start + 6, end - start - 6);
      if (data == "[DONE]") continue;
      boost::system::error_code ec;
      json::value v = json::parse(data, ec);
      if (ec || !v.is_object()) continue;
      const auto* choices = v.as_object().if_contains("choices");
      if (!choices || !choices->is_array()) continue;
      for (const auto& ch : choices->as_array()) {
        const auto* delta = ch.as_object().if_contains("delta");
        if (!delta || !delta->is_object()) continue;
        for (const char* field : {"content", "reasoning_content"})
          if (const auto* t = delta->as_object().if_contains(field); t && t->is_string())
            bytes_ += static_cast<int64_t>(t->as_string().size());
      }
    }
    return bytes_;
  }

 private:
  size_t pos_ = 0;
  int64_t bytes_ = 0;
};

class SettlementCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/nf-settlement-crash-XXXXXX";
    dir_ = mkdtemp(tmpl);
    for (int port : {kHttpPort, kGatewayGrpcPort, kMockPort})
      ASSERT_FALSE(Listening(port)) << "port " << port << " is taken";
    for (const auto& [name, port] : kServices)
      ASSERT_FALSE(Listening(port)) << "port " << port << " is taken";
    setenv("NEXUSFLOW_DATA_DIR", dir_.c_str(), 1);
    setenv("NEXUSFLOW_HTTP_PORT", std::to_string(kHttpPort).c_str(), 1);
    setenv("NEXUSFLOW_GRPC_PORT", std::to_string(kGatewayGrpcPort).c_str(), 1);
    setenv("NEXUSFLOW_MOCK_PORT", std::to_string(kMockPort).c_str(), 1);
    setenv("NEXUSFLOW_MOCK_API_KEY", "mock-upstream-key", 1);
    setenv("NEXUSFLOW_ADMIN_KEY", kAdminKey, 1);
    setenv("NEXUSFLOW_ACCESS_LOG", "false", 1);
    for (const auto& [name, port] : kServices) {
      std::string var = "NEXUSFLOW_";
      for (char ch : name) var += ch == '-' ? '_' : static_cast<char>(toupper(ch));
      setenv((var + "_PORT").c_str(), std::to_string(port).c_str(), 1);
    }
    pids_["mock"] = Spawn(
        "mock", {g_mock, "--port=" + std::to_string(kMockPort), "--api-key=mock-upstream-key"});
    ASSERT_TRUE(WaitFor([] { return Listening(kMockPort); }, 30));
    for (const auto& [name, port] : kServices) ASSERT_NO_FATAL_FAILURE(StartService(name));
    ASSERT_NO_FATAL_FAILURE(StartGateway());
    // An account with 100 USD and an unlimited key.
    auto account = Http("POST", "/admin/v1/accounts", R"({"name":"crash-test"})", kAdminKey);
    ASSERT_EQ(account.status, 201) << account.body;
    account_ = std::string(json::parse(account.body).at("id").as_string());
    auto credit = Http("POST", "/admin/v1/accounts/" + account_ + "/credits",
                       R"({"amount":"100.00","idempotency_key":"seed"})", kAdminKey);
    ASSERT_EQ(credit.status, 200) << credit.body;
    auto key = Http("POST", "/admin/v1/keys",
                    R"({"account_id":")" + account_ + R"(","plan":"unlimited"})", kAdminKey);
    ASSERT_EQ(key.status, 201) << key.body;
    key_ = std::string(json::parse(key.body).at("key").as_string());
  }

  void TearDown() override {
    for (auto& [name, pid] : pids_) {
      if (pid <= 0) continue;
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    pids_.clear();
    WaitFor([] { return !Listening(kHttpPort) && !Listening(kMockPort); }, 10);
    // The logs and databases stay for a look when the test failed.
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  pid_t Spawn(const std::string& name, const std::vector<std::string>& args) {
    return nexusflow::testing::SpawnLogged(dir_ + "/" + name + ".log", args);
  }

  void StartService(const std::string& target) {
    int port = ServicePort(target);
    pids_[target] = Spawn(target, {g_binary, "--config=" + g_config, "--target=" + target,
                                   "--grpc-listen=127.0.0.1:" + std::to_string(port),
                                   "--metrics-listen=127.0.0.1:" + std::to_string(port + 210)});
    ASSERT_TRUE(WaitFor([port] { return Listening(port); }, 30)) << target << " did not start";
  }

  void StartGateway() {
    pids_["gateway"] = Spawn("gateway", {g_binary, "--config=" + g_config, "--target=gateway"});
    ASSERT_TRUE(WaitFor(
        [] {
          return nexusflow::testing::HttpGet("http://127.0.0.1:" + std::to_string(kHttpPort) + "/readyz") ==
                 "ready\n";
        },
        60))
        << "the gateway did not become ready";
  }

  void Kill(const std::string& target) {
    pid_t pid = pids_[target];
    ASSERT_GT(pid, 0);
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pids_[target] = 0;
  }

  std::string GatewayMetrics() {
    return nexusflow::testing::HttpGet("http://127.0.0.1:" + std::to_string(kHttpPort) + "/metrics");
  }

  std::unique_ptr<billing::BillingLedgerService::Stub> Billing() {
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(ServicePort("billing-ledger")),
                                       grpc::InsecureChannelCredentials());
    return billing::BillingLedgerService::NewStub(channel);
  }

  int64_t Balance() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    billing::GetBalanceRequest req;
    req.set_account_id(account_);
    billing::Balance b;
    grpc::Status s = Billing()->GetBalance(&ctx, req, &b);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return b.balance_nano_usd();
  }

  std::vector<billing::UsageRecord> Usage() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    billing::ListUsageRequest req;
    req.set_account_id(account_);
    req.set_limit(1000);
    billing::ListUsageResponse resp;
    if (!Billing()->ListUsage(&ctx, req, &resp).ok()) return {};
    return {resp.records().begin(), resp.records().end()};
  }

  // The reservations billing-ledger granted since it started (its RPC counter).
  double HoldsGranted() {
    std::string page = nexusflow::testing::HttpGet(
        "http://127.0.0.1:" + std::to_string(ServicePort("billing-ledger") + 210) + "/metrics");
    return MetricValue(page,
                       "nexusflow_grpc_server_handled_total{code=\"OK\",method=\"Reserve\","
                       "service=\"nexusflow.billing.v1.BillingLedgerService\"}");
  }

  std::string dir_;
  std::map<std::string, pid_t> pids_;
  std::string account_, key_;
};

std::string ChatBody(bool stream, const std::string& markers) {
  return std::string(R"({"model":"qwen3-max","stream":)") + (stream ? "true" : "false") +
         R"(,"messages":[{"role":"user","content":"tell me a story )" + markers + R"("}]})";
}

TEST_F(SettlementCrashTest, AnswersGivenWhileBillingIsDownAreChargedOnceAfterTheGatewayIsKilled) {
  int64_t before = Balance();
  // Requests admitted while billing is up, answered after it went down: three streamed,
  // three not.
  constexpr int kRequests = 6;
  std::vector<HttpResult> results(kRequests);
  std::vector<std::thread> clients;
  for (int i = 0; i < kRequests; ++i) {
    bool stream = i % 2 == 0;
    std::string body =
        ChatBody(stream, stream ? "[mock:words=60][mock:chunk-delay=100]" : "[mock:delay=6000]");
    clients.emplace_back(
        [&, i, body] { results[i] = Http("POST", "/v1/chat/completions", body, key_); });
  }
  ASSERT_TRUE(WaitFor([&] { return HoldsGranted() >= kRequests; }, 30))
      << "the requests were not admitted";
  Kill("billing-ledger");
  for (auto& t : clients) t.join();

  // Billing down: the answers still went out in full.
  std::set<std::string> answered;
  for (int i = 0; i < kRequests; ++i) {
    const auto& r = results[i];
    EXPECT_EQ(r.code, CURLE_OK);
    ASSERT_EQ(r.status, 200) << r.body;
    if (i % 2 == 0) {
      EXPECT_NE(r.body.find("data: [DONE]"), std::string::npos) << r.body;
    } else {
      EXPECT_NE(r.body.find("\"choices\""), std::string::npos) << r.body;
    }
    ASSERT_FALSE(r.request_id.empty());
    answered.insert(r.request_id);
  }
  ASSERT_EQ(answered.size(), static_cast<size_t>(kRequests));
  // Their settlements wait in the gateway's outbox (on disk before the answers ended);
  // then the gateway dies.
  EXPECT_TRUE(WaitFor(
      [&] {
        return MetricValue(GatewayMetrics(), "nexusflow_gateway_settlements_pending") == kRequests;
      },
      5));
  Kill("gateway");

  ASSERT_NO_FATAL_FAILURE(StartService("billing-ledger"));
  EXPECT_TRUE(Usage().empty());  // nothing reached the ledger yet
  ASSERT_NO_FATAL_FAILURE(StartGateway());
  ASSERT_TRUE(WaitFor([&] { return Usage().size() >= kRequests; }, 60))
      << "not settled after the restart";
  ASSERT_TRUE(WaitFor(
      [&] { return MetricValue(GatewayMetrics(), "nexusflow_gateway_settlements_pending") == 0; },
      30));

  auto usage = Usage();
  ASSERT_EQ(usage.size(), static_cast<size_t>(kRequests));
  std::set<std::string> charged;
  int64_t sum = 0;
  for (const auto& rec : usage) {
    EXPECT_TRUE(charged.insert(rec.request_id()).second) << "charged twice: " << rec.request_id();
    EXPECT_GT(rec.cost_nano_usd(), 0);
    EXPECT_GT(rec.usage().output_tokens(), 0);
    sum += rec.cost_nano_usd();
  }
  EXPECT_EQ(charged, answered);
  EXPECT_EQ(before - Balance(), sum);
}

TEST_F(SettlementCrashTest, AStreamCutByAKilledGatewayIsChargedForWhatItsClientReceived) {
  int64_t before = Balance();
  // A long answer, streamed slowly enough to kill the gateway in the middle of it, past
  // the first allowance step.
  constexpr int64_t kKillAfter = 20000;  // bytes of text received
  std::atomic<int64_t> received{0};
  StreamedText counter;
  HttpResult result;
  std::thread client([&] {
    result = Http("POST", "/v1/chat/completions",
                  ChatBody(true, "[mock:words=8000][mock:chunk-delay=1]"), key_, 120,
                  [&](const std::string& body) { received = counter.Feed(body); });
  });
  bool reached = WaitFor([&] { return received >= kKillAfter; }, 60);
  Kill("gateway");
  client.join();
  ASSERT_TRUE(reached) << "the stream did not get far enough: " << received << " bytes";
  int64_t got = StreamedText().Feed(result.body);
  ASSERT_GE(got, kKillAfter);
  EXPECT_EQ(result.body.find("data: [DONE]"), std::string::npos) << "the stream was not cut";
  ASSERT_FALSE(result.request_id.empty());
  EXPECT_TRUE(Usage().empty());

  ASSERT_NO_FATAL_FAILURE(StartGateway());
  ASSERT_TRUE(WaitFor([&] { return !Usage().empty(); }, 60)) << "the cut stream was never charged";
  auto usage = Usage();
  ASSERT_EQ(usage.size(), 1u);
  EXPECT_EQ(usage[0].request_id(), result.request_id);
  // At least one token per byte of text the client received, and the prompt.
  EXPECT_GE(usage[0].usage().output_tokens(), got);
  EXPECT_GT(usage[0].usage().input_tokens(), 0);
  EXPECT_EQ(before - Balance(), usage[0].cost_nano_usd());
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 4) {
    fprintf(stderr, "usage: settlement_crash_test NEXUSFLOW MOCK_PROVIDER CONFIG\n");
    return 2;
  }
  g_binary = argv[1];
  g_mock = argv[2];
  g_config = argv[3];
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  return RUN_ALL_TESTS();
}

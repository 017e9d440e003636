// The provider-connector against the real mock provider: failover across deployments
// before the first byte, upstream errors after it, and usage on every answer.
#include <gtest/gtest.h>

#include "tests/integration/http_get.h"
#include "tests/integration/harness.h"
#include "tests/integration/ports.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "libs/rpc/local_stream.h"
#include "services/provider-connector/connector_service.h"

namespace nexusflow::connector {
namespace {

using nexusflow::testing::FreePort;
using nexusflow::testing::Listening;

std::string g_mock;



class ConnectorFailoverTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    port_ = FreePort();
    pid_ = nexusflow::testing::SpawnLogged("/dev/stderr", {g_mock, "--port=" + std::to_string(port_), "--api-key=up-key"});
    nexusflow::testing::WaitFor([] { return Listening(port_); }, 5);
  }
  static void TearDownTestSuite() {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }

  void SetUp() override { Start(3); }

  void Start(int max_attempts) {
    service_.reset();
    Config::ProviderConnector config;
    config.connect_timeout_ms = 1000;
    config.request_timeout_ms = 10000;
    config.max_attempts = max_attempts;
    std::string mock = "http://127.0.0.1:" + std::to_string(port_);
    config.providers["dead"] = {"openai", "http://127.0.0.1:1/v1", ""};
    config.providers["live"] = {"openai", mock + "/v1", "up-key"};
    config.providers["badkey"] = {"openai", mock + "/v1", "wrong"};
    // Deployments of the mock a test sets faults on (its control endpoint).
    config.providers["limited"] = {"openai", mock + "/d/limited/v1", "up-key"};
    service_ = std::make_unique<ProviderConnectorService>(config);
  }

  // PUT (a fault) or DELETE on the mock's control endpoint; the HTTP status.
  static long MockControl(const std::string& method, const std::string& deployment,
                          const std::string& body = "") {
    CURL* c = curl_easy_init();
    std::string url = "http://127.0.0.1:" + std::to_string(port_) + "/mock/deployments/" + deployment;
    std::string ignored;
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
    if (!body.empty()) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, nexusflow::testing::AppendToString);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &ignored);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return status;
  }
  // Requests the mock received for a deployment.
  static int64_t MockRequests(const std::string& deployment) {
    std::string body = nexusflow::testing::HttpGet("http://127.0.0.1:" + std::to_string(port_) + "/mock/deployments");
    std::string key = "\"name\":\"" + deployment + "\"";
    size_t at = body.find(key);
    if (at == std::string::npos) return 0;
    at = body.find("\"requests\":", at);
    return std::strtoll(body.c_str() + at + 11, nullptr, 10);
  }

  // Runs a chat over `providers` and returns its events.
  std::vector<llm::v1::ChatEvent> Chat(const std::vector<std::string>& providers,
                                       const std::string& text, bool stream,
                                       grpc::Status* status = nullptr) {
    pb::ChatCall call;
    auto* req = call.mutable_request();
    req->set_request_id("req_test");
    req->set_model("m");
    req->set_stream(stream);
    auto* msg = req->add_messages();
    msg->set_role(llm::v1::ROLE_USER);
    msg->add_parts()->set_text(text);
    // One priority tier each, so they are tried in the order given.
    for (size_t i = 0; i < providers.size(); ++i) {
      auto* d = call.add_candidates();
      d->set_id("m@" + providers[i]);
      d->set_provider(providers[i]);
      d->set_upstream_model("m");
      d->set_priority(static_cast<int>(i));
    }
    auto sink = std::make_shared<LocalStream<pb::ChatChunk>>();
    service_->StartChat(call, sink);
    std::vector<llm::v1::ChatEvent> events;
    pb::ChatChunk chunk;
    while (sink->Next(&chunk))
      for (const auto& e : chunk.events()) events.push_back(e);
    grpc::Status s = sink->Wait();
    if (status) *status = s;
    return events;
  }

  static int port_;
  static pid_t pid_;
  std::unique_ptr<ProviderConnectorService> service_;
};

int ConnectorFailoverTest::port_ = 0;
pid_t ConnectorFailoverTest::pid_ = 0;

std::string Text(const std::vector<llm::v1::ChatEvent>& events) {
  std::string out;
  for (const auto& e : events)
    if (e.has_text()) out += e.text().text();
  return out;
}

TEST_F(ConnectorFailoverTest, ConnectErrorMovesToTheNextDeployment) {
  for (bool stream : {false, true}) {
    auto events = Chat({"dead", "live"}, "hello", stream);
    ASSERT_FALSE(events.empty());
    EXPECT_TRUE(events.front().has_start());
    EXPECT_EQ(events.front().start().provider(), "live");
    EXPECT_EQ(events.front().start().deployment_id(), "m@live");
    EXPECT_FALSE(Text(events).empty());
    ASSERT_TRUE(events.back().has_usage());
    EXPECT_GT(events.back().usage().output_tokens(), 0);
  }
}

TEST_F(ConnectorFailoverTest, StreamAndSyncAnswersAgree) {
  EXPECT_EQ(Text(Chat({"live"}, "same question", false)), Text(Chat({"live"}, "same question", true)));
}

TEST_F(ConnectorFailoverTest, ServerErrorsFailOverAndAllFailedIsBadGateway) {
  auto events = Chat({"live", "live"}, "x [mock:status=503]", false);
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_error());
  EXPECT_EQ(events[0].error().http_status(), 502);
  EXPECT_NE(events[0].error().message().find("503"), std::string::npos);
  auto limited = Chat({"live"}, "x [mock:status=429]", false);
  ASSERT_TRUE(limited[0].has_error());
  EXPECT_EQ(limited[0].error().http_status(), 429);
}

TEST_F(ConnectorFailoverTest, CallerErrorsAreNotRetriedAndKeepTheirStatus) {
  auto events = Chat({"live", "dead"}, "x [mock:status=400]", false);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].error().http_status(), 400);
  auto creds = Chat({"badkey"}, "hello", false);
  ASSERT_TRUE(creds[0].has_error());
  EXPECT_EQ(creds[0].error().http_status(), 502);  // our credential, not the caller's fault
}

TEST_F(ConnectorFailoverTest, DropMidStreamReportsAnErrorAndBillsWhatWasProduced) {
  auto events = Chat({"live", "live"}, "x [mock:drop-after=3]", true);
  bool error = false;
  for (const auto& e : events) error |= e.has_error();
  EXPECT_TRUE(error);
  EXPECT_FALSE(Text(events).empty());
  ASSERT_TRUE(events.back().has_usage());  // estimated from what arrived
  EXPECT_GT(events.back().usage().output_tokens(), 0);
}

TEST_F(ConnectorFailoverTest, NoMoreDeploymentsAreTriedThanTheRequestsBudget) {
  Start(2);
  auto events = Chat({"dead", "dead", "live"}, "hello", false);
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_error());
  EXPECT_EQ(events[0].error().http_status(), 502);
  EXPECT_NE(events[0].error().message().find("no attempt left after 2"), std::string::npos)
      << events[0].error().message();
  Start(3);
  events = Chat({"dead", "dead", "live"}, "hello", false);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().start().provider(), "live");
}

TEST_F(ConnectorFailoverTest, ADeploymentWhoseKeyIsRefusedIsEjectedAndTrafficMovesOn) {
  // Our credential refused is not retried (the caller gets 502 at once), but it is the
  // deployment's fault: after five in a row (the default) it is out.
  for (int i = 0; i < 5; ++i) {
    auto events = Chat({"badkey", "live"}, "hello", false);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].error().http_status(), 502);
  }
  auto events = Chat({"badkey", "live"}, "hello", false);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().start().provider(), "live");
  auto health = service_->health().List();
  ASSERT_EQ(health.deployments_size(), 2);
  EXPECT_EQ(health.deployments(0).deployment_id(), "m@badkey");
  EXPECT_EQ(health.deployments(0).state(), v1::CIRCUIT_STATE_OPEN);
  EXPECT_EQ(health.deployments(0).last_error(), "HTTP 401");
}

TEST_F(ConnectorFailoverTest, AnUpstreamRetryAfterIsHonouredAndPassedOn) {
  ASSERT_EQ(MockControl("PUT", "limited", R"({"status":429,"retry_after":"120"})"), 200);
  auto first = Chat({"limited"}, "hello", false);
  ASSERT_TRUE(first[0].has_error());
  EXPECT_EQ(first[0].error().http_status(), 429);
  int64_t asked = MockRequests("limited");
  EXPECT_EQ(asked, 1);
  // Not tried again before the retry-after ends: the answer comes without an upstream call
  // and says how long to wait.
  auto second = Chat({"limited"}, "hello", false);
  ASSERT_TRUE(second[0].has_error());
  EXPECT_EQ(second[0].error().http_status(), 429);
  EXPECT_EQ(second[0].error().code(), "upstream_rate_limited");
  EXPECT_GT(second[0].error().retry_after_seconds(), 60);
  EXPECT_LE(second[0].error().retry_after_seconds(), 120);
  // Another deployment takes the request meanwhile.
  auto third = Chat({"limited", "live"}, "hello", false);
  ASSERT_FALSE(third.empty());
  EXPECT_EQ(third.front().start().provider(), "live");
  EXPECT_EQ(MockRequests("limited"), asked);
  EXPECT_EQ(service_->health().List().deployments(0).deployment_id(), "m@limited");
  ASSERT_EQ(MockControl("DELETE", "limited"), 200);
}

}  // namespace
}  // namespace nexusflow::connector

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 2) {
    fprintf(stderr, "usage: connector_failover_test PATH_TO_MOCK_PROVIDER\n");
    return 2;
  }
  nexusflow::connector::g_mock = argv[1];
  return RUN_ALL_TESTS();
}

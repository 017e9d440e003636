// The edge's connection limits and its drain, against the real binary (all-in-one) and the
// mock provider: connections over the per-address cap are answered 429 and over the total
// cap 503, both with retry-after and closed; a drain closes the listener and the idle
// keep-alive connections, answers /readyz 503, and lets the stream in flight finish and be
// charged before the process exits.
//
// An open-files limit too low for the configured cap lowers the cap.
//
// Ports (fixed for this test, below the ephemeral range): HTTP 24480, gRPC 24490, the mock
// provider 24401. Client connections come from 127.0.0.1–127.0.0.4 (all loopback).
#include <arpa/inet.h>
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/integration/harness.h"
#include "tests/integration/http_get.h"
#include "tests/integration/ports.h"

namespace {

using nexusflow::testing::Listening;
using nexusflow::testing::WaitFor;
namespace json = boost::json;

std::string g_binary, g_mock, g_config;
constexpr int kHttpPort = 24480;
constexpr int kGrpcPort = 24490;
constexpr int kMockPort = 24401;
constexpr char kAdminKey[] = "nf-admin-edge-limits-test";

std::string Url(const std::string& path) {
  return "http://127.0.0.1:" + std::to_string(kHttpPort) + path;
}

// A TCP connection to the gateway from `from` (a loopback address); -1 when refused.
int Connect(const char* from) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  inet_pton(AF_INET, from, &local.sin_addr);
  sockaddr_in remote = nexusflow::testing::Loopback(kHttpPort);
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&remote), sizeof remote) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& bytes) {
  return send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

// Reads until `done(bytes so far)`, the peer closes, or `timeout_ms` passes.
std::string ReadUntil(int fd, int timeout_ms, const std::function<bool(const std::string&)>& done) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done(out)) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) break;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Everything the peer sends until it closes (or the timeout).
std::string ReadToClose(int fd, int timeout_ms) {
  return ReadUntil(fd, timeout_ms, [](const std::string&) { return false; });
}

// Whether the peer closes the connection within `timeout_ms` (without sending anything).
bool ClosedByPeer(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return false;
  char byte;
  return recv(fd, &byte, 1, MSG_DONTWAIT) == 0;
}

// A connection from `from` on which one /healthz was answered 200: it stays open as an
// idle keep-alive connection. A refusal is tried again for a while (the gateway counts a
// connection until it has seen it close, which for an earlier client takes a moment).
int OpenServed(const char* from) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int fd = Connect(from);
    if (fd >= 0 && SendAll(fd, "GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")) {
      std::string r = ReadUntil(fd, 5000, [](const std::string& s) {
        auto end = s.find("\r\n\r\n");
        return end != std::string::npos && s.size() >= end + 4 + 3;  // "ok\n"
      });
      if (r.rfind("HTTP/1.1 200", 0) == 0) return fd;
    }
    if (fd >= 0) close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return -1;
}

// A connection from `from` is answered `status_line` with retry-after and the error code
// `code`, without sending a byte, and then closed.
void ExpectRefused(const char* from, const std::string& status_line, const std::string& code) {
  int fd = Connect(from);
  ASSERT_GE(fd, 0) << "could not connect from " << from;
  std::string answer = ReadToClose(fd, 5000);
  close(fd);
  EXPECT_EQ(answer.rfind(status_line, 0), 0u) << answer;
  EXPECT_NE(answer.find("Retry-After: 1\r\n"), std::string::npos) << answer;
  EXPECT_NE(answer.find("\"" + code + "\""), std::string::npos) << answer;
}

class EdgeLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/nf-edge-limits-XXXXXX";
    dir_ = mkdtemp(tmpl);
    for (int port : {kHttpPort, kGrpcPort, kMockPort})
      ASSERT_FALSE(Listening(port)) << "port " << port << " is taken";
    mock_ = nexusflow::testing::SpawnLogged(
        dir_ + "/mock.log",
        {g_mock, "--port=" + std::to_string(kMockPort), "--api-key=mock-upstream-key"});
    ASSERT_TRUE(WaitFor([] { return Listening(kMockPort); }, 30));
  }

  void TearDown() override {
    for (pid_t pid : {gateway_, mock_}) {
      if (pid <= 0) continue;
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    WaitFor([] { return !Listening(kHttpPort) && !Listening(kMockPort); }, 10);
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  // `open_files` > 0: the gateway runs with that RLIMIT_NOFILE, soft and hard.
  void Start(std::vector<std::pair<std::string, std::string>> env, int open_files = 0) {
    env.insert(env.end(), {{"NEXUSFLOW_DATA_DIR", dir_},
                           {"NEXUSFLOW_HTTP_PORT", std::to_string(kHttpPort)},
                           {"NEXUSFLOW_GRPC_PORT", std::to_string(kGrpcPort)},
                           {"NEXUSFLOW_MOCK_PORT", std::to_string(kMockPort)},
                           {"NEXUSFLOW_MOCK_API_KEY", "mock-upstream-key"},
                           {"NEXUSFLOW_ADMIN_KEY", kAdminKey},
                           {"NEXUSFLOW_ACCESS_LOG", "false"}});
    std::vector<std::string> argv = {g_binary, "--config=" + g_config, "--target=all"};
    if (open_files > 0)
      argv.insert(argv.begin(), {"/bin/sh", "-c", "ulimit -n " + std::to_string(open_files) + R"( && exec "$0" "$@")"});
    gateway_ = nexusflow::testing::SpawnLogged(dir_ + "/nexusflow.log", argv, env);
    ASSERT_TRUE(WaitFor([] { return nexusflow::testing::HttpGet(Url("/readyz")) == "ready\n"; }, 60))
        << "nexusflow did not become ready";
  }

  // An account with 10 USD and an unlimited key for it.
  std::string MakeKey() {
    auto account = nexusflow::testing::HttpRequest("POST", Url("/admin/v1/accounts"),
                                                   R"({"name":"edge"})", kAdminKey);
    EXPECT_EQ(account.status, 201) << account.body;
    std::string id(json::parse(account.body).at("id").as_string());
    auto credit = nexusflow::testing::HttpRequest("POST", Url("/admin/v1/accounts/" + id + "/credits"),
                                                  R"({"amount":"10.00","idempotency_key":"seed"})",
                                                  kAdminKey);
    EXPECT_EQ(credit.status, 200) << credit.body;
    auto key = nexusflow::testing::HttpRequest(
        "POST", Url("/admin/v1/keys"), R"({"account_id":")" + id + R"(","plan":"unlimited"})", kAdminKey);
    EXPECT_EQ(key.status, 201) << key.body;
    return std::string(json::parse(key.body).at("key").as_string());
  }

  std::string dir_;
  pid_t mock_ = 0, gateway_ = 0;
};

TEST_F(EdgeLimitsTest, OverThePerAddressCapIs429AndOverTheTotalCap503BothWithRetryAfter) {
  ASSERT_NO_FATAL_FAILURE(Start({{"NEXUSFLOW_MAX_CONNECTIONS", "8"},
                                 {"NEXUSFLOW_MAX_CONNECTIONS_PER_IP", "3"}}));
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(OpenServed("127.0.0.1"));
  for (int fd : held) ASSERT_GE(fd, 0) << "a connection within the caps was not served";

  // A fourth from the same address is refused before a byte is read, then closed.
  ExpectRefused("127.0.0.1", "HTTP/1.1 429", "too_many_connections");

  // Other addresses are still served, up to the total cap of 8.
  for (const char* from : {"127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"}) {
    held.push_back(OpenServed(from));
    ASSERT_GE(held.back(), 0) << "a connection from " << from << " within the caps was not served";
  }
  ExpectRefused("127.0.0.4", "HTTP/1.1 503", "service_unavailable");

  // A connection that closes gives its place back.
  close(held.back());
  held.pop_back();
  int later = OpenServed("127.0.0.4");
  EXPECT_GE(later, 0) << "the place of a closed connection was not given back";
  if (later >= 0) close(later);
  for (int fd : held) close(fd);
}

// All-in-one, a client connection may take two descriptors (its own and its upstream's):
// the cap comes down to what the open-files limit serves, so the connection past it is
// refused at once with 503 instead of failing later on an upstream connect.
TEST_F(EdgeLimitsTest, TheConnectionCapComesDownToWhatTheOpenFilesLimitServes) {
  // (768 - 256 reserved) / 2 descriptors a connection = 256 connections.
  ASSERT_NO_FATAL_FAILURE(Start({}, 768));
  std::vector<int> held;
  for (int i = 0; i < 256; ++i) {
    held.push_back(OpenServed(i % 2 ? "127.0.0.1" : "127.0.0.2"));
    ASSERT_GE(held.back(), 0) << "connection " << i + 1 << " of 256 was not served";
  }
  ExpectRefused("127.0.0.3", "HTTP/1.1 503", "service_unavailable");
  for (int fd : held) close(fd);
  std::string log;
  {
    std::ifstream in(dir_ + "/nexusflow.log");
    log.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  EXPECT_NE(log.find("server.max_connections lowered from 20000 to 256"), std::string::npos) << log;
}

TEST_F(EdgeLimitsTest, ADrainClosesTheListenerAndIdleConnectionsAndLetsTheStreamInFlightFinish) {
  ASSERT_NO_FATAL_FAILURE(Start({{"NEXUSFLOW_DRAIN_GRACE_SECONDS", "30"}}));
  const std::string key = MakeKey();
  ASSERT_FALSE(key.empty());

  int idle = OpenServed("127.0.0.1");  // a keep-alive connection between requests
  ASSERT_GE(idle, 0);
  int partial = Connect("127.0.0.1");  // a request whose headers are under way
  ASSERT_GE(partial, 0);
  ASSERT_TRUE(SendAll(partial, "GET /readyz HTTP/1.1\r\nHost: edge\r\n"));

  // A stream of 30 words, 100 ms apart: about 3 s, most of it after the drain begins.
  std::atomic<bool> first_bytes{false};
  nexusflow::testing::HttpResult stream;
  std::thread client([&] {
    stream = nexusflow::testing::HttpRequest(
        "POST", Url("/v1/chat/completions"),
        R"({"model":"qwen3-max","stream":true,"messages":[{"role":"user","content":"a story [mock:words=30][mock:chunk-delay=100]"}]})",
        key, 60, [&](const std::string& body) {
          if (body.find("data: ") != std::string::npos) first_bytes = true;
        });
  });
  ASSERT_TRUE(WaitFor([&] { return first_bytes.load(); }, 20)) << "the stream did not start";
  ASSERT_EQ(kill(gateway_, SIGTERM), 0);

  // New connections are refused once the listener is closed.
  EXPECT_TRUE(WaitFor([] { return !Listening(kHttpPort); }, 5)) << "the listener stayed open";
  // The idle keep-alive connection is closed by the gateway.
  EXPECT_TRUE(ClosedByPeer(idle, 5000)) << "the idle keep-alive connection stayed open";
  close(idle);
  // The request that was arriving is answered: not ready, draining; then closed.
  ASSERT_TRUE(SendAll(partial, "\r\n"));
  std::string ready = ReadToClose(partial, 5000);
  close(partial);
  EXPECT_EQ(ready.rfind("HTTP/1.1 503", 0), 0u) << ready;
  EXPECT_NE(ready.find("draining"), std::string::npos) << ready;

  // The stream in flight ends whole.
  client.join();
  EXPECT_EQ(stream.status, 200) << stream.body;
  EXPECT_NE(stream.body.find("data: [DONE]"), std::string::npos) << stream.body;
  ASSERT_FALSE(stream.request_id.empty());

  // Then the process exits by itself, well within its grace.
  int status = -1;
  EXPECT_TRUE(WaitFor([&] { return waitpid(gateway_, &status, WNOHANG) == gateway_; }, 25))
      << "nexusflow did not exit after the stream ended";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "exit status " << status;
  gateway_ = 0;

  // And the stream was charged: its usage record is there after a restart.
  ASSERT_NO_FATAL_FAILURE(Start({}));
  auto usage = nexusflow::testing::HttpRequest("GET", Url("/v1/usage"), "", key);
  EXPECT_EQ(usage.status, 200) << usage.body;
  EXPECT_NE(usage.body.find(stream.request_id), std::string::npos) << usage.body;
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 4) {
    fprintf(stderr, "usage: edge_limits_test NEXUSFLOW MOCK_PROVIDER CONFIG\n");
    return 2;
  }
  g_binary = argv[1];
  g_mock = argv[2];
  g_config = argv[3];
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  return RUN_ALL_TESTS();
}

// The provider-connector's HTTP client against the real mock provider: calls started
// together to an upstream with no connection open yet all start at once. None of them
// waits for another call to end (a stream may last minutes).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "libs/loop/event_loops.h"
#include "services/provider-connector/http_client.h"
#include "tests/integration/harness.h"
#include "tests/integration/ports.h"

namespace nexusflow::connector {
namespace {

using nexusflow::testing::FreePort;
using nexusflow::testing::Listening;

std::string g_mock;

class UpstreamPoolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    port_ = FreePort();
    pid_ = nexusflow::testing::SpawnLogged("/dev/stderr", {g_mock, "--port=" + std::to_string(port_)});
    nexusflow::testing::WaitFor([] { return Listening(port_); }, 5);
  }
  static void TearDownTestSuite() {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }

  static int port_;
  static pid_t pid_;
};

int UpstreamPoolTest::port_ = 0;
pid_t UpstreamPoolTest::pid_ = 0;

TEST_F(UpstreamPoolTest, StreamsStartedTogetherOnAFreshPoolAllStartBeforeAnyEnds) {
  ASSERT_TRUE(Listening(port_));
  // Each round on a new client, so its pool has no connection yet; the calls start from
  // one handler on the loop, as a burst of requests does.
  constexpr int kRounds = 2, kCalls = 64;
  for (int round = 0; round < kRounds; ++round) {
    EventLoops loops(1);
    HttpClient client(loops, 20000);
    std::mutex mu;
    std::condition_variable cv;
    int seq = 0, done = 0;
    std::vector<int> first_byte(kCalls, -1), ended(kCalls, -1);
    std::vector<std::string> errors;
    boost::asio::post(loops.at(0), [&] {
      for (int i = 0; i < kCalls; ++i) {
        auto call = std::make_shared<HttpCall>();
        call->url = "http://127.0.0.1:" + std::to_string(port_) + "/v1/chat/completions";
        call->headers = {"Content-Type: application/json"};
        call->body = R"({"model":"m","stream":true,"messages":[{"role":"user","content":"pool )" +
                     std::to_string(round) + " " + std::to_string(i) +
                     R"( [mock:words=20][mock:chunk-delay=100]"}]})";
        call->on_body = [&, i](long, std::string_view) {
          std::lock_guard<std::mutex> lock(mu);
          if (first_byte[i] < 0) first_byte[i] = seq++;
          return BodyAction::kContinue;
        };
        call->on_done = [&, i](long status, const std::string& error, bool) {
          std::lock_guard<std::mutex> lock(mu);
          ended[i] = seq++;
          if (status != 200 || !error.empty()) errors.push_back(std::to_string(status) + " " + error);
          ++done;
          cv.notify_all();
        };
        client.Start(call);
      }
    });
    {
      std::unique_lock<std::mutex> lock(mu);
      ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return done == kCalls; }))
          << done << " of " << kCalls << " calls ended";
    }
    EXPECT_TRUE(errors.empty()) << errors.front();
    int first_end = *std::min_element(ended.begin(), ended.end());
    int late = 0;
    for (int i = 0; i < kCalls; ++i) late += first_byte[i] > first_end;
    EXPECT_EQ(late, 0) << "round " << round << ": " << late << " of " << kCalls
                       << " streams got their first byte only after another stream ended";
  }
}

}  // namespace
}  // namespace nexusflow::connector

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 2) {
    fprintf(stderr, "usage: upstream_pool_test MOCK_PROVIDER\n");
    return 2;
  }
  nexusflow::connector::g_mock = argv[1];
  signal(SIGPIPE, SIG_IGN);
  return RUN_ALL_TESTS();
}

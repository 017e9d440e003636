// The mock provider binary over loopback sockets: `GET /mock/stats` and how streams end,
// in particular a client that leaves while the mock waits on a long timer.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <boost/json.hpp>

namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

constexpr char kApiKey[] = "mock-test-key";

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

// Reads until `needle` has arrived (returns everything read) or `timeout` passes.
std::string ReadUntil(int fd, const std::string& needle, std::chrono::milliseconds timeout) {
  std::string got;
  const auto deadline = Clock::now() + timeout;
  while (got.find(needle) == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

std::string ChatRequest(const std::string& user_text, bool stream = true) {
  const std::string body = std::string(R"({"model":"m","stream":)") + (stream ? "true" : "false") +
                           R"(,"messages":[{"role":"user","content":")" + user_text + R"("}]})";
  return "POST /v1/chat/completions HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n"
         "Authorization: Bearer " + std::string(kApiKey) + "\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

class MockServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    int out[2];
    ASSERT_EQ(pipe(out), 0);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      execl(NEXUSFLOW_MOCK_BIN, NEXUSFLOW_MOCK_BIN, "--port=0", "--threads=2",
            "--api-key=mock-test-key", "--reply-words=4", nullptr);
      _exit(127);
    }
    close(out[1]);
    // "mock-provider listening on http://127.0.0.1:PORT\n"
    std::string line = ReadUntil(out[0], "\n", std::chrono::seconds(10));
    close(out[0]);
    const std::size_t colon = line.rfind(':');
    ASSERT_NE(colon, std::string::npos) << line;
    port_ = std::stoi(line.substr(colon + 1));
  }
  static void TearDownTestSuite() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
  }

  // GET /mock/stats as parsed JSON (no API key).
  static json::object Stats() {
    int fd = Connect(port_);
    EXPECT_GE(fd, 0);
    SendAll(fd, "GET /mock/stats HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n");
    std::string res = ReadUntil(fd, "}", std::chrono::seconds(5));
    close(fd);
    EXPECT_NE(res.find("HTTP/1.1 200"), std::string::npos) << res;
    const std::size_t body = res.find("\r\n\r\n");
    if (body == std::string::npos) return {};
    return json::parse(res.substr(body + 4)).as_object();
  }
  static std::int64_t Stat(const char* name) { return Stats().at(name).as_int64(); }

  // Polls until `name` equals `want` or `timeout` passes; returns the last value.
  static std::int64_t WaitStat(const char* name, std::int64_t want,
                               std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::int64_t value = Stat(name);
    while (value != want && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      value = Stat(name);
    }
    return value;
  }

  static int port_;
  static pid_t pid_;
};

int MockServerTest::port_ = 0;
pid_t MockServerTest::pid_ = 0;

TEST_F(MockServerTest, StatsNeedNoKeyAndCountACompletedStream) {
  const json::object before = Stats();
  EXPECT_EQ(before.size(), 5u);
  EXPECT_EQ(before.at("open_streams").as_int64(), 0);
  int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, ChatRequest("hi [mock:chunk-delay=5]")));
  const std::string got = ReadUntil(fd, "0\r\n\r\n", std::chrono::seconds(10));
  EXPECT_NE(got.find("data: [DONE]"), std::string::npos) << got;
  close(fd);
  EXPECT_EQ(WaitStat("streams_completed", before.at("streams_completed").as_int64() + 1,
                     std::chrono::seconds(5)),
            before.at("streams_completed").as_int64() + 1);
  const json::object after = Stats();
  EXPECT_EQ(after.at("streams_started").as_int64(), before.at("streams_started").as_int64() + 1);
  EXPECT_EQ(after.at("open_streams").as_int64(), 0);
  // A non-streamed answer is not a stream.
  fd = Connect(port_);
  ASSERT_TRUE(SendAll(fd, ChatRequest("hi", false)));
  EXPECT_NE(ReadUntil(fd, "}}", std::chrono::seconds(5)).find("HTTP/1.1 200"), std::string::npos);
  close(fd);
  EXPECT_EQ(Stat("streams_started"), after.at("streams_started").as_int64());
}

// The chunk delay marker paces the words: 4 words at 150 ms take at least 600 ms.
TEST_F(MockServerTest, ChunkDelayMarkerOverridesTheFlag) {
  int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  const auto start = Clock::now();
  ASSERT_TRUE(SendAll(fd, ChatRequest("pace [mock:chunk-delay=150]")));
  const std::string got = ReadUntil(fd, "data: [DONE]", std::chrono::seconds(10));
  const auto took = Clock::now() - start;
  close(fd);
  EXPECT_NE(got.find("data: [DONE]"), std::string::npos);
  EXPECT_GE(took, std::chrono::milliseconds(590));
  EXPECT_LT(took, std::chrono::seconds(5));
}

// A client that leaves while the mock sleeps for a minute between chunks (or before the
// first one) is noticed at once, not at the next write.
TEST_F(MockServerTest, ClientLeavingDuringALongWaitIsCountedAsAborted) {
  for (const char* text : {"wait [mock:chunk-delay=60000]", "wait [mock:delay=60000]"}) {
    SCOPED_TRACE(text);
    const std::int64_t aborted = Stat("streams_aborted");
    int fd = Connect(port_);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, ChatRequest(text)));
    const std::string head = ReadUntil(fd, "\r\n\r\n", std::chrono::seconds(5));
    ASSERT_NE(head.find("HTTP/1.1 200"), std::string::npos) << head;
    EXPECT_EQ(WaitStat("open_streams", 1, std::chrono::seconds(5)), 1);
    const auto closed = Clock::now();
    close(fd);
    EXPECT_EQ(WaitStat("open_streams", 0, std::chrono::seconds(5)), 0);
    EXPECT_LT(Clock::now() - closed, std::chrono::seconds(5));
    EXPECT_EQ(Stat("streams_aborted"), aborted + 1);
  }
}

// Many clients leave at once; the open count returns to zero.
TEST_F(MockServerTest, OpenStreamsReturnToZeroAfterManyAborts) {
  const std::int64_t aborted = Stat("streams_aborted");
  constexpr int kClients = 50;
  int fds[kClients];
  for (int& fd : fds) {
    fd = Connect(port_);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, ChatRequest("many [mock:chunk-delay=30000]")));
  }
  EXPECT_EQ(WaitStat("open_streams", kClients, std::chrono::seconds(10)), kClients);
  for (int fd : fds) close(fd);
  EXPECT_EQ(WaitStat("open_streams", 0, std::chrono::seconds(10)), 0);
  EXPECT_EQ(Stat("streams_aborted"), aborted + kClients);
}

// A request pipelined behind a paced stream is read by the watch during the stream and
// answered after it, on the same connection.
TEST_F(MockServerTest, RequestPipelinedDuringAStreamIsAnsweredAfterIt) {
  int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, ChatRequest("first [mock:chunk-delay=100]")));
  ASSERT_NE(ReadUntil(fd, "\r\n\r\n", std::chrono::seconds(5)).find("200"), std::string::npos);
  ASSERT_TRUE(SendAll(fd, "GET /healthz HTTP/1.1\r\nHost: mock\r\n\r\n"));
  const std::string rest = ReadUntil(fd, "\r\n\r\nok", std::chrono::seconds(10));
  close(fd);
  const std::size_t done = rest.find("data: [DONE]");
  const std::size_t health = rest.find("HTTP/1.1 200 OK");
  ASSERT_NE(done, std::string::npos) << rest;
  ASSERT_NE(health, std::string::npos) << rest;
  EXPECT_LT(done, health);
  EXPECT_NE(rest.find("\r\n\r\nok"), std::string::npos);
}

TEST_F(MockServerTest, DropAfterIsCountedAsDropped) {
  const json::object before = Stats();
  int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, ChatRequest("drop [mock:drop-after=1][mock:chunk-delay=10]")));
  const std::string got = ReadUntil(fd, "data: [DONE]", std::chrono::seconds(5));
  close(fd);
  EXPECT_EQ(got.find("data: [DONE]"), std::string::npos);
  EXPECT_EQ(WaitStat("streams_dropped", before.at("streams_dropped").as_int64() + 1,
                     std::chrono::seconds(5)),
            before.at("streams_dropped").as_int64() + 1);
  const json::object after = Stats();
  EXPECT_EQ(after.at("streams_aborted").as_int64(), before.at("streams_aborted").as_int64());
  EXPECT_EQ(after.at("open_streams").as_int64(), 0);
}

}  // namespace

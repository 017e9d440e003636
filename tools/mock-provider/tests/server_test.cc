// The mock provider binary over loopback sockets: `GET /mock/stats` and how streams end (in
// particular a client that leaves while the mock waits on a long timer), and each protocol's
// routes, keys, answers, streams and injected failures on the real listener.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

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

// Reads until the peer closes the connection or `timeout` passes.
std::string ReadAll(int fd, std::chrono::milliseconds timeout) {
  std::string got;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
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

struct HttpResponse {
  int status = 0;
  std::string head;  // status line and headers
  std::string body;  // de-chunked
  bool complete = false;  // chunked body ended with its terminating chunk
};

HttpResponse ParseResponse(const std::string& raw) {
  HttpResponse res;
  const std::size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos || raw.size() < 12) return res;
  res.head = raw.substr(0, end);
  res.status = std::stoi(raw.substr(9, 3));
  std::string rest = raw.substr(end + 4);
  if (res.head.find("Transfer-Encoding: chunked") == std::string::npos) {
    res.body = rest;
    res.complete = true;
    return res;
  }
  std::size_t pos = 0;
  while (pos < rest.size()) {
    const std::size_t line = rest.find("\r\n", pos);
    if (line == std::string::npos) break;
    const std::size_t size = std::stoul(rest.substr(pos, line - pos), nullptr, 16);
    if (size == 0) {
      res.complete = true;
      break;
    }
    res.body += rest.substr(line + 2, size);
    pos = line + 2 + size + 2;
  }
  return res;
}

// One request on its own connection (`Connection: close`), read to the end.
HttpResponse Exchange(int port, const std::string& method, const std::string& target,
                      const std::string& headers, const std::string& body = {}) {
  int fd = Connect(port);
  EXPECT_GE(fd, 0);
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n" +
                        headers + "Content-Type: application/json\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body;
  SendAll(fd, request);
  HttpResponse res = ParseResponse(ReadAll(fd, std::chrono::seconds(10)));
  close(fd);
  return res;
}

const std::string kAnthropicHeaders =
    "x-api-key: mock-test-key\r\nanthropic-version: 2023-06-01\r\n";
const std::string kGeminiHeaders = "x-goog-api-key: mock-test-key\r\n";
const std::string kOpenAiHeaders = "Authorization: Bearer mock-test-key\r\n";

std::string MessagesBody(const std::string& text, bool stream) {
  return std::string(R"({"model":"m","max_tokens":64,"stream":)") + (stream ? "true" : "false") +
         R"(,"messages":[{"role":"user","content":")" + text + R"("}]})";
}

std::string GeminiBody(const std::string& text) {
  return R"({"contents":[{"role":"user","parts":[{"text":")" + text + R"("}]}]})";
}

// The `data:` payloads of an SSE body, and the `event:` names when present.
struct Sse {
  std::vector<std::string> events;
  std::vector<json::value> data;
};

Sse ParseSse(const std::string& body) {
  Sse sse;
  std::size_t pos = 0;
  while (pos < body.size()) {
    std::size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    const std::string block = body.substr(pos, end - pos);
    pos = end + 2;
    std::size_t line_start = 0;
    while (line_start < block.size()) {
      std::size_t line_end = block.find('\n', line_start);
      if (line_end == std::string::npos) line_end = block.size();
      const std::string line = block.substr(line_start, line_end - line_start);
      if (line.starts_with("event: ")) sse.events.push_back(line.substr(7));
      if (line.starts_with("data: ") && line != "data: [DONE]") sse.data.push_back(json::parse(line.substr(6)));
      line_start = line_end + 1;
    }
  }
  return sse;
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
  EXPECT_EQ(before.size(), 6u);
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

// The same question asked in each protocol gets the same text over the wire.
TEST_F(MockServerTest, AnthropicMessagesSyncAndStream) {
  const std::string question = "What is the plan? (anthropic)";
  const HttpResponse openai = Exchange(port_, "POST", "/v1/chat/completions", kOpenAiHeaders,
                                       R"({"model":"m","messages":[{"role":"user","content":")" + question + R"("}]})");
  ASSERT_EQ(openai.status, 200) << openai.body;
  const std::string expected =
      json::parse(openai.body).at("choices").at(0).at("message").at("content").as_string().c_str();

  const HttpResponse sync = Exchange(port_, "POST", "/v1/messages", kAnthropicHeaders, MessagesBody(question, false));
  ASSERT_EQ(sync.status, 200) << sync.body;
  EXPECT_NE(sync.head.find("\r\nrequest-id: req_"), std::string::npos);  // Anthropic's header
  const json::object message = json::parse(sync.body).as_object();
  EXPECT_EQ(message.at("type").as_string(), "message");
  EXPECT_EQ(message.at("content").at(0).at("text").as_string(), expected);
  EXPECT_EQ(message.at("stop_reason").as_string(), "end_turn");
  EXPECT_EQ(message.at("usage").at("output_tokens").as_int64(), 4);

  const HttpResponse stream = Exchange(port_, "POST", "/v1/messages", kAnthropicHeaders, MessagesBody(question, true));
  ASSERT_EQ(stream.status, 200);
  EXPECT_NE(stream.head.find("Content-Type: text/event-stream"), std::string::npos);
  EXPECT_TRUE(stream.complete);
  const Sse sse = ParseSse(stream.body);
  ASSERT_EQ(sse.events.size(), sse.data.size());
  ASSERT_GE(sse.events.size(), 7u);
  EXPECT_EQ(sse.events.front(), "message_start");
  EXPECT_EQ(sse.events[sse.events.size() - 2], "message_delta");
  EXPECT_EQ(sse.events.back(), "message_stop");
  std::string text;
  for (std::size_t i = 0; i < sse.events.size(); ++i) {
    EXPECT_EQ(sse.data[i].at("type").as_string(), sse.events[i]);
    if (sse.events[i] == "content_block_delta") text += sse.data[i].at("delta").at("text").as_string();
  }
  EXPECT_EQ(text, expected);

  // A Bearer key is accepted too (the Node SDK 1.x sends only that).
  EXPECT_EQ(Exchange(port_, "POST", "/v1/messages",
                     "Authorization: Bearer mock-test-key\r\nanthropic-version: 2023-06-01\r\n",
                     MessagesBody(question, false)).status, 200);
  const HttpResponse counted = Exchange(port_, "POST", "/v1/messages/count_tokens", kAnthropicHeaders,
                                        R"({"model":"m","messages":[{"role":"user","content":")" + question + R"("}]})");
  EXPECT_EQ(json::parse(counted.body).at("input_tokens").as_int64(), message.at("usage").at("input_tokens").as_int64());
}

TEST_F(MockServerTest, AnthropicRejectsLikeAnthropic) {
  auto error_type = [](const HttpResponse& res) {
    return std::string(json::parse(res.body).at("error").at("type").as_string());
  };
  HttpResponse res = Exchange(port_, "POST", "/v1/messages", "x-api-key: mock-test-key\r\n", MessagesBody("x", false));
  EXPECT_EQ(res.status, 400);
  EXPECT_EQ(error_type(res), "invalid_request_error");
  EXPECT_EQ(json::parse(res.body).at("error").at("message").as_string(), "anthropic-version: header is required");
  res = Exchange(port_, "POST", "/v1/messages", "x-api-key: wrong\r\nanthropic-version: 2023-06-01\r\n",
                 MessagesBody("x", false));
  EXPECT_EQ(res.status, 401);
  EXPECT_EQ(error_type(res), "authentication_error");
  EXPECT_TRUE(json::parse(res.body).at("request_id").as_string().starts_with("req_"));
  res = Exchange(port_, "POST", "/v1/messages", kAnthropicHeaders, R"({"model":"m","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(res.status, 400);
  EXPECT_EQ(json::parse(res.body).at("error").at("message").as_string(), "max_tokens: Field required");
  // [mock:status] answers the status with Anthropic's error type, also when streaming.
  res = Exchange(port_, "POST", "/v1/messages", kAnthropicHeaders, MessagesBody("x [mock:status=529]", true));
  EXPECT_EQ(res.status, 529);
  EXPECT_EQ(error_type(res), "overloaded_error");
  res = Exchange(port_, "POST", "/v1/messages", kAnthropicHeaders, MessagesBody("x [mock:status=429]", false));
  EXPECT_EQ(res.status, 429);
  EXPECT_EQ(error_type(res), "rate_limit_error");
  EXPECT_NE(res.head.find("Retry-After: 1"), std::string::npos);
}

TEST_F(MockServerTest, GeminiGenerateContentSyncSseAndArray) {
  const std::string question = "What is the plan? (gemini)";
  const HttpResponse openai = Exchange(port_, "POST", "/v1/chat/completions", kOpenAiHeaders,
                                       R"({"model":"gemini-x","messages":[{"role":"user","content":")" + question + R"("}]})");
  const std::string expected =
      json::parse(openai.body).at("choices").at(0).at("message").at("content").as_string().c_str();

  const HttpResponse sync = Exchange(port_, "POST", "/v1beta/models/gemini-x:generateContent?key=mock-test-key", "",
                                     GeminiBody(question));
  ASSERT_EQ(sync.status, 200) << sync.body;
  const json::value body = json::parse(sync.body);
  EXPECT_EQ(body.at("candidates").at(0).at("content").at("parts").at(0).at("text").as_string(), expected);
  EXPECT_EQ(body.at("modelVersion").as_string(), "gemini-x");

  const HttpResponse sse = Exchange(port_, "POST", "/v1beta/models/gemini-x:streamGenerateContent?alt=sse",
                                    kGeminiHeaders, GeminiBody(question));
  ASSERT_EQ(sse.status, 200);
  EXPECT_NE(sse.head.find("Content-Type: text/event-stream"), std::string::npos);
  const Sse frames = ParseSse(sse.body);
  EXPECT_TRUE(frames.events.empty());  // no event: lines
  ASSERT_EQ(frames.data.size(), 5u);
  std::string text;
  for (const json::value& chunk : frames.data) {
    text += chunk.at("candidates").at(0).at("content").at("parts").at(0).at("text").as_string();
  }
  EXPECT_EQ(text, expected);
  EXPECT_EQ(frames.data.back().at("candidates").at(0).at("finishReason").as_string(), "STOP");

  const HttpResponse array = Exchange(port_, "POST", "/v1beta/models/gemini-x:streamGenerateContent",
                                      kGeminiHeaders, GeminiBody(question));
  ASSERT_EQ(array.status, 200);
  EXPECT_NE(array.head.find("Content-Type: application/json"), std::string::npos);
  EXPECT_EQ(json::parse(array.body).as_array().size(), 5u);

  const HttpResponse counted = Exchange(port_, "POST", "/v1beta/models/gemini-x:countTokens", kGeminiHeaders,
                                        GeminiBody(question));
  EXPECT_EQ(json::parse(counted.body).at("totalTokens").as_int64(),
            body.at("usageMetadata").at("promptTokenCount").as_int64());
}

TEST_F(MockServerTest, GeminiKeysAndForcedStatus) {
  auto status_of = [](const HttpResponse& res) {
    return std::string(json::parse(res.body).at("error").at("status").as_string());
  };
  HttpResponse res = Exchange(port_, "POST", "/v1beta/models/g:generateContent", "", GeminiBody("x"));
  EXPECT_EQ(res.status, 403);
  EXPECT_EQ(status_of(res), "PERMISSION_DENIED");
  res = Exchange(port_, "POST", "/v1beta/models/g:generateContent?key=wrong", "", GeminiBody("x"));
  EXPECT_EQ(res.status, 400);
  EXPECT_EQ(json::parse(res.body).at("error").at("details").at(0).at("reason").as_string(), "API_KEY_INVALID");
  res = Exchange(port_, "POST", "/v1beta/models/g:generateContent", kGeminiHeaders, GeminiBody("x [mock:status=429]"));
  EXPECT_EQ(res.status, 429);
  EXPECT_EQ(status_of(res), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(json::parse(res.body).at("error").at("code").as_int64(), 429);
  res = Exchange(port_, "POST", "/v1beta/models/g:streamGenerateContent?alt=sse", kGeminiHeaders,
                 GeminiBody("x [mock:status=503]"));
  EXPECT_EQ(res.status, 503);
  EXPECT_EQ(status_of(res), "UNAVAILABLE");
  res = Exchange(port_, "POST", "/v1beta/models/g:generateContent", kGeminiHeaders, "{}");
  EXPECT_EQ(res.status, 400);
  EXPECT_EQ(status_of(res), "INVALID_ARGUMENT");
  res = Exchange(port_, "POST", "/v1beta/models/g:embedContent", kGeminiHeaders, GeminiBody("x"));
  EXPECT_EQ(res.status, 404);
  EXPECT_EQ(status_of(res), "NOT_FOUND");
}

// /d/{name}/… is deployment {name}; the control endpoint fails a share of its requests with
// a status and a retry-after, in each protocol's error shape, and lifts the fault again.
TEST_F(MockServerTest, ControlEndpointFailsAShareOfADeploymentsRequestsUntilItRecovers) {
  const std::string chat = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";
  HttpResponse res = Exchange(port_, "PUT", "/mock/deployments/ctl-east", "",
                              R"({"status":503,"percent":50,"retry_after":"7"})");
  ASSERT_EQ(res.status, 200) << res.body;
  std::vector<int> statuses;
  for (int i = 0; i < 6; ++i) {
    res = Exchange(port_, "POST", "/d/ctl-east/v1/chat/completions", kOpenAiHeaders, chat);
    statuses.push_back(res.status);
    if (res.status == 503) {
      EXPECT_NE(res.head.find("Retry-After: 7"), std::string::npos) << res.head;
      EXPECT_EQ(json::parse(res.body).at("error").at("type").as_string(), "server_error");
    }
  }
  EXPECT_EQ(statuses, (std::vector<int>{200, 503, 200, 503, 200, 503}));
  // Another deployment, and the same routes in other protocols, are their own.
  res = Exchange(port_, "POST", "/d/ctl-west/v1/chat/completions", kOpenAiHeaders, chat);
  EXPECT_EQ(res.status, 200);
  ASSERT_EQ(Exchange(port_, "PUT", "/mock/deployments/ctl-east", "", R"({"status":500})").status, 200);
  res = Exchange(port_, "POST", "/d/ctl-east/v1/messages", kAnthropicHeaders, MessagesBody("x", false));
  EXPECT_EQ(res.status, 500);
  EXPECT_EQ(json::parse(res.body).at("error").at("type").as_string(), "api_error");
  res = Exchange(port_, "POST", "/d/ctl-east/v1beta/models/g:generateContent", kGeminiHeaders, GeminiBody("x"));
  EXPECT_EQ(res.status, 500);
  EXPECT_EQ(json::parse(res.body).at("error").at("status").as_string(), "INTERNAL");

  res = Exchange(port_, "DELETE", "/mock/deployments/ctl-east", "");
  ASSERT_EQ(res.status, 200);
  res = Exchange(port_, "POST", "/d/ctl-east/v1/chat/completions", kOpenAiHeaders, chat);
  EXPECT_EQ(res.status, 200);

  res = Exchange(port_, "GET", "/mock/deployments", "");
  ASSERT_EQ(res.status, 200);
  json::object east, west;
  const json::value listed = json::parse(res.body);
  for (const auto& d : listed.at("deployments").as_array()) {
    if (d.at("name") == "ctl-east") east = d.as_object();
    if (d.at("name") == "ctl-west") west = d.as_object();
  }
  ASSERT_FALSE(east.empty()) << res.body;
  EXPECT_EQ(east.at("requests").as_int64(), 9);
  EXPECT_EQ(east.at("failed").as_int64(), 5);
  EXPECT_TRUE(east.at("fault").is_null());
  EXPECT_EQ(west.at("requests").as_int64(), 1);
  EXPECT_EQ(west.at("failed").as_int64(), 0);

  EXPECT_EQ(Exchange(port_, "PUT", "/mock/deployments/ctl-east", "", R"({"percent":10})").status, 400);
  EXPECT_EQ(Exchange(port_, "PUT", "/mock/deployments/ctl-east", "", R"({"status":200})").status, 400);
}

// [mock:drop-after] cuts each protocol's stream; with [mock:status] as well, the protocol's
// error event comes first (after a 200 has started).
TEST_F(MockServerTest, DropAfterAndMidStreamErrorsInEveryProtocol) {
  const std::int64_t dropped = Stat("streams_dropped");
  HttpResponse res = Exchange(port_, "POST", "/v1/messages", kAnthropicHeaders,
                              MessagesBody("cut [mock:drop-after=1]", true));
  EXPECT_EQ(res.status, 200);
  EXPECT_FALSE(res.complete);
  Sse sse = ParseSse(res.body);
  EXPECT_EQ(std::count(sse.events.begin(), sse.events.end(), "content_block_delta"), 1);
  EXPECT_EQ(std::count(sse.events.begin(), sse.events.end(), "message_stop"), 0);

  res = Exchange(port_, "POST", "/v1/messages", kAnthropicHeaders,
                 MessagesBody("fail [mock:status=529][mock:drop-after=2]", true));
  EXPECT_EQ(res.status, 200);
  sse = ParseSse(res.body);
  ASSERT_FALSE(sse.events.empty());
  EXPECT_EQ(sse.events.back(), "error");
  EXPECT_EQ(sse.data.back().at("error").at("type").as_string(), "overloaded_error");
  EXPECT_EQ(std::count(sse.events.begin(), sse.events.end(), "content_block_delta"), 2);

  res = Exchange(port_, "POST", "/v1beta/models/g:streamGenerateContent?alt=sse", kGeminiHeaders,
                 GeminiBody("fail [mock:status=503][mock:drop-after=1]"));
  EXPECT_EQ(res.status, 200);
  sse = ParseSse(res.body);
  ASSERT_EQ(sse.data.size(), 2u);
  EXPECT_EQ(sse.data.back().at("error").at("code").as_int64(), 503);
  EXPECT_EQ(sse.data.back().at("error").at("status").as_string(), "UNAVAILABLE");

  res = Exchange(port_, "POST", "/v1beta/models/g:streamGenerateContent", kGeminiHeaders,
                 GeminiBody("cut [mock:drop-after=2]"));
  EXPECT_FALSE(res.complete);
  EXPECT_TRUE(res.body.starts_with("[{"));
  EXPECT_EQ(res.body.find("finishReason"), std::string::npos);
  EXPECT_FALSE(res.body.ends_with("]"));  // the array is never closed

  res = Exchange(port_, "POST", "/v1/chat/completions", kOpenAiHeaders,
                 R"({"model":"m","stream":true,"messages":[{"role":"user","content":"fail [mock:status=500][mock:drop-after=0]"}]})");
  EXPECT_EQ(res.status, 200);
  sse = ParseSse(res.body);
  ASSERT_EQ(sse.data.size(), 2u);  // the role chunk, then the error
  EXPECT_EQ(sse.data.back().at("error").at("type").as_string(), "server_error");
  EXPECT_EQ(res.body.find("[DONE]"), std::string::npos);

  EXPECT_EQ(WaitStat("streams_dropped", dropped + 5, std::chrono::seconds(5)), dropped + 5);
  EXPECT_EQ(WaitStat("open_streams", 0, std::chrono::seconds(5)), 0);
}

TEST_F(MockServerTest, CacheControlWritesThenReadsOverTheWire) {
  const std::string body =
      R"({"model":"m","max_tokens":16,"system":[{"type":"text","text":"Shared rules for the server test.",)"
      R"("cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"Q"}]})";
  const json::value first = json::parse(Exchange(port_, "POST", "/v1/messages", kAnthropicHeaders, body).body);
  const json::value second = json::parse(Exchange(port_, "POST", "/v1/messages", kAnthropicHeaders, body).body);
  const std::int64_t prefix = 4 + (33 + 3) / 4;
  EXPECT_EQ(first.at("usage").at("cache_creation_input_tokens").as_int64(), prefix);
  EXPECT_EQ(first.at("usage").at("cache_read_input_tokens").as_int64(), 0);
  EXPECT_EQ(second.at("usage").at("cache_creation_input_tokens").as_int64(), 0);
  EXPECT_EQ(second.at("usage").at("cache_read_input_tokens").as_int64(), prefix);
  EXPECT_EQ(second.at("usage").at("input_tokens").as_int64(), 5);  // the user turn only
}

}  // namespace

// DashScope's async media over the wire: its key check and error shape, submit → poll →
// result file, cancel of a pending task, and the routes' edges.
const std::string kDashScopeHeaders = "Authorization: Bearer mock-test-key\r\nX-DashScope-Async: enable\r\n";

TEST_F(MockServerTest, DashScopeImageTaskFromSubmissionToServedFile) {
  const std::string body =
      R"({"model":"wan2.6-t2i","input":{"prompt":"a fox [mock:task-ms=0]"},"parameters":{"size":"1024*1024","n":2}})";
  const HttpResponse submitted =
      Exchange(port_, "POST", "/api/v1/services/aigc/text2image/image-synthesis", kDashScopeHeaders, body);
  ASSERT_EQ(submitted.status, 200) << submitted.body;
  const json::value answer = json::parse(submitted.body);
  EXPECT_EQ(answer.at("output").at("task_status").as_string(), "PENDING");
  EXPECT_FALSE(answer.at("request_id").as_string().empty());
  const std::string id(answer.at("output").at("task_id").as_string());

  const HttpResponse polled = Exchange(port_, "GET", "/api/v1/tasks/" + id, kOpenAiHeaders);
  ASSERT_EQ(polled.status, 200) << polled.body;
  const json::value task = json::parse(polled.body);
  EXPECT_EQ(task.at("output").at("task_status").as_string(), "SUCCEEDED");
  EXPECT_EQ(task.at("usage").at("image_count").as_int64(), 2);
  const std::string url(task.at("output").at("results").at(1).at("url").as_string());
  EXPECT_EQ(url, "http://mock/mock/dashscope/files/" + id + "/1.png");

  const HttpResponse file = Exchange(port_, "GET", url.substr(std::string("http://mock").size()), "");
  EXPECT_EQ(file.status, 200);
  EXPECT_NE(file.head.find("Content-Type: image/png"), std::string::npos) << file.head;
  EXPECT_EQ(file.body.substr(1, 3), "PNG");
  EXPECT_EQ(Exchange(port_, "GET", "/mock/dashscope/files/" + id + "/2.png", "").status, 404);
}

TEST_F(MockServerTest, DashScopeVideoTaskCanceledWhilePending) {
  const std::string body =
      R"({"model":"happyhorse-1.0-t2v","input":{"prompt":"waves [mock:task-ms=600000]"},"parameters":{"duration":10,"resolution":"720P"}})";
  const HttpResponse submitted =
      Exchange(port_, "POST", "/api/v1/services/aigc/video-generation/video-synthesis", kDashScopeHeaders, body);
  ASSERT_EQ(submitted.status, 200) << submitted.body;
  const std::string id(json::parse(submitted.body).at("output").at("task_id").as_string());
  EXPECT_EQ(json::parse(Exchange(port_, "GET", "/api/v1/tasks/" + id, kOpenAiHeaders).body)
                .at("output").at("task_status").as_string(),
            "PENDING");
  const HttpResponse canceled = Exchange(port_, "POST", "/api/v1/tasks/" + id + "/cancel", kOpenAiHeaders);
  EXPECT_EQ(canceled.status, 200) << canceled.body;
  EXPECT_EQ(json::parse(Exchange(port_, "GET", "/api/v1/tasks/" + id, kOpenAiHeaders).body)
                .at("output").at("task_status").as_string(),
            "CANCELED");
  const HttpResponse again = Exchange(port_, "POST", "/api/v1/tasks/" + id + "/cancel", kOpenAiHeaders);
  EXPECT_EQ(again.status, 400);
  EXPECT_EQ(json::parse(again.body).at("code").as_string(), "UnsupportedOperation");
}

TEST_F(MockServerTest, DashScopeRejectsLikeDashScope) {
  const std::string path = "/api/v1/services/aigc/text2image/image-synthesis";
  const std::string body = R"({"model":"wan2.6-t2i","input":{"prompt":"x"},"parameters":{"n":9}})";
  const HttpResponse no_key = Exchange(port_, "POST", path, "X-DashScope-Async: enable\r\n", body);
  EXPECT_EQ(no_key.status, 401);
  EXPECT_EQ(json::parse(no_key.body).at("code").as_string(), "InvalidApiKey");
  const HttpResponse wrong_key =
      Exchange(port_, "POST", path, "Authorization: Bearer nope\r\nX-DashScope-Async: enable\r\n", body);
  EXPECT_EQ(wrong_key.status, 401);
  EXPECT_EQ(Exchange(port_, "GET", "/api/v1/tasks/x", "").status, 401);

  const HttpResponse sync = Exchange(port_, "POST", path, kOpenAiHeaders, body);
  EXPECT_EQ(sync.status, 403);
  EXPECT_EQ(json::parse(sync.body).at("code").as_string(), "AccessDenied");

  const HttpResponse invalid = Exchange(port_, "POST", path, kDashScopeHeaders, body);
  EXPECT_EQ(invalid.status, 400);
  const json::value error = json::parse(invalid.body);
  EXPECT_EQ(error.at("code").as_string(), "InvalidParameter");
  EXPECT_NE(std::string(error.at("message").as_string()).find("parameters.n"), std::string::npos);
  // The body's request id is the header's.
  EXPECT_NE(invalid.head.find("x-request-id: " + std::string(error.at("request_id").as_string())),
            std::string::npos)
      << invalid.head;

  const HttpResponse unknown = Exchange(port_, "GET", "/api/v1/tasks/never-issued", kOpenAiHeaders);
  EXPECT_EQ(unknown.status, 200);
  EXPECT_EQ(json::parse(unknown.body).at("output").at("task_status").as_string(), "UNKNOWN");
  EXPECT_EQ(Exchange(port_, "POST", "/api/v1/tasks/x/stop", kOpenAiHeaders).status, 404);
  EXPECT_EQ(Exchange(port_, "GET", "/api/v1/tasks/x/y", kOpenAiHeaders).status, 404);
}

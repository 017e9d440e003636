// nexusflow-loadgen's socket-free parts: the histogram, the SSE scanner, the URL parser.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core.h"

#include <boost/json.hpp>

namespace nexusflow::loadgen {
namespace {

TEST(Histogram, ExactBelow2048AndWithinATenthOfAPercentAbove) {
  Histogram h;
  EXPECT_EQ(h.Percentile(0.5), 0);
  for (int v = 1; v <= 1000; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 1000);
  EXPECT_EQ(h.Percentile(0.50), 500);
  EXPECT_EQ(h.Percentile(0.99), 990);
  EXPECT_EQ(h.Percentile(1.0), 1000);
  EXPECT_EQ(h.Percentile(0.0), 1);
  EXPECT_EQ(h.max(), 1000);

  Histogram big;
  for (std::int64_t v : {50'000LL, 123'456LL, 7'000'000LL, 3'600'000'000LL}) {
    Histogram one;
    one.Record(v);
    EXPECT_NEAR(static_cast<double>(one.Percentile(0.5)), static_cast<double>(v), v * 0.001) << v;
    EXPECT_LE(one.Percentile(0.5), v);  // never above the exact maximum
    big.Merge(one);
  }
  EXPECT_EQ(big.count(), 4);
  EXPECT_EQ(big.max(), 3'600'000'000LL);
  EXPECT_NEAR(static_cast<double>(big.Percentile(0.5)), 123'456.0, 124.0);
}

TEST(Histogram, NegativeAndHugeValuesAreClamped) {
  Histogram h;
  h.Record(-5);
  h.Record(std::int64_t{1} << 50);
  EXPECT_EQ(h.count(), 2);
  EXPECT_EQ(h.Percentile(0.0), 0);
  EXPECT_EQ(h.max(), (std::int64_t{1} << 40) - 1);
}

std::vector<SseEvent> ScanInPieces(const std::string& text, std::size_t piece) {
  SseScanner scanner;
  std::vector<SseEvent> events;
  for (std::size_t i = 0; i < text.size(); i += piece) {
    scanner.Feed(std::string_view(text).substr(i, piece), events);
  }
  return events;
}

TEST(SseScanner, FindsEventsContentAndDoneWhateverThePieces) {
  const std::string stream =
      ": comment\r\n\r\n"
      "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"hello\"}}]}\n\n"
      "event: x\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\r\r"
      "data: [DONE]\n\n";
  for (std::size_t piece : {1u, 2u, 3u, 7u, 1000u}) {
    SCOPED_TRACE(piece);
    const std::vector<SseEvent> events = ScanInPieces(stream, piece);
    ASSERT_EQ(events.size(), 4u);
    EXPECT_FALSE(events[0].content);
    EXPECT_TRUE(events[1].content);
    EXPECT_FALSE(events[2].content);
    EXPECT_FALSE(events[2].done);
    EXPECT_TRUE(events[3].done);
    EXPECT_FALSE(events[3].content);
  }
}

TEST(SseScanner, AnEventIsCompleteOnlyAtItsBlankLine) {
  SseScanner scanner;
  std::vector<SseEvent> events;
  scanner.Feed("data: [DONE]\n", events);
  EXPECT_TRUE(events.empty());
  scanner.Feed("\n", events);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].done);
  // Two data lines are one event: "[DONE]\nx" is not [DONE].
  events.clear();
  scanner.Feed("data: [DONE]\ndata: x\n\n", events);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_FALSE(events[0].done);
}

TEST(ChunkHasContent, NonEmptyContentOrArguments) {
  EXPECT_TRUE(ChunkHasContent(R"({"delta":{"content":"hi"}})"));
  EXPECT_TRUE(ChunkHasContent(R"({"delta": {"content" : "hi"}})"));
  EXPECT_FALSE(ChunkHasContent(R"({"delta":{"content":""}})"));
  EXPECT_FALSE(ChunkHasContent(R"({"delta":{"content":null}})"));
  EXPECT_FALSE(ChunkHasContent(R"({"delta":{"reasoning_content":""},"x":"content"})"));
  EXPECT_TRUE(ChunkHasContent(
      R"({"delta":{"content":null,"tool_calls":[{"function":{"arguments":"{\"a"}}]}})"));
  EXPECT_FALSE(ChunkHasContent(R"({"delta":{"tool_calls":[{"function":{"arguments":""}}]}})"));
}

TEST(ParseHttpUrl, HostPortAndTarget) {
  auto u = ParseHttpUrl("http://127.0.0.1:26080/v1/chat/completions");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 26080);
  EXPECT_EQ(u->target, "/v1/chat/completions");
  u = ParseHttpUrl("http://localhost");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->target, "/");
  u = ParseHttpUrl("http://[::1]:9/x?y=1");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 9);
  EXPECT_EQ(u->target, "/x?y=1");
  EXPECT_FALSE(ParseHttpUrl("https://127.0.0.1/"));
  EXPECT_FALSE(ParseHttpUrl("http://:80/"));
  EXPECT_FALSE(ParseHttpUrl("http://h:0/"));
  EXPECT_FALSE(ParseHttpUrl("http://h:99999/"));
  EXPECT_FALSE(ParseHttpUrl("http://h:12ab/"));
}

TEST(ReportJson, PlainDoublesAndEscapedStrings) {
  boost::json::object report;
  report["a"] = 25.0;
  report["b"] = 10.031;
  report["c"] = 0.5;
  report["d"] = std::int64_t{3};
  report["e"] = "HTTP/1.1 408 \"x\"";
  report["f"] = boost::json::array{1.25, true, nullptr};
  EXPECT_EQ(ReportJson(report),
            R"({"a":25,"b":10.031,"c":0.5,"d":3,"e":"HTTP/1.1 408 \"x\"","f":[1.25,true,null]})");
}

}  // namespace
}  // namespace nexusflow::loadgen

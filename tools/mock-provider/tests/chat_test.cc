// The mock provider's pure logic: the `[mock:chunk-delay=MS]` marker and the stream counters.
#include <gtest/gtest.h>

#include <string>
#include <variant>

#include "chat.h"
#include "stream_stats.h"

namespace nexusflow::mock {
namespace {

ChatReply Plan(const std::string& user_text) {
  const std::string body = R"({"model":"m","stream":true,"messages":[{"role":"user","content":")" +
                           user_text + R"("}]})";
  auto planned = PlanChatReply(body, 4);
  EXPECT_TRUE(std::holds_alternative<ChatReply>(planned));
  return std::get<ChatReply>(planned);
}

TEST(MockMarkers, ChunkDelayIsReadFromTheLastUserMessage) {
  EXPECT_FALSE(Plan("hello").markers.chunk_delay_ms.has_value());
  EXPECT_EQ(Plan("hello [mock:chunk-delay=250]").markers.chunk_delay_ms, 250);
  EXPECT_EQ(Plan("[mock:chunk-delay=0]").markers.chunk_delay_ms, 0);
  // Capped at ten minutes like [mock:delay]; malformed values are ignored.
  EXPECT_EQ(Plan("[mock:chunk-delay=9000000]").markers.chunk_delay_ms, 600000);
  EXPECT_FALSE(Plan("[mock:chunk-delay=-5]").markers.chunk_delay_ms.has_value());
  EXPECT_FALSE(Plan("[mock:chunk-delay=fast]").markers.chunk_delay_ms.has_value());

  const std::string earlier_turn =
      R"({"model":"m","messages":[{"role":"user","content":"[mock:chunk-delay=7]"},)"
      R"({"role":"assistant","content":"ok"},{"role":"user","content":"again"}]})";
  auto planned = PlanChatReply(earlier_turn, 4);
  ASSERT_TRUE(std::holds_alternative<ChatReply>(planned));
  EXPECT_FALSE(std::get<ChatReply>(planned).markers.chunk_delay_ms.has_value());
}

TEST(MockMarkers, ChunkDelayCombinesWithOtherMarkers) {
  const MockMarkers m = Plan("[mock:words=3][mock:chunk-delay=40][mock:delay=10]").markers;
  EXPECT_EQ(m.chunk_delay_ms, 40);
  EXPECT_EQ(m.delay_ms, 10);
  EXPECT_EQ(m.words, 3);
}

TEST(StreamStats, CountsEveryEnding) {
  StreamStats stats;
  EXPECT_EQ(StreamStatsBody(stats.Snapshot()),
            R"({"open_streams":0,"streams_started":0,"streams_completed":0,)"
            R"("streams_aborted":0,"streams_dropped":0})");
  for (int i = 0; i < 4; ++i) stats.Started();
  stats.Ended(StreamEnd::kCompleted);
  stats.Ended(StreamEnd::kAborted);
  stats.Ended(StreamEnd::kDropped);
  const StreamCounts c = stats.Snapshot();
  EXPECT_EQ(c.started, 4);
  EXPECT_EQ(c.completed, 1);
  EXPECT_EQ(c.aborted, 1);
  EXPECT_EQ(c.dropped, 1);
  EXPECT_EQ(c.open, 1);
  EXPECT_EQ(StreamStatsBody(c),
            R"({"open_streams":1,"streams_started":4,"streams_completed":1,)"
            R"("streams_aborted":1,"streams_dropped":1})");
}

TEST(StreamStats, TrackerCountsOnceAndAbortsWhenNeverEnded) {
  StreamStats stats;
  {
    StreamTracker done(stats);
    EXPECT_EQ(stats.Snapshot().open, 1);
    done.End(StreamEnd::kCompleted);
    done.End(StreamEnd::kAborted);  // ignored: the first ending counts
    EXPECT_EQ(stats.Snapshot().open, 0);
  }
  { StreamTracker torn_down(stats); }
  const StreamCounts c = stats.Snapshot();
  EXPECT_EQ(c.started, 2);
  EXPECT_EQ(c.completed, 1);
  EXPECT_EQ(c.aborted, 1);
  EXPECT_EQ(c.open, 0);
}

}  // namespace
}  // namespace nexusflow::mock

// The mock provider's pure logic on the OpenAI side: markers, the answer (unchanged for plain
// requests by the multi-protocol core), DashScope thinking and cache fields, stop sequences,
// the prompt cache, and the stream counters.
#include <gtest/gtest.h>

#include <string>
#include <variant>

#include <boost/json.hpp>

#include "chat.h"
#include "prompt_cache.h"
#include "stream_stats.h"

namespace nexusflow::mock {
namespace {

namespace json = boost::json;

Reply PlanBody(const std::string& body, int words = 4) {
  auto planned = PlanChatReply(body, words);
  if (const RequestError* error = std::get_if<RequestError>(&planned)) {
    ADD_FAILURE() << error->message;
    return {};
  }
  return std::get<Reply>(planned);
}

RequestError RejectBody(const std::string& body) {
  auto planned = PlanChatReply(body, 4);
  EXPECT_TRUE(std::holds_alternative<RequestError>(planned)) << body;
  return std::holds_alternative<RequestError>(planned) ? std::get<RequestError>(planned) : RequestError{};
}

Reply Plan(const std::string& user_text) {
  return PlanBody(R"({"model":"m","stream":true,"messages":[{"role":"user","content":")" + user_text +
                  R"("}]})");
}

// Frames' JSON payloads (data: lines other than [DONE]).
std::vector<json::object> Chunks(const std::vector<SseFrame>& frames) {
  std::vector<json::object> out;
  for (const SseFrame& frame : frames) {
    if (frame.bytes == "data: [DONE]\n\n") continue;
    out.push_back(json::parse(frame.bytes.substr(6)).as_object());
  }
  return out;
}

TEST(MockMarkers, ChunkDelayIsReadFromTheLastUserMessage) {
  EXPECT_FALSE(Plan("hello").markers.chunk_delay_ms.has_value());
  EXPECT_EQ(Plan("hello [mock:chunk-delay=250]").markers.chunk_delay_ms, 250);
  EXPECT_EQ(Plan("[mock:chunk-delay=0]").markers.chunk_delay_ms, 0);
  // Capped at ten minutes like [mock:delay]; malformed values are ignored.
  EXPECT_EQ(Plan("[mock:chunk-delay=9000000]").markers.chunk_delay_ms, 600000);
  EXPECT_FALSE(Plan("[mock:chunk-delay=-5]").markers.chunk_delay_ms.has_value());
  EXPECT_FALSE(Plan("[mock:chunk-delay=fast]").markers.chunk_delay_ms.has_value());

  const Reply earlier_turn = PlanBody(
      R"({"model":"m","messages":[{"role":"user","content":"[mock:chunk-delay=7]"},)"
      R"({"role":"assistant","content":"ok"},{"role":"user","content":"again"}]})");
  EXPECT_FALSE(earlier_turn.markers.chunk_delay_ms.has_value());
}

TEST(MockMarkers, ChunkDelayCombinesWithOtherMarkers) {
  const MockMarkers m = Plan("[mock:words=3][mock:chunk-delay=40][mock:delay=10]").markers;
  EXPECT_EQ(m.chunk_delay_ms, 40);
  EXPECT_EQ(m.delay_ms, 10);
  EXPECT_EQ(m.words, 3);
}

// The multi-protocol core keeps the OpenAI answers the mock always gave (values taken from
// the single-protocol mock): the same words and the same token counts.
TEST(ChatReply, PlainRequestsKeepTheirAnswers) {
  Reply r = PlanBody(
      R"({"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},)"
      R"({"role":"user","content":"Hello there, how are you?"}]})",
      6);
  EXPECT_EQ(r.Text(), "river dune galaxy saffron summit tundra");
  EXPECT_EQ(r.usage.prompt_tokens, 19);
  EXPECT_EQ(r.usage.output_tokens, 6);

  r = PlanBody(
      R"({"model":"m","messages":[{"role":"user","content":"weather?"},{"role":"assistant",)"
      R"("content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather",)"
      R"("arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"c1","content":"sunny"},)"
      R"({"role":"user","content":"thanks"}]})",
      6);
  EXPECT_EQ(r.Text(), "harbor beacon thunder falcon atlas atlas");
  EXPECT_EQ(r.usage.prompt_tokens, 29);

  r = PlanBody(
      R"({"model":"m","max_tokens":3,"messages":[{"role":"user","content":[{"type":"text","text":"what is this"},)"
      R"({"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]})",
      6);
  EXPECT_EQ(r.Text(), "jasper atlas copper");
  EXPECT_EQ(r.usage.prompt_tokens, 92);
  EXPECT_EQ(r.finish, Finish::kLength);
}

TEST(ChatReply, ForcedToolFillsRequiredFields) {
  const Reply r = PlanBody(
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function",)"
      R"("function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"integer",)"
      R"("minimum":3},"b":{"type":"string","format":"date"}},"required":["a","b"]}}}],"tool_choice":"required"})");
  ASSERT_TRUE(r.tool_call.has_value());
  EXPECT_EQ(r.tool_call->arguments, R"({"a":3,"b":"2025-01-01"})");
  EXPECT_EQ(r.finish, Finish::kToolCall);
  std::string joined;
  for (const std::string& piece : r.tool_call->argument_pieces) joined += piece;
  EXPECT_EQ(joined, r.tool_call->arguments);
}

// Developer messages, system messages anywhere, and pretty-printed tool arguments mean the
// same prompt as their canonical form (what a translation from Anthropic or Gemini sends).
TEST(ChatReply, CanonicalPromptIgnoresSpellingDifferences) {
  const Reply system = PlanBody(
      R"({"model":"m","messages":[{"role":"system","content":"rules"},{"role":"user","content":"hi"}]})");
  const Reply developer = PlanBody(
      R"({"model":"m","messages":[{"role":"user","content":"hi"},{"role":"developer","content":"rules"}]})");
  EXPECT_EQ(system.Text(), developer.Text());
  EXPECT_EQ(system.usage.prompt_tokens, developer.usage.prompt_tokens);

  const std::string call = R"({"model":"m","messages":[{"role":"user","content":"w"},{"role":"assistant",)"
                           R"("tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":)";
  const Reply compact = PlanBody(call + R"("{\"a\":1}"}}]},{"role":"tool","tool_call_id":"c","content":"{\"t\":2}"}]})");
  const Reply spaced = PlanBody(call + R"("{ \"a\": 1 }"}}]},{"role":"tool","tool_call_id":"c","content":"{ \"t\" : 2 }"}]})");
  EXPECT_EQ(compact.Text(), spaced.Text());
  EXPECT_EQ(compact.usage.prompt_tokens, spaced.usage.prompt_tokens);
}

TEST(ChatReply, EnableThinkingStreamsReasoningContentFirst) {
  const Reply r = PlanBody(
      R"({"model":"m","enable_thinking":true,"stream":true,"stream_options":{"include_usage":true},)"
      R"("messages":[{"role":"user","content":"think"}]})");
  ASSERT_EQ(r.thinking_pieces.size(), static_cast<std::size_t>(kThinkingWords));
  const json::object body = json::parse(ChatCompletionBody(r, NewResponseIds())).as_object();
  const json::object& message = body.at("choices").at(0).at("message").as_object();
  EXPECT_EQ(message.at("reasoning_content").as_string(), r.ThinkingText());
  EXPECT_EQ(message.at("content").as_string(), r.Text());
  const json::object& usage = body.at("usage").as_object();
  EXPECT_EQ(usage.at("completion_tokens").as_int64(), kThinkingWords + 4);
  EXPECT_EQ(usage.at("completion_tokens_details").at("reasoning_tokens").as_int64(), kThinkingWords);

  std::string reasoning, content;
  bool content_started = false;
  for (const json::object& chunk : Chunks(ChatStreamFrames(r, NewResponseIds()))) {
    if (chunk.at("choices").as_array().empty()) continue;
    const json::object& delta = chunk.at("choices").at(0).at("delta").as_object();
    if (const json::value* piece = delta.if_contains("reasoning_content")) {
      EXPECT_FALSE(content_started) << "reasoning after content";
      reasoning += piece->as_string();
    }
    if (const json::value* piece = delta.if_contains("content"); piece && piece->is_string()) {
      content += piece->as_string();
      content_started = content_started || !piece->as_string().empty();
    }
  }
  EXPECT_EQ(reasoning, r.ThinkingText());
  EXPECT_EQ(content, r.Text());

  // thinking_budget caps the thinking words.
  EXPECT_EQ(PlanBody(R"({"model":"m","enable_thinking":true,"thinking_budget":3,)"
                     R"("messages":[{"role":"user","content":"think"}]})")
                .thinking_pieces.size(),
            3u);
}

TEST(ChatReply, StopSequenceCutsTheText) {
  const Reply full = PlanBody(R"({"model":"m","messages":[{"role":"user","content":"s"}]})", 6);
  const std::string text = full.Text();
  const std::string stop = text.substr(text.find(' ') + 1, 3);  // inside the second word
  const Reply cut = PlanBody(R"({"model":"m","stop":[")" + stop + R"("],"messages":[{"role":"user","content":"s"}]})", 6);
  EXPECT_EQ(cut.Text(), text.substr(0, text.find(stop)));
  EXPECT_EQ(cut.finish, Finish::kStopSequence);
  EXPECT_EQ(cut.usage.output_tokens, 2);  // the first word and the space before the cut one
  const json::object body = json::parse(ChatCompletionBody(cut, NewResponseIds())).as_object();
  EXPECT_EQ(body.at("choices").at(0).at("finish_reason").as_string(), "stop");

  EXPECT_EQ(RejectBody(R"({"model":"m","stop":[1],"messages":[{"role":"user","content":"s"}]})").param, "stop");
}

// A DashScope `cache_control` part marks the prefix: written the first time, read after,
// with DashScope's fields in prompt_tokens_details.
TEST(ChatCache, CacheControlPartWritesThenReads) {
  PromptCache cache;
  const std::string body =
      R"({"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"a long shared prefix",)"
      R"("cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"Q"}]})";
  Reply first = PlanBody(body);
  first.usage.cache = cache.Resolve("openai", first.cache);
  EXPECT_EQ(first.usage.cache.write, 4 + 5);  // 4 + ceil(20 / 4)
  EXPECT_EQ(first.usage.cache.read, 0);
  Reply second = PlanBody(body);
  second.usage.cache = cache.Resolve("openai", second.cache);
  EXPECT_EQ(second.usage.cache.write, 0);
  EXPECT_EQ(second.usage.cache.read, 9);

  const json::object usage = json::parse(ChatCompletionBody(second, NewResponseIds())).at("usage").as_object();
  EXPECT_EQ(usage.at("prompt_tokens").as_int64(), 9 + 5);  // cached ones included
  EXPECT_EQ(usage.at("prompt_tokens_details").at("cached_tokens").as_int64(), 9);
  EXPECT_EQ(usage.at("prompt_tokens_details").at("cache_creation_input_tokens").as_int64(), 0);

  // Another protocol has its own cache.
  Reply other = PlanBody(body);
  EXPECT_EQ(cache.Resolve("anthropic", other.cache).write, 9);
}

// enable_context_caching caches the whole prompt; the next turn reads the earlier one.
TEST(ChatCache, ContextCachingReadsTheLongestKnownPrefix) {
  PromptCache cache;
  const std::string turn1 =
      R"({"model":"m","enable_context_caching":true,"messages":[{"role":"system","content":"rules"},)"
      R"({"role":"user","content":"first question"}]})";
  const std::string turn2 =
      R"({"model":"m","enable_context_caching":true,"messages":[{"role":"system","content":"rules"},)"
      R"({"role":"user","content":"first question"},{"role":"assistant","content":"answer"},)"
      R"({"role":"user","content":"second"}]})";
  const Reply one = PlanBody(turn1);
  const CacheUsage first = cache.Resolve("openai", one.cache);
  EXPECT_EQ(first.read, 0);
  EXPECT_EQ(first.write, one.usage.prompt_tokens);
  const Reply two = PlanBody(turn2);
  const CacheUsage second = cache.Resolve("openai", two.cache);
  EXPECT_EQ(second.read, one.usage.prompt_tokens);
  EXPECT_EQ(second.write, two.usage.prompt_tokens - one.usage.prompt_tokens);
  // Without caching asked, the DashScope fields are absent.
  const json::object plain =
      json::parse(ChatCompletionBody(Plan("x"), NewResponseIds())).at("usage").as_object();
  EXPECT_FALSE(plain.at("prompt_tokens_details").as_object().contains("cache_creation_input_tokens"));
}

TEST(ErrorKinds, OneTableForEveryProtocol) {
  EXPECT_EQ(ErrorKindsFor(529).anthropic_type, "overloaded_error");
  EXPECT_EQ(ErrorKindsFor(529).gemini_status, "UNAVAILABLE");
  EXPECT_EQ(ErrorKindsFor(429).openai_code, "rate_limit_exceeded");
  EXPECT_EQ(ErrorKindsFor(413).anthropic_type, "request_too_large");
  EXPECT_EQ(ErrorKindsFor(401).gemini_status, "UNAUTHENTICATED");
  EXPECT_EQ(ErrorKindsFor(418).openai_type, "invalid_request_error");
  EXPECT_EQ(ErrorKindsFor(599).anthropic_type, "api_error");
  const json::object body = json::parse(ErrorBody(ForcedStatusError(402))).as_object();
  EXPECT_EQ(body.at("error").at("type").as_string(), "insufficient_quota");
  EXPECT_EQ(body.at("error").at("code").as_string(), "insufficient_balance");
}

TEST(StreamStats, CountsEveryEnding) {
  StreamStats stats;
  EXPECT_EQ(StreamStatsBody(stats.Snapshot()),
            R"({"open_streams":0,"streams_started":0,"streams_completed":0,)"
            R"("streams_aborted":0,"streams_dropped":0,"peak_open_streams":0})");
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
            R"("streams_aborted":1,"streams_dropped":1,"peak_open_streams":4})");
  // The peak starts again from what is open now, and rises with the next start.
  stats.ResetPeak();
  EXPECT_EQ(stats.Snapshot().peak_open, 1);
  stats.Started();
  stats.Started();
  stats.Ended(StreamEnd::kCompleted);
  EXPECT_EQ(stats.Snapshot().peak_open, 3);
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

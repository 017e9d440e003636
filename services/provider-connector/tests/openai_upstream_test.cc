#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "libs/common/sse.h"
#include "services/provider-connector/openai_upstream.h"

namespace nexusflow::connector {
namespace {

using llmpb::ChatEvent;

std::vector<ChatEvent> Decode(const std::vector<std::string>& chunks) {
  OpenAiDecoder d(7);
  std::vector<ChatEvent> out;
  for (const auto& c : chunks) EXPECT_TRUE(d.FeedChunk(c, out).ok()) << c;
  d.Finish(out);
  return out;
}

// ---------------------------------------------------------------------------------------
// OpenAI-compatible answer → canonical events (PROTOCOLS.md §E, OpenAI → Anthropic/Gemini).
// Covers: usage with cache tokens (TextStreamEndsWithFinishThenUsageWithCacheTokens,
// DashScopeCacheCreationWithTtlSplit, OpenAiCacheWriteTokens) and without
// (UsageWithoutCacheTokensIsAllInput); input = max(prompt − cached − cache_write, 0)
// (PromptSmallerThanItsCacheCountsIsNoUncachedInput); reasoning_tokens kept for the Gemini
// thoughts split (ReasoningContentBecomesReasoningDelta); a usage chunk with `choices:null`
// or without `choices` (TextStreamEndsWithFinishThenUsageWithCacheTokens,
// UsageChunkWithoutChoices); one chunk with content and finish_reason (same first test,
// ToolCallsInOneChunkWithText); several tool calls interleaved with text, dense indexes
// (InterleavedToolCallsGetDenseIndexes, ToolCallsInOneChunkWithText); every finish_reason
// both ways (FinishReasonsMapBothWays). Anthropic's `error` event, empty partial_json and
// Gemini's STOP belong to the other codecs.

TEST(OpenAiDecoderTest, TextStreamEndsWithFinishThenUsageWithCacheTokens) {
  auto ev = Decode({
      R"({"id":"c1","model":"m","created":5,"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})",
      R"({"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]})",
      R"({"id":"c1","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]})",
      R"({"id":"c1","choices":null,"usage":{"prompt_tokens":100,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":60,"cache_creation_input_tokens":10}}})",
      "[DONE]"});
  ASSERT_EQ(ev.size(), 5u);
  EXPECT_TRUE(ev[0].has_start());
  EXPECT_EQ(ev[0].start().response_id(), "c1");
  EXPECT_EQ(ev[1].text().text(), "Hel");
  EXPECT_EQ(ev[2].text().text(), "lo");  // content and finish_reason in one chunk
  EXPECT_EQ(ev[3].finish().reason(), llmpb::FINISH_REASON_STOP);
  ASSERT_TRUE(ev[4].has_usage());
  EXPECT_EQ(ev[4].usage().input_tokens(), 30);
  EXPECT_EQ(ev[4].usage().cache_read_tokens(), 60);
  EXPECT_EQ(ev[4].usage().cache_write_tokens(), 10);
  EXPECT_EQ(ev[4].usage().output_tokens(), 2);
}

TEST(OpenAiDecoderTest, InterleavedToolCallsGetDenseIndexes) {
  auto ev = Decode({
      R"({"id":"c","choices":[{"index":0,"delta":{"content":"Let me check."}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"id":"call_a","type":"function","function":{"name":"f","arguments":""}}]}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":5,"id":"call_b","type":"function","function":{"name":"g","arguments":"{\"x\""}}]}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"function":{"arguments":"{}"}}]}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":5,"function":{"arguments":":1}"}}]}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":9}})"});
  std::vector<std::string> args(2);
  int starts = 0;
  for (const auto& e : ev) {
    if (e.has_tool_call_start()) {
      EXPECT_EQ(e.tool_call_start().index(), starts);
      ++starts;
    }
    if (e.has_tool_call_delta()) args[e.tool_call_delta().index()] += e.tool_call_delta().arguments_fragment();
  }
  EXPECT_EQ(starts, 2);
  EXPECT_EQ(args[0], "{}");
  EXPECT_EQ(args[1], "{\"x\":1}");
  EXPECT_EQ(ev[ev.size() - 2].finish().reason(), llmpb::FINISH_REASON_TOOL_CALLS);
  EXPECT_EQ(ev.back().usage().output_tokens(), 9);
}

TEST(OpenAiDecoderTest, ErrorObjectBecomesErrorEvent) {
  OpenAiDecoder d(0);
  std::vector<ChatEvent> out;
  ASSERT_TRUE(d.FeedChunk(R"({"error":{"message":"overloaded","code":"busy"}})", out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].error().message(), "overloaded");
}

TEST(OpenAiDecoderTest, MissingUsageIsEstimated) {
  OpenAiDecoder d(42);
  std::vector<ChatEvent> out;
  ASSERT_TRUE(d.FeedChunk(R"({"id":"c","choices":[{"index":0,"delta":{"content":"12345678"}}]})", out).ok());
  d.Finish(out);
  EXPECT_TRUE(d.usage_estimated());
  EXPECT_EQ(out.back().usage().input_tokens(), 42);
  EXPECT_EQ(out.back().usage().output_tokens(), 2);
}

TEST(OpenAiDecoderTest, InvalidJsonIsAnError) {
  OpenAiDecoder d(0);
  std::vector<ChatEvent> out;
  EXPECT_FALSE(d.FeedChunk("{not json", out).ok());
}

TEST(OpenAiDecoderTest, WholeResponseDecodesLikeAStream) {
  OpenAiDecoder d(0);
  std::vector<ChatEvent> out;
  ASSERT_TRUE(d.FeedResponse(R"({"id":"c","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4}})", out).ok());
  d.Finish(out);
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[1].tool_call_start().id(), "call_1");
  EXPECT_EQ(out[2].tool_call_delta().arguments_fragment(), "{\"a\":1}");
  EXPECT_EQ(out[4].usage().input_tokens(), 3);
}

TEST(OpenAiDecoderTest, UsageChunkWithoutChoices) {
  auto ev = Decode({R"({"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"length"}]})",
                    R"({"id":"c","usage":{"prompt_tokens":9,"completion_tokens":4}})"});
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[2].finish().reason(), llmpb::FINISH_REASON_LENGTH);
  EXPECT_EQ(ev[3].usage().input_tokens(), 9);
  EXPECT_EQ(ev[3].usage().output_tokens(), 4);
}

TEST(OpenAiDecoderTest, PromptSmallerThanItsCacheCountsIsNoUncachedInput) {
  // input_tokens = max(prompt − cached − cache_write, 0): an upstream that counts its
  // cache apart from the prompt never makes the uncached input negative.
  auto u = UsageFromOpenAi(10, 8, 5, 3, 0);
  EXPECT_EQ(u.input_tokens(), 0);
  EXPECT_EQ(u.cache_read_tokens(), 8);
  EXPECT_EQ(u.cache_write_tokens(), 5);
  EXPECT_EQ(UsageFromOpenAi(100, 60, 10, 3, 1).input_tokens(), 30);
}

TEST(OpenAiDecoderTest, FinishReasonsMapBothWays) {
  EXPECT_EQ(FinishReasonFromOpenAi("stop"), llmpb::FINISH_REASON_STOP);
  EXPECT_EQ(FinishReasonFromOpenAi("length"), llmpb::FINISH_REASON_LENGTH);
  EXPECT_EQ(FinishReasonFromOpenAi("tool_calls"), llmpb::FINISH_REASON_TOOL_CALLS);
  EXPECT_EQ(FinishReasonFromOpenAi("function_call"), llmpb::FINISH_REASON_TOOL_CALLS);  // legacy
  EXPECT_EQ(FinishReasonFromOpenAi("content_filter"), llmpb::FINISH_REASON_CONTENT_FILTER);
  EXPECT_EQ(FinishReasonFromOpenAi("something_new"), llmpb::FINISH_REASON_STOP);
  EXPECT_EQ(FinishReasonToOpenAi(llmpb::FINISH_REASON_STOP), "stop");
  EXPECT_EQ(FinishReasonToOpenAi(llmpb::FINISH_REASON_LENGTH), "length");
  EXPECT_EQ(FinishReasonToOpenAi(llmpb::FINISH_REASON_TOOL_CALLS), "tool_calls");
  EXPECT_EQ(FinishReasonToOpenAi(llmpb::FINISH_REASON_CONTENT_FILTER), "content_filter");
  EXPECT_EQ(FinishReasonToOpenAi(llmpb::FINISH_REASON_UNSPECIFIED), "stop");
}

// ---------------------------------------------------------------------------------------
// Canonical request → OpenAI body (PROTOCOLS.md §E, Anthropic/Gemini → OpenAI).
// Covers: system → a system message; max tokens; stop; tool_choice all four ways
// (ToolChoiceAllFourWays); tool_use → tool_calls with `arguments` as a string; tool results
// → `tool` messages ahead of the rest of their user turn, base64 image → data: URL
// (AnthropicTurnsBecomeOpenAiMessages); include_usage always asked on a stream.

TEST(OpenAiBodyTest, CanonicalRequestBecomesOpenAiBody) {
  llmpb::ChatRequest req;
  auto* sys = req.add_messages();
  sys->set_role(llmpb::ROLE_SYSTEM);
  sys->add_parts()->set_text("be brief");
  auto* asst = req.add_messages();
  asst->set_role(llmpb::ROLE_ASSISTANT);
  auto* call = asst->add_parts()->mutable_tool_call();
  call->set_id("call_1");
  call->set_name("f");
  call->set_arguments_json("{}");
  auto* tool = req.add_messages();
  tool->set_role(llmpb::ROLE_TOOL);
  tool->add_parts()->mutable_tool_result()->set_tool_call_id("call_1");
  req.mutable_sampling()->set_max_output_tokens(50);
  req.mutable_tool_choice()->set_function_name("f");
  auto body = boost::json::parse(BuildOpenAiChatBody(req, "up-model", true));
  EXPECT_EQ(body.at("model").as_string(), "up-model");
  EXPECT_EQ(body.at("max_tokens").as_int64(), 50);
  EXPECT_TRUE(body.at("stream_options").at("include_usage").as_bool());
  const auto& msgs = body.at("messages").as_array();
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[0].at("role").as_string(), "system");
  EXPECT_TRUE(msgs[1].at("content").is_null());
  EXPECT_EQ(msgs[1].at("tool_calls").as_array()[0].at("id").as_string(), "call_1");
  EXPECT_EQ(msgs[2].at("tool_call_id").as_string(), "call_1");
  EXPECT_EQ(body.at("tool_choice").at("function").at("name").as_string(), "f");
}

TEST(OpenAiDecoderTest, UsageWithoutCacheTokensIsAllInput) {
  auto ev = Decode({R"({"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3}})"});
  const auto& u = ev.back().usage();
  EXPECT_EQ(u.input_tokens(), 12);
  EXPECT_EQ(u.cache_read_tokens(), 0);
  EXPECT_EQ(u.cache_write_tokens(), 0);
  EXPECT_EQ(u.output_tokens(), 3);
}

TEST(OpenAiDecoderTest, DashScopeCacheCreationWithTtlSplit) {
  // The mock's / DashScope's shape when caching was asked (tools/mock-provider README).
  auto ev = Decode({
      R"({"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]})",
      R"({"id":"c","choices":[],"usage":{"prompt_tokens":200,"completion_tokens":4,"total_tokens":204,
          "prompt_tokens_details":{"cached_tokens":50,"audio_tokens":0,"cache_creation_input_tokens":120,
            "cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":20},"cache_type":"ephemeral"},
          "completion_tokens_details":{"reasoning_tokens":3}}})"});
  const auto& u = ev.back().usage();
  EXPECT_EQ(u.input_tokens(), 30);
  EXPECT_EQ(u.cache_read_tokens(), 50);
  EXPECT_EQ(u.cache_write_tokens(), 120);
  EXPECT_EQ(u.cache_write_1h_tokens(), 20);
  EXPECT_EQ(u.output_tokens(), 4);
  EXPECT_EQ(u.reasoning_tokens(), 3);
}

// The exact usage chunks tools/mock-provider sends for a marked prefix: a write the first
// time, a read after.
TEST(OpenAiDecoderTest, MockProviderCacheWriteThenRead) {
  auto write = Decode({R"({"id":"c","choices":[],"usage":{"prompt_tokens":29,"completion_tokens":16,"total_tokens":45,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0,"cache_creation_input_tokens":24,"cache_creation":{"ephemeral_5m_input_tokens":24},"cache_type":"ephemeral"},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}})"});
  EXPECT_EQ(write.back().usage().input_tokens(), 5);
  EXPECT_EQ(write.back().usage().cache_write_tokens(), 24);
  EXPECT_EQ(write.back().usage().cache_read_tokens(), 0);
  auto read = Decode({R"({"id":"c","choices":[],"usage":{"prompt_tokens":29,"completion_tokens":16,"total_tokens":45,"prompt_tokens_details":{"cached_tokens":24,"audio_tokens":0,"cache_creation_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0},"cache_type":"ephemeral"},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}})"});
  EXPECT_EQ(read.back().usage().input_tokens(), 5);
  EXPECT_EQ(read.back().usage().cache_write_tokens(), 0);
  EXPECT_EQ(read.back().usage().cache_read_tokens(), 24);
  EXPECT_EQ(read.back().usage().output_tokens(), 16);
}

TEST(OpenAiDecoderTest, CacheCreationSplitAloneGivesTheWrite) {
  auto ev = Decode({R"({"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":40,"completion_tokens":1,
      "prompt_tokens_details":{"cached_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":30}}}})"});
  EXPECT_EQ(ev.back().usage().cache_write_tokens(), 30);
  EXPECT_EQ(ev.back().usage().cache_write_1h_tokens(), 0);
  EXPECT_EQ(ev.back().usage().input_tokens(), 10);
}

TEST(OpenAiDecoderTest, OpenAiCacheWriteTokens) {
  auto ev = Decode({R"({"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":40,"completion_tokens":1,
      "prompt_tokens_details":{"cached_tokens":10,"cache_write_tokens":25}}})"});
  EXPECT_EQ(ev.back().usage().cache_read_tokens(), 10);
  EXPECT_EQ(ev.back().usage().cache_write_tokens(), 25);
  EXPECT_EQ(ev.back().usage().input_tokens(), 5);
}

TEST(OpenAiDecoderTest, ReasoningContentBecomesReasoningDelta) {
  auto ev = Decode({
      R"({"id":"c","choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"let me think"}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"reasoning_content":null,"content":"42"},"finish_reason":"stop"}]})",
      R"({"id":"c","choices":null,"usage":{"prompt_tokens":3,"completion_tokens":9,"completion_tokens_details":{"reasoning_tokens":6}}})"});
  ASSERT_EQ(ev.size(), 5u);
  EXPECT_EQ(ev[1].reasoning().text(), "let me think");
  EXPECT_EQ(ev[2].text().text(), "42");
  EXPECT_EQ(ev[4].usage().reasoning_tokens(), 6);
  EXPECT_EQ(ev[4].usage().output_tokens(), 9);
}

TEST(OpenAiDecoderTest, WholeResponseReasoningContent) {
  OpenAiDecoder d(0);
  std::vector<ChatEvent> out;
  ASSERT_TRUE(d.FeedResponse(R"({"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"ok","reasoning_content":"why"},"finish_reason":"stop"}]})", out).ok());
  ASSERT_GE(out.size(), 3u);
  EXPECT_EQ(out[1].reasoning().text(), "why");
  EXPECT_EQ(out[2].text().text(), "ok");
}

TEST(OpenAiDecoderTest, SeveralChoicesCarryTheirIndex) {
  OpenAiDecoder d(0);
  std::vector<ChatEvent> out;
  for (const char* c : {
           R"({"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"a"}},{"index":1,"delta":{"role":"assistant","content":"b"}}]})",
           R"({"id":"c","choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"call_x","type":"function","function":{"name":"f","arguments":"{}"}}]}}]})",
           R"({"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})"})
    ASSERT_TRUE(d.FeedChunk(c, out).ok());
  EXPECT_FALSE(d.finished());  // choice 1 has not finished
  d.Finish(out);
  int finishes = 0;
  for (const auto& e : out) {
    if (e.has_text()) {
      EXPECT_EQ(e.text().text(), e.choice_index() == 0 ? "a" : "b");
    }
    if (e.has_tool_call_start()) {
      EXPECT_EQ(e.choice_index(), 1);
      EXPECT_EQ(e.tool_call_start().index(), 0);  // dense per choice
    }
    if (e.has_finish()) ++finishes;
  }
  EXPECT_EQ(finishes, 2);  // Finish() closed choice 1
  EXPECT_TRUE(out.back().has_usage());
}

TEST(OpenAiDecoderTest, ToolCallsInOneChunkWithText) {
  auto ev = Decode({R"({"id":"c","choices":[{"index":0,"delta":{"content":"two calls","tool_calls":[
      {"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":"}},
      {"index":1,"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}]}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":"tool_calls"}]})"});
  std::vector<std::string> args(2);
  std::string text;
  for (const auto& e : ev) {
    if (e.has_text()) text += e.text().text();
    if (e.has_tool_call_delta()) args[e.tool_call_delta().index()] += e.tool_call_delta().arguments_fragment();
  }
  EXPECT_EQ(text, "two calls");
  EXPECT_EQ(args[0], "{\"x\":1}");
  EXPECT_EQ(args[1], "{}");
}

TEST(OpenAiBodyTest, ToolChoiceAllFourWays) {
  auto choice = [](auto set) {
    llmpb::ChatRequest req;
    auto* user = req.add_messages();
    user->set_role(llmpb::ROLE_USER);
    user->add_parts()->set_text("hi");
    req.add_tools()->set_name("f");
    set(*req.mutable_tool_choice());
    return boost::json::parse(BuildOpenAiChatBody(req, "m", false)).at("tool_choice");
  };
  using TC = llmpb::ToolChoice;
  EXPECT_EQ(choice([](TC& c) { c.set_mode(TC::MODE_AUTO); }), "auto");
  EXPECT_EQ(choice([](TC& c) { c.set_mode(TC::MODE_NONE); }), "none");
  EXPECT_EQ(choice([](TC& c) { c.set_mode(TC::MODE_REQUIRED); }), "required");
  EXPECT_EQ(choice([](TC& c) { c.set_function_name("f"); }),
            boost::json::parse(R"({"type":"function","function":{"name":"f"}})"));
}

// The canonical form of an Anthropic conversation (the edge puts tool results in ROLE_TOOL
// messages ahead of the rest of their user turn, and keeps a base64 image as bytes).
TEST(OpenAiBodyTest, AnthropicTurnsBecomeOpenAiMessages) {
  llmpb::ChatRequest req;
  auto* sys = req.add_messages();
  sys->set_role(llmpb::ROLE_SYSTEM);
  sys->add_parts()->set_text("rules");
  auto* user = req.add_messages();
  user->set_role(llmpb::ROLE_USER);
  user->add_parts()->set_text("what is this?");
  auto* image = user->add_parts()->mutable_image()->mutable_inline_data();
  image->set_mime_type("image/png");
  image->set_data("hello");
  auto* asst = req.add_messages();
  asst->set_role(llmpb::ROLE_ASSISTANT);
  asst->add_parts()->set_text("Let me look.");
  auto* call = asst->add_parts()->mutable_tool_call();
  call->set_id("toolu_1");
  call->set_name("zoom");
  call->set_arguments_json(R"({"factor":2})");
  auto* tool = req.add_messages();
  tool->set_role(llmpb::ROLE_TOOL);
  auto* result = tool->add_parts()->mutable_tool_result();
  result->set_tool_call_id("toolu_1");
  result->set_content("a cat");
  auto* rest = req.add_messages();
  rest->set_role(llmpb::ROLE_USER);
  rest->add_parts()->set_text("thanks");
  auto body = boost::json::parse(BuildOpenAiChatBody(req, "gpt", false));
  EXPECT_EQ(body.at("messages"), boost::json::parse(R"([
      {"role":"system","content":"rules"},
      {"role":"user","content":[{"type":"text","text":"what is this?"},
                                {"type":"image_url","image_url":{"url":"data:image/png;base64,aGVsbG8="}}]},
      {"role":"assistant","content":"Let me look.",
       "tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"zoom","arguments":"{\"factor\":2}"}}]},
      {"role":"tool","tool_call_id":"toolu_1","content":"a cat"},
      {"role":"user","content":"thanks"}])"));
}

llmpb::ChatRequest UserTurns() {
  llmpb::ChatRequest req;
  auto* sys = req.add_messages();
  sys->set_role(llmpb::ROLE_SYSTEM);
  sys->add_parts()->set_text("rules");
  auto* user = req.add_messages();
  user->set_role(llmpb::ROLE_USER);
  user->add_parts()->set_text("q1");
  user->add_parts()->set_text("q2");
  return req;
}

TEST(OpenAiBodyTest, ContextCachingMarksTheLastPartDashScopeStyle) {
  auto req = UserTurns();
  req.set_enable_context_caching(true);
  auto body = boost::json::parse(BuildOpenAiChatBody(req, "qwen", false));
  EXPECT_FALSE(body.as_object().contains("enable_context_caching"));
  const auto& msgs = body.at("messages").as_array();
  EXPECT_TRUE(msgs[0].at("content").is_string());  // unmarked turns keep the string form
  const auto& parts = msgs[1].at("content").as_array();
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_FALSE(parts[0].as_object().contains("cache_control"));
  EXPECT_EQ(parts[1].at("cache_control").at("type").as_string(), "ephemeral");
  EXPECT_EQ(parts[1].at("text").as_string(), "q2");
}

TEST(OpenAiBodyTest, CanonicalCacheControlBecomesAPartMark) {
  auto req = UserTurns();
  req.mutable_messages(0)->mutable_parts(0)->mutable_cache_control();
  auto body = boost::json::parse(BuildOpenAiChatBody(req, "qwen", false));
  const auto& msgs = body.at("messages").as_array();
  EXPECT_EQ(msgs[0].at("content").at(0).at("cache_control").at("type").as_string(), "ephemeral");
  EXPECT_TRUE(msgs[1].at("content").is_string());
}

TEST(OpenAiBodyTest, CacheMarkOnAToolResultAndOnAToolCall) {
  llmpb::ChatRequest req;
  auto* asst = req.add_messages();
  asst->set_role(llmpb::ROLE_ASSISTANT);
  asst->add_parts()->set_text("calling");
  auto* call = asst->add_parts();
  call->mutable_tool_call()->set_id("c1");
  call->mutable_tool_call()->set_name("f");
  call->mutable_cache_control();  // no OpenAI form: moves back to the text before it
  auto* tool = req.add_messages();
  tool->set_role(llmpb::ROLE_TOOL);
  auto* result = tool->add_parts();
  result->mutable_tool_result()->set_tool_call_id("c1");
  result->mutable_tool_result()->set_content("done");
  result->mutable_cache_control();
  auto body = boost::json::parse(BuildOpenAiChatBody(req, "qwen", false));
  const auto& msgs = body.at("messages").as_array();
  EXPECT_EQ(msgs[0].at("content").at(0).at("cache_control").at("type").as_string(), "ephemeral");
  EXPECT_EQ(msgs[0].at("tool_calls").at(0).at("id").as_string(), "c1");
  EXPECT_EQ(msgs[1].at("content").at(0).at("text").as_string(), "done");
  EXPECT_EQ(msgs[1].at("content").at(0).at("cache_control").at("type").as_string(), "ephemeral");
}

TEST(OpenAiBodyTest, NoCachingNoMarks) {
  auto body = BuildOpenAiChatBody(UserTurns(), "qwen", false);
  EXPECT_EQ(body.find("cache_control"), std::string::npos);
}

TEST(OpenAiBodyTest, RequestFieldsReachTheUpstream) {
  auto req = UserTurns();
  req.mutable_sampling()->set_n(2);
  req.mutable_sampling()->set_seed(9);
  req.mutable_sampling()->add_stop_sequences("END");
  req.set_user("u1");
  req.set_parallel_tool_calls(false);
  req.mutable_thinking()->set_enabled(true);
  req.mutable_thinking()->set_budget_tokens(1024);
  auto* rf = req.mutable_response_format();
  rf->set_type(llmpb::ResponseFormat::TYPE_JSON_SCHEMA);
  rf->set_name("p");
  rf->set_schema_json(R"({"type":"object"})");
  rf->set_strict(true);
  auto sync = boost::json::parse(BuildOpenAiChatBody(req, "qwen", false));
  EXPECT_FALSE(sync.as_object().contains("n"));  // a sync caller gets one choice
  EXPECT_EQ(sync.at("seed").as_int64(), 9);
  EXPECT_EQ(sync.at("stop").at(0).as_string(), "END");
  EXPECT_EQ(sync.at("user").as_string(), "u1");
  EXPECT_FALSE(sync.at("parallel_tool_calls").as_bool());
  EXPECT_TRUE(sync.at("enable_thinking").as_bool());
  EXPECT_EQ(sync.at("thinking_budget").as_int64(), 1024);
  EXPECT_EQ(sync.at("response_format").at("json_schema").at("name").as_string(), "p");
  EXPECT_TRUE(sync.at("response_format").at("json_schema").at("strict").as_bool());
  req.set_stream(true);
  auto streamed = boost::json::parse(BuildOpenAiChatBody(req, "qwen", true));
  EXPECT_EQ(streamed.at("n").as_int64(), 2);
}

TEST(TopLevelMemberTest, SetReplacesOrInsertsKeepingEveryOtherByte) {
  std::string body = R"({ "model" : "m", "x_unknown": {"model":"inner"}, "n":2 })";
  EXPECT_EQ(*SetTopLevelMember(body, "n", "3"), R"({ "model" : "m", "x_unknown": {"model":"inner"}, "n":3 })");
  EXPECT_EQ(*ReplaceTopLevelModel(body, "up"), R"({ "model" : "up", "x_unknown": {"model":"inner"}, "n":2 })");
  EXPECT_EQ(*SetTopLevelMember(body, "stream_options", "{}"),
            R"({"stream_options":{}, "model" : "m", "x_unknown": {"model":"inner"}, "n":2 })");
  EXPECT_EQ(*SetTopLevelMember("{ }", "a", "1"), R"({"a":1 })");
  EXPECT_EQ(*TopLevelMember(body, "x_unknown"), R"({"model":"inner"})");
  EXPECT_FALSE(TopLevelMember(body, "missing").has_value());
  EXPECT_FALSE(SetTopLevelMember("[1]", "a", "1").has_value());
  EXPECT_FALSE(SetTopLevelMember(R"({"a":"unterminated)", "a", "1").has_value());
  EXPECT_FALSE(ReplaceTopLevelModel(R"({"n":1})", "up").has_value());
}

llmpb::ChatRequest OpenAiPassThrough(std::string body, bool stream, bool include_usage) {
  llmpb::ChatRequest r;
  r.set_protocol(llmpb::PROTOCOL_OPENAI);
  r.set_stream(stream);
  r.set_include_usage(include_usage);
  r.mutable_raw()->set_protocol(llmpb::PROTOCOL_OPENAI);
  r.mutable_raw()->set_body(std::move(body));
  return r;
}

TEST(OpenAiCodecTest, PassThroughKeepsTheCallersBodyApartFromTheModel) {
  ProviderConfig p;
  p.kind = "openai";
  p.base_url = "https://api.example/v1";
  CallTarget target{&p, "up-model", false, 0};
  auto r = OpenAiPassThrough(R"({"model":"pub","messages":[],"logprobs":true,"x_new_field":[1,2]})", false, false);
  UpstreamCall call = OpenAiCodec().BuildCall(r, target);
  EXPECT_TRUE(call.passthrough);
  EXPECT_EQ(call.body, R"({"model":"up-model","messages":[],"logprobs":true,"x_new_field":[1,2]})");
  EXPECT_FALSE(call.relay_event);
}

TEST(OpenAiCodecTest, PassThroughStreamAsksForUsageAndHidesTheUsageChunk) {
  ProviderConfig p;
  p.kind = "openai";
  p.base_url = "https://api.example/v1";
  CallTarget target{&p, "up", true, 0};
  // Asked by the caller: nothing changes, every event is relayed.
  auto asked = OpenAiPassThrough(R"({"model":"pub","stream":true,"stream_options":{"include_usage":true}})", true, true);
  UpstreamCall call = OpenAiCodec().BuildCall(asked, target);
  EXPECT_EQ(call.body, R"({"model":"up","stream":true,"stream_options":{"include_usage":true}})");
  EXPECT_FALSE(call.relay_event);
  // Not asked: asked for billing, and the usage-only chunk stays with the gateway.
  auto silent = OpenAiPassThrough(R"({"model":"pub","stream":true})", true, false);
  call = OpenAiCodec().BuildCall(silent, target);
  EXPECT_EQ(call.body, R"({"stream_options":{"include_usage":true},"model":"up","stream":true})");
  ASSERT_TRUE(call.relay_event);
  EXPECT_TRUE(call.relay_event("", R"({"choices":[{"index":0,"delta":{"content":"hi"}}]})"));
  EXPECT_TRUE(call.relay_event("", R"({"choices":[{"index":0,"delta":{}}],"usage":null})"));
  EXPECT_TRUE(call.relay_event("", "[DONE]"));
  EXPECT_FALSE(call.relay_event("", R"({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}})"));
  // The same chunk as some upstreams write it: `choices` null or left out.
  EXPECT_FALSE(call.relay_event("", R"({"choices":null,"usage":{"prompt_tokens":3,"completion_tokens":1}})"));
  EXPECT_FALSE(call.relay_event("", R"({"id":"c","usage":{"prompt_tokens":3,"completion_tokens":1}})"));
  // A last content chunk that also carries the usage is the caller's.
  EXPECT_TRUE(call.relay_event("", R"({"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}})"));
  // stream_options given without include_usage: completed in place.
  auto partial = OpenAiPassThrough(R"({"model":"pub","stream":true,"stream_options":{"x":1}})", true, false);
  call = OpenAiCodec().BuildCall(partial, target);
  EXPECT_EQ(call.body, R"({"model":"up","stream":true,"stream_options":{"x":1,"include_usage":true}})");
}

TEST(SseTest, SerializedEventsParseBackTheSame) {
  SseEvent named{"message_delta", "{\"a\":1}"};
  EXPECT_EQ(SerializeSseEvent(named), "event: message_delta\ndata: {\"a\":1}\n\n");
  SseEvent lines{"", "one\ntwo"};
  EXPECT_EQ(SerializeSseEvent(lines), "data: one\ndata: two\n\n");
  SseParser parser;
  std::vector<SseEvent> back;
  parser.Feed(SerializeSseEvent(lines) + SerializeSseEvent(named), back);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].data, "one\ntwo");
  EXPECT_EQ(back[1].event, "message_delta");
}

TEST(UnservableElementTest, NativeToolsAndFilesStayWithTheirProtocol) {
  llmpb::ChatRequest r;
  r.add_tools()->set_name("f");
  EXPECT_FALSE(UnservableElement(r, llmpb::PROTOCOL_OPENAI));
  auto* search = r.add_tools();
  search->set_name("web_search");
  search->set_native_json(R"({"type":"web_search_20250305","name":"web_search"})");
  search->set_native_protocol(llmpb::PROTOCOL_ANTHROPIC);
  EXPECT_FALSE(UnservableElement(r, llmpb::PROTOCOL_ANTHROPIC));
  auto why = UnservableElement(r, llmpb::PROTOCOL_GEMINI);
  ASSERT_TRUE(why);
  EXPECT_EQ(*why, "tools[1] (web_search) is a built-in tool of the anthropic protocol, and this "
                  "model's upstream speaks gemini");
  llmpb::ChatRequest files;
  auto* m = files.add_messages();
  m->add_parts()->set_text("see");
  m->add_parts()->mutable_document()->set_file_id("file_1");
  EXPECT_FALSE(UnservableElement(files, llmpb::PROTOCOL_ANTHROPIC));
  EXPECT_TRUE(UnservableElement(files, llmpb::PROTOCOL_OPENAI));
  // The OpenAI body leaves a native tool out rather than sending it as a function.
  EXPECT_EQ(BuildOpenAiChatBody(r, "m", false).find("web_search"), std::string::npos);
}

}  // namespace
}  // namespace nexusflow::connector

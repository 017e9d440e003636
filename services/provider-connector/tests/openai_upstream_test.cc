#include <gtest/gtest.h>

#include <boost/json.hpp>

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

}  // namespace
}  // namespace nexusflow::connector

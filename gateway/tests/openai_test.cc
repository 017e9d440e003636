#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "gateway/protocols/openai.h"
#include "libs/common/sse.h"

namespace nexusflow::gateway::openai {
namespace {

namespace json = boost::json;

ParsedChat MustParse(const std::string& body) {
  ParsedChat out;
  HttpError err;
  EXPECT_TRUE(ParseChatRequest(body, &out, &err)) << err.message;
  return out;
}

HttpError MustFail(const std::string& body) {
  ParsedChat out;
  HttpError err;
  EXPECT_FALSE(ParseChatRequest(body, &out, &err));
  EXPECT_EQ(err.status, 400);
  return err;
}

TEST(OpenAiParseTest, MessagesToolsAndSamplingBecomeCanonical) {
  auto p = MustParse(R"({"model":"m","messages":[
      {"role":"developer","content":"be brief"},
      {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]},
      {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},
      {"role":"tool","tool_call_id":"call_1","content":"42"}],
    "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
    "tool_choice":{"type":"function","function":{"name":"f"}},
    "max_tokens":10,"max_completion_tokens":20,"temperature":0.5,"stop":"END",
    "stream":true,"stream_options":{"include_usage":true}})");
  const auto& r = p.request;
  EXPECT_EQ(r.model(), "m");
  ASSERT_EQ(r.messages_size(), 4);
  EXPECT_EQ(r.messages(0).role(), llm::v1::ROLE_SYSTEM);
  EXPECT_TRUE(r.messages(1).parts(1).has_image());
  EXPECT_EQ(r.messages(2).parts(0).tool_call().id(), "call_1");
  EXPECT_EQ(r.messages(3).parts(0).tool_result().content(), "42");
  EXPECT_EQ(r.tool_choice().function_name(), "f");
  EXPECT_EQ(r.sampling().max_output_tokens(), 20);  // max_completion_tokens wins
  EXPECT_EQ(r.sampling().stop_sequences(0), "END");
  EXPECT_TRUE(r.stream());
  EXPECT_TRUE(p.include_usage);
}

TEST(OpenAiParseTest, BadInputNamesTheParameter) {
  EXPECT_EQ(MustFail("not json").param, "");
  EXPECT_EQ(MustFail(R"({"messages":[{"role":"user","content":"x"}]})").param, "model");
  EXPECT_EQ(MustFail(R"({"model":"m","messages":[]})").param, "messages");
  EXPECT_EQ(MustFail(R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})").param, "messages[0].role");
  EXPECT_EQ(MustFail(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3})").param, "temperature");
  EXPECT_EQ(MustFail(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"})").param, "max_tokens");
  EXPECT_EQ(MustFail(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}})").param, "stream_options");
  EXPECT_EQ(MustFail(R"({"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"g"}},"tools":[{"type":"function","function":{"name":"f"}}]})").param, "tool_choice");
}

TEST(OpenAiRenderTest, StreamFramesFollowTheWireFormat) {
  auto r = NewChatRenderer("chatcmpl-1", "m", 7, true);
  llm::v1::ChatEvent start;
  start.mutable_start();
  llm::v1::ChatEvent call;
  call.mutable_tool_call_start()->set_index(0);
  call.mutable_tool_call_start()->set_id("call_1");
  call.mutable_tool_call_start()->set_name("f");
  llm::v1::ChatEvent finish;
  finish.mutable_finish()->set_reason(llm::v1::FINISH_REASON_TOOL_CALLS);
  llm::v1::ChatEvent usage;
  usage.mutable_usage()->set_input_tokens(5);
  usage.mutable_usage()->set_cache_read_tokens(3);
  usage.mutable_usage()->set_output_tokens(2);
  std::string frames = r->StreamEvent(start) + r->StreamEvent(call) + r->StreamEvent(finish) +
                       r->StreamEvent(usage) + r->StreamEnd();
  SseParser parser;
  std::vector<SseEvent> events;
  parser.Feed(frames, events);
  ASSERT_EQ(events.size(), 5u);
  auto first = json::parse(events[0].data);
  EXPECT_EQ(first.at("object").as_string(), "chat.completion.chunk");
  EXPECT_EQ(first.at("choices").at(0).at("delta").at("role").as_string(), "assistant");
  EXPECT_TRUE(first.at("usage").is_null());
  auto tc = json::parse(events[1].data).at("choices").at(0).at("delta").at("tool_calls").at(0);
  EXPECT_EQ(tc.at("id").as_string(), "call_1");
  EXPECT_EQ(tc.at("function").at("arguments").as_string(), "");
  EXPECT_EQ(json::parse(events[2].data).at("choices").at(0).at("finish_reason").as_string(), "tool_calls");
  auto u = json::parse(events[3].data);
  EXPECT_TRUE(u.at("choices").as_array().empty());
  EXPECT_EQ(u.at("usage").at("prompt_tokens").as_int64(), 8);  // includes cached
  EXPECT_EQ(u.at("usage").at("prompt_tokens_details").at("cached_tokens").as_int64(), 3);
  EXPECT_EQ(events[4].data, "[DONE]");
}

TEST(OpenAiRenderTest, SyncBodyCarriesToolCallsAndNullContent) {
  auto r = NewChatRenderer("chatcmpl-1", "m", 7, false);
  ChatAnswer a;
  a.tool_calls.push_back({"call_1", "f", "{\"a\":1}"});
  a.finish = llm::v1::FINISH_REASON_TOOL_CALLS;
  auto body = json::parse(r->SyncBody(a));
  const auto& msg = body.at("choices").at(0).at("message");
  EXPECT_TRUE(msg.at("content").is_null());
  EXPECT_EQ(msg.at("tool_calls").at(0).at("function").at("arguments").as_string(), "{\"a\":1}");
  EXPECT_EQ(body.at("choices").at(0).at("finish_reason").as_string(), "tool_calls");
}

}  // namespace
}  // namespace nexusflow::gateway::openai

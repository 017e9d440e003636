#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <map>

#include "gateway/protocols/openai.h"
#include "libs/common/sse.h"
#include "services/provider-connector/anthropic_upstream.h"
#include "services/provider-connector/gemini_upstream.h"

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

// ---------------------------------------------------------------------------------------
// OpenAI request → canonical (PROTOCOLS.md §E, OpenAI → Anthropic/Gemini; the connector's
// codec tests cover the canonical → upstream half).
// Covers: system/developer → ROLE_SYSTEM (MessagesToolsAndSamplingBecomeCanonical,
// DeveloperRoleIsSystem); max_completion_tokens ?? max_tokens (same,
// ScalarFieldsBecomeCanonical); stop ≤ 4 (StopIsAStringOrUpToFourStrings); tool_choice all
// four ways (ToolChoiceAllFourWays); tool_calls with `arguments` and tool messages
// (ToolMessagesAndAssistantToolCalls); data: URL images (MessagesToolsAndSampling…).

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

// Builds a body with one user message plus `extra` top-level fields.
std::string With(const std::string& extra) {
  return R"({"model":"m","messages":[{"role":"user","content":"x"}])" + (extra.empty() ? "" : "," + extra) + "}";
}

TEST(OpenAiParseTest, NSetsTheChoiceCount) {
  EXPECT_EQ(MustParse(With(R"("n":3)")).request.sampling().n(), 3);
  EXPECT_EQ(MustParse(With(R"("n":1)")).request.sampling().n(), 1);
  EXPECT_EQ(MustParse(With("")).request.sampling().n(), 0);
  EXPECT_EQ(MustFail(With(R"("n":0)")).param, "n");
  EXPECT_EQ(MustFail(With(R"("n":"2")")).param, "n");
  EXPECT_EQ(MustFail(With(R"("n":1.5)")).param, "n");
}

TEST(OpenAiParseTest, StopIsAStringOrUpToFourStrings) {
  auto r = MustParse(With(R"("stop":["a","b","c","d"])")).request;
  ASSERT_EQ(r.sampling().stop_sequences_size(), 4);
  EXPECT_EQ(r.sampling().stop_sequences(3), "d");
  EXPECT_EQ(MustParse(With(R"("stop":"END")")).request.sampling().stop_sequences(0), "END");
  EXPECT_EQ(MustParse(With(R"("stop":null)")).request.sampling().stop_sequences_size(), 0);
  EXPECT_EQ(MustFail(With(R"("stop":["a","b","c","d","e"])")).param, "stop");
  EXPECT_EQ(MustFail(With(R"("stop":["a",1])")).param, "stop[1]");
  EXPECT_EQ(MustFail(With(R"("stop":7)")).param, "stop");
}

TEST(OpenAiParseTest, ResponseFormatBecomesCanonical) {
  using RF = llm::v1::ResponseFormat;
  EXPECT_EQ(MustParse(With(R"("response_format":{"type":"text"})")).request.response_format().type(), RF::TYPE_TEXT);
  EXPECT_EQ(MustParse(With(R"("response_format":{"type":"json_object"})")).request.response_format().type(),
            RF::TYPE_JSON_OBJECT);
  auto rf = MustParse(With(R"("response_format":{"type":"json_schema","json_schema":{"name":"person","strict":true,"schema":{"type":"object","properties":{"a":{"type":"string"}}}}})"))
                .request.response_format();
  EXPECT_EQ(rf.type(), RF::TYPE_JSON_SCHEMA);
  EXPECT_EQ(rf.name(), "person");
  EXPECT_TRUE(rf.strict());
  EXPECT_EQ(json::parse(rf.schema_json()).at("properties").at("a").at("type").as_string(), "string");
}

TEST(OpenAiParseTest, BadResponseFormatNamesTheField) {
  EXPECT_EQ(MustFail(With(R"("response_format":"json")")).param, "response_format");
  EXPECT_EQ(MustFail(With(R"("response_format":{})")).param, "response_format.type");
  EXPECT_EQ(MustFail(With(R"("response_format":{"type":"yaml"})")).param, "response_format.type");
  EXPECT_EQ(MustFail(With(R"("response_format":{"type":"json_schema"})")).param, "response_format.json_schema");
  EXPECT_EQ(MustFail(With(R"("response_format":{"type":"json_schema","json_schema":{"schema":{}}})")).param,
            "response_format.json_schema.name");
  EXPECT_EQ(MustFail(With(R"("response_format":{"type":"json_schema","json_schema":{"name":"p","schema":[]}})")).param,
            "response_format.json_schema.schema");
  EXPECT_EQ(MustFail(With(R"("response_format":{"type":"json_schema","json_schema":{"name":"p","strict":"yes"}})")).param,
            "response_format.json_schema.strict");
}

TEST(OpenAiParseTest, ReasoningEffortEnablesThinkingWithABudget) {
  auto low = MustParse(With(R"("reasoning_effort":"low")")).request.thinking();
  EXPECT_TRUE(low.enabled());
  EXPECT_EQ(low.budget_tokens(), 1024);
  EXPECT_EQ(MustParse(With(R"("reasoning_effort":"medium")")).request.thinking().budget_tokens(), 4096);
  EXPECT_EQ(MustParse(With(R"("reasoning_effort":"high")")).request.thinking().budget_tokens(), 16384);
  EXPECT_FALSE(MustParse(With(R"("reasoning_effort":"none")")).request.thinking().enabled());
  // An explicit thinking_budget (DashScope) wins over the effort's default.
  EXPECT_EQ(MustParse(With(R"("reasoning_effort":"high","thinking_budget":300)")).request.thinking().budget_tokens(), 300);
  EXPECT_EQ(MustFail(With(R"("reasoning_effort":"extreme")")).param, "reasoning_effort");
  EXPECT_EQ(MustFail(With(R"("reasoning_effort":2)")).param, "reasoning_effort");
  EXPECT_EQ(MustFail(With(R"("enable_thinking":"yes")")).param, "enable_thinking");
}

TEST(OpenAiParseTest, LogprobsAreValidated) {
  MustParse(With(R"("logprobs":true,"top_logprobs":5)"));
  MustParse(With(R"("logprobs":false)"));
  EXPECT_EQ(MustFail(With(R"("logprobs":"yes")")).param, "logprobs");
  EXPECT_EQ(MustFail(With(R"("logprobs":true,"top_logprobs":21)")).param, "top_logprobs");
  EXPECT_EQ(MustFail(With(R"("top_logprobs":2)")).param, "top_logprobs");  // needs logprobs
}

TEST(OpenAiParseTest, ScalarFieldsBecomeCanonical) {
  auto r = MustParse(With(R"("parallel_tool_calls":false,"user":"u-1","seed":-7,"enable_context_caching":true,
                              "tools":[{"type":"function","function":{"name":"f"}}],
                              "top_p":0.5,"presence_penalty":-1,"frequency_penalty":2)")).request;
  EXPECT_TRUE(r.has_parallel_tool_calls());
  EXPECT_FALSE(r.parallel_tool_calls());
  EXPECT_TRUE(r.tool_choice().disable_parallel_tool_use());
  EXPECT_EQ(r.user(), "u-1");
  EXPECT_EQ(r.sampling().seed(), -7);
  EXPECT_TRUE(r.enable_context_caching());
  EXPECT_DOUBLE_EQ(r.sampling().top_p(), 0.5);
  EXPECT_DOUBLE_EQ(r.sampling().presence_penalty(), -1);
  EXPECT_DOUBLE_EQ(r.sampling().frequency_penalty(), 2);
  EXPECT_EQ(MustParse(With(R"("max_tokens":10)")).request.sampling().max_output_tokens(), 10);
  EXPECT_EQ(MustParse(With(R"("max_completion_tokens":30,"max_tokens":10)")).request.sampling().max_output_tokens(), 30);
}

TEST(OpenAiParseTest, WrongScalarTypesNameTheParameter) {
  EXPECT_EQ(MustFail(With(R"("parallel_tool_calls":1)")).param, "parallel_tool_calls");
  EXPECT_EQ(MustFail(With(R"("user":5)")).param, "user");
  EXPECT_EQ(MustFail(With(R"("seed":"x")")).param, "seed");
  EXPECT_EQ(MustFail(With(R"("seed":1.5)")).param, "seed");
  EXPECT_EQ(MustFail(With(R"("enable_context_caching":"true")")).param, "enable_context_caching");
  EXPECT_EQ(MustFail(With(R"("max_completion_tokens":0)")).param, "max_completion_tokens");
  EXPECT_EQ(MustFail(With(R"("max_completion_tokens":5,"max_tokens":"x")")).param, "max_tokens");
  EXPECT_EQ(MustFail(With(R"("top_p":1.5)")).param, "top_p");
  EXPECT_EQ(MustFail(With(R"("presence_penalty":-3)")).param, "presence_penalty");
  EXPECT_EQ(MustFail(With(R"("frequency_penalty":"a")")).param, "frequency_penalty");
  EXPECT_EQ(MustFail(With(R"("stream":"yes")")).param, "stream");
  EXPECT_EQ(MustFail(With(R"("stream":true,"stream_options":{"include_usage":1})")).param, "stream_options.include_usage");
  EXPECT_EQ(MustFail(With(R"("tools":{})")).param, "tools");
  EXPECT_EQ(MustFail(With(R"("tools":[{"type":"function","function":{"name":"f","parameters":"x"}}])")).param,
            "tools[0].function.parameters");
  EXPECT_EQ(MustFail(With(R"("tools":[{"type":"function","function":{"name":"f","strict":"x"}}])")).param,
            "tools[0].function.strict");
  EXPECT_EQ(MustFail(With(R"("tools":[{"type":"function","function":{"name":7}}])")).param, "tools[0].function.name");
  EXPECT_EQ(MustFail(With(R"("tool_choice":"sometimes")")).param, "tool_choice");
  EXPECT_EQ(MustFail(With(R"("tool_choice":"required")")).param, "tool_choice");  // no tools
  EXPECT_EQ(MustFail(R"({"model":7,"messages":[{"role":"user","content":"x"}]})").param, "model");
  EXPECT_EQ(MustFail(R"({"model":"m","messages":{}})").param, "messages");
}

TEST(OpenAiParseTest, ContentPartsTextImageAndCacheMarks) {
  auto r = MustParse(R"({"model":"m","messages":[
      {"role":"system","content":[{"type":"text","text":"long rules","cache_control":{"type":"ephemeral"}}]},
      {"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}},
                                {"type":"text","text":"what?","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]})").request;
  ASSERT_EQ(r.messages_size(), 2);
  EXPECT_EQ(r.messages(0).parts(0).text(), "long rules");
  EXPECT_TRUE(r.messages(0).parts(0).has_cache_control());
  EXPECT_EQ(r.messages(1).parts(0).image().url(), "https://x/y.png");
  EXPECT_EQ(r.messages(1).parts(0).image().detail(), "low");
  EXPECT_FALSE(r.messages(1).parts(0).has_cache_control());
  EXPECT_EQ(r.messages(1).parts(1).cache_control().ttl().seconds(), 3600);
}

TEST(OpenAiParseTest, BadContentPartsNameThePart) {
  auto user = [](const std::string& content) {
    return R"({"model":"m","messages":[{"role":"user","content":)" + content + "}]}";
  };
  HttpError audio = MustFail(user(R"([{"type":"input_audio","input_audio":{"data":"AA==","format":"wav"}}])"));
  EXPECT_EQ(audio.param, "messages[0].content[0].type");
  EXPECT_NE(audio.message.find("input_audio"), std::string::npos);
  EXPECT_EQ(MustFail(user(R"([{"type":"video"}])")).param, "messages[0].content[0].type");
  EXPECT_EQ(MustFail(user(R"([{"text":"x"}])")).param, "messages[0].content[0].type");
  EXPECT_EQ(MustFail(user(R"([{"type":"text"}])")).param, "messages[0].content[0].text");
  EXPECT_EQ(MustFail(user(R"([{"type":"text","text":3}])")).param, "messages[0].content[0].text");
  EXPECT_EQ(MustFail(user(R"([{"type":"image_url"}])")).param, "messages[0].content[0].image_url");
  EXPECT_EQ(MustFail(user(R"([{"type":"image_url","image_url":{}}])")).param, "messages[0].content[0].image_url.url");
  EXPECT_EQ(MustFail(user(R"([{"type":"image_url","image_url":{"url":"https://x","detail":"ultra"}}])")).param,
            "messages[0].content[0].image_url.detail");
  EXPECT_EQ(MustFail(user(R"([{"type":"text","text":"x","cache_control":{"type":"forever"}}])")).param,
            "messages[0].content[0].cache_control.type");
  EXPECT_EQ(MustFail(user(R"([{"type":"text","text":"x","cache_control":{"type":"ephemeral","ttl":"1d"}}])")).param,
            "messages[0].content[0].cache_control.ttl");
  EXPECT_EQ(MustFail(user("42")).param, "messages[0].content");
  EXPECT_EQ(MustFail(user(R"(["hi"])")).param, "messages[0].content[0]");
  // Images only in user turns.
  EXPECT_EQ(MustFail(R"({"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x"}}]}]})").param,
            "messages[0].content[0].type");
}

TEST(OpenAiParseTest, ToolMessagesAndAssistantToolCalls) {
  auto r = MustParse(R"({"model":"m","messages":[
      {"role":"user","content":"weather?"},
      {"role":"assistant","content":null,"refusal":null,"annotations":[],"tool_calls":[
         {"id":"call_a","type":"function","function":{"name":"w","arguments":"{\"city\":\"Oslo\"}"}},
         {"id":"call_b","type":"function","function":{"name":"t","arguments":""}}]},
      {"role":"tool","tool_call_id":"call_a","content":[{"type":"text","text":"cold"},{"type":"text","text":"!"}]},
      {"role":"tool","tool_call_id":"call_b","content":"12:00"}]})").request;
  ASSERT_EQ(r.messages_size(), 4);
  const auto& asst = r.messages(1);
  EXPECT_EQ(asst.role(), llm::v1::ROLE_ASSISTANT);
  ASSERT_EQ(asst.parts_size(), 2);
  EXPECT_EQ(asst.parts(0).tool_call().name(), "w");
  EXPECT_EQ(asst.parts(0).tool_call().arguments_json(), R"({"city":"Oslo"})");
  EXPECT_EQ(asst.parts(1).tool_call().arguments_json(), "{}");
  EXPECT_EQ(r.messages(2).role(), llm::v1::ROLE_TOOL);
  EXPECT_EQ(r.messages(2).parts(0).tool_result().tool_call_id(), "call_a");
  EXPECT_EQ(r.messages(2).parts(0).tool_result().content(), "cold!");
  EXPECT_EQ(r.messages(3).parts(0).tool_result().content(), "12:00");
}

TEST(OpenAiParseTest, BadToolMessagesNameTheField) {
  auto msgs = [](const std::string& m) { return R"({"model":"m","messages":[)" + m + "]}"; };
  EXPECT_EQ(MustFail(msgs(R"({"role":"tool","content":"x"})")).param, "messages[0].tool_call_id");
  EXPECT_EQ(MustFail(msgs(R"({"role":"tool","tool_call_id":5,"content":"x"})")).param, "messages[0].tool_call_id");
  EXPECT_EQ(MustFail(msgs(R"({"role":"tool","tool_call_id":"c","content":5})")).param, "messages[0].content");
  EXPECT_EQ(MustFail(msgs(R"({"role":"assistant","tool_calls":{}})")).param, "messages[0].tool_calls");
  EXPECT_EQ(MustFail(msgs(R"({"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f"}}]})")).param,
            "messages[0].tool_calls[0].id");
  EXPECT_EQ(MustFail(msgs(R"({"role":"assistant","tool_calls":[{"id":"c","type":"function"}]})")).param,
            "messages[0].tool_calls[0].function");
  EXPECT_EQ(MustFail(msgs(R"({"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":{}}}]})")).param,
            "messages[0].tool_calls[0].function.arguments");
  EXPECT_EQ(MustFail(msgs(R"({"role":"system"})")).param, "messages[0].content");
  EXPECT_EQ(MustFail(msgs(R"({"role":5,"content":"x"})")).param, "messages[0].role");
  EXPECT_EQ(MustFail(msgs(R"({"role":"user","content":"x","name":5})")).param, "messages[0].name");
}

TEST(OpenAiParseTest, DeveloperRoleIsSystem) {
  auto r = MustParse(R"({"model":"m","messages":[{"role":"developer","content":[{"type":"text","text":"rules"}]},{"role":"user","content":"x"}]})").request;
  EXPECT_EQ(r.messages(0).role(), llm::v1::ROLE_SYSTEM);
  EXPECT_EQ(r.messages(0).parts(0).text(), "rules");
}

TEST(OpenAiParseTest, ToolChoiceAllFourWays) {
  const std::string tools = R"("tools":[{"type":"function","function":{"name":"f"}}],)";
  auto choice = [&](const std::string& tc) { return MustParse(With(tools + R"("tool_choice":)" + tc)).request.tool_choice(); };
  EXPECT_EQ(choice(R"("auto")").mode(), llm::v1::ToolChoice::MODE_AUTO);
  EXPECT_EQ(choice(R"("none")").mode(), llm::v1::ToolChoice::MODE_NONE);
  EXPECT_EQ(choice(R"("required")").mode(), llm::v1::ToolChoice::MODE_REQUIRED);
  EXPECT_EQ(choice(R"({"type":"function","function":{"name":"f"}})").function_name(), "f");
}

// ---------------------------------------------------------------------------------------
// Canonical answer → OpenAI (PROTOCOLS.md §A, §E, Anthropic/Gemini → OpenAI).
// Covers: usage with cache tokens (StreamFramesFollowTheWireFormat,
// UsageCountsCacheAndReasoningTokens) and without (UsageWithoutCacheTokensReportsZeros);
// the usage chunk's `choices` is [] never null (EveryChoiceGetsAFinishReasonBeforeUsage);
// several tool calls interleaved with text, dense indexes, one chunk with content and
// finish (StreamToolCallsInterleavedWithText); every finish_reason
// (EveryFinishReasonRenders); an error after the 200 (AnErrorAfterTheStartIsAnErrorLine).
// Through the connector's decoders: an Anthropic stream with ping, interleaved tools and
// an empty partial_json (AnthropicStreamBecomesOpenAiChunks); every Anthropic stop_reason,
// model_context_window_exceeded → length (AnthropicStopReasonsBecomeFinishReasons); an
// Anthropic `error` event after the 200 (AnthropicErrorAfterTheStartIsAnErrorLine);
// Gemini's STOP carrying functionCalls (GeminiStopWithFunctionCallsIsToolCalls).

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
  // The renderer keeps per-choice state: render in order (operands of + are unsequenced).
  std::string frames = r->StreamEvent(start);
  frames += r->StreamEvent(call);
  frames += r->StreamEvent(finish);
  frames += r->StreamEvent(usage);
  frames += r->StreamEnd();
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
  a.tool_calls.push_back({"call_1", "f", "{\"a\":1}", ""});
  a.finish = llm::v1::FINISH_REASON_TOOL_CALLS;
  auto body = json::parse(r->SyncBody(a));
  const auto& msg = body.at("choices").at(0).at("message");
  EXPECT_TRUE(msg.at("content").is_null());
  EXPECT_EQ(msg.at("tool_calls").at(0).at("function").at("arguments").as_string(), "{\"a\":1}");
  EXPECT_EQ(body.at("choices").at(0).at("finish_reason").as_string(), "tool_calls");
}

std::vector<json::value> Frames(const std::string& frames) {
  SseParser parser;
  std::vector<SseEvent> events;
  parser.Feed(frames, events);
  std::vector<json::value> out;
  for (const auto& e : events) out.push_back(e.data == "[DONE]" ? json::value("[DONE]") : json::parse(e.data));
  return out;
}

llm::v1::ChatEvent TextEvent(int32_t choice, const std::string& text) {
  llm::v1::ChatEvent e;
  e.set_choice_index(choice);
  e.mutable_text()->set_text(text);
  return e;
}

llm::v1::ChatEvent FinishEvent(int32_t choice, llm::v1::FinishReason reason) {
  llm::v1::ChatEvent e;
  e.set_choice_index(choice);
  e.mutable_finish()->set_reason(reason);
  return e;
}

TEST(OpenAiRenderTest, StreamRendersEachChoiceByIndex) {
  auto r = NewChatRenderer("chatcmpl-1", "m", 7, false);
  llm::v1::ChatEvent start;
  start.mutable_start();
  std::string frames = r->StreamEvent(start);
  frames += r->StreamEvent(TextEvent(0, "a"));
  frames += r->StreamEvent(TextEvent(1, "b"));
  frames += r->StreamEvent(FinishEvent(1, llm::v1::FINISH_REASON_LENGTH));
  frames += r->StreamEvent(FinishEvent(0, llm::v1::FINISH_REASON_STOP));
  frames += r->StreamEnd();
  auto f = Frames(frames);
  ASSERT_EQ(f.size(), 6u);
  EXPECT_FALSE(f[0].as_object().contains("usage"));  // only with include_usage
  const auto& c1 = f[2].at("choices").at(0);
  EXPECT_EQ(c1.at("index").as_int64(), 1);
  EXPECT_EQ(c1.at("delta").at("role").as_string(), "assistant");  // first delta of choice 1
  EXPECT_EQ(c1.at("delta").at("content").as_string(), "b");
  EXPECT_FALSE(f[1].at("choices").at(0).at("delta").as_object().contains("role"));  // choice 0 had it
  EXPECT_EQ(f[3].at("choices").at(0).at("index").as_int64(), 1);
  EXPECT_EQ(f[3].at("choices").at(0).at("finish_reason").as_string(), "length");
  EXPECT_EQ(f[4].at("choices").at(0).at("index").as_int64(), 0);
  EXPECT_EQ(f[4].at("choices").at(0).at("finish_reason").as_string(), "stop");
  EXPECT_EQ(f[5].as_string(), "[DONE]");
}

TEST(OpenAiRenderTest, EveryChoiceGetsAFinishReasonBeforeUsage) {
  auto r = NewChatRenderer("chatcmpl-1", "m", 7, true);
  std::string frames = r->StreamEvent(TextEvent(0, "a"));
  frames += r->StreamEvent(TextEvent(1, "b"));
  frames += r->StreamEvent(FinishEvent(0, llm::v1::FINISH_REASON_STOP));
  llm::v1::ChatEvent usage;
  usage.mutable_usage()->set_output_tokens(2);
  frames += r->StreamEvent(usage);
  frames += r->StreamEnd();
  auto f = Frames(frames);
  ASSERT_EQ(f.size(), 6u);
  EXPECT_EQ(f[3].at("choices").at(0).at("index").as_int64(), 1);
  EXPECT_EQ(f[3].at("choices").at(0).at("finish_reason").as_string(), "stop");
  EXPECT_TRUE(f[4].at("choices").as_array().empty());  // never null
  EXPECT_EQ(f[4].at("usage").at("completion_tokens").as_int64(), 2);
}

TEST(OpenAiRenderTest, ReasoningStreamsAsReasoningContent) {
  auto r = NewChatRenderer("chatcmpl-1", "m", 7, false);
  llm::v1::ChatEvent e;
  e.mutable_reasoning()->set_text("hmm");
  auto f = Frames(r->StreamEvent(e));
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].at("choices").at(0).at("delta").at("reasoning_content").as_string(), "hmm");
  llm::v1::ChatEvent sig;
  sig.mutable_reasoning()->set_signature("opaque");
  EXPECT_EQ(r->StreamEvent(sig), "");  // a bare signature has no OpenAI form
}

TEST(OpenAiRenderTest, UsageCountsCacheAndReasoningTokens) {
  auto r = NewChatRenderer("chatcmpl-1", "m", 7, false);
  ChatAnswer a;
  a.text = "42";
  a.reasoning = "thinking it over";
  a.finish = llm::v1::FINISH_REASON_STOP;
  a.usage.set_input_tokens(10);
  a.usage.set_cache_read_tokens(100);
  a.usage.set_cache_write_tokens(20);
  a.usage.set_output_tokens(30);
  a.usage.set_reasoning_tokens(25);
  auto body = json::parse(r->SyncBody(a));
  ASSERT_EQ(body.at("choices").as_array().size(), 1u);  // a ChatAnswer is one choice
  const auto& msg = body.at("choices").at(0).at("message");
  EXPECT_EQ(msg.at("content").as_string(), "42");
  EXPECT_EQ(msg.at("reasoning_content").as_string(), "thinking it over");
  const auto& u = body.at("usage");
  EXPECT_EQ(u.at("prompt_tokens").as_int64(), 130);
  EXPECT_EQ(u.at("completion_tokens").as_int64(), 30);
  EXPECT_EQ(u.at("total_tokens").as_int64(), 160);
  EXPECT_EQ(u.at("prompt_tokens_details").at("cached_tokens").as_int64(), 100);
  EXPECT_EQ(u.at("prompt_tokens_details").at("cache_write_tokens").as_int64(), 20);
  EXPECT_EQ(u.at("completion_tokens_details").at("reasoning_tokens").as_int64(), 25);
}

TEST(OpenAiRenderTest, UsageWithoutCacheTokensReportsZeros) {
  auto r = NewChatRenderer("chatcmpl-1", "m", 7, false);
  ChatAnswer a;
  a.text = "x";
  a.usage.set_input_tokens(5);
  a.usage.set_output_tokens(1);
  auto u = json::parse(r->SyncBody(a)).at("usage");
  EXPECT_EQ(u.at("prompt_tokens").as_int64(), 5);
  EXPECT_EQ(u.at("prompt_tokens_details").at("cached_tokens").as_int64(), 0);
  EXPECT_EQ(u.at("completion_tokens_details").at("reasoning_tokens").as_int64(), 0);
  EXPECT_FALSE(json::parse(r->SyncBody(a)).at("choices").at(0).at("message").as_object().contains("reasoning_content"));
}

// n > 1: the events of each choice assemble apart, and the body lists every choice.
TEST(OpenAiRenderTest, SyncAnswerKeepsEveryChoiceApart) {
  ChatAnswer a;
  auto text = [&](int32_t choice, const std::string& t) {
    llm::v1::ChatEvent e;
    e.set_choice_index(choice);
    e.mutable_text()->set_text(t);
    a.Apply(e);
  };
  auto finish = [&](int32_t choice, llm::v1::FinishReason reason) {
    llm::v1::ChatEvent e;
    e.set_choice_index(choice);
    e.mutable_finish()->set_reason(reason);
    a.Apply(e);
  };
  text(0, "Hel");
  text(1, "Bon");
  text(0, "lo");
  text(1, "jour");
  finish(1, llm::v1::FINISH_REASON_LENGTH);
  finish(0, llm::v1::FINISH_REASON_STOP);
  llm::v1::ChatEvent huge;  // beyond any request's n: dropped, not allocated
  huge.set_choice_index(1 << 30);
  huge.mutable_text()->set_text("x");
  a.Apply(huge);
  ASSERT_EQ(a.choice_count(), 2u);
  auto body = json::parse(NewChatRenderer("chatcmpl-1", "m", 7, false)->SyncBody(a));
  const auto& choices = body.at("choices").as_array();
  ASSERT_EQ(choices.size(), 2u);
  EXPECT_EQ(choices[0].at("index").as_int64(), 0);
  EXPECT_EQ(choices[0].at("message").at("content").as_string(), "Hello");
  EXPECT_EQ(choices[0].at("finish_reason").as_string(), "stop");
  EXPECT_EQ(choices[1].at("index").as_int64(), 1);
  EXPECT_EQ(choices[1].at("message").at("content").as_string(), "Bonjour");
  EXPECT_EQ(choices[1].at("finish_reason").as_string(), "length");
}

std::string Render(ChatRenderer& r, const std::vector<llm::v1::ChatEvent>& events) {
  std::string out;
  for (const auto& e : events) out += r.StreamEvent(e);
  return out + r.StreamEnd();
}

// Every chunk is a chat.completion.chunk with a `choices` array, as the SDK iterates it.
void ExpectChunksWellFormed(const std::vector<json::value>& f) {
  ASSERT_FALSE(f.empty());
  EXPECT_EQ(f.back(), json::value("[DONE]"));
  for (size_t i = 0; i + 1 < f.size(); ++i) {
    EXPECT_EQ(f[i].at("object").as_string(), "chat.completion.chunk");
    EXPECT_TRUE(f[i].at("choices").is_array()) << json::serialize(f[i]);
  }
}

TEST(OpenAiRenderTest, StreamToolCallsInterleavedWithText) {
  auto r = NewChatRenderer("chatcmpl-1", "m", 7, true);
  llm::v1::ChatEvent start;
  start.mutable_start();
  auto tool_start = [](int index, const std::string& id, const std::string& name) {
    llm::v1::ChatEvent e;
    e.mutable_tool_call_start()->set_index(index);
    e.mutable_tool_call_start()->set_id(id);
    e.mutable_tool_call_start()->set_name(name);
    return e;
  };
  auto tool_delta = [](int index, const std::string& fragment) {
    llm::v1::ChatEvent e;
    e.mutable_tool_call_delta()->set_index(index);
    e.mutable_tool_call_delta()->set_arguments_fragment(fragment);
    return e;
  };
  llm::v1::ChatEvent usage;
  usage.mutable_usage()->set_input_tokens(4);
  usage.mutable_usage()->set_output_tokens(9);
  auto f = Frames(Render(*r, {start, TextEvent(0, "First"), tool_start(0, "call_a", "f"), tool_delta(0, R"({"x")"),
                              tool_delta(0, ":1}"), TextEvent(0, "then"), tool_start(1, "call_b", "g"),
                              tool_delta(1, "{}"), TextEvent(0, "done"),  // the last content and the finish
                              FinishEvent(0, llm::v1::FINISH_REASON_TOOL_CALLS), usage}));
  ExpectChunksWellFormed(f);
  ASSERT_EQ(f.size(), 12u);
  auto delta = [&](size_t i) { return f[i].at("choices").at(0).at("delta"); };
  EXPECT_EQ(delta(0).at("role").as_string(), "assistant");
  EXPECT_EQ(delta(1).at("content").as_string(), "First");
  auto call = [&](size_t i) { return delta(i).at("tool_calls").at(0); };
  EXPECT_EQ(call(2), json::parse(R"({"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":""}})"));
  EXPECT_EQ(call(3), json::parse(R"({"index":0,"function":{"arguments":"{\"x\""}})"));
  EXPECT_EQ(call(4), json::parse(R"({"index":0,"function":{"arguments":":1}"}})"));
  EXPECT_EQ(delta(5).at("content").as_string(), "then");
  EXPECT_EQ(call(6).at("index").as_int64(), 1);
  EXPECT_EQ(call(6).at("id").as_string(), "call_b");
  EXPECT_EQ(call(7).at("function").at("arguments").as_string(), "{}");
  EXPECT_EQ(delta(8).at("content").as_string(), "done");
  EXPECT_TRUE(f[8].at("choices").at(0).at("finish_reason").is_null());
  EXPECT_EQ(f[9].at("choices").at(0).at("finish_reason").as_string(), "tool_calls");
  EXPECT_TRUE(f[10].at("choices").as_array().empty());
  EXPECT_EQ(f[10].at("usage").at("total_tokens").as_int64(), 13);
}

TEST(OpenAiRenderTest, EveryFinishReasonRenders) {
  const std::vector<std::pair<llm::v1::FinishReason, std::string>> table = {
      {llm::v1::FINISH_REASON_STOP, "stop"},
      {llm::v1::FINISH_REASON_LENGTH, "length"},
      {llm::v1::FINISH_REASON_TOOL_CALLS, "tool_calls"},
      {llm::v1::FINISH_REASON_CONTENT_FILTER, "content_filter"},
      {llm::v1::FINISH_REASON_UNSPECIFIED, "stop"},  // never a null finish_reason
  };
  for (const auto& [reason, want] : table) {
    ChatAnswer a;
    a.text = "x";
    a.finish = reason;
    EXPECT_EQ(json::parse(NewChatRenderer("c", "m", 7, false)->SyncBody(a)).at("choices").at(0).at("finish_reason"),
              json::value(want));
    auto f = Frames(Render(*NewChatRenderer("c", "m", 7, false), {TextEvent(0, "x"), FinishEvent(0, reason)}));
    ASSERT_EQ(f.size(), 3u);
    EXPECT_EQ(f[1].at("choices").at(0).at("finish_reason"), json::value(want));
  }
}

TEST(OpenAiRenderTest, AnErrorAfterTheStartIsAnErrorLine) {
  auto r = NewChatRenderer("chatcmpl-1", "m", 7, false);
  std::string out = r->StreamEvent(TextEvent(0, "partial"));
  out += r->StreamError(HttpError(503, "Overloaded"));
  auto f = Frames(out);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[1].at("error").at("message").as_string(), "Overloaded");
  EXPECT_FALSE(f[1].as_object().contains("choices"));
}

// An Anthropic upstream's stream, decoded by the connector and rendered here.
std::vector<json::value> FromAnthropic(const std::vector<std::pair<std::string, std::string>>& sse, bool include_usage) {
  connector::AnthropicDecoder d(0);
  std::vector<llm::v1::ChatEvent> events;
  for (const auto& [event, data] : sse) EXPECT_TRUE(d.FeedEvent(event, data, events).ok()) << data;
  d.Finish(events);
  auto r = NewChatRenderer("chatcmpl-1", "m", 7, include_usage);
  return Frames(Render(*r, events));
}

TEST(OpenAiRenderTest, AnthropicStreamBecomesOpenAiChunks) {
  auto f = FromAnthropic({
      {"message_start", R"({"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":10,"cache_read_input_tokens":80,"cache_creation_input_tokens":20,"output_tokens":1}}})"},
      {"ping", R"({"type":"ping"})"},
      {"content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {"content_block_start", R"({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_a","name":"now","input":{}}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":1})"},
      {"ping", R"({"type":"ping"})"},
      {"content_block_start", R"({"type":"content_block_start","index":2,"content_block":{"type":"text","text":""}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"Also"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":2})"},
      {"content_block_start", R"({"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_b","name":"f","input":{}}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"x\":"}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"1}"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":3})"},
      {"message_delta", R"({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}})"},
      {"message_stop", R"({"type":"message_stop"})"},
  }, true);
  ExpectChunksWellFormed(f);
  std::string text;
  std::map<int64_t, std::string> ids, args;
  for (size_t i = 0; i + 1 < f.size(); ++i) {
    if (f[i].at("choices").as_array().empty()) continue;
    const auto& delta = f[i].at("choices").at(0).at("delta");
    if (const auto* c = delta.as_object().if_contains("content")) text += c->as_string();
    if (const auto* calls = delta.as_object().if_contains("tool_calls")) {
      for (const auto& call : calls->as_array()) {
        int64_t index = call.at("index").as_int64();
        if (const auto* id = call.as_object().if_contains("id")) ids[index] = std::string(id->as_string());
        args[index] += std::string(call.at("function").at("arguments").as_string());
      }
    }
  }
  EXPECT_EQ(text, "Checking.Also");
  EXPECT_EQ(ids, (std::map<int64_t, std::string>{{0, "toolu_a"}, {1, "toolu_b"}}));  // dense from 0
  EXPECT_EQ(args[0], "{}");  // empty partial_json: an object the SDK can parse
  EXPECT_EQ(args[1], R"({"x":1})");
  const auto& finish = f[f.size() - 3];
  EXPECT_EQ(finish.at("choices").at(0).at("finish_reason").as_string(), "tool_calls");
  const auto& usage = f[f.size() - 2].at("usage");
  EXPECT_EQ(usage.at("prompt_tokens").as_int64(), 110);  // input + cache read + cache write
  EXPECT_EQ(usage.at("prompt_tokens_details").at("cached_tokens").as_int64(), 80);
  EXPECT_EQ(usage.at("prompt_tokens_details").at("cache_write_tokens").as_int64(), 20);
  EXPECT_EQ(usage.at("completion_tokens").as_int64(), 30);
}

TEST(OpenAiRenderTest, AnthropicStopReasonsBecomeFinishReasons) {
  const std::vector<std::pair<std::string, std::string>> table = {
      {"end_turn", "stop"},      {"stop_sequence", "stop"},     {"pause_turn", "stop"},
      {"max_tokens", "length"},  {"model_context_window_exceeded", "length"},
      {"tool_use", "tool_calls"}, {"refusal", "content_filter"},
  };
  for (const auto& [stop_reason, want] : table) {
    // A whole answer.
    connector::AnthropicDecoder d(0);
    std::vector<llm::v1::ChatEvent> events;
    ASSERT_TRUE(d.FeedResponse(R"({"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"x"}],
        "stop_reason":")" + stop_reason + R"(","usage":{"input_tokens":1,"output_tokens":1}})", events).ok());
    d.Finish(events);
    ChatAnswer a;
    for (const auto& e : events) a.Apply(e);
    EXPECT_EQ(json::parse(NewChatRenderer("c", "m", 7, false)->SyncBody(a)).at("choices").at(0).at("finish_reason"),
              json::value(want)) << stop_reason;
    // A stream.
    auto f = FromAnthropic({{"message_delta", R"({"type":"message_delta","delta":{"stop_reason":")" + stop_reason +
                                                  R"("},"usage":{"output_tokens":1}})"}}, false);
    ASSERT_EQ(f.size(), 3u) << stop_reason;
    EXPECT_EQ(f[1].at("choices").at(0).at("finish_reason"), json::value(want)) << stop_reason;
  }
}

TEST(OpenAiRenderTest, AnthropicErrorAfterTheStartIsAnErrorLine) {
  connector::AnthropicDecoder d(0);
  std::vector<llm::v1::ChatEvent> events;
  ASSERT_TRUE(d.FeedEvent("message_start", R"({"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":2}}})", events).ok());
  ASSERT_TRUE(d.FeedEvent("content_block_delta", R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}})", events).ok());
  ASSERT_TRUE(d.FeedEvent("error", R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})", events).ok());
  ASSERT_EQ(events.size(), 3u);
  ASSERT_TRUE(events[2].has_error());
  auto r = NewChatRenderer("chatcmpl-1", "m", 7, false);
  std::string out = r->StreamEvent(events[0]);
  out += r->StreamEvent(events[1]);
  // As the pipeline does with an error event: the renderer's error frame, then nothing.
  out += r->StreamError(HttpError(events[2].error().http_status(), events[2].error().message()));
  auto f = Frames(out);
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[1].at("choices").at(0).at("delta").at("content").as_string(), "Hi");
  EXPECT_EQ(f[2].at("error").at("message").as_string(), "Overloaded");
}

TEST(OpenAiRenderTest, GeminiStopWithFunctionCallsIsToolCalls) {
  connector::GeminiDecoder d(0);
  std::vector<llm::v1::ChatEvent> events;
  ASSERT_TRUE(d.FeedEvent("", R"({"candidates":[{"content":{"role":"model","parts":[{"text":"Let me see."}]},"index":0}]})", events).ok());
  ASSERT_TRUE(d.FeedEvent("", R"({"candidates":[{"content":{"role":"model","parts":[
      {"functionCall":{"name":"f","args":{"q":"a"}}},{"functionCall":{"name":"g","args":{}}}]},"finishReason":"STOP","index":0}],
      "usageMetadata":{"promptTokenCount":20,"cachedContentTokenCount":5,"candidatesTokenCount":7,"thoughtsTokenCount":3}})", events).ok());
  d.Finish(events);
  auto f = Frames(Render(*NewChatRenderer("chatcmpl-1", "m", 7, true), events));
  ExpectChunksWellFormed(f);
  std::vector<json::value> calls;
  for (const auto& chunk : f)
    if (chunk.is_object() && !chunk.at("choices").as_array().empty())
      if (const auto* c = chunk.at("choices").at(0).at("delta").as_object().if_contains("tool_calls")) calls.push_back(c->at(0));
  ASSERT_EQ(calls.size(), 4u);  // start and whole arguments, per call
  EXPECT_EQ(calls[0].at("index").as_int64(), 0);
  EXPECT_EQ(calls[0].at("id").as_string(), "call_0");  // synthesized
  EXPECT_EQ(calls[1].at("function").at("arguments").as_string(), R"({"q":"a"})");
  EXPECT_EQ(calls[2].at("index").as_int64(), 1);
  EXPECT_EQ(calls[2].at("id").as_string(), "call_1");
  EXPECT_EQ(calls[3].at("function").at("arguments").as_string(), "{}");
  EXPECT_EQ(f[f.size() - 3].at("choices").at(0).at("finish_reason").as_string(), "tool_calls");
  const auto& usage = f[f.size() - 2].at("usage");
  EXPECT_EQ(usage.at("prompt_tokens").as_int64(), 20);  // promptTokenCount already holds the cached 5
  EXPECT_EQ(usage.at("prompt_tokens_details").at("cached_tokens").as_int64(), 5);
  EXPECT_EQ(usage.at("completion_tokens").as_int64(), 10);  // candidates + thoughts
  EXPECT_EQ(usage.at("completion_tokens_details").at("reasoning_tokens").as_int64(), 3);
}

}  // namespace
}  // namespace nexusflow::gateway::openai

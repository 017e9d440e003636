#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <map>

#include "services/provider-connector/gemini_upstream.h"

namespace nexusflow::connector {
namespace {

namespace json = boost::json;
namespace llmpb = ::nexusflow::llm::v1;
using llmpb::ChatEvent;

llmpb::ContentPart Text(const std::string& t) {
  llmpb::ContentPart p;
  p.set_text(t);
  return p;
}

// ---------------------------------------------------------------------------------------
// Canonical request → Gemini body (PROTOCOLS.md §E, OpenAI/Anthropic → Gemini).
// Covers: system → systemInstruction; assistant → model; tool_calls → functionCall;
// functionResponse name looked up from the call id, non-object results wrapped
// (RolesSystemToolsAndConfig, ToolResultsAndTurnsMerge); stopSequences ≤ 5; max tokens →
// maxOutputTokens; tool_choice all four ways, ANY + allowedFunctionNames
// (ToolChoiceAllFourWays).

TEST(GeminiBodyTest, RolesSystemToolsAndConfig) {
  llmpb::ChatRequest r;
  auto* sys = r.add_messages();
  sys->set_role(llmpb::ROLE_SYSTEM);
  *sys->add_parts() = Text("Be brief.");
  auto* u = r.add_messages();
  u->set_role(llmpb::ROLE_USER);
  *u->add_parts() = Text("Weather?");
  u->add_parts()->mutable_image()->mutable_inline_data()->set_mime_type("image/png");
  u->mutable_parts(1)->mutable_image()->mutable_inline_data()->set_data("\x89PNG");
  auto* a = r.add_messages();
  a->set_role(llmpb::ROLE_ASSISTANT);
  auto* call = a->add_parts()->mutable_tool_call();
  call->set_id("call_0");
  call->set_name("get_weather");
  call->set_arguments_json(R"({"city":"Paris"})");
  call->set_signature("sig-1");
  auto* t = r.add_messages();
  t->set_role(llmpb::ROLE_TOOL);
  t->add_parts()->mutable_tool_result()->set_tool_call_id("call_0");
  t->mutable_parts(0)->mutable_tool_result()->set_content("22C");  // not an object: wrapped
  auto* tool = r.add_tools();
  tool->set_name("get_weather");
  tool->set_parameters_json(R"({"type":"object"})");
  r.mutable_tool_choice()->add_allowed_function_names("get_weather");
  r.mutable_tool_choice()->add_allowed_function_names("get_time");
  r.mutable_sampling()->set_temperature(1.5);
  r.mutable_sampling()->set_max_output_tokens(100);
  r.mutable_sampling()->set_n(2);
  for (int i = 0; i < 6; ++i) r.mutable_sampling()->add_stop_sequences("s" + std::to_string(i));
  r.mutable_thinking()->set_enabled(true);
  r.mutable_thinking()->set_budget_tokens(512);

  json::value b = json::parse(BuildGeminiBody(r));
  EXPECT_EQ(b.at("systemInstruction").at("parts").at(0).at("text"), "Be brief.");
  const auto& c = b.at("contents").as_array();
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].at("role"), "user");
  EXPECT_EQ(c[0].at("parts").at(1).at("inlineData").at("data"), "iVBORw==");
  EXPECT_EQ(c[1].at("role"), "model");
  EXPECT_EQ(c[1].at("parts").at(0).at("functionCall").at("args").at("city"), "Paris");
  EXPECT_EQ(c[1].at("parts").at(0).at("thoughtSignature"), "sig-1");
  EXPECT_EQ(c[2].at("parts").at(0).at("functionResponse").at("name"), "get_weather");  // from the call id
  EXPECT_EQ(c[2].at("parts").at(0).at("functionResponse").at("response").at("result"), "22C");
  const auto& g = b.at("generationConfig");
  EXPECT_EQ(g.at("temperature").as_double(), 1.5);
  EXPECT_EQ(g.at("maxOutputTokens"), 100);
  EXPECT_EQ(g.at("candidateCount"), 2);
  EXPECT_EQ(g.at("stopSequences").as_array().size(), 5u);  // Gemini takes at most five
  EXPECT_EQ(g.at("thinkingConfig").at("thinkingBudget"), 512);
  EXPECT_EQ(b.at("tools").at(0).at("functionDeclarations").at(0).at("name"), "get_weather");
  const auto& fc = b.at("toolConfig").at("functionCallingConfig");
  EXPECT_EQ(fc.at("mode"), "ANY");
  EXPECT_EQ(fc.at("allowedFunctionNames").as_array().size(), 2u);
}

TEST(GeminiBodyTest, ToolChoiceAllFourWays) {
  auto config = [](auto set) {
    llmpb::ChatRequest r;
    auto* u = r.add_messages();
    u->set_role(llmpb::ROLE_USER);
    *u->add_parts() = Text("hi");
    r.add_tools()->set_name("f");
    set(*r.mutable_tool_choice());
    return json::parse(BuildGeminiBody(r)).at("toolConfig").at("functionCallingConfig");
  };
  using TC = llmpb::ToolChoice;
  EXPECT_EQ(config([](TC& c) { c.set_mode(TC::MODE_AUTO); }), json::parse(R"({"mode":"AUTO"})"));
  EXPECT_EQ(config([](TC& c) { c.set_mode(TC::MODE_NONE); }), json::parse(R"({"mode":"NONE"})"));
  EXPECT_EQ(config([](TC& c) { c.set_mode(TC::MODE_REQUIRED); }), json::parse(R"({"mode":"ANY"})"));
  EXPECT_EQ(config([](TC& c) { c.set_function_name("f"); }),
            json::parse(R"({"mode":"ANY","allowedFunctionNames":["f"]})"));
}

TEST(GeminiBodyTest, ToolResultsAndTurnsMerge) {
  // OpenAI's shape: two calls, two tool messages, then more from the user.
  llmpb::ChatRequest r;
  auto* u = r.add_messages();
  u->set_role(llmpb::ROLE_USER);
  *u->add_parts() = Text("go");
  auto* a = r.add_messages();
  a->set_role(llmpb::ROLE_ASSISTANT);
  *a->add_parts() = Text("Calling.");
  for (auto [id, name] : std::vector<std::pair<std::string, std::string>>{{"call_a", "f"}, {"call_b", "g"}}) {
    auto* call = a->add_parts()->mutable_tool_call();
    call->set_id(id);
    call->set_name(name);
    call->set_arguments_json("");  // no arguments: {}
  }
  for (auto [id, content] : std::vector<std::pair<std::string, std::string>>{
           {"call_b", R"({"ok":true})"}, {"call_a", "[1,2]"}}) {
    auto* t = r.add_messages();
    t->set_role(llmpb::ROLE_TOOL);
    t->add_parts()->mutable_tool_result()->set_tool_call_id(id);
    t->mutable_parts(0)->mutable_tool_result()->set_content(content);
  }
  auto* more = r.add_messages();
  more->set_role(llmpb::ROLE_USER);
  *more->add_parts() = Text("and?");
  json::value b = json::parse(BuildGeminiBody(r));
  EXPECT_EQ(b.at("contents"), json::parse(R"([
      {"role":"user","parts":[{"text":"go"}]},
      {"role":"model","parts":[{"text":"Calling."},{"functionCall":{"name":"f","args":{}}},
                               {"functionCall":{"name":"g","args":{}}}]},
      {"role":"user","parts":[{"functionResponse":{"name":"g","response":{"ok":true}}},
                              {"functionResponse":{"name":"f","response":{"result":[1,2]}}},
                              {"text":"and?"}]}])"));
}

// ---------------------------------------------------------------------------------------
// Gemini answer → canonical events (PROTOCOLS.md §E, Gemini → OpenAI/Anthropic).
// Covers: usage with cache tokens (StreamOfTextThoughtsAndCumulativeUsage) and without
// (UsageWithoutCacheTokens), the last usage taken, not summed; STOP carrying a functionCall
// → tool calls, whole and with synthesized ids, in a whole answer
// (StopCarryingFunctionCallsIsToolCalls) and in a stream interleaved with text
// (StreamedFunctionCallsInterleavedWithText); one chunk with content and finishReason
// (StreamOfTextThoughtsAndCumulativeUsage); every finishReason row (EveryFinishReasonMaps);
// candidates finishing apart with dense tool indexes (SeveralCandidatesFinishApart).

TEST(GeminiDecoderTest, StreamOfTextThoughtsAndCumulativeUsage) {
  GeminiDecoder d(5);
  std::vector<ChatEvent> ev;
  ASSERT_TRUE(d.FeedEvent("", R"({"candidates":[{"content":{"role":"model","parts":[{"text":"Hmm","thought":true}]},"index":0}],"usageMetadata":{"promptTokenCount":100,"cachedContentTokenCount":60},"modelVersion":"gemini-x","responseId":"r1"})", ev).ok());
  ASSERT_TRUE(d.FeedEvent("", R"({"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"}]},"index":0}]})", ev).ok());
  ASSERT_TRUE(d.FeedEvent("", R"({"candidates":[{"content":{"role":"model","parts":[{"text":" there"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":100,"cachedContentTokenCount":60,"candidatesTokenCount":7,"thoughtsTokenCount":3}})", ev).ok());
  d.Finish(ev);
  ASSERT_EQ(ev.size(), 6u);
  EXPECT_EQ(ev[0].start().response_id(), "r1");
  EXPECT_EQ(ev[0].start().upstream_model(), "gemini-x");
  EXPECT_EQ(ev[1].reasoning().text(), "Hmm");
  EXPECT_EQ(ev[2].text().text(), "Hello");
  EXPECT_EQ(ev[4].finish().reason(), llmpb::FINISH_REASON_STOP);
  const auto& u = ev[5].usage();
  EXPECT_EQ(u.input_tokens(), 40);  // promptTokenCount includes the cached 60
  EXPECT_EQ(u.cache_read_tokens(), 60);
  EXPECT_EQ(u.output_tokens(), 10);
  EXPECT_EQ(u.reasoning_tokens(), 3);
}

TEST(GeminiDecoderTest, StopCarryingFunctionCallsIsToolCalls) {
  GeminiDecoder d(5);
  std::vector<ChatEvent> ev;
  ASSERT_TRUE(d.FeedResponse(R"({"candidates":[{"content":{"role":"model","parts":[
      {"functionCall":{"name":"f","args":{"a":1}},"thoughtSignature":"ts"},
      {"functionCall":{"name":"g","args":{}}}]},"finishReason":"STOP","index":0}],
      "usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4}})", ev).ok());
  d.Finish(ev);
  ASSERT_EQ(ev.size(), 7u);
  EXPECT_EQ(ev[1].tool_call_start().index(), 0);
  EXPECT_EQ(ev[1].tool_call_start().id(), "call_0");
  EXPECT_EQ(ev[1].tool_call_start().signature(), "ts");
  EXPECT_EQ(ev[2].tool_call_delta().arguments_fragment(), R"({"a":1})");
  EXPECT_EQ(ev[3].tool_call_start().index(), 1);
  EXPECT_EQ(ev[4].tool_call_delta().arguments_fragment(), "{}");
  EXPECT_EQ(ev[5].finish().reason(), llmpb::FINISH_REASON_TOOL_CALLS);
  EXPECT_EQ(ev[6].usage().input_tokens(), 9);
}

TEST(GeminiDecoderTest, UsageWithoutCacheTokens) {
  GeminiDecoder d(5);
  std::vector<ChatEvent> ev;
  ASSERT_TRUE(d.FeedEvent("", R"({"candidates":[{"content":{"role":"model","parts":[{"text":"ok"}]},"finishReason":"STOP","index":0}],
      "usageMetadata":{"promptTokenCount":30,"toolUsePromptTokenCount":4,"candidatesTokenCount":2,"totalTokenCount":36}})", ev).ok());
  d.Finish(ev);
  const auto& u = ev.back().usage();
  EXPECT_EQ(u.input_tokens(), 34);  // the tool-use prompt is input too
  EXPECT_EQ(u.cache_read_tokens(), 0);
  EXPECT_EQ(u.cache_write_tokens(), 0);
  EXPECT_EQ(u.output_tokens(), 2);
  EXPECT_EQ(u.reasoning_tokens(), 0);
  EXPECT_FALSE(d.usage_estimated());
}

TEST(GeminiDecoderTest, StreamedFunctionCallsInterleavedWithText) {
  GeminiDecoder d(5);
  std::vector<ChatEvent> ev;
  for (const char* chunk : {
           R"({"candidates":[{"content":{"role":"model","parts":[{"text":"Looking."}]},"index":0}],"responseId":"r"})",
           R"({"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":{"q":"a"}}}]},"index":0}]})",
           R"({"candidates":[{"content":{"role":"model","parts":[{"text":"And"},{"functionCall":{"id":"given-1","name":"g","args":{}}}]},"index":0}]})",
           R"({"candidates":[{"content":{"role":"model","parts":[{"text":""}]},"finishReason":"STOP","index":0}],
               "usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":6,"totalTokenCount":14}})"})
    ASSERT_TRUE(d.FeedEvent("", chunk, ev).ok());
  d.Finish(ev);
  std::vector<std::string> seen;
  for (const auto& e : ev) {
    if (e.has_text() && !e.text().text().empty()) seen.push_back("text:" + e.text().text());
    if (e.has_tool_call_start())
      seen.push_back("start:" + std::to_string(e.tool_call_start().index()) + ":" + e.tool_call_start().id() + ":" +
                     e.tool_call_start().name());
    if (e.has_tool_call_delta())
      seen.push_back("args:" + std::to_string(e.tool_call_delta().index()) + ":" + e.tool_call_delta().arguments_fragment());
    if (e.has_finish()) seen.push_back("finish:" + std::to_string(e.finish().reason()));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{
                      "text:Looking.", "start:0:call_0:f", R"(args:0:{"q":"a"})", "text:And",
                      "start:1:given-1:g", "args:1:{}",
                      "finish:" + std::to_string(llmpb::FINISH_REASON_TOOL_CALLS)}));  // STOP, but calls came
  EXPECT_EQ(ev.back().usage().output_tokens(), 6);
}

TEST(GeminiDecoderTest, EveryFinishReasonMaps) {
  EXPECT_EQ(FinishReasonFromGemini("STOP", false), llmpb::FINISH_REASON_STOP);
  EXPECT_EQ(FinishReasonFromGemini("STOP", true), llmpb::FINISH_REASON_TOOL_CALLS);
  EXPECT_EQ(FinishReasonFromGemini("MAX_TOKENS", false), llmpb::FINISH_REASON_LENGTH);
  EXPECT_EQ(FinishReasonFromGemini("MAX_TOKENS", true), llmpb::FINISH_REASON_LENGTH);
  for (const char* safety : {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})
    EXPECT_EQ(FinishReasonFromGemini(safety, false), llmpb::FINISH_REASON_CONTENT_FILTER) << safety;
}

TEST(GeminiDecoderTest, SeveralCandidatesFinishApart) {
  GeminiDecoder d(5);
  std::vector<ChatEvent> ev;
  ASSERT_TRUE(d.FeedEvent("", R"({"candidates":[
      {"content":{"role":"model","parts":[{"text":"A"}]},"finishReason":"MAX_TOKENS","index":0},
      {"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":{}}}]},"finishReason":"STOP","index":1}]})", ev).ok());
  d.Finish(ev);
  std::map<int32_t, llmpb::FinishReason> finish;
  for (const auto& e : ev) {
    if (e.has_finish()) {
      EXPECT_FALSE(finish.count(e.choice_index()));
      finish[e.choice_index()] = e.finish().reason();
    }
    if (e.has_tool_call_start()) {
      EXPECT_EQ(e.choice_index(), 1);
      EXPECT_EQ(e.tool_call_start().index(), 0);  // dense per candidate
      EXPECT_EQ(e.tool_call_start().id(), "call_1_0");  // unique within the answer
    }
  }
  EXPECT_EQ(finish[0], llmpb::FINISH_REASON_LENGTH);
  EXPECT_EQ(finish[1], llmpb::FINISH_REASON_TOOL_CALLS);
  EXPECT_TRUE(ev.back().has_usage());
}

TEST(GeminiDecoderTest, ErrorObjectAndLimits) {
  GeminiDecoder d(5);
  std::vector<ChatEvent> ev;
  ASSERT_TRUE(d.FeedEvent("", R"({"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED"}})", ev).ok());
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].error().http_status(), 429);
  EXPECT_TRUE(ev[0].error().retryable());
  EXPECT_FALSE(d.FeedEvent("", "[not an object", ev).ok());
  EXPECT_EQ(FinishReasonFromGemini("MAX_TOKENS", false), llmpb::FINISH_REASON_LENGTH);
  EXPECT_EQ(FinishReasonFromGemini("SAFETY", false), llmpb::FINISH_REASON_CONTENT_FILTER);
}

TEST(GeminiCodecTest, UrlKeyAndErrorMessage) {
  ProviderConfig p;
  p.kind = "gemini";
  p.base_url = "https://generativelanguage.example";
  p.api_key = "AIza-x";
  llmpb::ChatRequest r;
  UpstreamCall s = GeminiCodec().BuildCall(r, CallTarget{&p, "gemini-2.5-flash", true, 0});
  EXPECT_EQ(s.url, "https://generativelanguage.example/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
  EXPECT_NE(std::find(s.headers.begin(), s.headers.end(), "x-goog-api-key: AIza-x"), s.headers.end());
  UpstreamCall sync = GeminiCodec().BuildCall(r, CallTarget{&p, "gemini-2.5-flash", false, 0});
  EXPECT_EQ(sync.url, "https://generativelanguage.example/v1beta/models/gemini-2.5-flash:generateContent");
  EXPECT_EQ(GeminiCodec().ErrorMessage(R"({"error":{"code":400,"message":"bad field","status":"INVALID_ARGUMENT"}})"), "bad field");
  EXPECT_EQ(GeminiCodec().ErrorMessage(R"([{"error":{"code":500,"message":"boom","status":"INTERNAL"}}])"), "boom");
}

}  // namespace
}  // namespace nexusflow::connector

#include "gateway/protocols/anthropic.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "absl/strings/str_cat.h"
#include "libs/common/sse.h"
#include "services/provider-connector/gemini_upstream.h"
#include "services/provider-connector/openai_upstream.h"

namespace nexusflow::gateway::anthropic {
namespace {

namespace json = boost::json;
namespace llmpb = ::nexusflow::llm::v1;
using llmpb::ChatEvent;

const std::map<std::string, std::string> kHeaders{{"anthropic-version", "2023-06-01"}};

llmpb::ChatRequest MustParse(const std::string& body,
                             const std::map<std::string, std::string>& headers = kHeaders) {
  ParsedMessages out;
  HttpError err;
  EXPECT_TRUE(ParseMessagesRequest(body, headers, 0, &out, &err)) << err.message;
  return out.request;
}

HttpError MustFail(const std::string& body,
                   const std::map<std::string, std::string>& headers = kHeaders) {
  ParsedMessages out;
  HttpError err;
  EXPECT_FALSE(ParseMessagesRequest(body, headers, 4096, &out, &err)) << body;
  EXPECT_EQ(err.status, 400);
  return err;
}

// A body with `extra` members added after the required ones.
std::string Body(const std::string& extra = "",
                 const std::string& messages = R"([{"role":"user","content":"hi"}])") {
  return absl::StrCat(R"({"model":"claude-x","max_tokens":100,"messages":)", messages, extra, "}");
}

// ---------------------------------------------------------------------------------------
// Parsing: Anthropic request → canonical (PROTOCOLS.md §E, Anthropic → OpenAI/Gemini; the
// connector's codec tests cover the canonical → upstream half).
// Covers: system → ROLE_SYSTEM; tool_result blocks → ROLE_TOOL messages ahead of the rest
// of their user turn, with the name of their call; tool_use.input → arguments; base64
// image → bytes (rendered as a data: URL upstream); stop_sequences; temperature 0–1
// (EveryFieldBecomesCanonical); max_tokens required here, defaulted only towards Anthropic
// (MaxTokensIsRequiredWhateverTheDefault); tool_choice auto/any/none/tool
// (ToolChoiceModes, EveryFieldBecomesCanonical).

TEST(AnthropicParseTest, EveryFieldBecomesCanonical) {
  const std::string body = R"({
    "model":"claude-x","max_tokens":512,
    "system":[{"type":"text","text":"be brief"},
              {"type":"text","text":"long preamble","cache_control":{"type":"ephemeral","ttl":"1h"}}],
    "messages":[
      {"role":"user","content":[
        {"type":"text","text":"look","cache_control":{"type":"ephemeral","ttl":"5m"}},
        {"type":"image","source":{"type":"base64","media_type":"image/png","data":"aGVsbG8="}},
        {"type":"image","source":{"type":"url","url":"https://x/cat.jpg"}},
        {"type":"document","title":"Notes","source":{"type":"text","media_type":"text/plain","data":"plain doc"}},
        {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERg=="},"cache_control":{"type":"ephemeral"}},
        {"type":"document","source":{"type":"url","url":"https://x/a.pdf"}},
        {"type":"document","source":{"type":"content","content":[{"type":"text","text":"p1"},{"type":"text","text":"p2"}]}}]},
      {"role":"assistant","content":[
        {"type":"thinking","thinking":"hmm","signature":"sig1"},
        {"type":"redacted_thinking","data":"opaque"},
        {"type":"text","text":"calling","citations":null},
        {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"},"caller":{"type":"direct"}},
        {"type":"tool_use","id":"toolu_2","name":"now","input":{}}]},
      {"role":"user","content":[
        {"type":"tool_result","tool_use_id":"toolu_1","content":"18C"},
        {"type":"tool_result","tool_use_id":"toolu_2","is_error":true,"cache_control":{"type":"ephemeral"},
         "content":[{"type":"text","text":"clock"},{"type":"text","text":"broken"},
                    {"type":"image","source":{"type":"url","url":"https://x/err.png"}}]},
        {"type":"text","text":"and tomorrow?"}]}],
    "tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}},
             {"type":"custom","name":"now","input_schema":{"type":"object"},"strict":true,"cache_control":{"type":"ephemeral","ttl":"1h"}}],
    "tool_choice":{"type":"tool","name":"get_weather","disable_parallel_tool_use":true},
    "thinking":{"type":"enabled","budget_tokens":2048},
    "stop_sequences":["END","STOP"],
    "temperature":0.5,"top_p":0.9,"top_k":40,
    "metadata":{"user_id":"user-7"},
    "output_config":{"effort":"high","format":{"type":"json_schema","schema":{"type":"object"}}},
    "stream":true})";
  auto r = MustParse(body,
                     {{"anthropic-version", "2026-10-21"}, {"anthropic-beta", "beta-a, beta-b,,"}});

  EXPECT_EQ(r.model(), "claude-x");
  EXPECT_EQ(r.protocol(), llmpb::PROTOCOL_ANTHROPIC);
  EXPECT_EQ(r.raw().protocol(), llmpb::PROTOCOL_ANTHROPIC);
  EXPECT_EQ(r.raw().body(), body);
  ASSERT_EQ(r.betas_size(), 2);
  EXPECT_EQ(r.betas(0), "beta-a");
  EXPECT_EQ(r.betas(1), "beta-b");
  EXPECT_EQ(r.sampling().max_output_tokens(), 512);

  // system, user, assistant, tool, tool, user
  ASSERT_EQ(r.messages_size(), 6);
  const auto& sys = r.messages(0);
  EXPECT_EQ(sys.role(), llmpb::ROLE_SYSTEM);
  ASSERT_EQ(sys.parts_size(), 2);
  EXPECT_EQ(sys.parts(0).text(), "be brief");
  EXPECT_FALSE(sys.parts(0).has_cache_control());
  EXPECT_EQ(sys.parts(1).cache_control().ttl().seconds(), 3600);

  const auto& user = r.messages(1);
  EXPECT_EQ(user.role(), llmpb::ROLE_USER);
  ASSERT_EQ(user.parts_size(), 7);
  EXPECT_EQ(user.parts(0).text(), "look");
  EXPECT_EQ(user.parts(0).cache_control().ttl().seconds(), 300);
  EXPECT_EQ(user.parts(1).image().inline_data().mime_type(), "image/png");
  EXPECT_EQ(user.parts(1).image().inline_data().data(), "hello");  // decoded bytes
  EXPECT_EQ(user.parts(2).image().url(), "https://x/cat.jpg");
  EXPECT_EQ(user.parts(3).document().text(), "plain doc");
  EXPECT_EQ(user.parts(3).document().title(), "Notes");
  EXPECT_EQ(user.parts(4).document().inline_data().mime_type(), "application/pdf");
  EXPECT_EQ(user.parts(4).document().inline_data().data(), "%PDF");
  EXPECT_TRUE(user.parts(4).has_cache_control());
  EXPECT_FALSE(user.parts(4).cache_control().has_ttl());  // provider default
  EXPECT_EQ(user.parts(5).document().url(), "https://x/a.pdf");
  EXPECT_EQ(user.parts(6).document().text(), "p1\np2");

  const auto& assistant = r.messages(2);
  EXPECT_EQ(assistant.role(), llmpb::ROLE_ASSISTANT);
  ASSERT_EQ(assistant.parts_size(), 5);
  EXPECT_EQ(assistant.parts(0).thinking().text(), "hmm");
  EXPECT_EQ(assistant.parts(0).thinking().signature(), "sig1");
  EXPECT_EQ(assistant.parts(1).thinking().redacted_data(), "opaque");
  EXPECT_EQ(assistant.parts(1).thinking().text(), "");
  EXPECT_EQ(assistant.parts(2).text(), "calling");
  EXPECT_EQ(assistant.parts(3).tool_call().id(), "toolu_1");
  EXPECT_EQ(assistant.parts(3).tool_call().name(), "get_weather");
  EXPECT_EQ(json::parse(assistant.parts(3).tool_call().arguments_json()),
            json::parse(R"({"city":"Paris"})"));
  EXPECT_EQ(assistant.parts(4).tool_call().arguments_json(), "{}");

  // tool_result blocks: ROLE_TOOL messages ahead of the rest of their user turn.
  const auto& r1 = r.messages(3);
  EXPECT_EQ(r1.role(), llmpb::ROLE_TOOL);
  ASSERT_EQ(r1.parts_size(), 1);
  EXPECT_EQ(r1.parts(0).tool_result().tool_call_id(), "toolu_1");
  EXPECT_EQ(r1.parts(0).tool_result().name(), "get_weather");  // from the call
  EXPECT_EQ(r1.parts(0).tool_result().content(), "18C");
  EXPECT_FALSE(r1.parts(0).tool_result().is_error());
  EXPECT_EQ(r1.parts(0).tool_result().parts_size(), 0);
  const auto& r2 = r.messages(4);
  EXPECT_EQ(r2.role(), llmpb::ROLE_TOOL);
  const auto& tr = r2.parts(0).tool_result();
  EXPECT_EQ(tr.tool_call_id(), "toolu_2");
  EXPECT_TRUE(tr.is_error());
  EXPECT_TRUE(r2.parts(0).has_cache_control());
  ASSERT_EQ(tr.parts_size(), 3);
  EXPECT_EQ(tr.parts(0).text(), "clock");
  EXPECT_EQ(tr.parts(2).image().url(), "https://x/err.png");
  EXPECT_EQ(tr.content(), "clock\nbroken");
  const auto& rest = r.messages(5);
  EXPECT_EQ(rest.role(), llmpb::ROLE_USER);
  ASSERT_EQ(rest.parts_size(), 1);
  EXPECT_EQ(rest.parts(0).text(), "and tomorrow?");

  ASSERT_EQ(r.tools_size(), 2);
  EXPECT_EQ(r.tools(0).name(), "get_weather");
  EXPECT_EQ(r.tools(0).description(), "Weather");
  EXPECT_EQ(json::parse(r.tools(0).parameters_json()),
            json::parse(R"({"type":"object","properties":{"city":{"type":"string"}}})"));
  EXPECT_FALSE(r.tools(0).has_cache_control());
  EXPECT_TRUE(r.tools(1).strict());
  EXPECT_EQ(r.tools(1).cache_control().ttl().seconds(), 3600);
  EXPECT_EQ(r.tool_choice().function_name(), "get_weather");
  EXPECT_TRUE(r.tool_choice().disable_parallel_tool_use());
  EXPECT_FALSE(r.has_parallel_tool_calls());

  EXPECT_TRUE(r.thinking().enabled());
  EXPECT_EQ(r.thinking().budget_tokens(), 2048);
  EXPECT_TRUE(r.thinking().include_thoughts());
  ASSERT_EQ(r.sampling().stop_sequences_size(), 2);
  EXPECT_EQ(r.sampling().stop_sequences(1), "STOP");
  EXPECT_DOUBLE_EQ(r.sampling().temperature(), 0.5);
  EXPECT_DOUBLE_EQ(r.sampling().top_p(), 0.9);
  EXPECT_EQ(r.sampling().top_k(), 40);
  EXPECT_EQ(r.user(), "user-7");
  EXPECT_EQ(r.response_format().type(), llmpb::ResponseFormat::TYPE_JSON_SCHEMA);
  EXPECT_EQ(r.response_format().schema_json(), R"({"type":"object"})");
  EXPECT_TRUE(r.stream());
}

TEST(AnthropicParseTest, StringsAndDefaultsStayMinimal) {
  auto r = MustParse(Body(R"(,"system":"be kind")", R"([{"role":"user","content":"hi"},
      {"role":"assistant","content":"hello"},{"role":"system","content":"mid-conversation"}])"));
  ASSERT_EQ(r.messages_size(), 4);
  EXPECT_EQ(r.messages(0).role(), llmpb::ROLE_SYSTEM);
  EXPECT_EQ(r.messages(0).parts(0).text(), "be kind");
  EXPECT_EQ(r.messages(1).parts(0).text(), "hi");
  EXPECT_EQ(r.messages(2).role(), llmpb::ROLE_ASSISTANT);
  EXPECT_EQ(r.messages(3).role(), llmpb::ROLE_SYSTEM);  // the SDK's SystemMessageParam
  EXPECT_FALSE(r.stream());
  EXPECT_FALSE(r.has_tool_choice());
  EXPECT_FALSE(r.has_thinking());
  EXPECT_FALSE(r.sampling().has_temperature());
  EXPECT_FALSE(r.sampling().has_top_k());
  EXPECT_EQ(r.betas_size(), 0);
  EXPECT_EQ(r.user(), "");
}

TEST(AnthropicParseTest, NullOptionalFieldsAndEchoedExtrasAreTolerated) {
  auto r = MustParse(Body(
      R"(,"system":null,"metadata":{"user_id":null},"tools":null,"cache_control":null,
      "service_tier":"auto","container":null)",
      R"([{"role":"user","content":[{"type":"text","text":"hi","cache_control":null,"citations":null}]}])"));
  ASSERT_EQ(r.messages_size(), 1);
  EXPECT_FALSE(r.messages(0).parts(0).has_cache_control());
}

TEST(AnthropicParseTest, EmptySystemStringAddsNoMessage) {
  auto r = MustParse(Body(R"(,"system":"")"));
  ASSERT_EQ(r.messages_size(), 1);
  EXPECT_EQ(r.messages(0).role(), llmpb::ROLE_USER);
}

TEST(AnthropicParseTest, ToolChoiceModes) {
  const std::string tools = R"(,"tools":[{"name":"f","input_schema":{"type":"object"}}])";
  EXPECT_EQ(MustParse(Body(tools + R"(,"tool_choice":{"type":"auto"})")).tool_choice().mode(),
            llmpb::ToolChoice::MODE_AUTO);
  auto any =
      MustParse(Body(tools + R"(,"tool_choice":{"type":"any","disable_parallel_tool_use":false})"));
  EXPECT_EQ(any.tool_choice().mode(), llmpb::ToolChoice::MODE_REQUIRED);
  EXPECT_FALSE(any.tool_choice().disable_parallel_tool_use());
  EXPECT_EQ(MustParse(Body(R"(,"tool_choice":{"type":"none"})")).tool_choice().mode(),
            llmpb::ToolChoice::MODE_NONE);
}

TEST(AnthropicParseTest, ThinkingModes) {
  auto off = MustParse(Body(R"(,"thinking":{"type":"disabled"})"));
  EXPECT_TRUE(off.has_thinking());
  EXPECT_FALSE(off.thinking().enabled());
  auto adaptive = MustParse(Body(R"(,"thinking":{"type":"adaptive"})"));
  EXPECT_TRUE(adaptive.thinking().enabled());
  EXPECT_EQ(adaptive.thinking().budget_tokens(), 0);  // the model decides
  EXPECT_TRUE(adaptive.thinking().include_thoughts());
  auto omitted =
      MustParse(Body(R"(,"thinking":{"type":"enabled","budget_tokens":1024,"display":"omitted"})"));
  EXPECT_TRUE(omitted.thinking().enabled());
  EXPECT_FALSE(omitted.thinking().include_thoughts());
}

TEST(AnthropicParseTest, TopLevelCacheControlMarksTheLastBlock) {
  auto r = MustParse(Body(R"(,"cache_control":{"type":"ephemeral","ttl":"1h"})",
                          R"([{"role":"user","content":"a"},{"role":"assistant","content":"b"},
                              {"role":"user","content":[{"type":"text","text":"c"},{"type":"text","text":"d"}]}])"));
  EXPECT_FALSE(r.messages(2).parts(0).has_cache_control());
  EXPECT_EQ(r.messages(2).parts(1).cache_control().ttl().seconds(), 3600);
  EXPECT_FALSE(r.messages(0).parts(0).has_cache_control());
}

TEST(AnthropicParseTest, MaxTokensIsRequiredWhateverTheDefault) {
  ParsedMessages out;
  HttpError err;
  EXPECT_FALSE(ParseMessagesRequest(R"({"model":"m","messages":[{"role":"user","content":"x"}]})",
                                    kHeaders, 8192, &out, &err));
  EXPECT_EQ(err.status, 400);
  EXPECT_EQ(err.message, "max_tokens: Field required");
  EXPECT_EQ(err.param, "max_tokens");
  // 0 warms the prompt cache without generating.
  EXPECT_EQ(MustParse(R"({"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]})")
                .sampling()
                .max_output_tokens(),
            0);
}

TEST(AnthropicParseTest, MissingVersionHeaderIsRejected) {
  auto err = MustFail(Body(), {{"x-api-key", "k"}});
  EXPECT_EQ(err.message, "anthropic-version: header is required");
  EXPECT_EQ(err.param, "anthropic-version");
}

// Server tools and Files API references have no canonical form: kept as written, for an
// Anthropic upstream (pass-through); the connector refuses them elsewhere.
TEST(AnthropicParseTest, ServerToolsAndFileReferencesAreKeptAsWritten) {
  auto r = MustParse(R"({"model":"claude-x","max_tokens":100,"messages":[{"role":"user","content":[)"
                     R"({"type":"text","text":"see"},{"type":"image","source":{"type":"file","file_id":"file_1"}},)"
                     R"({"type":"document","source":{"type":"file","file_id":"file_2"}}]}],)"
                     R"("tools":[{"type":"web_search_20250305","name":"web_search","max_uses":3},)"
                     R"({"name":"f","input_schema":{"type":"object"}}]})");
  ASSERT_EQ(r.tools_size(), 2);
  EXPECT_EQ(r.tools(0).name(), "web_search");
  EXPECT_EQ(r.tools(0).native_protocol(), llmpb::PROTOCOL_ANTHROPIC);
  EXPECT_EQ(r.tools(0).native_json(), R"({"type":"web_search_20250305","name":"web_search","max_uses":3})");
  EXPECT_TRUE(r.tools(1).native_json().empty());
  EXPECT_EQ(r.messages(0).parts(1).image().file_id(), "file_1");
  EXPECT_EQ(r.messages(0).parts(2).document().file_id(), "file_2");
}

TEST(AnthropicParseTest, BadInputNamesTheField) {
  struct Case {
    std::string body;
    std::string message;
  };
  const std::string user = R"([{"role":"user","content":[)";
  const std::string tools = R"(,"tools":[{"name":"f","input_schema":{"type":"object"}}])";
  const Case cases[] = {
      {R"({"max_tokens":1,"messages":[{"role":"user","content":"x"}]})", "model: Field required"},
      {R"({"model":"","max_tokens":1,"messages":[{"role":"user","content":"x"}]})",
       "model: String should have at least 1 character"},
      {R"({"model":7,"max_tokens":1,"messages":[{"role":"user","content":"x"}]})",
       "model: Input should be a valid string"},
      {R"({"model":"m","max_tokens":"ten","messages":[{"role":"user","content":"x"}]})",
       "max_tokens: Input should be a valid integer"},
      {R"({"model":"m","max_tokens":-1,"messages":[{"role":"user","content":"x"}]})",
       "max_tokens: Input should be greater than or equal to 0"},
      {R"({"model":"m","max_tokens":1})", "messages: Field required"},
      {Body("", R"({})"), "messages: Input should be a valid list"},
      {Body("", "[]"), "messages: at least one message is required"},
      {Body("", R"(["hi"])"), "messages.0: Input should be a valid dictionary"},
      {Body("", R"([{"content":"x"}])"), "messages.0.role: Field required"},
      {Body("", R"([{"role":"wizard","content":"x"}])"),
       "messages.0.role: Input should be 'user', 'assistant' or 'system'"},
      {Body("", R"([{"role":"user"}])"), "messages.0.content: Field required"},
      {Body("", R"([{"role":"user","content":5}])"),
       "messages.0.content: Input should be a valid string or a valid list"},
      {Body("", R"([{"role":"user","content":"x"},{"role":"assistant","content":[{"text":"y"}]}])"),
       "messages.1.content.0.type: Field required"},
      {Body("", user + R"({"type":"video"}]}])"),
       "messages.0.content.0.type: Input tag 'video' found using 'type' does not match any of the "
       "expected tags: "
       "'text', 'image', 'document', 'tool_result'"},
      {Body(
           "",
           R"([{"role":"assistant","content":[{"type":"server_tool_use","id":"s","name":"web_search","input":{}}]}])"),
       "messages.0.content.0.type: Input tag 'server_tool_use' found using 'type' does not match "
       "any of the expected "
       "tags: 'text', 'thinking', 'redacted_thinking', 'tool_use'"},
      {Body("", user + R"({"type":"tool_use","id":"t","name":"f","input":{}}]}])"),
       "messages.0.content.0: 'tool_use' blocks are not allowed in user messages"},
      {Body("", R"([{"role":"assistant","content":[{"type":"tool_result","tool_use_id":"t"}]}])"),
       "messages.0.content.0: 'tool_result' blocks are not allowed in assistant messages"},
      {Body("", user + R"({"type":"text"}]}])"), "messages.0.content.0.text: Field required"},
      {Body("", user + R"({"type":"text","text":3}]}])"),
       "messages.0.content.0.text: Input should be a valid string"},
      {Body("", user + R"({"type":"image"}]}])"), "messages.0.content.0.source: Field required"},
      {Body(
           "",
           user +
               R"({"type":"image","source":{"type":"base64","media_type":"image/bmp","data":"AA=="}}]}])"),
       "messages.0.content.0.source.media_type: Input should be 'image/jpeg', 'image/png', "
       "'image/gif' or 'image/webp'"},
      {Body(
           "",
           user +
               R"({"type":"image","source":{"type":"base64","media_type":"image/png","data":"@@@"}}]}])"),
       "messages.0.content.0.source.data: Invalid base64 data"},
      {Body("", user + R"({"type":"image","source":{"type":"bytes","data":"f1"}}]}])"),
       "messages.0.content.0.source.type: Input tag 'bytes' found using 'type' does not match any "
       "of the expected "
       "tags: 'base64', 'file', 'url'"},
      {Body(
           "",
           user +
               R"({"type":"document","source":{"type":"base64","media_type":"text/html","data":"AA=="}}]}])"),
       "messages.0.content.0.source.media_type: Input should be 'application/pdf'"},
      {Body(
           "",
           R"([{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":"{}"}]}])"),
       "messages.0.content.0.input: Input should be a valid dictionary"},
      {Body("", R"([{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f"}]}])"),
       "messages.0.content.0.input: Field required"},
      {Body("", R"([{"role":"assistant","content":[{"type":"tool_use","name":"f","input":{}}]}])"),
       "messages.0.content.0.id: Field required"},
      {Body("", user + R"({"type":"tool_result","content":"x"}]}])"),
       "messages.0.content.0.tool_use_id: Field required"},
      {Body("", user + R"({"type":"tool_result","tool_use_id":"t","is_error":"yes"}]}])"),
       "messages.0.content.0.is_error: Input should be a valid boolean"},
      {Body(
           "",
           user +
               R"({"type":"tool_result","tool_use_id":"t","content":[{"type":"tool_result","tool_use_id":"u"}]}]}])"),
       "messages.0.content.0.content.0: 'tool_result' blocks are not allowed in tool_result "
       "content"},
      {Body("", R"([{"role":"assistant","content":[{"type":"thinking","thinking":"x"}]}])"),
       "messages.0.content.0.signature: Field required"},
      {Body("", R"([{"role":"assistant","content":[{"type":"redacted_thinking"}]}])"),
       "messages.0.content.0.data: Field required"},
      {Body("", user + R"({"type":"text","text":"x","cache_control":{"type":"persistent"}}]}])"),
       "messages.0.content.0.cache_control.type: Input tag 'persistent' found using 'type' does "
       "not match any of "
       "the expected tags: 'ephemeral'"},
      {Body("",
            user +
                R"({"type":"text","text":"x","cache_control":{"type":"ephemeral","ttl":"2h"}}]}])"),
       "messages.0.content.0.cache_control.ttl: Input should be '5m' or '1h'"},
      {Body(R"(,"system":[{"type":"image","source":{"type":"url","url":"u"}}])"),
       "system.0: 'image' blocks are not allowed in system content"},
      {Body(R"(,"system":5)"), "system: Input should be a valid string or a valid list"},
      {Body(R"(,"temperature":1.5)"), "temperature: Input should be less than or equal to 1"},
      {Body(R"(,"temperature":"hot")"), "temperature: Input should be a valid number"},
      {Body(R"(,"top_p":-0.1)"), "top_p: Input should be greater than or equal to 0"},
      {Body(R"(,"top_k":-1)"), "top_k: Input should be greater than or equal to 0"},
      {Body(R"(,"top_k":1.5)"), "top_k: Input should be a valid integer"},
      {Body(R"(,"stop_sequences":"END")"), "stop_sequences: Input should be a valid list"},
      {Body(R"(,"stop_sequences":["END",1])"), "stop_sequences.1: Input should be a valid string"},
      {Body(R"(,"stream":"yes")"), "stream: Input should be a valid boolean"},
      {Body(R"(,"metadata":{"user_id":5})"), "metadata.user_id: Input should be a valid string"},
      {Body(R"(,"metadata":"u")"), "metadata: Input should be a valid dictionary"},
      {Body(R"(,"tools":{})"), "tools: Input should be a valid list"},
      {Body(R"(,"tools":[{"name":"f"}])"), "tools.0.input_schema: Field required"},
      {Body(R"(,"tools":[{"input_schema":{"type":"object"}}])"), "tools.0.name: Field required"},
      {Body(R"(,"tools":[{"name":"f","input_schema":"object"}])"),
       "tools.0.input_schema: Input should be a valid dictionary"},
      {Body(R"(,"tools":[{"type":"web_search_20250305"}])"), "tools.0.name: Field required"},
      {Body(R"(,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"file"}}]}])"),
       "messages.0.content.0.source.file_id: Field required"},
      {Body(tools + R"(,"tool_choice":{"type":"required"})"),
       "tool_choice.type: Input tag 'required' found using 'type' does not match any of the "
       "expected tags: 'auto', "
       "'any', 'tool', 'none'"},
      {Body(tools + R"(,"tool_choice":{"type":"tool"})"), "tool_choice.name: Field required"},
      {Body(tools + R"(,"tool_choice":{"type":"tool","name":"g"})"),
       "tool_choice.name: no tool named 'g' in 'tools'"},
      {Body(R"(,"tool_choice":{"type":"any"})"),
       "tool_choice: tool_choice of type 'any' requires 'tools'"},
      {Body(tools + R"(,"tool_choice":{"type":"auto","disable_parallel_tool_use":1})"),
       "tool_choice.disable_parallel_tool_use: Input should be a valid boolean"},
      {Body(R"(,"thinking":{"type":"enabled"})"), "thinking.budget_tokens: Field required"},
      {Body(R"(,"thinking":{"type":"enabled","budget_tokens":100})"),
       "thinking.budget_tokens: Input should be greater than or equal to 1024"},
      {Body(R"(,"thinking":{"type":"on"})"),
       "thinking.type: Input tag 'on' found using 'type' does not match any of the expected tags: "
       "'enabled', "
       "'disabled', 'adaptive', 'between_tools'"},
      {Body(R"(,"thinking":{"type":"adaptive","display":"full"})"),
       "thinking.display: Input should be 'summarized' or 'omitted'"},
      {Body(R"(,"output_config":{"effort":"extreme"})"),
       "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"},
      {Body(R"(,"output_config":{"format":{"type":"json_schema"}})"),
       "output_config.format.schema: Field required"},
      {Body(R"(,"cache_control":{"type":"ephemeral","ttl":5})"),
       "cache_control.ttl: Input should be a valid string"},
  };
  for (const auto& c : cases) {
    HttpError err = MustFail(c.body);
    EXPECT_EQ(err.message, c.message) << c.body;
    // `param` is the field path: the message up to its colon.
    EXPECT_EQ(err.param, c.message.substr(0, c.message.find(':'))) << c.body;
  }
}

TEST(AnthropicParseTest, BodyThatIsNotJsonIsRejected) {
  EXPECT_EQ(MustFail("not json").param, "");
  EXPECT_EQ(MustFail("[1,2]").param, "");
}

// ---------------------------------------------------------------------------------------
// Canonical events

ChatEvent Start(int64_t input = 0, int64_t cache_read = 0, int64_t cache_write = 0) {
  ChatEvent e;
  e.mutable_start()->set_response_id("up-1");
  auto* u = e.mutable_start()->mutable_input_usage();
  u->set_input_tokens(input);
  u->set_cache_read_tokens(cache_read);
  u->set_cache_write_tokens(cache_write);
  return e;
}
ChatEvent Text(std::string text) {
  ChatEvent e;
  e.mutable_text()->set_text(std::move(text));
  return e;
}
ChatEvent Reasoning(std::string text, std::string signature = "") {
  ChatEvent e;
  e.mutable_reasoning()->set_text(std::move(text));
  e.mutable_reasoning()->set_signature(std::move(signature));
  return e;
}
ChatEvent Redacted(std::string data) {
  ChatEvent e;
  e.mutable_reasoning()->set_redacted_data(std::move(data));
  return e;
}
ChatEvent ToolStart(int index, std::string id, std::string name) {
  ChatEvent e;
  e.mutable_tool_call_start()->set_index(index);
  e.mutable_tool_call_start()->set_id(std::move(id));
  e.mutable_tool_call_start()->set_name(std::move(name));
  return e;
}
ChatEvent ToolDelta(int index, std::string fragment) {
  ChatEvent e;
  e.mutable_tool_call_delta()->set_index(index);
  e.mutable_tool_call_delta()->set_arguments_fragment(std::move(fragment));
  return e;
}
ChatEvent Finish(llmpb::FinishReason reason, std::string stop_sequence = "") {
  ChatEvent e;
  e.mutable_finish()->set_reason(reason);
  e.mutable_finish()->set_stop_sequence(std::move(stop_sequence));
  return e;
}
ChatEvent Usage(int64_t input, int64_t output, int64_t cache_read = 0, int64_t cache_write = 0) {
  ChatEvent e;
  auto* u = e.mutable_usage();
  u->set_input_tokens(input);
  u->set_output_tokens(output);
  u->set_cache_read_tokens(cache_read);
  u->set_cache_write_tokens(cache_write);
  return e;
}

ChatAnswer AnswerOf(const std::vector<ChatEvent>& events) {
  ChatAnswer a;
  for (const auto& e : events) a.Apply(e);
  return a;
}

std::string Sync(const std::vector<ChatEvent>& events) {
  return NewMessagesRenderer("msg_1", "claude-x")->SyncBody(AnswerOf(events));
}

// The frames a renderer writes for `events` (in the order chat_pipeline feeds them: the
// usage event last), then StreamEnd.
std::string Stream(const std::vector<ChatEvent>& events) {
  auto r = NewMessagesRenderer("msg_1", "claude-x");
  std::string out;
  for (const auto& e : events) out += r->StreamEvent(e);
  return out + r->StreamEnd();
}

std::string Ev(const std::string& name, const std::string& data) {
  return absl::StrCat("event: ", name, "\ndata: ", data, "\n\n");
}

std::string MessageStart(
    const std::string& usage =
        R"({"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0})") {
  return Ev("message_start",
            absl::StrCat(R"({"type":"message_start","message":{"id":"msg_1","type":"message",)"
                         R"("role":"assistant","model":"claude-x","content":[],"stop_reason":null,)"
                         R"("stop_sequence":null,"usage":)",
                         usage, "}}"));
}
std::string BlockStart(int index, const std::string& block) {
  return Ev("content_block_start", absl::StrCat(R"({"type":"content_block_start","index":)", index,
                                                R"(,"content_block":)", block, "}"));
}
std::string BlockDelta(int index, const std::string& delta) {
  return Ev("content_block_delta", absl::StrCat(R"({"type":"content_block_delta","index":)", index,
                                                R"(,"delta":)", delta, "}"));
}
std::string BlockStop(int index) {
  return Ev("content_block_stop",
            absl::StrCat(R"({"type":"content_block_stop","index":)", index, "}"));
}
std::string MessageEnd(const std::string& stop_reason, const std::string& usage,
                       const std::string& stop_sequence = "null") {
  return Ev("message_delta",
            absl::StrCat(R"({"type":"message_delta","delta":{"stop_reason":")", stop_reason,
                         R"(","stop_sequence":)", stop_sequence, R"(},"usage":)", usage, "}")) +
         Ev("message_stop", R"({"type":"message_stop"})");
}
std::string UsageJson(int input, int output, int cache_write = 0, int cache_read = 0) {
  return absl::StrCat(R"({"input_tokens":)", input, R"(,"output_tokens":)", output,
                      R"(,"cache_creation_input_tokens":)", cache_write,
                      R"(,"cache_read_input_tokens":)", cache_read, "}");
}

// What the SDK's MessageStream relies on (PROTOCOLS.md §B), checked on any stream: an
// event line on every frame naming the JSON type, message_start first, dense block
// indexes with start/deltas/stop in order, one signature_delta per thinking block, and
// message_delta then message_stop last.
void ExpectSdkReadable(const std::string& frames) {
  SseParser parser;
  std::vector<SseEvent> events;
  parser.Feed(frames, events);
  ASSERT_GE(events.size(), 3u) << frames;
  EXPECT_EQ(parser.Pending(), 0u);
  int next_index = 0, open = -1, signatures = 0;
  std::string open_type;
  for (size_t i = 0; i < events.size(); ++i) {
    const auto& ev = events[i];
    json::value data = json::parse(ev.data);
    ASSERT_EQ(ev.event, std::string(data.at("type").as_string())) << ev.data;
    if (i == 0) {
      EXPECT_EQ(ev.event, "message_start");
    }
    if (ev.event == "content_block_start") {
      EXPECT_EQ(open, -1) << "a block is still open";
      EXPECT_EQ(data.at("index").as_int64(), next_index);
      open = next_index++;
      open_type = std::string(data.at("content_block").at("type").as_string());
      signatures = 0;
    } else if (ev.event == "content_block_delta") {
      EXPECT_EQ(data.at("index").as_int64(), open);
      if (data.at("delta").at("type") == "signature_delta") ++signatures;
    } else if (ev.event == "content_block_stop") {
      EXPECT_EQ(data.at("index").as_int64(), open);
      if (open_type == "thinking") {
        EXPECT_EQ(signatures, 1);
      }
      open = -1;
    } else if (ev.event == "message_delta") {
      EXPECT_EQ(open, -1);
      EXPECT_TRUE(data.at("usage").is_object());
      ASSERT_EQ(i + 2, events.size());
      EXPECT_EQ(events[i + 1].event, "message_stop");
      break;
    }
  }
}

// ---------------------------------------------------------------------------------------
// ChatAnswer blocks

TEST(ChatAnswerBlocksTest, ContentKeepsItsOrder) {
  auto a = AnswerOf({Start(), Reasoning("let me "), Reasoning("think", "sig-1"),
                     Reasoning("again", "sig-2"), Redacted("blob"), Text("Hi "), Text("there"),
                     ToolStart(0, "t0", "f"), ToolDelta(0, "{}"), Text("and"),
                     ToolStart(1, "t1", "g"), ToolDelta(1, "{\"a\":"), ToolDelta(1, "1}"),
                     Finish(llmpb::FINISH_REASON_TOOL_CALLS)});
  using Kind = ChatAnswer::Block::Kind;
  ASSERT_EQ(a.blocks.size(), 7u);
  EXPECT_EQ(a.blocks[0].kind, Kind::kThinking);
  EXPECT_EQ(a.blocks[0].text, "let me think");
  EXPECT_EQ(a.blocks[0].signature, "sig-1");
  EXPECT_EQ(a.blocks[1].kind, Kind::kThinking);  // after a signature: a new block
  EXPECT_EQ(a.blocks[1].text, "again");
  EXPECT_EQ(a.blocks[2].kind, Kind::kRedactedThinking);
  EXPECT_EQ(a.blocks[2].data, "blob");
  EXPECT_EQ(a.blocks[3].text, "Hi there");
  EXPECT_EQ(a.blocks[4].kind, Kind::kToolCall);
  EXPECT_EQ(a.blocks[4].tool_call, 0u);
  EXPECT_EQ(a.blocks[5].text, "and");
  EXPECT_EQ(a.blocks[6].tool_call, 1u);
  // The flat fields the OpenAI renderer reads are unchanged.
  EXPECT_EQ(a.text, "Hi thereand");
  EXPECT_EQ(a.reasoning, "let me thinkagain");
  ASSERT_EQ(a.tool_calls.size(), 2u);
  EXPECT_EQ(a.tool_calls[1].arguments, "{\"a\":1}");
}

// ---------------------------------------------------------------------------------------
// Whole answers: canonical → Anthropic message (PROTOCOLS.md §E, OpenAI/Gemini → Anthropic).
// Covers: every stop reason row (StopReasons; through the decoders,
// UpstreamFinishReasonsBecomeStopReasons); tool calls interleaved with text
// (ToolCallsInterleavedWithTextKeepTheirOrder); arguments that are empty or not an object
// → {} (MalformedToolArgumentsBecomeAnEmptyInput); input_tokens excluding the cache
// (InputTokensExcludeCacheTokens).

TEST(AnthropicSyncTest, TextOnly) {
  EXPECT_EQ(
      Sync({Start(10), Text("Hello"), Text(" world"), Finish(llmpb::FINISH_REASON_STOP),
            Usage(10, 5)}),
      R"({"id":"msg_1","type":"message","role":"assistant","model":"claude-x",)"
      R"("content":[{"type":"text","text":"Hello world"}],"stop_reason":"end_turn","stop_sequence":null,)"
      R"("usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}})");
}

TEST(AnthropicSyncTest, ThinkingThenText) {
  EXPECT_EQ(
      Sync({Start(), Reasoning("2+2 is 4", "c2ln"), Redacted("EmwKAhgB"), Text("4"),
            Finish(llmpb::FINISH_REASON_STOP), Usage(20, 30)}),
      R"({"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[)"
      R"({"type":"thinking","thinking":"2+2 is 4","signature":"c2ln"},)"
      R"({"type":"redacted_thinking","data":"EmwKAhgB"},{"type":"text","text":"4"}],)"
      R"("stop_reason":"end_turn","stop_sequence":null,)"
      R"("usage":{"input_tokens":20,"output_tokens":30,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}})");
}

TEST(AnthropicSyncTest, ToolCallsInterleavedWithTextKeepTheirOrder) {
  auto body = json::parse(Sync({Start(), Text("Checking."), ToolStart(0, "toolu_a", "weather"),
                                ToolDelta(0, R"({"city":)"), ToolDelta(0, R"("Paris"})"),
                                Text("And the time:"), ToolStart(1, "toolu_b", "clock"),
                                Finish(llmpb::FINISH_REASON_TOOL_CALLS), Usage(5, 7)}));
  EXPECT_EQ(body.at("content"), json::parse(R"([
      {"type":"text","text":"Checking."},
      {"type":"tool_use","id":"toolu_a","name":"weather","input":{"city":"Paris"}},
      {"type":"text","text":"And the time:"},
      {"type":"tool_use","id":"toolu_b","name":"clock","input":{}}])"));
  EXPECT_EQ(body.at("stop_reason"), "tool_use");
}

TEST(AnthropicSyncTest, MalformedToolArgumentsBecomeAnEmptyInput) {
  auto body =
      json::parse(Sync({Start(), ToolStart(0, "t", "f"), ToolDelta(0, "{\"a\":"), Usage(1, 1)}));
  EXPECT_EQ(body.at("content").at(0).at("input"), json::object{});
}

TEST(AnthropicSyncTest, InputTokensExcludeCacheTokens) {
  // Canonical input is the uncached part, as Anthropic's input_tokens is.
  auto body = json::parse(
      Sync({Start(), Text("x"), Finish(llmpb::FINISH_REASON_STOP), Usage(10, 4, 100, 20)}));
  EXPECT_EQ(body.at("usage"),
            json::parse(R"({"input_tokens":10,"output_tokens":4,)"
                        R"("cache_creation_input_tokens":20,"cache_read_input_tokens":100})"));
}

TEST(AnthropicSyncTest, StopReasons) {
  auto reason = [](llmpb::FinishReason r, std::string seq = "") {
    auto body = json::parse(Sync({Start(), Text("x"), Finish(r, seq), Usage(1, 1)}));
    return absl::StrCat(json::serialize(body.at("stop_reason")), " ",
                        json::serialize(body.at("stop_sequence")));
  };
  EXPECT_EQ(reason(llmpb::FINISH_REASON_STOP), R"("end_turn" null)");
  EXPECT_EQ(reason(llmpb::FINISH_REASON_STOP, "END"), R"("stop_sequence" "END")");
  EXPECT_EQ(reason(llmpb::FINISH_REASON_LENGTH), R"("max_tokens" null)");
  EXPECT_EQ(reason(llmpb::FINISH_REASON_TOOL_CALLS), R"("tool_use" null)");
  EXPECT_EQ(reason(llmpb::FINISH_REASON_CONTENT_FILTER), R"("refusal" null)");
  EXPECT_EQ(reason(llmpb::FINISH_REASON_UNSPECIFIED), R"("end_turn" null)");
}

TEST(AnthropicSyncTest, AnAnswerSentBackRoundTripsItsThinkingAndToolCalls) {
  auto body =
      json::parse(Sync({Start(), Reasoning("plan", "sig=="), Redacted("opaque"), Text("Calling."),
                        ToolStart(0, "toolu_1", "f"), ToolDelta(0, R"({"x":1})"),
                        Finish(llmpb::FINISH_REASON_TOOL_CALLS), Usage(1, 1)}));
  std::string next = absl::StrCat(
      R"({"model":"claude-x","max_tokens":100,"messages":[{"role":"user","content":"go"},{"role":"assistant","content":)",
      json::serialize(body.at("content")),
      R"(},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"ok"}]}]})");
  auto r = MustParse(next);
  ASSERT_EQ(r.messages_size(), 3);
  const auto& a = r.messages(1);
  ASSERT_EQ(a.parts_size(), 4);
  EXPECT_EQ(a.parts(0).thinking().text(), "plan");
  EXPECT_EQ(a.parts(0).thinking().signature(), "sig==");
  EXPECT_EQ(a.parts(1).thinking().redacted_data(), "opaque");
  EXPECT_EQ(a.parts(2).text(), "Calling.");
  EXPECT_EQ(a.parts(3).tool_call().arguments_json(), R"({"x":1})");
  EXPECT_EQ(r.messages(2).parts(0).tool_result().name(), "f");
}

// ---------------------------------------------------------------------------------------
// Streams: canonical events → Messages SSE (PROTOCOLS.md §E, OpenAI/Gemini → Anthropic).
// Covers: message_start first; blocks opened lazily and closed on a change of kind or tool
// index (SeveralToolCallsInterleavedWithText, ANewToolIndexClosesTheToolBefore); one chunk
// with content and finish (TextOnly); message_delta held until the usage
// (FinishIsHeldUntilTheUsageArrives); a tool_use without argument fragments → "{}"
// (AToolUseWithoutArgumentFragmentsGetsAnEmptyObject); Gemini's STOP with a functionCall
// (AWholeFunctionCallFromGeminiIsAToolUse); usage with and without cache tokens
// (UsageWithCacheTokens, UsageWithoutCacheTokensArrivesOnlyAtTheEnd); an error after the
// 200 (AnErrorAfterTheStartIsAnErrorEvent). Through the OpenAI decoder: a usage chunk with
// `choices:null`, content and finish_reason in one chunk, message_delta held until the
// usage, input_tokens = max(prompt − cached − cache_write, 0)
// (OpenAiStreamBecomesAnthropicEvents, OpenAiUsageNeverGivesNegativeInput).

TEST(AnthropicStreamTest, TextOnly) {
  // The last text and the finish arrive in one upstream chunk.
  std::string frames = Stream({Start(10), Text("Hi"), Text(""), Text("!"),
                               Finish(llmpb::FINISH_REASON_STOP), Usage(10, 3)});
  EXPECT_EQ(frames, MessageStart(UsageJson(10, 0)) + BlockStart(0, R"({"type":"text","text":""})") +
                        BlockDelta(0, R"({"type":"text_delta","text":"Hi"})") +
                        BlockDelta(0, R"({"type":"text_delta","text":"!"})") + BlockStop(0) +
                        MessageEnd("end_turn", UsageJson(10, 3)));
  ExpectSdkReadable(frames);
}

TEST(AnthropicStreamTest, FinishIsHeldUntilTheUsageArrives) {
  auto r = NewMessagesRenderer("msg_1", "claude-x");
  EXPECT_EQ(r->StreamEvent(Start(7)), MessageStart(UsageJson(7, 0)));
  EXPECT_EQ(r->StreamEvent(Text("a")), BlockStart(0, R"({"type":"text","text":""})") +
                                           BlockDelta(0, R"({"type":"text_delta","text":"a"})"));
  // The finish closes the block; message_delta waits for the usage (it carries both).
  EXPECT_EQ(r->StreamEvent(Finish(llmpb::FINISH_REASON_LENGTH)), BlockStop(0));
  EXPECT_EQ(r->StreamEvent(Usage(7, 9)), MessageEnd("max_tokens", UsageJson(7, 9)));
  EXPECT_EQ(r->StreamEnd(), "");
  EXPECT_EQ(r->StreamEvent(Text("late")), "");
}

TEST(AnthropicStreamTest, EndWithoutUsageStillClosesTheMessage) {
  std::string frames = Stream({Start(4), Text("a"), Finish(llmpb::FINISH_REASON_STOP, "END")});
  EXPECT_EQ(frames, MessageStart(UsageJson(4, 0)) + BlockStart(0, R"({"type":"text","text":""})") +
                        BlockDelta(0, R"({"type":"text_delta","text":"a"})") + BlockStop(0) +
                        MessageEnd("stop_sequence", UsageJson(4, 0), R"("END")"));
  ExpectSdkReadable(frames);
}

TEST(AnthropicStreamTest, ThinkingThenText) {
  // As the Anthropic upstream decodes it: thinking deltas, then the signature alone.
  std::string frames =
      Stream({Start(), Reasoning("Let me "), Reasoning("think."), Reasoning("", "c2ln"), Text("42"),
              Finish(llmpb::FINISH_REASON_STOP), Usage(3, 8)});
  EXPECT_EQ(frames, MessageStart() +
                        BlockStart(0, R"({"type":"thinking","thinking":"","signature":""})") +
                        BlockDelta(0, R"({"type":"thinking_delta","thinking":"Let me "})") +
                        BlockDelta(0, R"({"type":"thinking_delta","thinking":"think."})") +
                        BlockDelta(0, R"({"type":"signature_delta","signature":"c2ln"})") +
                        BlockStop(0) + BlockStart(1, R"({"type":"text","text":""})") +
                        BlockDelta(1, R"({"type":"text_delta","text":"42"})") + BlockStop(1) +
                        MessageEnd("end_turn", UsageJson(3, 8)));
  ExpectSdkReadable(frames);
}

TEST(AnthropicStreamTest, UnsignedReasoningGetsTheOneSignatureDeltaClientsExpect) {
  // An OpenAI-compatible upstream (reasoning_content) signs nothing.
  std::string frames = Stream(
      {Start(), Reasoning("hmm"), Text("ok"), Finish(llmpb::FINISH_REASON_STOP), Usage(1, 2)});
  EXPECT_EQ(frames, MessageStart() +
                        BlockStart(0, R"({"type":"thinking","thinking":"","signature":""})") +
                        BlockDelta(0, R"({"type":"thinking_delta","thinking":"hmm"})") +
                        BlockDelta(0, R"({"type":"signature_delta","signature":""})") +
                        BlockStop(0) + BlockStart(1, R"({"type":"text","text":""})") +
                        BlockDelta(1, R"({"type":"text_delta","text":"ok"})") + BlockStop(1) +
                        MessageEnd("end_turn", UsageJson(1, 2)));
  ExpectSdkReadable(frames);
}

TEST(AnthropicStreamTest, ASignatureEndsItsThinkingBlockAndRedactedBlocksStandAlone) {
  std::string frames = Stream({Start(), Reasoning("one", "s1"), Reasoning("two", "s2"),
                               Redacted("blob"), Finish(llmpb::FINISH_REASON_STOP), Usage(1, 2)});
  EXPECT_EQ(frames,
            MessageStart() + BlockStart(0, R"({"type":"thinking","thinking":"","signature":""})") +
                BlockDelta(0, R"({"type":"thinking_delta","thinking":"one"})") +
                BlockDelta(0, R"({"type":"signature_delta","signature":"s1"})") + BlockStop(0) +
                BlockStart(1, R"({"type":"thinking","thinking":"","signature":""})") +
                BlockDelta(1, R"({"type":"thinking_delta","thinking":"two"})") +
                BlockDelta(1, R"({"type":"signature_delta","signature":"s2"})") + BlockStop(1) +
                BlockStart(2, R"({"type":"redacted_thinking","data":"blob"})") + BlockStop(2) +
                MessageEnd("end_turn", UsageJson(1, 2)));
  ExpectSdkReadable(frames);
}

TEST(AnthropicStreamTest, SeveralToolCallsInterleavedWithText) {
  std::string frames =
      Stream({Start(12), Text("Checking."), ToolStart(0, "toolu_a", "weather"),
              ToolDelta(0, R"({"city":)"), ToolDelta(0, ""), ToolDelta(0, R"("Paris"})"),
              Text("Also:"), ToolStart(1, "toolu_b", "clock"), ToolDelta(1, R"({"tz":"UTC"})"),
              Finish(llmpb::FINISH_REASON_TOOL_CALLS), Usage(12, 40)});
  EXPECT_EQ(frames,
            MessageStart(UsageJson(12, 0)) + BlockStart(0, R"({"type":"text","text":""})") +
                BlockDelta(0, R"({"type":"text_delta","text":"Checking."})") + BlockStop(0) +
                BlockStart(1, R"({"type":"tool_use","id":"toolu_a","name":"weather","input":{}})") +
                BlockDelta(1, R"({"type":"input_json_delta","partial_json":"{\"city\":"})") +
                BlockDelta(1, R"({"type":"input_json_delta","partial_json":"\"Paris\"}"})") +
                BlockStop(1) + BlockStart(2, R"({"type":"text","text":""})") +
                BlockDelta(2, R"({"type":"text_delta","text":"Also:"})") + BlockStop(2) +
                BlockStart(3, R"({"type":"tool_use","id":"toolu_b","name":"clock","input":{}})") +
                BlockDelta(3, R"({"type":"input_json_delta","partial_json":"{\"tz\":\"UTC\"}"})") +
                BlockStop(3) + MessageEnd("tool_use", UsageJson(12, 40)));
  ExpectSdkReadable(frames);
}

TEST(AnthropicStreamTest, ANewToolIndexClosesTheToolBefore) {
  std::string frames =
      Stream({Start(), ToolStart(0, "t0", "f"), ToolDelta(0, "{\"a\":1}"), ToolStart(1, "t1", "f"),
              ToolDelta(1, "{\"a\":2}"), Finish(llmpb::FINISH_REASON_TOOL_CALLS), Usage(1, 1)});
  EXPECT_EQ(frames, MessageStart() +
                        BlockStart(0, R"({"type":"tool_use","id":"t0","name":"f","input":{}})") +
                        BlockDelta(0, R"({"type":"input_json_delta","partial_json":"{\"a\":1}"})") +
                        BlockStop(0) +
                        BlockStart(1, R"({"type":"tool_use","id":"t1","name":"f","input":{}})") +
                        BlockDelta(1, R"({"type":"input_json_delta","partial_json":"{\"a\":2}"})") +
                        BlockStop(1) + MessageEnd("tool_use", UsageJson(1, 1)));
  ExpectSdkReadable(frames);
}

TEST(AnthropicStreamTest, AToolUseWithoutArgumentFragmentsGetsAnEmptyObject) {
  std::string frames = Stream({Start(), ToolStart(0, "toolu_1", "now"), ToolDelta(0, ""),
                               Finish(llmpb::FINISH_REASON_TOOL_CALLS), Usage(2, 1)});
  EXPECT_EQ(frames,
            MessageStart() +
                BlockStart(0, R"({"type":"tool_use","id":"toolu_1","name":"now","input":{}})") +
                BlockDelta(0, R"({"type":"input_json_delta","partial_json":"{}"})") + BlockStop(0) +
                MessageEnd("tool_use", UsageJson(2, 1)));
  ExpectSdkReadable(frames);
}

TEST(AnthropicStreamTest, AWholeFunctionCallFromGeminiIsAToolUse) {
  // Gemini's STOP with a functionCall reaches the edge as TOOL_CALLS with whole arguments.
  std::string frames =
      Stream({Start(), ToolStart(0, "call_0", "lookup"), ToolDelta(0, R"({"q":"x"})"),
              Finish(llmpb::FINISH_REASON_TOOL_CALLS), Usage(3, 4)});
  EXPECT_EQ(frames,
            MessageStart() +
                BlockStart(0, R"({"type":"tool_use","id":"call_0","name":"lookup","input":{}})") +
                BlockDelta(0, R"({"type":"input_json_delta","partial_json":"{\"q\":\"x\"}"})") +
                BlockStop(0) + MessageEnd("tool_use", UsageJson(3, 4)));
}

TEST(AnthropicStreamTest, UsageWithCacheTokens) {
  // message_start carries the prompt usage known at the start; message_delta the whole.
  std::string frames = Stream(
      {Start(10, 100, 20), Text("x"), Finish(llmpb::FINISH_REASON_STOP), Usage(10, 6, 100, 20)});
  EXPECT_EQ(frames, MessageStart(UsageJson(10, 0, 20, 100)) +
                        BlockStart(0, R"({"type":"text","text":""})") +
                        BlockDelta(0, R"({"type":"text_delta","text":"x"})") + BlockStop(0) +
                        MessageEnd("end_turn", UsageJson(10, 6, 20, 100)));
}

TEST(AnthropicStreamTest, UsageWithoutCacheTokensArrivesOnlyAtTheEnd) {
  // A translated upstream (OpenAI) knows nothing at the start: message_delta's non-null
  // input counts overwrite message_start's zeros in the SDK.
  std::string frames =
      Stream({Start(), Text("x"), Finish(llmpb::FINISH_REASON_STOP), Usage(25, 6)});
  EXPECT_EQ(frames, MessageStart(UsageJson(0, 0)) + BlockStart(0, R"({"type":"text","text":""})") +
                        BlockDelta(0, R"({"type":"text_delta","text":"x"})") + BlockStop(0) +
                        MessageEnd("end_turn", UsageJson(25, 6)));
}

TEST(AnthropicStreamTest, AnErrorAfterTheStartIsAnErrorEvent) {
  auto r = NewMessagesRenderer("msg_1", "claude-x");
  std::string frames = r->StreamEvent(Start()) + r->StreamEvent(Text("partial"));
  EXPECT_EQ(r->StreamError(HttpError(503, "Overloaded")),
            Ev("error",
               R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})"));
  EXPECT_EQ(r->StreamEvent(Text("more")), "");
  EXPECT_EQ(r->StreamEnd(), "");
  EXPECT_EQ(
      NewMessagesRenderer("m", "x")->StreamError(HttpError(504, "upstream timed out")),
      Ev("error",
         R"({"type":"error","error":{"type":"timeout_error","message":"upstream timed out"}})"));
  // Every upstream deployment failed: PROTOCOLS.md §0 gives Anthropic callers overloaded_error.
  EXPECT_EQ(NewMessagesRenderer("m", "x")->StreamError(HttpError(502, "boom")),
            Ev("error", R"({"type":"error","error":{"type":"overloaded_error","message":"boom"}})"));
  EXPECT_EQ(NewMessagesRenderer("m", "x")->StreamError(HttpError(500, "bug")),
            Ev("error", R"({"type":"error","error":{"type":"api_error","message":"bug"}})"));
}

TEST(AnthropicStreamTest, ContentBeforeAStartEventStillOpensTheMessage) {
  std::string frames = Stream({Text("hi"), Usage(1, 1)});
  EXPECT_EQ(frames, MessageStart() + BlockStart(0, R"({"type":"text","text":""})") +
                        BlockDelta(0, R"({"type":"text_delta","text":"hi"})") + BlockStop(0) +
                        MessageEnd("end_turn", UsageJson(1, 1)));
}

TEST(AnthropicStreamTest, AnEmptyAnswerIsAWholeMessage) {
  std::string frames = Stream({Start(5), Finish(llmpb::FINISH_REASON_STOP), Usage(5, 1)});
  EXPECT_EQ(frames, MessageStart(UsageJson(5, 0)) + MessageEnd("end_turn", UsageJson(5, 1)));
}

// An OpenAI-compatible upstream's stream, decoded by the connector: the events it gives.
std::vector<ChatEvent> FromOpenAi(const std::vector<std::string>& chunks) {
  connector::OpenAiDecoder d(0);
  std::vector<ChatEvent> events;
  for (const auto& c : chunks) EXPECT_TRUE(d.FeedChunk(c, events).ok()) << c;
  d.Finish(events);
  return events;
}

TEST(AnthropicStreamTest, OpenAiStreamBecomesAnthropicEvents) {
  auto events = FromOpenAi({
      R"({"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"content":"Checking."}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"x\":"}}]}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"content":"Also"}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"g","arguments":""}}]}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"content":"done"},"finish_reason":"tool_calls"}]})",
      R"({"id":"c","choices":null,"usage":{"prompt_tokens":100,"completion_tokens":12,"prompt_tokens_details":{"cached_tokens":60,"cache_write_tokens":10}}})",
      "[DONE]"});
  // Fed one by one: nothing ends the message before the usage event.
  auto r = NewMessagesRenderer("msg_1", "claude-x");
  std::string frames;
  for (const auto& e : events) {
    std::string out = r->StreamEvent(e);
    EXPECT_EQ(out.find("message_delta") != std::string::npos, e.has_usage()) << e.DebugString();
    frames += out;
  }
  frames += r->StreamEnd();
  ExpectSdkReadable(frames);
  EXPECT_EQ(frames,
            MessageStart() + BlockStart(0, R"({"type":"text","text":""})") +
                BlockDelta(0, R"({"type":"text_delta","text":"Checking."})") + BlockStop(0) +
                BlockStart(1, R"({"type":"tool_use","id":"call_a","name":"f","input":{}})") +
                BlockDelta(1, R"({"type":"input_json_delta","partial_json":"{\"x\":"})") +
                BlockDelta(1, R"({"type":"input_json_delta","partial_json":"1}"})") + BlockStop(1) +
                BlockStart(2, R"({"type":"text","text":""})") +
                BlockDelta(2, R"({"type":"text_delta","text":"Also"})") + BlockStop(2) +
                BlockStart(3, R"({"type":"tool_use","id":"call_b","name":"g","input":{}})") +
                BlockDelta(3, R"({"type":"input_json_delta","partial_json":"{}"})") + BlockStop(3) +
                BlockStart(4, R"({"type":"text","text":""})") +
                BlockDelta(4, R"({"type":"text_delta","text":"done"})") + BlockStop(4) +
                MessageEnd("tool_use", UsageJson(30, 12, 10, 60)));  // input = 100 − 60 − 10
}

TEST(AnthropicStreamTest, OpenAiUsageNeverGivesNegativeInput) {
  auto events = FromOpenAi({
      R"({"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]})",
      R"({"id":"c","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":8,"cache_write_tokens":5}}})"});
  std::string frames = Stream(events);
  EXPECT_NE(frames.find(MessageEnd("end_turn", UsageJson(0, 1, 5, 8))), std::string::npos) << frames;
}

TEST(AnthropicSyncTest, UpstreamFinishReasonsBecomeStopReasons) {
  auto via_openai = [](const std::string& finish_reason) {
    return json::parse(Sync(FromOpenAi({R"({"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":")" +
                                        finish_reason + R"("}]})"})))
        .at("stop_reason");
  };
  EXPECT_EQ(via_openai("stop"), "end_turn");
  EXPECT_EQ(via_openai("length"), "max_tokens");
  EXPECT_EQ(via_openai("tool_calls"), "tool_use");
  EXPECT_EQ(via_openai("content_filter"), "refusal");
  auto via_gemini = [](const std::string& parts, const std::string& finish_reason) {
    connector::GeminiDecoder d(0);
    std::vector<ChatEvent> events;
    EXPECT_TRUE(d.FeedResponse(R"({"candidates":[{"content":{"role":"model","parts":)" + parts +
                                   R"(},"finishReason":")" + finish_reason + R"(","index":0}]})",
                               events)
                    .ok());
    d.Finish(events);
    return json::parse(Sync(events));
  };
  EXPECT_EQ(via_gemini(R"([{"text":"x"}])", "STOP").at("stop_reason"), "end_turn");
  auto call = via_gemini(R"([{"functionCall":{"name":"f","args":{"a":1}}}])", "STOP");
  EXPECT_EQ(call.at("stop_reason"), "tool_use");  // STOP carrying a functionCall
  EXPECT_EQ(call.at("content"), json::parse(R"([{"type":"tool_use","id":"call_0","name":"f","input":{"a":1}}])"));
  EXPECT_EQ(via_gemini(R"([{"text":"x"}])", "MAX_TOKENS").at("stop_reason"), "max_tokens");
  EXPECT_EQ(via_gemini(R"([{"text":"x"}])", "SAFETY").at("stop_reason"), "refusal");
}

TEST(AnthropicRenderTest, ProtocolAndCountTokens) {
  EXPECT_EQ(NewMessagesRenderer("msg_1", "m")->protocol(), ApiProtocol::kAnthropic);
  EXPECT_EQ(CountTokensJson(42), R"({"input_tokens":42})");
}

}  // namespace
}  // namespace nexusflow::gateway::anthropic

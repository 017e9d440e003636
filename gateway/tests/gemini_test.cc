#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "absl/strings/match.h"
#include "gateway/protocols/gemini.h"
#include "libs/common/sse.h"
#include "services/provider-connector/anthropic_upstream.h"
#include "services/provider-connector/openai_upstream.h"

namespace nexusflow::gateway::gemini {
namespace {

namespace json = boost::json;
using llm::v1::ChatEvent;

ParsedGenerate MustParse(const std::string& body, bool stream = false) {
  ParsedGenerate out;
  HttpError err;
  EXPECT_TRUE(ParseGenerateContentRequest(body, "models/gemini-2.5-flash", stream, &out, &err)) << err.message;
  return out;
}

HttpError MustFail(const std::string& body) {
  ParsedGenerate out;
  HttpError err;
  EXPECT_FALSE(ParseGenerateContentRequest(body, "gemini-2.5-flash", false, &out, &err)) << body;
  EXPECT_EQ(err.status, 400);
  return err;
}

// A minimal valid body with `extra` fields added at the top level.
std::string With(const std::string& extra) {
  return R"({"contents":[{"role":"user","parts":[{"text":"hi"}]}])" + (extra.empty() ? "" : "," + extra) + "}";
}

// ---- requests ---------------------------------------------------------------------------
// Gemini request → canonical (PROTOCOLS.md §E, Gemini → OpenAI/Anthropic; the connector's
// codec tests cover the canonical → upstream half).
// Covers: systemInstruction → ROLE_SYSTEM; model → assistant; functionCall → tool calls
// with ids; functionResponse → ROLE_TOOL ahead of the rest of the user turn;
// maxOutputTokens; stopSequences ≤ 5 (EveryCamelCaseFieldBecomesCanonical,
// BadInputIsRefusedInGooglesWordsNamingTheField); functionResponses paired with their calls
// (FunctionResponsesPairWithTheirCalls); AUTO/NONE/ANY/ANY+allowedFunctionNames
// (FunctionCallingModesBecomeToolChoice).

// Every field of §C, spelled in camelCase as the SDK sends it.
const char* kCamelBody = R"({
  "systemInstruction":{"role":"user","parts":[{"text":"be brief"},{"text":"be kind"}]},
  "contents":[
    {"role":"user","parts":[
      {"text":"look"},
      {"inlineData":{"mimeType":"image/png","data":"iVBO"}},
      {"inlineData":{"mimeType":"application/pdf","data":"JVBERg=="}},
      {"fileData":{"mimeType":"video/mp4","fileUri":"https://generativelanguage.googleapis.com/v1beta/files/abc"}},
      {"fileData":{"mimeType":"image/jpeg","fileUri":"gs://bucket/cat.jpg"}}]},
    {"role":"model","parts":[
      {"text":"weighing","thought":true},
      {"text":" options","thought":true,"thoughtSignature":"c2lnMQ=="},
      {"text":"calling"},
      {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2lnMg=="},
      {"functionCall":{"name":"get_time","args":{}}}]},
    {"role":"user","parts":[
      {"functionResponse":{"name":"get_time","response":{"output":"noon"}}},
      {"functionResponse":{"name":"get_weather","response":{"error":"offline"}}},
      {"text":"and?"}]}],
  "generationConfig":{"temperature":0.5,"topP":0.9,"topK":40,"candidateCount":1,"maxOutputTokens":256,
    "stopSequences":["END","STOP"],"seed":7,"presencePenalty":0.5,"frequencyPenalty":-0.5,
    "responseMimeType":"application/json",
    "responseSchema":{"type":"OBJECT","properties":{"n":{"type":"INTEGER","nullable":true}},"required":["n"],
                      "propertyOrdering":["n"]},
    "thinkingConfig":{"thinkingBudget":1024,"includeThoughts":true},
    "responseModalities":["TEXT"]},
  "tools":[{"functionDeclarations":[
    {"name":"get_weather","description":"Weather now",
     "parameters":{"type":"OBJECT","properties":{"city":{"type":"STRING","enum":["Paris","Rome"],"nullable":true},
                                                  "days":{"type":"ARRAY","items":{"type":"INTEGER"},"maxItems":"3"}},
                   "required":["city"]}},
    {"name":"get_time","parametersJsonSchema":{"type":"object","additionalProperties":false}}]}],
  "toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_weather"]}},
  "safetySettings":[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_NONE"}],
  "cachedContent":"cachedContents/abc",
  "model":"models/ignored"
})";

void ExpectEveryField(const ParsedGenerate& p) {
  const auto& r = p.request;
  EXPECT_EQ(r.model(), "gemini-2.5-flash");  // "models/" dropped
  EXPECT_EQ(r.protocol(), llm::v1::PROTOCOL_GEMINI);
  EXPECT_EQ(p.cached_content, "cachedContents/abc");

  ASSERT_EQ(r.messages_size(), 5);
  const auto& sys = r.messages(0);
  EXPECT_EQ(sys.role(), llm::v1::ROLE_SYSTEM);
  ASSERT_EQ(sys.parts_size(), 2);
  EXPECT_EQ(sys.parts(1).text(), "be kind");

  const auto& user = r.messages(1);
  EXPECT_EQ(user.role(), llm::v1::ROLE_USER);
  ASSERT_EQ(user.parts_size(), 5);
  EXPECT_EQ(user.parts(0).text(), "look");
  EXPECT_EQ(user.parts(1).image().inline_data().mime_type(), "image/png");
  EXPECT_EQ(user.parts(1).image().inline_data().data(), std::string("\x89PN", 3));  // decoded
  EXPECT_EQ(user.parts(2).document().inline_data().mime_type(), "application/pdf");
  EXPECT_EQ(user.parts(2).document().inline_data().data(), "%PDF");
  EXPECT_EQ(user.parts(3).document().url(), "https://generativelanguage.googleapis.com/v1beta/files/abc");
  EXPECT_EQ(user.parts(4).image().url(), "gs://bucket/cat.jpg");

  const auto& model = r.messages(2);
  EXPECT_EQ(model.role(), llm::v1::ROLE_ASSISTANT);
  ASSERT_EQ(model.parts_size(), 4);
  EXPECT_EQ(model.parts(0).thinking().text(), "weighing options");  // consecutive thoughts merge
  EXPECT_EQ(model.parts(0).thinking().signature(), "c2lnMQ==");
  EXPECT_EQ(model.parts(1).text(), "calling");
  const auto& weather = model.parts(2).tool_call();
  EXPECT_EQ(weather.id(), "call_1_3");
  EXPECT_EQ(weather.name(), "get_weather");
  EXPECT_EQ(weather.arguments_json(), R"({"city":"Paris"})");
  EXPECT_EQ(weather.signature(), "c2lnMg==");
  EXPECT_EQ(model.parts(3).tool_call().id(), "call_1_4");
  EXPECT_EQ(model.parts(3).tool_call().arguments_json(), "{}");

  // Function responses come first, as a tool turn, then the rest of the user turn.
  const auto& tool = r.messages(3);
  EXPECT_EQ(tool.role(), llm::v1::ROLE_TOOL);
  ASSERT_EQ(tool.parts_size(), 2);
  EXPECT_EQ(tool.parts(0).tool_result().tool_call_id(), "call_1_4");  // paired by name
  EXPECT_EQ(tool.parts(0).tool_result().name(), "get_time");
  EXPECT_EQ(tool.parts(0).tool_result().content(), R"({"output":"noon"})");
  EXPECT_FALSE(tool.parts(0).tool_result().is_error());
  EXPECT_EQ(tool.parts(1).tool_result().tool_call_id(), "call_1_3");
  EXPECT_TRUE(tool.parts(1).tool_result().is_error());
  EXPECT_EQ(r.messages(4).role(), llm::v1::ROLE_USER);
  EXPECT_EQ(r.messages(4).parts(0).text(), "and?");

  const auto& s = r.sampling();
  EXPECT_DOUBLE_EQ(s.temperature(), 0.5);
  EXPECT_DOUBLE_EQ(s.top_p(), 0.9);
  EXPECT_EQ(s.top_k(), 40);
  EXPECT_EQ(s.n(), 1);
  EXPECT_EQ(s.max_output_tokens(), 256);
  ASSERT_EQ(s.stop_sequences_size(), 2);
  EXPECT_EQ(s.stop_sequences(1), "STOP");
  EXPECT_EQ(s.seed(), 7);
  EXPECT_DOUBLE_EQ(s.presence_penalty(), 0.5);
  EXPECT_DOUBLE_EQ(s.frequency_penalty(), -0.5);

  EXPECT_EQ(r.response_format().type(), llm::v1::ResponseFormat::TYPE_JSON_SCHEMA);
  EXPECT_EQ(r.response_format().name(), "response");
  EXPECT_EQ(r.response_format().schema_json(),
            R"({"type":"object","properties":{"n":{"type":["integer","null"]}},"required":["n"]})");

  EXPECT_TRUE(r.thinking().enabled());
  EXPECT_EQ(r.thinking().budget_tokens(), 1024);
  EXPECT_TRUE(r.thinking().include_thoughts());

  ASSERT_EQ(r.tools_size(), 2);
  EXPECT_EQ(r.tools(0).name(), "get_weather");
  EXPECT_EQ(r.tools(0).description(), "Weather now");
  // Gemini Schema → JSON Schema: lower-case types, nullable as a null type, counts as numbers.
  EXPECT_EQ(r.tools(0).parameters_json(),
            R"({"type":"object","properties":{"city":{"type":["string","null"],"enum":["Paris","Rome",null]},)"
            R"("days":{"type":"array","items":{"type":"integer"},"maxItems":3}},"required":["city"]})");
  EXPECT_EQ(r.tools(1).parameters_json(), R"({"type":"object","additionalProperties":false})");
  EXPECT_EQ(r.tool_choice().function_name(), "get_weather");  // ANY with one name
}

TEST(GeminiParseTest, EveryCamelCaseFieldBecomesCanonical) {
  auto p = MustParse(kCamelBody, true);
  ExpectEveryField(p);
  EXPECT_TRUE(p.request.stream());
  EXPECT_EQ(p.request.raw().protocol(), llm::v1::PROTOCOL_GEMINI);
  EXPECT_EQ(p.request.raw().body(), kCamelBody);
}

TEST(GeminiParseTest, SnakeCaseNamesMeanTheSame) {
  std::string body = kCamelBody;
  for (auto [camel, snake] : std::initializer_list<std::pair<std::string, std::string>>{
           {"systemInstruction", "system_instruction"}, {"inlineData", "inline_data"}, {"mimeType", "mime_type"},
           {"fileData", "file_data"}, {"fileUri", "file_uri"}, {"thoughtSignature", "thought_signature"},
           {"functionCall", "function_call"}, {"functionResponse", "function_response"},
           {"generationConfig", "generation_config"}, {"topP", "top_p"}, {"topK", "top_k"},
           {"candidateCount", "candidate_count"}, {"maxOutputTokens", "max_output_tokens"},
           {"stopSequences", "stop_sequences"}, {"presencePenalty", "presence_penalty"},
           {"frequencyPenalty", "frequency_penalty"}, {"responseMimeType", "response_mime_type"},
           {"responseSchema", "response_schema"}, {"propertyOrdering", "property_ordering"},
           {"thinkingConfig", "thinking_config"}, {"thinkingBudget", "thinking_budget"},
           {"includeThoughts", "include_thoughts"}, {"responseModalities", "response_modalities"},
           {"functionDeclarations", "function_declarations"}, {"maxItems", "max_items"},
           {"parametersJsonSchema", "parameters_json_schema"}, {"toolConfig", "tool_config"},
           {"functionCallingConfig", "function_calling_config"}, {"allowedFunctionNames", "allowed_function_names"},
           {"safetySettings", "safety_settings"}, {"cachedContent", "cached_content"}}) {
    for (size_t at = body.find("\"" + camel + "\""); at != std::string::npos; at = body.find("\"" + camel + "\""))
      body.replace(at + 1, camel.size(), snake);
  }
  ASSERT_EQ(body.find("generationConfig"), std::string::npos);
  ExpectEveryField(MustParse(body));
}

TEST(GeminiParseTest, OnlyTheMethodDecidesStreaming) {
  EXPECT_FALSE(MustParse(With(""), false).request.stream());
  EXPECT_TRUE(MustParse(With(""), true).request.stream());
}

TEST(GeminiParseTest, ARoleMayBeLeftOutAndSystemRoleIsIgnored) {
  auto r = MustParse(R"({"systemInstruction":{"parts":[{"text":"s"}]},"contents":[{"parts":[{"text":"hi"}]}]})").request;
  ASSERT_EQ(r.messages_size(), 2);
  EXPECT_EQ(r.messages(0).role(), llm::v1::ROLE_SYSTEM);
  EXPECT_EQ(r.messages(1).role(), llm::v1::ROLE_USER);
  EXPECT_FALSE(r.has_response_format());
  EXPECT_FALSE(r.has_thinking());
  EXPECT_FALSE(r.has_tool_choice());
}

TEST(GeminiParseTest, FunctionCallingModesBecomeToolChoice) {
  const std::string tools = R"("tools":[{"functionDeclarations":[{"name":"f"},{"name":"g"},{"name":"h"}]}])";
  auto choice = [&](const std::string& config) {
    return MustParse(With(tools + R"(,"toolConfig":{"functionCallingConfig":)" + config + "}")).request.tool_choice();
  };
  EXPECT_EQ(choice(R"({"mode":"AUTO"})").mode(), llm::v1::ToolChoice::MODE_AUTO);
  EXPECT_EQ(choice(R"({"mode":"NONE"})").mode(), llm::v1::ToolChoice::MODE_NONE);
  EXPECT_EQ(choice(R"({"mode":"ANY"})").mode(), llm::v1::ToolChoice::MODE_REQUIRED);
  EXPECT_EQ(choice(R"({"mode":2})").mode(), llm::v1::ToolChoice::MODE_REQUIRED);  // enum by number
  EXPECT_EQ(choice(R"({"mode":"ANY","allowedFunctionNames":["g"]})").function_name(), "g");
  auto several = choice(R"({"mode":"ANY","allowedFunctionNames":["f","h"]})");
  EXPECT_EQ(several.mode(), llm::v1::ToolChoice::MODE_REQUIRED);
  ASSERT_EQ(several.allowed_function_names_size(), 2);
  EXPECT_EQ(several.allowed_function_names(1), "h");
  auto validated = choice(R"({"mode":"VALIDATED","allowedFunctionNames":["f"]})");
  EXPECT_EQ(validated.mode(), llm::v1::ToolChoice::MODE_AUTO);
  EXPECT_EQ(validated.allowed_function_names(0), "f");
}

TEST(GeminiParseTest, ResponseMimeTypeAndSchemasBecomeResponseFormat) {
  auto format = [](const std::string& config) {
    return MustParse(With(R"("generationConfig":)" + config)).request.response_format();
  };
  EXPECT_EQ(format(R"({"responseMimeType":"application/json"})").type(), llm::v1::ResponseFormat::TYPE_JSON_OBJECT);
  EXPECT_EQ(format(R"({"responseMimeType":"text/plain"})").type(), llm::v1::ResponseFormat::TYPE_TEXT);
  EXPECT_EQ(format(R"({"responseMimeType":"text/x.enum","responseSchema":{"type":"STRING","enum":["a"]}})").type(),
            llm::v1::ResponseFormat::TYPE_TEXT);
  auto js = format(R"({"responseMimeType":"application/json","responseJsonSchema":{"type":"object","properties":{}}})");
  EXPECT_EQ(js.type(), llm::v1::ResponseFormat::TYPE_JSON_SCHEMA);
  EXPECT_EQ(js.schema_json(), R"({"type":"object","properties":{}})");  // JSON Schema kept as given
  auto any = format(R"({"responseMimeType":"application/json","responseSchema":{"anyOf":[{"type":"STRING"}],"nullable":true}})");
  EXPECT_EQ(any.schema_json(), R"({"anyOf":[{"type":"string"},{"type":"null"}]})");
}

TEST(GeminiParseTest, ThinkingConfigBecomesThinking) {
  auto thinking = [](const std::string& config) {
    return MustParse(With(R"("generationConfig":{"thinkingConfig":)" + config + "}")).request.thinking();
  };
  auto dynamic = thinking(R"({"thinkingBudget":-1})");
  EXPECT_TRUE(dynamic.enabled());
  EXPECT_EQ(dynamic.budget_tokens(), 0);
  auto off = thinking(R"({"thinkingBudget":0,"includeThoughts":true})");
  EXPECT_FALSE(off.enabled());
  EXPECT_FALSE(off.include_thoughts());
  auto shown = thinking(R"({"includeThoughts":true})");
  EXPECT_TRUE(shown.enabled());
  EXPECT_TRUE(shown.include_thoughts());
  EXPECT_TRUE(thinking(R"({"thinkingLevel":"LOW"})").enabled());
  EXPECT_EQ(thinking(R"({"thinkingBudget":"2048"})").budget_tokens(), 2048);  // int as a string, as proto3 JSON allows
}

TEST(GeminiParseTest, FunctionResponsesPairWithTheirCalls) {
  auto r = MustParse(R"({"contents":[
    {"role":"user","parts":[{"text":"go"}]},
    {"role":"model","parts":[{"functionCall":{"name":"f","args":{"i":1}}},{"functionCall":{"name":"f","args":{"i":2}}},
                             {"functionCall":{"id":"kept-7","name":"g"}}]},
    {"role":"user","parts":[{"functionResponse":{"name":"f","response":{"output":1}}},
                            {"functionResponse":{"id":"kept-7","name":"g","response":{}}},
                            {"functionResponse":{"name":"f","response":{"output":2}}},
                            {"functionResponse":{"name":"unknown","response":{}}},
                            {"functionResponse":{"id":"theirs","name":"unknown","response":{}}}]}]})").request;
  ASSERT_EQ(r.messages_size(), 3);
  const auto& calls = r.messages(1);
  EXPECT_EQ(calls.parts(0).tool_call().id(), "call_1_0");
  EXPECT_EQ(calls.parts(1).tool_call().id(), "call_1_1");
  EXPECT_EQ(calls.parts(2).tool_call().id(), "kept-7");
  const auto& results = r.messages(2);
  ASSERT_EQ(results.parts_size(), 5);
  EXPECT_EQ(results.parts(0).tool_result().tool_call_id(), "call_1_0");  // same name: in order
  EXPECT_EQ(results.parts(1).tool_result().tool_call_id(), "kept-7");    // by id
  EXPECT_EQ(results.parts(2).tool_result().tool_call_id(), "call_1_1");
  EXPECT_EQ(results.parts(3).tool_result().tool_call_id(), "call_2_3");  // orphan
  EXPECT_EQ(results.parts(4).tool_result().tool_call_id(), "theirs");
}

TEST(GeminiParseTest, ResponsesPairWithTheMostRecentTurnFirst) {
  auto r = MustParse(R"({"contents":[
    {"role":"model","parts":[{"functionCall":{"name":"f"}}]},
    {"role":"user","parts":[{"text":"never mind"}]},
    {"role":"model","parts":[{"functionCall":{"name":"f"}}]},
    {"role":"user","parts":[{"functionResponse":{"name":"f","response":{"output":"x"}}}]}]})").request;
  EXPECT_EQ(r.messages(3).parts(0).tool_result().tool_call_id(), "call_2_0");
}

TEST(GeminiParseTest, MultimodalFunctionResponsePartsAreKept) {
  auto r = MustParse(R"({"contents":[
    {"role":"model","parts":[{"functionCall":{"name":"snap"}}]},
    {"role":"user","parts":[{"functionResponse":{"name":"snap","response":{"output":"ok"},
        "parts":[{"inlineData":{"mimeType":"image/png","data":"AAEC"}}]}}]}]})").request;
  const auto& result = r.messages(1).parts(0).tool_result();
  ASSERT_EQ(result.parts_size(), 1);
  EXPECT_EQ(result.parts(0).image().inline_data().data(), std::string("\x00\x01\x02", 3));
}

TEST(GeminiParseTest, UrlSafeBase64AndNullFieldsAreAccepted) {
  auto r = MustParse(R"({"contents":[{"role":"user","parts":[{"inlineData":{"mimeType":"image/png","data":"-_8"}}]}],
                         "generationConfig":null,"tools":null})").request;
  EXPECT_EQ(r.messages(0).parts(0).image().inline_data().data(), "\xfb\xff");
}

TEST(GeminiParseTest, CountTokensTakesContentsOrAWholeRequest) {
  ParsedGenerate out;
  HttpError err;
  ASSERT_TRUE(ParseCountTokensRequest(R"({"contents":[{"parts":[{"text":"hi"}]}]})", "m", &out, &err)) << err.message;
  EXPECT_EQ(out.request.messages(0).parts(0).text(), "hi");
  ParsedGenerate whole;
  ASSERT_TRUE(ParseCountTokensRequest(
      R"({"generateContentRequest":{"model":"models/m","systemInstruction":{"parts":[{"text":"s"}]},
          "contents":[{"parts":[{"text":"hi"}]}],"tools":[{"functionDeclarations":[{"name":"f"}]}]}})",
      "m", &whole, &err))
      << err.message;
  EXPECT_EQ(whole.request.messages_size(), 2);
  EXPECT_EQ(whole.request.tools_size(), 1);
  ParsedGenerate both;
  EXPECT_FALSE(ParseCountTokensRequest(R"({"contents":[{"parts":[{"text":"hi"}]}],"generateContentRequest":{}})", "m",
                                       &both, &err));
  EXPECT_EQ(err.param, "generate_content_request");
  EXPECT_FALSE(ParseCountTokensRequest(R"({"generateContentRequest":{"contents":[]}})", "m", &both, &err));
  EXPECT_EQ(err.message, "* CountTokensRequest.generate_content_request.contents: contents is not specified");
}

struct ErrorCase {
  std::string body;
  std::string param;
  std::string message;  // "" = not compared
};

TEST(GeminiParseTest, BadInputIsRefusedInGooglesWordsNamingTheField) {
  const std::vector<ErrorCase> cases = {
      {"not json", "", ""},
      {"[1]", "", "Invalid JSON payload received. Root element must be a message."},
      {With(R"("foo":1)"), "foo", R"(Invalid JSON payload received. Unknown name "foo": Cannot find field.)"},
      {With(R"("generationConfig":{"temprature":1})"), "generation_config.temprature",
       R"(Invalid JSON payload received. Unknown name "temprature" at 'generation_config': Cannot find field.)"},
      {R"({"contents":[{"parts":[{"text":"a"},{"txt":"b"}]}]})", "contents[0].parts[1].txt",
       R"(Invalid JSON payload received. Unknown name "txt" at 'contents[0].parts[1]': Cannot find field.)"},
      {With(R"("generationConfig":{"topP":1},"generation_config":{"topK":1})"), "generation_config",
       R"(Invalid JSON payload received. Duplicate field "generation_config".)"},
      {"{}", "contents", "* GenerateContentRequest.contents: contents is not specified"},
      {R"({"contents":[]})", "contents", "* GenerateContentRequest.contents: contents is not specified"},
      {R"({"contents":{"parts":[]}})", "contents", ""},
      {R"({"contents":[{"role":"user","parts":[]}]})", "contents[0].parts",
       "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty."},
      {R"({"contents":[{"role":"user","parts":[{"text":"a"}]},{"role":"assistant","parts":[{"text":"b"}]}]})",
       "contents[1].role", "* GenerateContentRequest.contents[1].role: Please use a valid role: user, model."},
      {R"({"contents":[{"parts":[{"text":5}]}]})", "contents[0].parts[0].text",
       "Invalid value at 'contents[0].parts[0].text' (TYPE_STRING), 5"},
      {R"({"contents":[{"parts":[{"text":"a","inlineData":{"mimeType":"image/png","data":""}}]}]})",
       "contents[0].parts[0].inline_data",
       "Invalid value at 'contents[0].parts[0]' (oneof), oneof field 'data' is already set. Cannot set 'inlineData'"},
      {R"({"contents":[{"parts":[{"thought":true}]}]})", "contents[0].parts[0].data",
       "* GenerateContentRequest.contents[0].parts[0].data: required oneof field 'data' must have one initialized field"},
      {R"({"contents":[{"parts":[{"inlineData":{"mimeType":"image/png","data":"***"}}]}]})",
       "contents[0].parts[0].inline_data.data",
       R"(Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES), Base64 decoding failed for "***")"},
      {R"({"contents":[{"parts":[{"inlineData":{"data":"AA=="}}]}]})", "contents[0].parts[0].inline_data.mime_type", ""},
      {R"({"contents":[{"parts":[{"fileData":{"mimeType":"image/png"}}]}]})", "contents[0].parts[0].file_data.file_uri", ""},
      {R"({"contents":[{"role":"user","parts":[{"functionCall":{"name":"f"}}]}]})", "contents[0].parts[0].function_call",
       "* GenerateContentRequest.contents[0].parts[0].function_call: a function call belongs in a model turn"},
      {R"({"contents":[{"role":"model","parts":[{"functionResponse":{"name":"f","response":{}}}]}]})",
       "contents[0].parts[0].function_response", ""},
      {R"({"contents":[{"role":"model","parts":[{"functionCall":{"args":{}}}]}]})",
       "contents[0].parts[0].function_call.name",
       "* GenerateContentRequest.contents[0].parts[0].function_call.name: Name cannot be empty."},
      {R"({"contents":[{"role":"model","parts":[{"functionCall":{"name":"f","args":"{}"}}]}]})",
       "contents[0].parts[0].function_call.args", ""},
      {R"({"contents":[{"parts":[{"functionResponse":{"name":"f","response":[1]}}]}]})",
       "contents[0].parts[0].function_response.response", ""},
      {R"({"contents":[{"parts":[{"executableCode":{"code":"1"}}]}]})", "contents[0].parts[0].executable_code", ""},
      {With(R"("systemInstruction":{"parts":[{"inlineData":{"mimeType":"image/png","data":""}}]})"),
       "system_instruction.parts[0]",
       "* GenerateContentRequest.system_instruction.parts[0]: a system instruction holds text parts only"},
      {With(R"("systemInstruction":"be brief")"), "system_instruction",
       R"(Invalid value at 'system_instruction' (type.googleapis.com/google.ai.generativelanguage.v1beta.Content), "be brief")"},
      {With(R"("generationConfig":{"temperature":"hot"})"), "generation_config.temperature",
       R"(Invalid value at 'generation_config.temperature' (TYPE_FLOAT), "hot")"},
      {With(R"("generation_config":{"temperature":"hot"})"), "generation_config.temperature", ""},
      {With(R"("generationConfig":{"temperature":2.5})"), "generation_config.temperature",
       "* GenerateContentRequest.generation_config.temperature: temperature must be between 0 and 2, got 2.5"},
      {With(R"("generationConfig":{"topP":1.5})"), "generation_config.top_p", ""},
      {With(R"("generationConfig":{"topK":-1})"), "generation_config.top_k", ""},
      {With(R"("generationConfig":{"maxOutputTokens":"ten"})"), "generation_config.max_output_tokens",
       R"(Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), "ten")"},
      {With(R"("generationConfig":{"maxOutputTokens":1.5})"), "generation_config.max_output_tokens", ""},
      {With(R"("generationConfig":{"maxOutputTokens":3000000000})"), "generation_config.max_output_tokens", ""},
      {With(R"("generationConfig":{"candidateCount":9})"), "generation_config.candidate_count", ""},
      {With(R"("generationConfig":{"stopSequences":["a","b","c","d","e","f"]})"), "generation_config.stop_sequences",
       "* GenerateContentRequest.generation_config.stop_sequences: stop_sequences may hold at most 5 sequences, got 6"},
      {With(R"("generationConfig":{"stopSequences":"END"})"), "generation_config.stop_sequences", ""},
      {With(R"("generationConfig":{"stopSequences":["a",1]})"), "generation_config.stop_sequences[1]", ""},
      {With(R"("generationConfig":{"responseMimeType":"text/html"})"), "generation_config.response_mime_type",
       "* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, "
       "`application/json`, `application/xml`, `application/yaml` and `text/x.enum`."},
      {With(R"("generationConfig":{"responseSchema":{"type":"OBJECT"}})"), "generation_config.response_mime_type", ""},
      {With(R"("generationConfig":{"responseMimeType":"application/json","responseSchema":{},"responseJsonSchema":{}})"),
       "generation_config.response_json_schema", ""},
      {With(R"("generationConfig":{"responseModalities":["IMAGE"]})"), "generation_config.response_modalities[0]", ""},
      {With(R"("generationConfig":{"thinkingConfig":{"thinkingBudget":-2}})"),
       "generation_config.thinking_config.thinking_budget", ""},
      {With(R"("generationConfig":{"thinkingConfig":{"includeThoughts":"yes"}})"),
       "generation_config.thinking_config.include_thoughts",
       R"(Invalid value at 'generation_config.thinking_config.include_thoughts' (TYPE_BOOL), "yes")"},
      {With(R"("tools":[{"functionDeclarations":[{"name":"9lives"}]}])"), "tools[0].function_declarations[0].name", ""},
      {With(R"("tools":[{"functionDeclarations":[{"description":"no name"}]}])"), "tools[0].function_declarations[0].name",
       ""},
      {With(R"("tools":[{"functionDeclarations":[{"name":"f"}]},{"functionDeclarations":[{"name":"f"}]}])"),
       "tools[1].function_declarations[0].name",
       "* GenerateContentRequest.tools[1].function_declarations[0].name: Duplicate function declaration found: f"},
      {With(R"("tools":[{"functionDeclarations":[{"name":"f","parameters":{},"parametersJsonSchema":{}}]}])"),
       "tools[0].function_declarations[0].parameters_json_schema", ""},
      {With(R"("tools":[{"functionDeclarations":[{"name":"f","parameters":"{}"}]}])"),
       "tools[0].function_declarations[0].parameters", ""},
      {With(R"("tools":{"functionDeclarations":[]})"), "tools", ""},
      {With(R"("tools":[{"functionDeclarations":[{"name":"f"}]}],"toolConfig":{"functionCallingConfig":{"mode":"SOMETIMES"}})"),
       "tool_config.function_calling_config.mode",
       "Invalid value at 'tool_config.function_calling_config.mode' "
       R"((type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "SOMETIMES")"},
      {With(R"("toolConfig":{"functionCallingConfig":{"mode":"ANY"}})"), "tool_config.function_calling_config.mode", ""},
      {With(R"("tools":[{"functionDeclarations":[{"name":"f"}]}],"toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["g"]}})"),
       "tool_config.function_calling_config.allowed_function_names[0]", ""},
      {With(R"("tools":[{"functionDeclarations":[{"name":"f"}]}],"toolConfig":{"functionCallingConfig":{"mode":"AUTO","allowedFunctionNames":["f"]}})"),
       "tool_config.function_calling_config.allowed_function_names", ""},
      {With(R"("safetySettings":{"category":"x"})"), "safety_settings", ""},
      {With(R"("cachedContent":5)"), "cached_content", ""},
  };
  for (const auto& c : cases) {
    HttpError err = MustFail(c.body);
    EXPECT_EQ(err.param, c.param) << c.body << "\n" << err.message;
    if (!c.message.empty()) {
      EXPECT_EQ(err.message, c.message) << c.body;
    }
    EXPECT_FALSE(err.message.empty()) << c.body;
  }
  EXPECT_TRUE(absl::StartsWith(MustFail("not json").message, "Invalid JSON payload received. "));
}

TEST(GeminiParseTest, AnEmptyModelIsRefused) {
  ParsedGenerate out;
  HttpError err;
  EXPECT_FALSE(ParseGenerateContentRequest(With(""), "models/", false, &out, &err));
  EXPECT_EQ(err.param, "model");
}

TEST(GeminiParseTest, TheErrorBodyIsGooglesInvalidArgument) {
  auto body = json::parse(ErrorBody(ApiProtocol::kGemini, MustFail(With(R"("foo":1)")), ""));
  EXPECT_EQ(body.at("error").at("code").as_int64(), 400);
  EXPECT_EQ(body.at("error").at("status").as_string(), "INVALID_ARGUMENT");
}

// ---- responses ----------------------------------------------------------------------------
// Canonical answer → Gemini (PROTOCOLS.md §E, OpenAI/Anthropic → Gemini).
// Covers: usage with and without cache tokens (SseUsageWithAndWithoutCacheTokens);
// thoughtsTokenCount = reasoning, candidatesTokenCount = output − reasoning
// (SyncThoughtsThenTextWithCachedAndThoughtTokens; through the OpenAI decoder,
// OpenAiUsageSplitsIntoCandidatesAndThoughts); tool calls → STOP
// (SyncFunctionCallsFinishWithStop); fragments buffered, each functionCall whole, calls
// interleaved with text, an empty partial_json → {} (SseFunctionCallsComeWholeInOrder…,
// SseCallsInterleavedWithTextKeepTheirPlace; through the OpenAI decoder with a
// `choices:null` usage chunk, OpenAiFragmentsBecomeWholeFunctionCalls); one chunk with
// content and finish (OneUpstreamChunkWithContentAndFinish); length → MAX_TOKENS,
// content_filter → SAFETY (SyncCandidatesOnePerChoice, SyncEmptyAnswer…); Anthropic
// max_tokens and model_context_window_exceeded → MAX_TOKENS
// (AnthropicLengthStopsAreMaxTokens); an error after the 200
// (SseErrorAfterTheStartIsAnErrorObjectWithANumericCode).

ChatEvent Start() {
  ChatEvent e;
  e.mutable_start()->set_response_id("up-1");
  return e;
}
ChatEvent Text(const std::string& t, int choice = 0) {
  ChatEvent e;
  e.mutable_text()->set_text(t);
  e.set_choice_index(choice);
  return e;
}
ChatEvent Reasoning(const std::string& t, const std::string& signature = "") {
  ChatEvent e;
  e.mutable_reasoning()->set_text(t);
  e.mutable_reasoning()->set_signature(signature);
  return e;
}
ChatEvent CallStart(int index, const std::string& id, const std::string& name) {
  ChatEvent e;
  e.mutable_tool_call_start()->set_index(index);
  e.mutable_tool_call_start()->set_id(id);
  e.mutable_tool_call_start()->set_name(name);
  return e;
}
ChatEvent CallDelta(int index, const std::string& fragment) {
  ChatEvent e;
  e.mutable_tool_call_delta()->set_index(index);
  e.mutable_tool_call_delta()->set_arguments_fragment(fragment);
  return e;
}
ChatEvent Finish(llm::v1::FinishReason reason, int choice = 0) {
  ChatEvent e;
  e.mutable_finish()->set_reason(reason);
  e.set_choice_index(choice);
  return e;
}
llm::v1::Usage MakeUsage(int64_t input, int64_t cache_read, int64_t cache_write, int64_t output, int64_t reasoning) {
  llm::v1::Usage u;
  u.set_input_tokens(input);
  u.set_cache_read_tokens(cache_read);
  u.set_cache_write_tokens(cache_write);
  u.set_output_tokens(output);
  u.set_reasoning_tokens(reasoning);
  return u;
}
ChatEvent UsageEvent(const llm::v1::Usage& u) {
  ChatEvent e;
  *e.mutable_usage() = u;
  return e;
}

// The stream as the pipeline drives it: each event, then (after settlement) usage, then end.
std::string Drive(ChatRenderer& r, const std::vector<ChatEvent>& events) {
  std::string out;
  for (const auto& e : events) out += r.StreamEvent(e);
  return out + r.StreamEnd();
}

// The data lines of an SSE stream, checking each event is one `data:` line ending in CRLF CRLF.
std::vector<std::string> SseData(const std::string& stream) {
  std::vector<std::string> data;
  size_t at = 0;
  while (at < stream.size()) {
    size_t end = stream.find("\r\n\r\n", at);
    EXPECT_NE(end, std::string::npos) << "incomplete event: " << stream.substr(at);
    if (end == std::string::npos) break;
    std::string event = stream.substr(at, end - at);
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    EXPECT_EQ(event.find('\n'), std::string::npos) << "one line per event: " << event;
    data.push_back(event.substr(6));
    at = end + 4;
  }
  return data;
}

// Google's built-in tools have no canonical form: kept as written, for a Gemini upstream.
TEST(GeminiParseTest, BuiltInToolsAreKeptAsWritten) {
  auto parsed = MustParse(R"({"contents":[{"role":"user","parts":[{"text":"hi"}]}],)"
                          R"("tools":[{"googleSearch":{}},{"code_execution":{}},)"
                          R"({"functionDeclarations":[{"name":"f"}]}]})");
  const auto& r = parsed.request;
  ASSERT_EQ(r.tools_size(), 3);
  EXPECT_EQ(r.tools(0).name(), "google_search");
  EXPECT_EQ(r.tools(0).native_json(), R"({"google_search":{}})");
  EXPECT_EQ(r.tools(0).native_protocol(), llm::v1::PROTOCOL_GEMINI);
  EXPECT_EQ(r.tools(1).native_json(), R"({"code_execution":{}})");
  EXPECT_EQ(r.tools(2).name(), "f");
  EXPECT_TRUE(r.tools(2).native_json().empty());
}

TEST(GeminiRenderTest, SyncTextOnly) {
  auto r = NewGenerateRenderer("req_1", "gemini-2.5-flash", false);
  EXPECT_EQ(r->protocol(), ApiProtocol::kGemini);
  ChatAnswer a;
  a.text = "Hello";
  a.finish = llm::v1::FINISH_REASON_STOP;
  a.usage = MakeUsage(5, 0, 0, 2, 0);
  a.has_usage = true;
  EXPECT_EQ(r->SyncBody(a),
            R"({"candidates":[{"content":{"parts":[{"text":"Hello"}],"role":"model"},"finishReason":"STOP","index":0}],)"
            R"("usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7},)"
            R"("modelVersion":"gemini-2.5-flash","responseId":"req_1"})");
}

TEST(GeminiRenderTest, SyncCandidatesOnePerChoice) {
  auto r = NewGenerateRenderer("req_1", "m", false);
  ChatAnswer a;
  a.text = "A";
  a.finish = llm::v1::FINISH_REASON_STOP;
  a.more_choices.resize(1);
  a.more_choices[0].text = "B";
  a.more_choices[0].finish = llm::v1::FINISH_REASON_LENGTH;
  a.usage = MakeUsage(5, 0, 0, 2, 0);
  EXPECT_EQ(r->SyncBody(a),
            R"({"candidates":[{"content":{"parts":[{"text":"A"}],"role":"model"},"finishReason":"STOP","index":0},)"
            R"({"content":{"parts":[{"text":"B"}],"role":"model"},"finishReason":"MAX_TOKENS","index":1}],)"
            R"("usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7},)"
            R"("modelVersion":"m","responseId":"req_1"})");
}

TEST(GeminiRenderTest, SyncThoughtsThenTextWithCachedAndThoughtTokens) {
  auto r = NewGenerateRenderer("req_1", "m", false);
  ChatAnswer a;
  a.reasoning = "Let me think.";
  a.text = "42";
  a.finish = llm::v1::FINISH_REASON_LENGTH;
  a.usage = MakeUsage(10, 30, 5, 20, 15);  // prompt 45 with 30 cached; output 20 of which 15 thinking
  EXPECT_EQ(r->SyncBody(a),
            R"({"candidates":[{"content":{"parts":[{"text":"Let me think.","thought":true},{"text":"42"}],"role":"model"},)"
            R"("finishReason":"MAX_TOKENS","index":0}],)"
            R"("usageMetadata":{"promptTokenCount":45,"candidatesTokenCount":5,"totalTokenCount":65,)"
            R"("cachedContentTokenCount":30,"thoughtsTokenCount":15},"modelVersion":"m","responseId":"req_1"})");
}

TEST(GeminiRenderTest, SyncFunctionCallsFinishWithStop) {
  auto r = NewGenerateRenderer("req_1", "m", false);
  ChatAnswer a;
  a.text = "Checking.";
  a.tool_calls = {{"call_a", "get_weather", R"({"city":"Paris"})"}, {"call_b", "get_time", ""}, {"", "broken", "{\"cut"}};
  a.finish = llm::v1::FINISH_REASON_TOOL_CALLS;
  EXPECT_EQ(r->SyncBody(a),
            R"({"candidates":[{"content":{"parts":[{"text":"Checking."},)"
            R"({"functionCall":{"name":"get_weather","args":{"city":"Paris"},"id":"call_a"}},)"
            R"({"functionCall":{"name":"get_time","args":{},"id":"call_b"}},)"
            R"({"functionCall":{"name":"broken","args":{"arguments":"{\"cut"}}}],"role":"model"},)"
            R"("finishReason":"STOP","index":0}],)"
            R"("usageMetadata":{"promptTokenCount":0,"candidatesTokenCount":0,"totalTokenCount":0},)"
            R"("modelVersion":"m","responseId":"req_1"})");
}

TEST(GeminiRenderTest, SyncPartsKeepTheOrderTheAnswerArrivedIn) {
  // An answer assembled from events keeps its blocks: thoughts with their signature, and
  // text and calls interleaved.
  ChatAnswer a;
  for (const auto& e : {Start(), Reasoning("plan"), Reasoning("", "sig=="), Text("First "), CallStart(0, "c0", "f"),
                        CallDelta(0, R"({"a":1})"), Text("then done."), Finish(llm::v1::FINISH_REASON_TOOL_CALLS)})
    a.Apply(e);
  auto r = NewGenerateRenderer("req_1", "m", false);
  auto body = json::parse(r->SyncBody(a));
  EXPECT_EQ(json::serialize(body.at("candidates").at(0).at("content").at("parts")),
            R"([{"text":"plan","thought":true,"thoughtSignature":"sig=="},{"text":"First "},)"
            R"({"functionCall":{"name":"f","args":{"a":1},"id":"c0"}},{"text":"then done."}])");
  EXPECT_EQ(body.at("candidates").at(0).at("finishReason").as_string(), "STOP");
}

TEST(GeminiRenderTest, StreamedCallsCarryTheirThoughtSignature) {
  auto r = NewGenerateRenderer("req_1", "m", true);
  ChatEvent start = CallStart(0, "c0", "f");
  start.mutable_tool_call_start()->set_signature("Q2FsbA==");
  auto data = SseData(Drive(*r, {Start(), start, Finish(llm::v1::FINISH_REASON_TOOL_CALLS)}));
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(json::serialize(json::parse(data[0]).at("candidates").at(0).at("content").at("parts")),
            R"([{"functionCall":{"name":"f","args":{},"id":"c0"},"thoughtSignature":"Q2FsbA=="}])");
}

TEST(GeminiRenderTest, SyncEmptyAnswerStillHasAPartAndFilteredIsSafety) {
  auto r = NewGenerateRenderer("req_1", "m", false);
  ChatAnswer a;
  a.finish = llm::v1::FINISH_REASON_CONTENT_FILTER;
  auto body = json::parse(r->SyncBody(a));
  const auto& c = body.at("candidates").at(0);
  EXPECT_EQ(c.at("finishReason").as_string(), "SAFETY");
  EXPECT_EQ(json::serialize(c.at("content").at("parts")), R"([{"text":""}])");
}

TEST(GeminiRenderTest, SseTextOnly) {
  auto r = NewGenerateRenderer("req_1", "m", true);
  std::string out = Drive(*r, {Start(), Text("Hel"), Text("lo"), Finish(llm::v1::FINISH_REASON_STOP),
                               UsageEvent(MakeUsage(5, 0, 0, 2, 0))});
  EXPECT_EQ(out,
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],"
            "\"modelVersion\":\"m\",\"responseId\":\"req_1\"}\r\n\r\n"
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}],\"role\":\"model\"},\"index\":0}],"
            "\"modelVersion\":\"m\",\"responseId\":\"req_1\"}\r\n\r\n"
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}],\"role\":\"model\"},"
            "\"finishReason\":\"STOP\",\"index\":0}],"
            "\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":2,\"totalTokenCount\":7},"
            "\"modelVersion\":\"m\",\"responseId\":\"req_1\"}\r\n\r\n");
  EXPECT_EQ(SseData(out).size(), 3u);
  // The project's own SSE reader (what a same-protocol upstream decoder would use) agrees.
  SseParser parser;
  std::vector<SseEvent> events;
  parser.Feed(out, events);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].event, "");
}

TEST(GeminiRenderTest, SseThoughtsThenText) {
  auto r = NewGenerateRenderer("req_1", "m", true);
  auto data = SseData(Drive(*r, {Start(), Reasoning("Hmm"), Reasoning("", "sig=="), Text("Yes"),
                                 Finish(llm::v1::FINISH_REASON_STOP), UsageEvent(MakeUsage(3, 0, 0, 9, 6))}));
  ASSERT_EQ(data.size(), 4u);
  EXPECT_EQ(json::serialize(json::parse(data[0]).at("candidates").at(0).at("content")),
            R"({"parts":[{"text":"Hmm","thought":true}],"role":"model"})");
  EXPECT_EQ(json::serialize(json::parse(data[1]).at("candidates").at(0).at("content").at("parts")),
            R"([{"text":"","thought":true,"thoughtSignature":"sig=="}])");
  EXPECT_EQ(json::serialize(json::parse(data[2]).at("candidates").at(0).at("content").at("parts")),
            R"([{"text":"Yes"}])");
  EXPECT_EQ(json::serialize(json::parse(data[3]).at("usageMetadata")),
            R"({"promptTokenCount":3,"candidatesTokenCount":3,"totalTokenCount":12,"thoughtsTokenCount":6})");
}

TEST(GeminiRenderTest, SseFunctionCallsComeWholeInOrderAndStopCarriesThem) {
  auto r = NewGenerateRenderer("req_1", "m", true);
  // Arguments arrive in fragments, and the second call starts before the first is complete.
  std::string out = Drive(*r, {Start(), CallStart(0, "call_a", "get_weather"), CallDelta(0, R"({"ci)"),
                               CallStart(1, "call_b", "get_time"), CallDelta(0, R"(ty":"Paris"})"),
                               CallDelta(1, "{}"), Finish(llm::v1::FINISH_REASON_TOOL_CALLS),
                               UsageEvent(MakeUsage(7, 0, 0, 4, 0))});
  EXPECT_EQ(out,
            "data: {\"candidates\":[{\"content\":{\"parts\":["
            "{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\":\"Paris\"},\"id\":\"call_a\"}},"
            "{\"functionCall\":{\"name\":\"get_time\",\"args\":{},\"id\":\"call_b\"}}],\"role\":\"model\"},"
            "\"finishReason\":\"STOP\",\"index\":0}],"
            "\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":4,\"totalTokenCount\":11},"
            "\"modelVersion\":\"m\",\"responseId\":\"req_1\"}\r\n\r\n");
}

TEST(GeminiRenderTest, SseCallsInterleavedWithTextKeepTheirPlace) {
  auto r = NewGenerateRenderer("req_1", "m", true);
  auto data = SseData(Drive(*r, {Start(), Text("First "), CallStart(0, "c0", "f"), CallDelta(0, R"({"a":1})"),
                                 Text("then "), CallStart(1, "c1", "g"), Finish(llm::v1::FINISH_REASON_TOOL_CALLS),
                                 UsageEvent(MakeUsage(1, 0, 0, 1, 0))}));
  ASSERT_EQ(data.size(), 4u);
  auto parts = [&](size_t i) {
    return json::serialize(json::parse(data[i]).at("candidates").at(0).at("content").at("parts"));
  };
  EXPECT_EQ(parts(0), R"([{"text":"First "}])");
  EXPECT_EQ(parts(1), R"([{"functionCall":{"name":"f","args":{"a":1},"id":"c0"}}])");
  EXPECT_EQ(parts(2), R"([{"text":"then "}])");
  // A call with no argument fragments at all (an empty partial_json) is `{}`.
  EXPECT_EQ(parts(3), R"([{"functionCall":{"name":"g","args":{},"id":"c1"}}])");
  EXPECT_EQ(json::parse(data[3]).at("candidates").at(0).at("finishReason").as_string(), "STOP");
  for (size_t i = 0; i < 3; ++i) EXPECT_FALSE(json::parse(data[i]).at("candidates").at(0).as_object().contains("finishReason"));
}

TEST(GeminiRenderTest, OneUpstreamChunkWithContentAndFinish) {
  // The connector decodes such a chunk into a text event and a finish event.
  auto r = NewGenerateRenderer("req_1", "m", true);
  auto data = SseData(Drive(*r, {Start(), Text("All of it"), Finish(llm::v1::FINISH_REASON_LENGTH),
                                 UsageEvent(MakeUsage(2, 0, 0, 3, 0))}));
  ASSERT_EQ(data.size(), 2u);
  auto last = json::parse(data[1]);
  EXPECT_EQ(last.at("candidates").at(0).at("finishReason").as_string(), "MAX_TOKENS");
  EXPECT_EQ(last.at("usageMetadata").at("totalTokenCount").as_int64(), 5);
}

TEST(GeminiRenderTest, SseUsageWithAndWithoutCacheTokens) {
  for (bool cached : {false, true}) {
    auto r = NewGenerateRenderer("req_1", "m", true);
    auto data = SseData(Drive(*r, {Start(), Text("x"), Finish(llm::v1::FINISH_REASON_STOP),
                                   UsageEvent(MakeUsage(100, cached ? 900 : 0, cached ? 50 : 0, 10, 0))}));
    auto usage = json::parse(data.back()).at("usageMetadata");
    EXPECT_EQ(usage.at("promptTokenCount").as_int64(), cached ? 1050 : 100);  // includes cached and written
    EXPECT_EQ(usage.as_object().contains("cachedContentTokenCount"), cached);
    if (cached) {
      EXPECT_EQ(usage.at("cachedContentTokenCount").as_int64(), 900);
    }
    EXPECT_FALSE(usage.as_object().contains("thoughtsTokenCount"));
  }
}

TEST(GeminiRenderTest, SseEndWithoutUsageStillSendsTheFinish) {
  auto r = NewGenerateRenderer("req_1", "m", true);
  auto data = SseData(Drive(*r, {Start(), Text("x"), Finish(llm::v1::FINISH_REASON_STOP)}));
  ASSERT_EQ(data.size(), 2u);
  auto last = json::parse(data[1]);
  EXPECT_EQ(last.at("candidates").at(0).at("finishReason").as_string(), "STOP");
  EXPECT_FALSE(last.as_object().contains("usageMetadata"));
}

TEST(GeminiRenderTest, SseErrorAfterTheStartIsAnErrorObjectWithANumericCode) {
  auto r = NewGenerateRenderer("req_1", "m", true);
  std::string out = r->StreamEvent(Start());
  out += r->StreamEvent(Text("partial"));
  out += r->StreamError(HttpError(502, "The upstream connection dropped."));
  auto data = SseData(out);
  ASSERT_EQ(data.size(), 2u);
  EXPECT_EQ(data[1],
            R"({"error":{"code":502,"message":"The upstream connection dropped.","status":"UNAVAILABLE","details":[]}})");
}

TEST(GeminiRenderTest, SeveralCandidatesKeepTheirIndexes) {
  auto r = NewGenerateRenderer("req_1", "m", true);
  auto data = SseData(Drive(*r, {Start(), Text("a", 0), Text("b", 1), Finish(llm::v1::FINISH_REASON_STOP, 0),
                                 Finish(llm::v1::FINISH_REASON_LENGTH, 1), UsageEvent(MakeUsage(1, 0, 0, 2, 0))}));
  ASSERT_EQ(data.size(), 3u);
  EXPECT_EQ(json::parse(data[1]).at("candidates").at(0).at("index").as_int64(), 1);
  auto last = json::parse(data[2]).at("candidates");
  ASSERT_EQ(last.as_array().size(), 2u);
  EXPECT_EQ(last.at(1).at("finishReason").as_string(), "MAX_TOKENS");
}

TEST(GeminiRenderTest, JsonArrayStream) {
  auto r = NewGenerateRenderer("req_1", "m", false);
  std::string out;
  out += r->StreamEvent(Start());
  EXPECT_EQ(out, "[");  // the array opens at once
  for (const auto& e : {Text("Hel"), Text("lo"), Finish(llm::v1::FINISH_REASON_STOP),
                        UsageEvent(MakeUsage(5, 0, 0, 2, 0))})
    out += r->StreamEvent(e);
  out += r->StreamEnd();
  EXPECT_EQ(out,
            "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],"
            "\"modelVersion\":\"m\",\"responseId\":\"req_1\"},\r\n"
            "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}],\"role\":\"model\"},\"index\":0}],"
            "\"modelVersion\":\"m\",\"responseId\":\"req_1\"},\r\n"
            "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}],\"role\":\"model\"},"
            "\"finishReason\":\"STOP\",\"index\":0}],"
            "\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":2,\"totalTokenCount\":7},"
            "\"modelVersion\":\"m\",\"responseId\":\"req_1\"}]");
  EXPECT_EQ(json::parse(out).as_array().size(), 3u);
}

TEST(GeminiRenderTest, JsonArrayStreamOfFunctionCallsAndThoughts) {
  auto r = NewGenerateRenderer("req_1", "m", false);
  std::string out = Drive(*r, {Start(), Reasoning("think"), CallStart(0, "c0", "f"), CallStart(1, "c1", "g"),
                               CallDelta(1, R"({"x":true})"), Finish(llm::v1::FINISH_REASON_TOOL_CALLS),
                               UsageEvent(MakeUsage(1, 0, 0, 5, 2))});
  auto array = json::parse(out).as_array();
  ASSERT_EQ(array.size(), 2u);
  EXPECT_TRUE(array[0].at("candidates").at(0).at("content").at("parts").at(0).at("thought").as_bool());
  const auto& last = array[1].at("candidates").at(0);
  EXPECT_EQ(json::serialize(last.at("content").at("parts")),
            R"([{"functionCall":{"name":"f","args":{},"id":"c0"}},{"functionCall":{"name":"g","args":{"x":true},"id":"c1"}}])");
  EXPECT_EQ(last.at("finishReason").as_string(), "STOP");
}

TEST(GeminiRenderTest, JsonArrayErrorAfterTheStartClosesTheArray) {
  auto r = NewGenerateRenderer("req_1", "m", false);
  std::string out = r->StreamEvent(Start());
  out += r->StreamEvent(Text("partial"));
  out += r->StreamError(HttpError(504, "The upstream timed out."));
  auto array = json::parse(out).as_array();
  ASSERT_EQ(array.size(), 2u);
  EXPECT_EQ(array[1].at("error").at("code").as_int64(), 504);
  EXPECT_EQ(array[1].at("error").at("status").as_string(), "DEADLINE_EXCEEDED");
  // An error before any element is a one-element array.
  auto r2 = NewGenerateRenderer("req_2", "m", false);
  EXPECT_EQ(json::parse(r2->StreamError(HttpError(503, "x"))).as_array().size(), 1u);
}

TEST(GeminiRenderTest, JsonArrayWithNothingButTheEnd) {
  auto r = NewGenerateRenderer("req_1", "m", false);
  auto array = json::parse(r->StreamEnd()).as_array();
  ASSERT_EQ(array.size(), 1u);
  EXPECT_EQ(array[0].at("candidates").at(0).at("finishReason").as_string(), "STOP");
}

TEST(GeminiRenderTest, AnthropicLengthStopsAreMaxTokens) {
  for (const char* stop_reason : {"max_tokens", "model_context_window_exceeded"}) {
    connector::AnthropicDecoder d(0);
    std::vector<ChatEvent> events;
    for (const auto& [event, data] : std::vector<std::pair<std::string, std::string>>{
             {"message_start", R"({"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":9}}})"},
             {"content_block_delta", R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"cut"}})"},
             {"message_delta", std::string(R"({"type":"message_delta","delta":{"stop_reason":")") + stop_reason +
                                   R"("},"usage":{"output_tokens":4}})"}})
      ASSERT_TRUE(d.FeedEvent(event, data, events).ok());
    d.Finish(events);
    auto data = SseData(Drive(*NewGenerateRenderer("req_1", "m", true), events));
    ASSERT_EQ(data.size(), 2u) << stop_reason;
    auto last = json::parse(data[1]);
    EXPECT_EQ(last.at("candidates").at(0).at("finishReason").as_string(), "MAX_TOKENS") << stop_reason;
    EXPECT_EQ(last.at("usageMetadata").at("promptTokenCount").as_int64(), 9);
    EXPECT_EQ(last.at("usageMetadata").at("candidatesTokenCount").as_int64(), 4);
  }
}

// An OpenAI-compatible upstream's stream, decoded by the connector and rendered as SSE.
std::vector<std::string> FromOpenAi(const std::vector<std::string>& chunks) {
  connector::OpenAiDecoder d(0);
  std::vector<ChatEvent> events;
  for (const auto& c : chunks) EXPECT_TRUE(d.FeedChunk(c, events).ok()) << c;
  d.Finish(events);
  return SseData(Drive(*NewGenerateRenderer("req_1", "m", true), events));
}

TEST(GeminiRenderTest, OpenAiUsageSplitsIntoCandidatesAndThoughts) {
  auto data = FromOpenAi({
      R"({"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"content":"42"},"finish_reason":"stop"}]})",
      R"({"id":"c","choices":[],"usage":{"prompt_tokens":45,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":30},"completion_tokens_details":{"reasoning_tokens":15}}})"});
  ASSERT_EQ(data.size(), 3u);
  EXPECT_EQ(json::serialize(json::parse(data.back()).at("usageMetadata")),
            R"({"promptTokenCount":45,"candidatesTokenCount":5,"totalTokenCount":65,"cachedContentTokenCount":30,"thoughtsTokenCount":15})");
  // Without cache or reasoning tokens, neither count appears.
  auto plain = FromOpenAi({R"({"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2}})"});
  EXPECT_EQ(json::serialize(json::parse(plain.back()).at("usageMetadata")),
            R"({"promptTokenCount":7,"candidatesTokenCount":2,"totalTokenCount":9})");
}

TEST(GeminiRenderTest, OpenAiFragmentsBecomeWholeFunctionCalls) {
  auto data = FromOpenAi({
      R"({"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"First"}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"q\":"}}]}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"x\"}"}}]}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"content":"then"}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"g","arguments":""}}]},"finish_reason":"tool_calls"}]})",
      R"({"id":"c","choices":null,"usage":{"prompt_tokens":5,"completion_tokens":8}})",
      "[DONE]"});
  ASSERT_EQ(data.size(), 4u);
  auto parts = [&](size_t i) {
    return json::serialize(json::parse(data[i]).at("candidates").at(0).at("content").at("parts"));
  };
  EXPECT_EQ(parts(0), R"([{"text":"First"}])");
  EXPECT_EQ(parts(1), R"([{"functionCall":{"name":"f","args":{"q":"x"},"id":"call_a"}}])");
  EXPECT_EQ(parts(2), R"([{"text":"then"}])");
  EXPECT_EQ(parts(3), R"([{"functionCall":{"name":"g","args":{},"id":"call_b"}}])");
  auto last = json::parse(data[3]);
  EXPECT_EQ(last.at("candidates").at(0).at("finishReason").as_string(), "STOP");  // tool calls end with STOP
  EXPECT_EQ(last.at("usageMetadata").at("totalTokenCount").as_int64(), 13);
}

// ---- models -------------------------------------------------------------------------------

routing::v1::Model MakeModel(const std::string& id, std::vector<llm::v1::Protocol> protocols) {
  routing::v1::Model m;
  m.set_id(id);
  m.set_owned_by("alibaba");
  m.set_created_unix(1750000000);  // 2025-06-15
  for (auto p : protocols) m.add_supported_protocols(p);
  m.add_capabilities("chat");
  m.set_context_window(131072);
  m.set_max_output_tokens(8192);
  return m;
}

TEST(GeminiModelsTest, OneModelInGeminisShape) {
  EXPECT_EQ(ModelJson(MakeModel("qwen3-max", {llm::v1::PROTOCOL_GEMINI})),
            R"({"name":"models/qwen3-max","baseModelId":"qwen3-max","version":"2025-06-15","displayName":"qwen3-max",)"
            R"("description":"qwen3-max by alibaba, served by NexusFlow.","inputTokenLimit":131072,)"
            R"("outputTokenLimit":8192,"supportedGenerationMethods":["generateContent","streamGenerateContent","countTokens"]})");
}

TEST(GeminiModelsTest, ListHoldsGeminiModelsTheKeyMayUse) {
  routing::v1::CatalogSnapshot catalog;
  *catalog.add_models() = MakeModel("a", {llm::v1::PROTOCOL_OPENAI, llm::v1::PROTOCOL_GEMINI});
  *catalog.add_models() = MakeModel("b", {llm::v1::PROTOCOL_OPENAI});
  *catalog.add_models() = MakeModel("c", {llm::v1::PROTOCOL_GEMINI});
  auto names = [](const std::string& list) {
    std::vector<std::string> out;
    json::value parsed = json::parse(list);
    for (const auto& m : parsed.at("models").as_array()) out.emplace_back(m.at("name").as_string());
    return out;
  };
  EXPECT_EQ(names(ModelListJson(catalog, {})), (std::vector<std::string>{"models/a", "models/c"}));
  EXPECT_EQ(names(ModelListJson(catalog, {"c"})), (std::vector<std::string>{"models/c"}));
  EXPECT_FALSE(json::parse(ModelListJson(catalog, {})).as_object().contains("nextPageToken"));
}

TEST(GeminiModelsTest, CountTokens) { EXPECT_EQ(CountTokensJson(42), R"({"totalTokens":42})"); }

}  // namespace
}  // namespace nexusflow::gateway::gemini

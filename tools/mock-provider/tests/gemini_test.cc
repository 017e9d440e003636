// The Gemini side of the mock: validation, the GenerateContentResponse and its two stream
// forms, thoughts, function calling modes, implicit and named caches, error bodies.
#include <gtest/gtest.h>

#include <string>
#include <variant>
#include <vector>

#include <boost/json.hpp>

#include "gemini.h"
#include "prompt_cache.h"

namespace nexusflow::mock {
namespace {

namespace json = boost::json;

constexpr GeminiOptions kOptions{4, 50};

Reply Plan(const std::string& body, GeminiOptions options = kOptions) {
  auto planned = PlanGenerateContent("gemini-x", body, options);
  if (const RequestError* error = std::get_if<RequestError>(&planned)) {
    ADD_FAILURE() << error->message;
    return {};
  }
  return std::get<Reply>(planned);
}

std::string Reject(const std::string& body) {
  auto planned = PlanGenerateContent("gemini-x", body, kOptions);
  if (!std::holds_alternative<RequestError>(planned)) {
    ADD_FAILURE() << "accepted: " << body;
    return {};
  }
  EXPECT_EQ(std::get<RequestError>(planned).status, 400);
  return std::get<RequestError>(planned).message;
}

std::string User(const std::string& text, const std::string& extra = {}) {
  return R"({)" + extra + R"("contents":[{"role":"user","parts":[{"text":")" + text + R"("}]}]})";
}

json::object Body(const Reply& r) { return json::parse(GenerateContentBody(r, "rid")).as_object(); }

std::vector<json::object> SseChunks(const std::vector<SseFrame>& frames) {
  std::vector<json::object> out;
  for (const SseFrame& frame : frames) {
    EXPECT_TRUE(frame.bytes.starts_with("data: ")) << frame.bytes;
    EXPECT_TRUE(frame.bytes.ends_with("\n\n")) << frame.bytes;
    EXPECT_EQ(frame.bytes.find('\n'), frame.bytes.size() - 2) << "one line per event";
    out.push_back(json::parse(frame.bytes.substr(6)).as_object());
  }
  return out;
}

constexpr char kTools[] =
    R"("tools":[{"functionDeclarations":[{"name":"lookup","parameters":{"type":"OBJECT",)"
    R"("properties":{"q":{"type":"STRING"},"n":{"type":"INTEGER","minimum":3}},"required":["q","n"]}},)"
    R"({"name":"other","parametersJsonSchema":{"type":"object","properties":{"flag":{"type":"boolean"}},)"
    R"("required":["flag"]}}]}],)";

TEST(GeminiRequest, RejectedLikeGemini) {
  EXPECT_EQ(Reject("{}"), "* GenerateContentRequest.contents: contents is not specified\n");
  EXPECT_EQ(Reject(R"({"contents":[{"role":"assistant","parts":[{"text":"x"}]}]})"),
            "Please use a valid role: user, model.");
  EXPECT_EQ(Reject(R"({"contents":[{"role":"user","parts":[]}]})"),
            "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.\n");
  EXPECT_EQ(Reject(User("x", R"("toolConfig":{"functionCallingConfig":{"mode":"ANY"}},)")),
            "Function calling config is set without function_declarations.");
  EXPECT_TRUE(Reject(User("x", R"("generationConfig":{"temperature":3},)")).find("temperature") !=
              std::string::npos);
  EXPECT_TRUE(Reject(User("x", R"("generationConfig":{"stopSequences":["a","b","c","d","e","f"]},)"))
                  .find("stop_sequences") != std::string::npos);
  EXPECT_FALSE(std::holds_alternative<Reply>(PlanGenerateContent("m", "not json", kOptions)));
}

TEST(GeminiReply, ResponseShape) {
  const Reply r = Plan(User("hello", R"("systemInstruction":{"role":"user","parts":[{"text":"brief"}]},)"));
  const json::object body = Body(r);
  const json::object& candidate = body.at("candidates").at(0).as_object();
  EXPECT_EQ(candidate.at("content").at("role").as_string(), "model");
  EXPECT_EQ(candidate.at("content").at("parts").at(0).at("text").as_string(), r.Text());
  EXPECT_EQ(candidate.at("finishReason").as_string(), "STOP");
  EXPECT_EQ(candidate.at("index").as_int64(), 0);
  const json::object& usage = body.at("usageMetadata").as_object();
  EXPECT_EQ(usage.at("promptTokenCount").as_int64(), r.usage.prompt_tokens);
  EXPECT_EQ(usage.at("candidatesTokenCount").as_int64(), 4);
  EXPECT_EQ(usage.at("totalTokenCount").as_int64(), r.usage.prompt_tokens + 4);
  EXPECT_FALSE(usage.contains("cachedContentTokenCount"));  // zero counts are left out
  EXPECT_FALSE(usage.contains("thoughtsTokenCount"));
  EXPECT_EQ(body.at("modelVersion").as_string(), "gemini-x");
  EXPECT_EQ(body.at("responseId").as_string(), "rid");

  // snake_case spellings mean the same request.
  const Reply snake = Plan(R"({"system_instruction":{"parts":[{"text":"brief"}]},"contents":[{"role":"user",)"
                           R"("parts":[{"text":"hello"}]}],"generation_config":{"max_output_tokens":2}})");
  EXPECT_EQ(snake.Text(), r.Text().substr(0, snake.Text().size()));
  EXPECT_EQ(snake.content_pieces.size(), 2u);
  EXPECT_EQ(Body(snake).at("candidates").at(0).at("finishReason").as_string(), "MAX_TOKENS");
}

TEST(GeminiReply, SseStreamEndsWithFinishAndFinalUsage) {
  Reply r = Plan(User("stream me"));
  r.stream = true;
  const std::vector<json::object> chunks = SseChunks(GenerateContentStreamFrames(r, "rid"));
  ASSERT_EQ(chunks.size(), 5u);  // four words, then the finish
  std::string text;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const json::object& candidate = chunks[i].at("candidates").at(0).as_object();
    text += candidate.at("content").at("parts").at(0).at("text").as_string();
    EXPECT_EQ(candidate.contains("finishReason"), i + 1 == chunks.size());
    EXPECT_EQ(chunks[i].at("responseId").as_string(), "rid");
  }
  EXPECT_EQ(text, r.Text());
  EXPECT_EQ(chunks.back().at("usageMetadata").at("candidatesTokenCount").as_int64(), 4);
  EXPECT_EQ(chunks.back().at("usageMetadata").at("totalTokenCount").as_int64(), r.usage.prompt_tokens + 4);
}

TEST(GeminiReply, ArrayStreamIsOneJsonArray) {
  Reply r = Plan(User("stream me"));
  r.stream = true;
  r.gemini_sse = false;
  std::string all;
  for (const SseFrame& frame : GenerateContentStreamFrames(r, "rid")) all += frame.bytes;
  const json::array chunks = json::parse(all).as_array();
  ASSERT_EQ(chunks.size(), 5u);
  EXPECT_EQ(chunks.back().at("candidates").at(0).at("finishReason").as_string(), "STOP");
  EXPECT_EQ(GeminiStreamErrorFrame(ForcedStatusError(503), false, true).front(), '[');
  EXPECT_TRUE(GeminiStreamErrorFrame(ForcedStatusError(503), false, false).starts_with(",\r\n{"));
}

TEST(GeminiReply, ThoughtsShownOnlyWhenIncluded) {
  const Reply shown = Plan(User("think", R"("generationConfig":{"thinkingConfig":{"includeThoughts":true,"thinkingBudget":-1}},)"));
  json::object body = Body(shown);
  const json::array& parts = body.at("candidates").at(0).at("content").at("parts").as_array();
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].at("thought").as_bool(), true);
  EXPECT_EQ(parts[0].at("text").as_string(), shown.ThinkingText());
  EXPECT_EQ(parts[1].at("text").as_string(), shown.Text());
  EXPECT_FALSE(parts[1].at("thoughtSignature").as_string().empty());
  EXPECT_EQ(body.at("usageMetadata").at("thoughtsTokenCount").as_int64(), kThinkingWords);
  EXPECT_EQ(body.at("usageMetadata").at("totalTokenCount").as_int64(),
            shown.usage.prompt_tokens + kThinkingWords + 4);

  Reply streamed = shown;
  streamed.stream = true;
  const std::vector<json::object> chunks = SseChunks(GenerateContentStreamFrames(streamed, "rid"));
  std::string thoughts;
  for (std::size_t i = 0; i < static_cast<std::size_t>(kThinkingWords); ++i) {
    const json::object& part = chunks[i].at("candidates").at(0).at("content").at("parts").at(0).as_object();
    EXPECT_TRUE(part.at("thought").as_bool());
    thoughts += part.at("text").as_string();
  }
  EXPECT_EQ(thoughts, shown.ThinkingText());

  // A budget without includeThoughts: thinking is counted, not sent; 0 turns it off.
  const Reply hidden = Plan(User("think", R"("generationConfig":{"thinkingConfig":{"thinkingBudget":5}},)"));
  body = Body(hidden);
  EXPECT_EQ(body.at("candidates").at(0).at("content").at("parts").as_array().size(), 1u);
  EXPECT_EQ(body.at("usageMetadata").at("thoughtsTokenCount").as_int64(), 5);
  const Reply off = Plan(User("think", R"("generationConfig":{"thinkingConfig":{"thinkingBudget":0,"includeThoughts":true}},)"));
  EXPECT_TRUE(off.thinking_pieces.empty());
}

TEST(GeminiReply, AnyModeCallsAFunctionWithItsRequiredArgs) {
  const Reply first = Plan(User("find", std::string(kTools) + R"("toolConfig":{"functionCallingConfig":{"mode":"ANY"}},)"));
  json::object body = Body(first);
  EXPECT_EQ(body.at("candidates").at(0).at("finishReason").as_string(), "STOP");  // STOP even for a call
  const json::object& call = body.at("candidates").at(0).at("content").at("parts").at(0).at("functionCall").as_object();
  EXPECT_EQ(call.at("name").as_string(), "lookup");
  EXPECT_EQ(call.at("args").at("n").as_int64(), 3);  // upper-case Gemini types understood
  EXPECT_TRUE(call.at("args").at("q").is_string());

  const Reply allowed = Plan(User("find", std::string(kTools) +
                                              R"("toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["other"]}},)"));
  body = Body(allowed);
  EXPECT_EQ(json::serialize(body.at("candidates").at(0).at("content").at("parts").at(0).at("functionCall")),
            R"({"name":"other","args":{"flag":true}})");
  Reply streamed = allowed;
  streamed.stream = true;
  const std::vector<json::object> chunks = SseChunks(GenerateContentStreamFrames(streamed, "rid"));
  ASSERT_EQ(chunks.size(), 2u);  // the call arrives whole, then the finish
  EXPECT_TRUE(chunks[0].at("candidates").at(0).at("content").at("parts").at(0).as_object().contains("functionCall"));

  EXPECT_FALSE(Plan(User("find", std::string(kTools) + R"("toolConfig":{"functionCallingConfig":{"mode":"AUTO"}},)"))
                   .tool_call);
  EXPECT_FALSE(Reject(User("find", std::string(kTools) +
                                       R"("toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["zzz"]}},)"))
                   .empty());
}

// A systemInstruction of at least implicit_cache_min_tokens is cached implicitly: the first
// request writes it (not reported: Gemini has no field for it), later ones read it.
TEST(GeminiCache, LongSystemInstructionIsReadTheSecondTime) {
  PromptCache cache;
  const std::string system(400, 'x');  // 4 + 100 tokens ≥ 50
  const std::string body = User("q", R"("systemInstruction":{"parts":[{"text":")" + system + R"("}]},)");
  Reply first = Plan(body);
  first.usage.cache = cache.Resolve("gemini", first.cache);
  EXPECT_EQ(first.usage.cache.read, 0);
  EXPECT_FALSE(Body(first).at("usageMetadata").as_object().contains("cachedContentTokenCount"));
  Reply second = Plan(body);
  second.usage.cache = cache.Resolve("gemini", second.cache);
  const json::object usage = Body(second).at("usageMetadata").as_object();
  EXPECT_EQ(usage.at("cachedContentTokenCount").as_int64(), 104);
  EXPECT_EQ(usage.at("promptTokenCount").as_int64(), second.usage.prompt_tokens);  // includes cached

  // Below the threshold nothing is cached.
  Reply small = Plan(User("q", R"("systemInstruction":{"parts":[{"text":"short"}]},)"));
  EXPECT_FALSE(small.cache.requested);

  // A named cache is read from the first request: everything before the last turn.
  Reply named = Plan(R"({"cachedContent":"cachedContents/abc","contents":[{"role":"user","parts":[{"text":"doc"}]},)"
                     R"({"role":"model","parts":[{"text":"ok"}]},{"role":"user","parts":[{"text":"q"}]}]})");
  named.usage.cache = cache.Resolve("gemini", named.cache);
  EXPECT_EQ(named.usage.cache.read, (4 + 1) + (4 + 1));
}

TEST(GeminiErrors, StatusNamesAndKeyDetails) {
  for (auto [status, name] : std::vector<std::pair<int, std::string>>{
           {400, "INVALID_ARGUMENT"}, {401, "UNAUTHENTICATED"}, {403, "PERMISSION_DENIED"},
           {404, "NOT_FOUND"}, {429, "RESOURCE_EXHAUSTED"}, {500, "INTERNAL"}, {503, "UNAVAILABLE"}}) {
    const json::object body = json::parse(GeminiErrorBody(ForcedStatusError(status))).as_object();
    EXPECT_EQ(body.at("error").at("status").as_string(), name);
    EXPECT_EQ(body.at("error").at("code").as_int64(), status);  // numeric, as the SDK needs
  }
  const json::object key = json::parse(GeminiErrorBody(RequestError{400, "API key not valid.", {}, {}},
                                                       "API_KEY_INVALID")).as_object();
  EXPECT_EQ(key.at("error").at("details").at(0).at("reason").as_string(), "API_KEY_INVALID");
}

TEST(GeminiRequest, CountTokens) {
  auto plain = CountGeminiTokens("m", R"({"contents":[{"parts":[{"text":"hello there"}]}]})");
  ASSERT_TRUE(std::holds_alternative<std::int64_t>(plain));
  EXPECT_EQ(std::get<std::int64_t>(plain), 4 + 3);
  auto wrapped = CountGeminiTokens(
      "m", R"({"generateContentRequest":{"model":"models/m","contents":[{"parts":[{"text":"hello there"}]}]}})");
  EXPECT_EQ(std::get<std::int64_t>(wrapped), 7);
  EXPECT_EQ(GeminiTokenCountBody(7), R"({"totalTokens":7})");
}

}  // namespace
}  // namespace nexusflow::mock

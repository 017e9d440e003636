// The Anthropic Messages side of the mock: validation as Anthropic does it, the message and
// its event stream, thinking, forced tools, stop reasons, cache_control usage, and the same
// answer as the OpenAI and Gemini sides for the same conversation.
#include <gtest/gtest.h>

#include <string>
#include <variant>
#include <vector>

#include <boost/json.hpp>

#include "anthropic.h"
#include "chat.h"
#include "gemini.h"
#include "prompt_cache.h"

namespace nexusflow::mock {
namespace {

namespace json = boost::json;

Reply Plan(const std::string& body, int words = 4) {
  auto planned = PlanMessagesReply(body, words);
  if (const RequestError* error = std::get_if<RequestError>(&planned)) {
    ADD_FAILURE() << error->message;
    return {};
  }
  return std::get<Reply>(planned);
}

std::string Reject(const std::string& body) {
  auto planned = PlanMessagesReply(body, 4);
  if (!std::holds_alternative<RequestError>(planned)) {
    ADD_FAILURE() << "accepted: " << body;
    return {};
  }
  EXPECT_EQ(std::get<RequestError>(planned).status, 400);
  return std::get<RequestError>(planned).message;
}

std::string User(const std::string& text, const std::string& extra = {}) {
  return R"({"model":"claude-x","max_tokens":4000,)" + extra +
         R"("messages":[{"role":"user","content":")" + text + R"("}]})";
}

struct Event {
  std::string name;
  json::object data;
};

std::vector<Event> Events(const std::vector<SseFrame>& frames) {
  std::vector<Event> events;
  for (const SseFrame& frame : frames) {
    const std::string& b = frame.bytes;
    EXPECT_TRUE(b.starts_with("event: ")) << b;
    EXPECT_TRUE(b.ends_with("\n\n")) << b;
    const std::size_t newline = b.find('\n');
    EXPECT_EQ(b.substr(newline + 1, 6), "data: ");
    events.push_back({b.substr(7, newline - 7), json::parse(b.substr(newline + 7)).as_object()});
  }
  return events;
}

constexpr char kWeatherTool[] =
    R"("tools":[{"name":"get_weather","description":"w","input_schema":{"type":"object",)"
    R"("properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]},)"
    R"("days":{"type":"integer","minimum":2}},"required":["city","unit","days"]}}],)";

TEST(AnthropicRequest, RejectedLikeAnthropic) {
  EXPECT_EQ(Reject(R"({"model":"m","messages":[{"role":"user","content":"x"}]})"),
            "max_tokens: Field required");
  EXPECT_EQ(Reject(R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}]})"), "model: Field required");
  EXPECT_EQ(Reject(R"({"model":"m","max_tokens":5,"messages":[]})"), "messages: at least one message is required");
  EXPECT_EQ(Reject(R"({"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]})"),
            "messages.0.role: Input should be 'user' or 'assistant'");
  EXPECT_EQ(Reject(User("x", R"("temperature":1.5,)")), "temperature: Input should be less than or equal to 1");
  EXPECT_EQ(Reject(User("x", R"("thinking":{"type":"enabled","budget_tokens":512},)")),
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024");
  EXPECT_TRUE(Reject(User("x", R"("thinking":{"type":"enabled","budget_tokens":1000000},)"))
                  .starts_with("`max_tokens` must be greater than `thinking.budget_tokens`"));
  EXPECT_EQ(Reject(User("x", std::string(kWeatherTool) +
                                 R"("tool_choice":{"type":"any"},"thinking":{"type":"enabled","budget_tokens":1024},)")),
            "Thinking may not be enabled when tool_choice forces tool use.");
  EXPECT_EQ(Reject(User("x", std::string(kWeatherTool) + R"("tool_choice":{"type":"tool","name":"nope"},)")),
            "tool_choice.name: Tool 'nope' not found in the provided tools");
  EXPECT_EQ(Reject(User("x", R"("tools":[{"name":"t"}],)")), "tools.0.custom.input_schema: Field required");

  std::string five = R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[)";
  for (int i = 0; i < 5; ++i) {
    five += std::string(i ? "," : "") + R"({"type":"text","text":"b","cache_control":{"type":"ephemeral"}})";
  }
  EXPECT_EQ(Reject(five + "]}]}"), "A maximum of 4 blocks with cache_control may be provided. Found 5.");
  // Fields the newest SDK no longer types are accepted; top_k, metadata, stop_sequences too.
  Plan(User("x", R"("temperature":0.5,"top_p":0.9,"top_k":5,"metadata":{"user_id":"u"},"stop_sequences":["zz"],)"));
}

TEST(AnthropicReply, MessageObjectAndStreamAgree) {
  const Reply r = Plan(User("hello", R"("system":"be brief","stream":true,)"), 5);
  EXPECT_TRUE(r.stream);
  const json::object body = json::parse(MessageBody(r, NewMessageIds())).as_object();
  EXPECT_TRUE(body.at("id").as_string().starts_with("msg_"));
  EXPECT_EQ(body.at("type").as_string(), "message");
  EXPECT_EQ(body.at("role").as_string(), "assistant");
  EXPECT_EQ(body.at("stop_reason").as_string(), "end_turn");
  EXPECT_TRUE(body.at("stop_sequence").is_null());
  EXPECT_EQ(body.at("content").at(0).at("type").as_string(), "text");
  EXPECT_EQ(body.at("content").at(0).at("text").as_string(), r.Text());
  const json::object& usage = body.at("usage").as_object();
  EXPECT_EQ(usage.at("input_tokens").as_int64(), r.usage.prompt_tokens);
  EXPECT_EQ(usage.at("output_tokens").as_int64(), 5);
  EXPECT_EQ(usage.at("cache_creation_input_tokens").as_int64(), 0);
  EXPECT_EQ(usage.at("cache_read_input_tokens").as_int64(), 0);

  const std::vector<Event> events = Events(MessageStreamFrames(r, NewMessageIds()));
  std::vector<std::string> names;
  std::string text;
  for (const Event& e : events) {
    EXPECT_EQ(e.data.at("type").as_string(), e.name);  // the SDK dispatches on both
    if (names.empty() || names.back() != e.name) names.push_back(e.name);
    if (e.name == "content_block_delta") text += e.data.at("delta").at("text").as_string();
  }
  EXPECT_EQ(names, (std::vector<std::string>{"message_start", "content_block_start", "ping",
                                              "content_block_delta", "content_block_stop",
                                              "message_delta", "message_stop"}));
  EXPECT_EQ(text, r.Text());
  const json::object& start = events.front().data.at("message").as_object();
  EXPECT_TRUE(start.at("content").as_array().empty());
  EXPECT_TRUE(start.at("stop_reason").is_null());
  EXPECT_EQ(start.at("usage").at("input_tokens").as_int64(), r.usage.prompt_tokens);
  EXPECT_EQ(start.at("usage").at("output_tokens").as_int64(), 1);
  const json::object& delta = events[events.size() - 2].data;
  EXPECT_EQ(delta.at("delta").at("stop_reason").as_string(), "end_turn");
  EXPECT_EQ(delta.at("usage").at("output_tokens").as_int64(), 5);
}

TEST(AnthropicReply, ThinkingBlockWithSignatureComesFirst) {
  const Reply r = Plan(User("why?", R"("thinking":{"type":"enabled","budget_tokens":2000},)"));
  const json::object body = json::parse(MessageBody(r, NewMessageIds())).as_object();
  const json::array& content = body.at("content").as_array();
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0].at("type").as_string(), "thinking");
  EXPECT_EQ(content[0].at("thinking").as_string(), r.ThinkingText());
  EXPECT_FALSE(content[0].at("signature").as_string().empty());
  EXPECT_EQ(content[1].at("type").as_string(), "text");
  EXPECT_EQ(body.at("usage").at("output_tokens").as_int64(), kThinkingWords + 4);

  const std::vector<Event> events = Events(MessageStreamFrames(r, NewMessageIds()));
  std::string thinking, signature;
  int signature_index = -1, stop_index = -1;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const Event& e = events[i];
    if (e.name == "content_block_start" && e.data.at("index").as_int64() == 0) {
      EXPECT_EQ(e.data.at("content_block").at("type").as_string(), "thinking");
      EXPECT_EQ(e.data.at("content_block").at("signature").as_string(), "");
    }
    if (e.name == "content_block_delta" && e.data.at("index").as_int64() == 0) {
      const json::object& d = e.data.at("delta").as_object();
      if (d.at("type").as_string() == "thinking_delta") thinking += d.at("thinking").as_string();
      if (d.at("type").as_string() == "signature_delta") {
        signature = d.at("signature").as_string();
        signature_index = static_cast<int>(i);
      }
    }
    if (e.name == "content_block_stop" && e.data.at("index").as_int64() == 0) stop_index = static_cast<int>(i);
  }
  EXPECT_EQ(thinking, r.ThinkingText());
  EXPECT_EQ(signature, r.thinking_signature);
  EXPECT_LT(signature_index, stop_index);  // one signature_delta before the block's stop
}

TEST(AnthropicReply, ForcedToolIsAToolUseBlock) {
  for (const char* choice : {R"({"type":"any"})", R"({"type":"tool","name":"get_weather"})"}) {
    SCOPED_TRACE(choice);
    const Reply r = Plan(User("weather?", std::string(kWeatherTool) + R"("tool_choice":)" + choice + ","));
    ASSERT_TRUE(r.tool_call.has_value());
    const json::object body = json::parse(MessageBody(r, NewMessageIds())).as_object();
    EXPECT_EQ(body.at("stop_reason").as_string(), "tool_use");
    const json::object& block = body.at("content").at(0).as_object();
    EXPECT_EQ(block.at("type").as_string(), "tool_use");
    EXPECT_TRUE(block.at("id").as_string().starts_with("toolu_"));
    EXPECT_EQ(block.at("name").as_string(), "get_weather");
    EXPECT_EQ(json::serialize(block.at("input")), R"({"city":"harbor","unit":"c","days":2})");

    std::string partial;
    for (const Event& e : Events(MessageStreamFrames(r, NewMessageIds()))) {
      if (e.name == "content_block_start") {
        EXPECT_EQ(e.data.at("content_block").at("type").as_string(), "tool_use");
        EXPECT_TRUE(e.data.at("content_block").at("input").as_object().empty());
      }
      if (e.name == "content_block_delta") partial += e.data.at("delta").at("partial_json").as_string();
    }
    EXPECT_EQ(partial, r.tool_call->arguments);
  }
  // auto and none answer with text.
  EXPECT_FALSE(Plan(User("w", std::string(kWeatherTool) + R"("tool_choice":{"type":"auto"},)")).tool_call);
}

TEST(AnthropicReply, StopReasonsForLimitAndStopSequence) {
  const Reply limited = Plan(R"({"model":"m","max_tokens":2,"messages":[{"role":"user","content":"long"}]})", 5);
  EXPECT_EQ(limited.content_pieces.size(), 2u);
  EXPECT_EQ(json::parse(MessageBody(limited, NewMessageIds())).at("stop_reason").as_string(), "max_tokens");

  const Reply full = Plan(User("stop"), 5);
  const std::string second_word = full.content_pieces[1].substr(1);
  const Reply stopped = Plan(User("stop", R"("stop_sequences":[")" + second_word + R"("],)"), 5);
  const json::object body = json::parse(MessageBody(stopped, NewMessageIds())).as_object();
  EXPECT_EQ(body.at("stop_reason").as_string(), "stop_sequence");
  EXPECT_EQ(body.at("stop_sequence").as_string(), second_word);
  EXPECT_EQ(body.at("content").at(0).at("text").as_string(),
            full.Text().substr(0, full.Text().find(second_word)));
}

// cache_control on a big first block: the question after it can change and still read it;
// input_tokens then excludes the cached and the written tokens.
TEST(AnthropicCache, BreakpointWritesThenReadsAndInputExcludesIt) {
  PromptCache cache;
  auto body = [](const std::string& question) {
    return R"({"model":"m","max_tokens":100,"messages":[{"role":"user","content":[)"
           R"({"type":"text","text":"DOCUMENT DOCUMENT DOCUMENT DOC","cache_control":{"type":"ephemeral"}},)"
           R"({"type":"text","text":")" + question + R"("}]}]})";
  };
  Reply first = Plan(body("first question"));
  first.usage.cache = cache.Resolve("anthropic", first.cache);
  const std::int64_t prefix = 4 + 30 / 4 + 1;  // 4 + ceil(30 / 4)
  EXPECT_EQ(first.usage.cache.write, prefix);
  EXPECT_EQ(first.usage.cache.read, 0);
  json::object usage = json::parse(MessageBody(first, NewMessageIds())).at("usage").as_object();
  EXPECT_EQ(usage.at("cache_creation_input_tokens").as_int64(), prefix);
  EXPECT_EQ(usage.at("cache_creation").at("ephemeral_5m_input_tokens").as_int64(), prefix);
  EXPECT_EQ(usage.at("input_tokens").as_int64(), first.usage.prompt_tokens - prefix);

  Reply second = Plan(body("another"));
  second.usage.cache = cache.Resolve("anthropic", second.cache);
  EXPECT_EQ(second.usage.cache.read, prefix);
  EXPECT_EQ(second.usage.cache.write, 0);
  usage = json::parse(MessageBody(second, NewMessageIds())).at("usage").as_object();
  EXPECT_EQ(usage.at("cache_read_input_tokens").as_int64(), prefix);
  EXPECT_EQ(usage.at("input_tokens").as_int64(), second.usage.prompt_tokens - prefix);
  // The stream's message_delta carries the same counts.
  const std::vector<Event> events = Events(MessageStreamFrames(second, NewMessageIds()));
  EXPECT_EQ(events[events.size() - 2].data.at("usage").at("cache_read_input_tokens").as_int64(), prefix);
}

// The breakpoint moves to the newest turn; the look-back still finds the previous one.
TEST(AnthropicCache, NextTurnReadsThePreviousBreakpoint) {
  PromptCache cache;
  const std::string turn1 =
      R"({"model":"m","max_tokens":100,"system":[{"type":"text","text":"rules","cache_control":{"type":"ephemeral","ttl":"1h"}}],)"
      R"("messages":[{"role":"user","content":[{"type":"text","text":"q1","cache_control":{"type":"ephemeral"}}]}]})";
  const std::string turn2 =
      R"({"model":"m","max_tokens":100,"system":[{"type":"text","text":"rules"}],"messages":[)"
      R"({"role":"user","content":"q1"},{"role":"assistant","content":"a1"},)"
      R"({"role":"user","content":[{"type":"text","text":"q2","cache_control":{"type":"ephemeral"}}]}]})";
  Reply one = Plan(turn1);
  one.usage.cache = cache.Resolve("anthropic", one.cache);
  EXPECT_EQ(one.usage.cache.write, one.usage.prompt_tokens);
  Reply two = Plan(turn2);
  two.usage.cache = cache.Resolve("anthropic", two.cache);
  EXPECT_EQ(two.usage.cache.read, one.usage.prompt_tokens);
  EXPECT_EQ(two.usage.cache.write, two.usage.prompt_tokens - one.usage.prompt_tokens);
  EXPECT_FALSE(two.cache_one_hour);

  // ttl 1h reports the write under ephemeral_1h_input_tokens.
  PromptCache fresh;
  Reply hour = Plan(R"({"model":"m","max_tokens":9,"system":[{"type":"text","text":"rules",)"
                    R"("cache_control":{"type":"ephemeral","ttl":"1h"}}],"messages":[{"role":"user","content":"q"}]})");
  hour.usage.cache = fresh.Resolve("anthropic", hour.cache);
  const json::object usage = json::parse(MessageBody(hour, NewMessageIds())).at("usage").as_object();
  EXPECT_EQ(usage.at("cache_creation").at("ephemeral_1h_input_tokens").as_int64(), hour.usage.cache.write);
  EXPECT_EQ(usage.at("cache_creation").at("ephemeral_5m_input_tokens").as_int64(), 0);
}

TEST(AnthropicCache, TopLevelCacheControlCachesTheWholePrompt) {
  PromptCache cache;
  const std::string body = User("hello", R"("cache_control":{"type":"ephemeral"},)");
  Reply first = Plan(body);
  EXPECT_EQ(cache.Resolve("anthropic", first.cache).write, first.usage.prompt_tokens);
  Reply second = Plan(body);
  EXPECT_EQ(cache.Resolve("anthropic", second.cache).read, second.usage.prompt_tokens);
  // No cache_control at all: nothing reported.
  Reply plain = Plan(User("hello"));
  const CacheUsage none = cache.Resolve("anthropic", plain.cache);
  EXPECT_EQ(none.read + none.write, 0);
}

TEST(AnthropicErrors, BodyTypesFollowTheStatus) {
  const json::object body = json::parse(AnthropicErrorBody(ForcedStatusError(529), "req_1")).as_object();
  EXPECT_EQ(body.at("type").as_string(), "error");
  EXPECT_EQ(body.at("error").at("type").as_string(), "overloaded_error");
  EXPECT_EQ(body.at("request_id").as_string(), "req_1");
  for (auto [status, type] : std::vector<std::pair<int, std::string>>{
           {400, "invalid_request_error"}, {401, "authentication_error"}, {403, "permission_error"},
           {404, "not_found_error"}, {413, "request_too_large"}, {429, "rate_limit_error"},
           {500, "api_error"}, {529, "overloaded_error"}}) {
    EXPECT_EQ(json::parse(AnthropicErrorBody(ForcedStatusError(status), "")).at("error").at("type").as_string(),
              type);
  }
  const std::string frame = MessageStreamErrorFrame(ForcedStatusError(529));
  EXPECT_TRUE(frame.starts_with("event: error\ndata: {\"type\":\"error\""));
}

TEST(AnthropicRequest, CountTokensMatchesTheMessage) {
  const std::string body = R"({"model":"m","system":"rules","messages":[{"role":"user","content":"hello there"}]})";
  auto counted = CountMessageTokens(body);
  ASSERT_TRUE(std::holds_alternative<std::int64_t>(counted));
  EXPECT_EQ(std::get<std::int64_t>(counted), (4 + 2) + (4 + 3));
  EXPECT_EQ(MessageTokenCountBody(13), R"({"input_tokens":13})");
}

// One conversation — system, a turn, a tool call and its result, an image — written in each
// protocol's own way gets the same text and the same input tokens from all three.
TEST(CrossProtocol, SameConversationSameAnswer) {
  const std::string openai =
      R"({"model":"m","messages":[{"role":"system","content":"Be brief."},)"
      R"({"role":"user","content":[{"type":"text","text":"Weather in Paris?"},)"
      R"({"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]},)"
      R"({"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",)"
      R"("function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},)"
      R"({"role":"tool","tool_call_id":"call_1","content":"{\"temp\":21}"},)"
      R"({"role":"user","content":"Thanks! [mock:words=7]"}]})";
  const std::string anthropic =
      R"({"model":"m","max_tokens":100,"system":[{"type":"text","text":"Be brief."}],"messages":[)"
      R"({"role":"user","content":[{"type":"text","text":"Weather in Paris?"},)"
      R"({"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]},)"
      R"({"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},)"
      R"({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"{\"temp\": 21}"},)"
      R"({"type":"text","text":"Thanks! [mock:words=7]"}]}]})";
  const std::string gemini =
      R"({"systemInstruction":{"role":"user","parts":[{"text":"Be brief."}]},"contents":[)"
      R"({"role":"user","parts":[{"text":"Weather in Paris?"},{"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}}]},)"
      R"({"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}}]},)"
      R"({"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"temp":21}}},)"
      R"({"text":"Thanks! [mock:words=7]"}]}]})";

  auto from_openai = PlanChatReply(openai, 4);
  auto from_anthropic = PlanMessagesReply(anthropic, 4);
  auto from_gemini = PlanGenerateContent("m", gemini, GeminiOptions{4, 1024});
  ASSERT_TRUE(std::holds_alternative<Reply>(from_openai));
  ASSERT_TRUE(std::holds_alternative<Reply>(from_anthropic));
  ASSERT_TRUE(std::holds_alternative<Reply>(from_gemini));
  const Reply& a = std::get<Reply>(from_openai);
  const Reply& b = std::get<Reply>(from_anthropic);
  const Reply& c = std::get<Reply>(from_gemini);
  EXPECT_EQ(a.content_pieces.size(), 7u);
  EXPECT_EQ(a.Text(), b.Text());
  EXPECT_EQ(a.Text(), c.Text());
  EXPECT_EQ(a.usage.prompt_tokens, b.usage.prompt_tokens);
  EXPECT_EQ(a.usage.prompt_tokens, c.usage.prompt_tokens);
  EXPECT_EQ(a.usage.output_tokens, b.usage.output_tokens);

  // Thinking, asked each protocol's way, is the same text too.
  const Reply ta = std::get<Reply>(PlanChatReply(
      R"({"model":"m","enable_thinking":true,"messages":[{"role":"user","content":"hm"}]})", 4));
  const Reply tb = Plan(R"({"model":"m","max_tokens":2000,"thinking":{"type":"enabled","budget_tokens":1024},)"
                        R"("messages":[{"role":"user","content":"hm"}]})");
  const Reply tc = std::get<Reply>(PlanGenerateContent(
      "m", R"({"contents":[{"parts":[{"text":"hm"}]}],"generationConfig":{"thinkingConfig":{"includeThoughts":true}}})",
      GeminiOptions{4, 1024}));
  EXPECT_EQ(ta.ThinkingText(), tb.ThinkingText());
  EXPECT_EQ(ta.ThinkingText(), tc.ThinkingText());
  EXPECT_EQ(ta.Text(), tc.Text());
}

}  // namespace
}  // namespace nexusflow::mock

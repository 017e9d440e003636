#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "absl/strings/str_cat.h"
#include "services/provider-connector/anthropic_upstream.h"

namespace nexusflow::connector {
namespace {

namespace json = boost::json;
namespace llmpb = ::nexusflow::llm::v1;
using llmpb::ChatEvent;

struct Sse {
  std::string event;
  std::string data;
};

std::vector<ChatEvent> Decode(const std::vector<Sse>& frames, int64_t prompt_estimate = 7) {
  AnthropicDecoder d(prompt_estimate);
  std::vector<ChatEvent> out;
  for (const auto& f : frames) EXPECT_TRUE(d.FeedEvent(f.event, f.data, out).ok()) << f.data;
  d.Finish(out);
  return out;
}

llmpb::ContentPart Text(const std::string& t) {
  llmpb::ContentPart p;
  p.set_text(t);
  return p;
}

// ---------------------------------------------------------------------------------------
// Canonical request → Anthropic body (PROTOCOLS.md §E, OpenAI/Gemini → Anthropic).
// Covers: system → `system`; max_tokens from the request, else the model's default (else
// 4096); temperature clamped to 0–1; stop → stop_sequences; tools → input_schema;
// tool_choice auto/none/required/{name} → auto/none/any/{tool,name}; consecutive same-role
// turns merged; the first turn a user turn; tool_calls → tool_use (arguments parsed);
// tool results → tool_result blocks ahead of the rest of their user turn; data: URL →
// base64 source.

TEST(AnthropicBodyTest, SystemToolsToolResultsAndLimits) {
  llmpb::ChatRequest r;
  auto* sys = r.add_messages();
  sys->set_role(llmpb::ROLE_SYSTEM);
  *sys->add_parts() = Text("Be brief.");
  sys->mutable_parts(0)->mutable_cache_control();
  auto* u = r.add_messages();
  u->set_role(llmpb::ROLE_USER);
  *u->add_parts() = Text("Weather?");
  auto* img = u->add_parts()->mutable_image();
  img->set_url("data:image/png;base64,iVBORw0KGgo=");
  auto* a = r.add_messages();
  a->set_role(llmpb::ROLE_ASSISTANT);
  auto* call = a->add_parts()->mutable_tool_call();
  call->set_id("toolu_1");
  call->set_name("get_weather");
  call->set_arguments_json(R"({"city":"Paris"})");
  auto* t1 = r.add_messages();
  t1->set_role(llmpb::ROLE_TOOL);
  auto* res = t1->add_parts()->mutable_tool_result();
  res->set_tool_call_id("toolu_1");
  res->set_content("22C");
  auto* u2 = r.add_messages();
  u2->set_role(llmpb::ROLE_USER);
  *u2->add_parts() = Text("Thanks");
  auto* tool = r.add_tools();
  tool->set_name("get_weather");
  tool->set_parameters_json(R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})");
  tool->mutable_cache_control()->mutable_ttl()->set_seconds(3600);
  r.mutable_tool_choice()->set_function_name("get_weather");
  r.mutable_sampling()->set_temperature(1.7);
  r.mutable_sampling()->add_stop_sequences("END");
  r.set_user("u-1");

  json::value b = json::parse(BuildAnthropicBody(r, "claude-x", true, 8192));
  EXPECT_EQ(b.at("model"), "claude-x");
  EXPECT_EQ(b.at("max_tokens"), 8192);  // required by Anthropic: the catalog's limit
  EXPECT_EQ(b.at("stream"), true);
  EXPECT_EQ(b.at("temperature").as_double(), 1.0);  // clamped to Anthropic's 0..1
  EXPECT_EQ(b.at("system").at(0).at("text"), "Be brief.");
  EXPECT_EQ(b.at("system").at(0).at("cache_control").at("type"), "ephemeral");
  const auto& msgs = b.at("messages").as_array();
  ASSERT_EQ(msgs.size(), 3u);  // the tool result and "Thanks" share one user turn
  EXPECT_EQ(msgs[0].at("content").at(1).at("source").at("type"), "base64");
  EXPECT_EQ(msgs[0].at("content").at(1).at("source").at("media_type"), "image/png");
  EXPECT_EQ(msgs[1].at("role"), "assistant");
  EXPECT_EQ(msgs[1].at("content").at(0).at("input").at("city"), "Paris");
  EXPECT_EQ(msgs[2].at("role"), "user");
  EXPECT_EQ(msgs[2].at("content").at(0).at("type"), "tool_result");
  EXPECT_EQ(msgs[2].at("content").at(0).at("tool_use_id"), "toolu_1");
  EXPECT_EQ(msgs[2].at("content").at(1).at("text"), "Thanks");
  EXPECT_EQ(b.at("tools").at(0).at("input_schema").at("required").at(0), "city");
  EXPECT_EQ(b.at("tools").at(0).at("cache_control").at("ttl"), "1h");
  EXPECT_EQ(b.at("tool_choice").at("type"), "tool");
  EXPECT_EQ(b.at("tool_choice").at("name"), "get_weather");
  EXPECT_EQ(b.at("stop_sequences").at(0), "END");
  EXPECT_EQ(b.at("metadata").at("user_id"), "u-1");
}

TEST(AnthropicBodyTest, RequestLimitWinsAndToolChoiceModes) {
  llmpb::ChatRequest r;
  auto* u = r.add_messages();
  u->set_role(llmpb::ROLE_USER);
  *u->add_parts() = Text("hi");
  r.mutable_sampling()->set_max_output_tokens(50);
  r.add_tools()->set_name("f");
  r.mutable_tool_choice()->set_mode(llmpb::ToolChoice::MODE_REQUIRED);
  r.set_parallel_tool_calls(false);
  json::value b = json::parse(BuildAnthropicBody(r, "m", false, 8192));
  EXPECT_EQ(b.at("max_tokens"), 50);
  EXPECT_FALSE(b.as_object().contains("stream"));
  EXPECT_EQ(b.at("tool_choice").at("type"), "any");
  EXPECT_EQ(b.at("tool_choice").at("disable_parallel_tool_use"), true);
  EXPECT_EQ(b.at("tools").at(0).at("input_schema").as_object().size(), 0u);  // no schema → {}
}

TEST(AnthropicBodyTest, ToolChoiceAllFourWays) {
  auto choice = [](auto set) {
    llmpb::ChatRequest r;
    auto* u = r.add_messages();
    u->set_role(llmpb::ROLE_USER);
    *u->add_parts() = Text("hi");
    r.add_tools()->set_name("f");
    set(*r.mutable_tool_choice());
    return json::parse(BuildAnthropicBody(r, "m", false, 0)).at("tool_choice");
  };
  using TC = llmpb::ToolChoice;
  EXPECT_EQ(choice([](TC& c) { c.set_mode(TC::MODE_AUTO); }), json::parse(R"({"type":"auto"})"));
  EXPECT_EQ(choice([](TC& c) { c.set_mode(TC::MODE_NONE); }), json::parse(R"({"type":"none"})"));
  EXPECT_EQ(choice([](TC& c) { c.set_mode(TC::MODE_REQUIRED); }), json::parse(R"({"type":"any"})"));
  EXPECT_EQ(choice([](TC& c) { c.set_function_name("f"); }), json::parse(R"({"type":"tool","name":"f"})"));
}

TEST(AnthropicBodyTest, MaxTokensDefaultsAndTemperatureClamps) {
  llmpb::ChatRequest r;
  auto* u = r.add_messages();
  u->set_role(llmpb::ROLE_USER);
  *u->add_parts() = Text("hi");
  // No limit in the request and none in the catalog: Anthropic still needs one.
  EXPECT_EQ(json::parse(BuildAnthropicBody(r, "m", false, 0)).at("max_tokens"), 4096);
  EXPECT_FALSE(json::parse(BuildAnthropicBody(r, "m", false, 0)).as_object().contains("temperature"));
  r.mutable_sampling()->set_temperature(0.3);
  EXPECT_EQ(json::parse(BuildAnthropicBody(r, "m", false, 0)).at("temperature").as_double(), 0.3);
  r.mutable_sampling()->set_temperature(2.0);
  EXPECT_EQ(json::parse(BuildAnthropicBody(r, "m", false, 0)).at("temperature").as_double(), 1.0);
  r.mutable_sampling()->set_temperature(0.0);
  EXPECT_EQ(json::parse(BuildAnthropicBody(r, "m", false, 0)).at("temperature").as_double(), 0.0);
}

TEST(AnthropicBodyTest, ConsecutiveSameRoleTurnsMerge) {
  llmpb::ChatRequest r;
  for (auto [role, text] : std::vector<std::pair<llmpb::Role, std::string>>{
           {llmpb::ROLE_USER, "a"}, {llmpb::ROLE_USER, "b"}, {llmpb::ROLE_ASSISTANT, "c"},
           {llmpb::ROLE_ASSISTANT, "d"}, {llmpb::ROLE_USER, "e"}}) {
    auto* m = r.add_messages();
    m->set_role(role);
    *m->add_parts() = Text(text);
  }
  json::value b = json::parse(BuildAnthropicBody(r, "m", false, 0));
  EXPECT_EQ(b.at("messages"), json::parse(R"([
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
      {"role":"assistant","content":[{"type":"text","text":"c"},{"type":"text","text":"d"}]},
      {"role":"user","content":[{"type":"text","text":"e"}]}])"));
}

TEST(AnthropicBodyTest, TheFirstTurnIsAUserTurn) {
  // An OpenAI conversation may open with the assistant's greeting (after the system
  // prompt); Anthropic refuses a conversation that does not open with a user turn.
  llmpb::ChatRequest r;
  auto* sys = r.add_messages();
  sys->set_role(llmpb::ROLE_SYSTEM);
  *sys->add_parts() = Text("rules");
  auto* a = r.add_messages();
  a->set_role(llmpb::ROLE_ASSISTANT);
  *a->add_parts() = Text("How can I help?");
  auto* u = r.add_messages();
  u->set_role(llmpb::ROLE_USER);
  *u->add_parts() = Text("hi");
  json::value b = json::parse(BuildAnthropicBody(r, "m", false, 0));
  const auto& msgs = b.at("messages").as_array();
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[0].at("role"), "user");
  EXPECT_FALSE(msgs[0].at("content").at(0).at("text").as_string().empty());  // Anthropic refuses empty text
  EXPECT_EQ(msgs[1].at("role"), "assistant");
  EXPECT_EQ(msgs[1].at("content").at(0).at("text"), "How can I help?");
  EXPECT_EQ(msgs[2].at("content").at(0).at("text"), "hi");
  EXPECT_EQ(b.at("system").at(0).at("text"), "rules");
}

TEST(AnthropicBodyTest, ToolResultsGoAheadOfTheRestOfTheUserTurn) {
  // Tool results that reach the user turn after other user content still lead it.
  llmpb::ChatRequest r;
  auto* u = r.add_messages();
  u->set_role(llmpb::ROLE_USER);
  *u->add_parts() = Text("go");
  auto* a = r.add_messages();
  a->set_role(llmpb::ROLE_ASSISTANT);
  for (const char* id : {"t1", "t2"}) {
    auto* call = a->add_parts()->mutable_tool_call();
    call->set_id(id);
    call->set_name("f");
    call->set_arguments_json("");  // no arguments: an empty input object
  }
  auto* note = r.add_messages();
  note->set_role(llmpb::ROLE_USER);
  *note->add_parts() = Text("one moment");
  for (const char* id : {"t1", "t2"}) {
    auto* t = r.add_messages();
    t->set_role(llmpb::ROLE_TOOL);
    t->add_parts()->mutable_tool_result()->set_tool_call_id(id);
  }
  json::value b = json::parse(BuildAnthropicBody(r, "m", false, 0));
  const auto& msgs = b.at("messages").as_array();
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[1].at("content").at(0).at("input"), json::object{});
  const auto& turn = msgs[2].at("content").as_array();
  ASSERT_EQ(turn.size(), 3u);
  EXPECT_EQ(turn[0].at("tool_use_id"), "t1");
  EXPECT_EQ(turn[1].at("tool_use_id"), "t2");
  EXPECT_EQ(turn[2].at("text"), "one moment");
}

// ---------------------------------------------------------------------------------------
// Anthropic answer → canonical events (PROTOCOLS.md §E, Anthropic → OpenAI/Gemini).
// Covers: usage with cache tokens (StreamWithThinkingToolsAndCacheUsage) and without
// (StreamUsageWithoutCacheTokens); several tool calls interleaved with text, dense tool
// indexes; a tool_use with empty partial_json → "{}"; ping dropped; an `error` event after
// the 200; every stop_reason, model_context_window_exceeded → length; a whole answer with
// content and stop_reason together. (`choices:null` and Gemini's STOP are other codecs'.)

TEST(AnthropicDecoderTest, StreamWithThinkingToolsAndCacheUsage) {
  auto ev = Decode({
      {"message_start", R"({"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":10,"cache_read_input_tokens":80,"cache_creation_input_tokens":20,"output_tokens":1}}})"},
      {"content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm."}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {"ping", R"({"type":"ping"})"},
      {"content_block_start", R"({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Let me check."}})"},
      {"content_block_start", R"({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_9","name":"f","input":{}}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":2})"},
      {"message_delta", R"({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}})"},
      {"message_stop", R"({"type":"message_stop"})"},
  });
  ASSERT_EQ(ev.size(), 8u);
  EXPECT_EQ(ev[0].start().response_id(), "msg_1");
  EXPECT_EQ(ev[0].start().input_usage().cache_read_tokens(), 80);
  EXPECT_EQ(ev[1].reasoning().text(), "Hmm.");
  EXPECT_EQ(ev[2].reasoning().signature(), "sig");
  EXPECT_EQ(ev[3].text().text(), "Let me check.");
  EXPECT_EQ(ev[4].tool_call_start().index(), 0);  // dense over tool blocks, not block index 2
  EXPECT_EQ(ev[4].tool_call_start().id(), "toolu_9");
  EXPECT_EQ(ev[5].tool_call_delta().arguments_fragment(), "{\"a\":1}");  // the empty piece is dropped
  EXPECT_EQ(ev[6].finish().reason(), llmpb::FINISH_REASON_TOOL_CALLS);
  const auto& u = ev[7].usage();  // canonical: input excludes the cache, as Anthropic's does
  EXPECT_EQ(u.input_tokens(), 10);
  EXPECT_EQ(u.cache_read_tokens(), 80);
  EXPECT_EQ(u.cache_write_tokens(), 20);
  EXPECT_EQ(u.output_tokens(), 42);
}

TEST(AnthropicDecoderTest, StreamUsageWithoutCacheTokens) {
  auto ev = Decode({
      {"message_start", R"({"type":"message_start","message":{"id":"msg_4","model":"claude-x","usage":{"input_tokens":25,"output_tokens":1}}})"},
      {"content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {"message_delta", R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}})"},
      {"message_stop", R"({"type":"message_stop"})"},
  });
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[2].finish().reason(), llmpb::FINISH_REASON_STOP);
  const auto& u = ev[3].usage();
  EXPECT_EQ(u.input_tokens(), 25);
  EXPECT_EQ(u.cache_read_tokens(), 0);
  EXPECT_EQ(u.cache_write_tokens(), 0);
  EXPECT_EQ(u.output_tokens(), 6);  // message_delta's cumulative count wins
}

TEST(AnthropicDecoderTest, SeveralToolCallsInterleavedWithText) {
  auto ev = Decode({
      {"message_start", R"({"type":"message_start","message":{"id":"msg_5","usage":{"input_tokens":3}}})"},
      {"content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"First"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {"content_block_start", R"({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_a","name":"f","input":{}}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"x\":"}})"},
      {"ping", R"({"type":"ping"})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"1}"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":1})"},
      {"content_block_start", R"({"type":"content_block_start","index":2,"content_block":{"type":"text","text":""}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"then"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":2})"},
      {"content_block_start", R"({"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_b","name":"g","input":{}}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"y\":2}"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":3})"},
      {"message_delta", R"({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":20}})"},
      {"message_stop", R"({"type":"message_stop"})"},
  });
  std::vector<std::string> seen;
  for (const auto& e : ev) {
    if (e.has_text()) seen.push_back("text:" + e.text().text());
    if (e.has_tool_call_start())
      seen.push_back(absl::StrCat("start:", e.tool_call_start().index(), ":", e.tool_call_start().id()));
    if (e.has_tool_call_delta())
      seen.push_back(absl::StrCat("args:", e.tool_call_delta().index(), ":", e.tool_call_delta().arguments_fragment()));
    if (e.has_finish()) seen.push_back(absl::StrCat("finish:", e.finish().reason()));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"text:First", "start:0:toolu_a", "args:0:{\"x\":", "args:0:1}",
                                            "text:then", "start:1:toolu_b", "args:1:{\"y\":2}",
                                            absl::StrCat("finish:", llmpb::FINISH_REASON_TOOL_CALLS)}));
  EXPECT_TRUE(ev.front().has_start());
  EXPECT_TRUE(ev.back().has_usage());
}

TEST(AnthropicDecoderTest, AToolUseWithEmptyPartialJsonHasAnEmptyObject) {
  auto ev = Decode({
      {"message_start", R"({"type":"message_start","message":{"id":"msg_6","usage":{"input_tokens":3}}})"},
      {"content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"now","input":{}}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
      // A start that already carries its input, and no fragments after it.
      {"content_block_start", R"({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_2","name":"f","input":{"a":1}}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":1})"},
      // A block whose content_block_stop never came: closed by message_delta.
      {"content_block_start", R"({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_3","name":"g","input":{}}})"},
      {"message_delta", R"({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":5}})"},
  });
  ASSERT_EQ(ev.size(), 9u);
  EXPECT_EQ(ev[1].tool_call_start().id(), "toolu_1");
  EXPECT_EQ(ev[2].tool_call_delta().index(), 0);
  EXPECT_EQ(ev[2].tool_call_delta().arguments_fragment(), "{}");
  EXPECT_EQ(ev[4].tool_call_delta().index(), 1);
  EXPECT_EQ(ev[4].tool_call_delta().arguments_fragment(), R"({"a":1})");
  EXPECT_EQ(ev[6].tool_call_delta().index(), 2);
  EXPECT_EQ(ev[6].tool_call_delta().arguments_fragment(), "{}");
  EXPECT_EQ(ev[7].finish().reason(), llmpb::FINISH_REASON_TOOL_CALLS);  // after every argument
  EXPECT_TRUE(ev[8].has_usage());
}

TEST(AnthropicDecoderTest, EveryStopReasonMaps) {
  using llmpb::FinishReason;
  const std::vector<std::pair<std::string, FinishReason>> table = {
      {"end_turn", llmpb::FINISH_REASON_STOP},
      {"stop_sequence", llmpb::FINISH_REASON_STOP},
      {"pause_turn", llmpb::FINISH_REASON_STOP},
      {"max_tokens", llmpb::FINISH_REASON_LENGTH},
      {"model_context_window_exceeded", llmpb::FINISH_REASON_LENGTH},
      {"tool_use", llmpb::FINISH_REASON_TOOL_CALLS},
      {"refusal", llmpb::FINISH_REASON_CONTENT_FILTER},
  };
  for (const auto& [stop_reason, want] : table) {
    EXPECT_EQ(FinishReasonFromAnthropic(stop_reason), want) << stop_reason;
    // The same through a stream's message_delta.
    auto ev = Decode({{"message_delta", absl::StrCat(R"({"type":"message_delta","delta":{"stop_reason":")",
                                                     stop_reason, R"(","stop_sequence":null},"usage":{"output_tokens":1}})")}});
    ASSERT_EQ(ev.size(), 3u) << stop_reason;
    EXPECT_EQ(ev[1].finish().reason(), want) << stop_reason;
  }
  auto seq = Decode({{"message_delta", R"({"type":"message_delta","delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},"usage":{"output_tokens":1}})"}});
  EXPECT_EQ(seq[1].finish().stop_sequence(), "END");
}

TEST(AnthropicDecoderTest, ErrorEventAfterTheStartIsAnInStreamError) {
  auto ev = Decode({
      {"message_start", R"({"type":"message_start","message":{"id":"msg_2","usage":{"input_tokens":5}}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}})"},
      {"error", R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})"},
  });
  ASSERT_GE(ev.size(), 3u);
  EXPECT_TRUE(ev[2].has_error());
  EXPECT_EQ(ev[2].error().http_status(), 503);
  EXPECT_TRUE(ev[2].error().retryable());
  EXPECT_EQ(ev[2].error().message(), "Overloaded");
}

TEST(AnthropicDecoderTest, SyncResponseKeepsBlocksInOrderAndMapsStopReason) {
  AnthropicDecoder d(3);
  std::vector<ChatEvent> ev;
  ASSERT_TRUE(d.FeedResponse(R"({"id":"msg_3","type":"message","role":"assistant","model":"claude-x",
      "content":[{"type":"text","text":"A"},{"type":"tool_use","id":"t1","name":"f","input":{"x":[1,2]}},
                 {"type":"tool_use","id":"t2","name":"g","input":{}}],
      "stop_reason":"max_tokens","stop_sequence":null,
      "usage":{"input_tokens":3,"output_tokens":9,"cache_creation":{"ephemeral_1h_input_tokens":4},"cache_creation_input_tokens":6}})", ev).ok());
  d.Finish(ev);
  ASSERT_EQ(ev.size(), 8u);
  EXPECT_EQ(ev[1].text().text(), "A");
  EXPECT_EQ(ev[2].tool_call_start().name(), "f");
  EXPECT_EQ(ev[3].tool_call_delta().arguments_fragment(), R"({"x":[1,2]})");
  EXPECT_EQ(ev[4].tool_call_start().index(), 1);
  EXPECT_EQ(ev[5].tool_call_delta().arguments_fragment(), "{}");
  EXPECT_EQ(ev[6].finish().reason(), llmpb::FINISH_REASON_LENGTH);
  EXPECT_EQ(ev[7].usage().cache_write_tokens(), 6);
  EXPECT_EQ(ev[7].usage().cache_write_1h_tokens(), 4);
  EXPECT_FALSE(d.usage_estimated());
}

TEST(AnthropicDecoderTest, NoUsageIsEstimatedFromWhatArrived) {
  AnthropicDecoder d(11);
  std::vector<ChatEvent> ev;
  ASSERT_TRUE(d.FeedEvent("content_block_delta",
                          R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"abcdefgh"}})", ev).ok());
  d.Finish(ev);
  EXPECT_TRUE(d.usage_estimated());
  EXPECT_EQ(ev.back().usage().input_tokens(), 11);
  EXPECT_EQ(ev.back().usage().output_tokens(), 2);
  EXPECT_FALSE(d.FeedEvent("content_block_delta", "{not json", ev).ok());
}

TEST(AnthropicDecoderTest, AStreamCutBeforeMessageDeltaCountsTheOutputThatArrived) {
  AnthropicDecoder d(11);
  std::vector<ChatEvent> ev;
  ASSERT_TRUE(d.FeedEvent("message_start",
                          R"({"type":"message_start","message":{"id":"msg_5","usage":{"input_tokens":25,"output_tokens":1}}})", ev).ok());
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(d.FeedEvent("content_block_delta",
                            R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"abcdefgh"}})", ev).ok());
  d.Finish(ev);  // the stream ended (an error, a dropped connection) without message_delta
  EXPECT_TRUE(d.usage_estimated());
  EXPECT_EQ(ev.back().usage().input_tokens(), 25);   // message_start's, as reported
  EXPECT_EQ(ev.back().usage().output_tokens(), 20);  // 80 characters arrived, not the placeholder 1
}

TEST(AnthropicCodecTest, CallCarriesVersionKeyAndBetas) {
  ProviderConfig p;
  p.kind = "anthropic";
  p.base_url = "https://api.anthropic.example";
  p.api_key = "sk-ant-x";
  llmpb::ChatRequest r;
  r.add_betas("prompt-caching-2024-07-31");
  r.add_betas("output-128k-2025-02-19");
  CallTarget target{&p, "claude-x", true, 1024};
  UpstreamCall call = AnthropicCodec().BuildCall(r, target);
  EXPECT_EQ(call.url, "https://api.anthropic.example/v1/messages");
  auto has = [&](const std::string& h) {
    return std::find(call.headers.begin(), call.headers.end(), h) != call.headers.end();
  };
  EXPECT_TRUE(has("x-api-key: sk-ant-x"));
  EXPECT_TRUE(has("anthropic-version: 2023-06-01"));
  EXPECT_TRUE(has("anthropic-beta: prompt-caching-2024-07-31,output-128k-2025-02-19"));
  EXPECT_EQ(AnthropicCodec().ErrorMessage(R"({"type":"error","error":{"type":"invalid_request_error","message":"bad"}})"), "bad");
  EXPECT_EQ(CodecForKind("anthropic"), &AnthropicCodec());
}

}  // namespace
}  // namespace nexusflow::connector

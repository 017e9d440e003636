#include "anthropic.h"

#include <cstdio>

#include <algorithm>
#include <charconv>
#include <optional>

#include <boost/json.hpp>

namespace nexusflow::mock {
namespace {

namespace json = boost::json;

constexpr std::int64_t kMinThinkingBudget = 1024;
constexpr int kMaxCacheBreakpoints = 4;

RequestError Invalid(std::string message) { return RequestError{400, std::move(message), {}, {}}; }

// Shortest form of a number, as Python prints it in Anthropic's messages ("1", "0.5").
std::string Number(double value) {
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return ec == std::errc() ? std::string(buffer, end) : std::string();
}

// What one request asks for, before the answer is planned.
struct ParsedMessages {
  Prompt prompt;
  GenerationRequest generation;
  bool stream = false;
  bool automatic_cache = false;  // top-level cache_control
  int breakpoints = 0;           // cache_control blocks, tools included
  bool one_hour = false;         // ttl of the last cache_control seen
};

class MessagesParser {
 public:
  MessagesParser(const json::object& request, std::string model)
      : request_(request), builder_(std::move(model)) {}

  std::optional<RequestError> Parse(bool count_only, ParsedMessages& out) {
    if (auto error = ParseTools()) return error;
    if (auto error = ParseSystem()) return error;
    if (auto error = ParseMessages()) return error;
    if (auto error = CacheControl(request_, "cache_control", out.automatic_cache, /*count=*/false)) {
      return error;
    }
    if (breakpoints_ > kMaxCacheBreakpoints) {
      return Invalid("A maximum of " + std::to_string(kMaxCacheBreakpoints) +
                     " blocks with cache_control may be provided. Found " +
                     std::to_string(breakpoints_) + ".");
    }
    out.breakpoints = breakpoints_;
    out.one_hour = one_hour_;
    if (auto error = ParseSampling()) return error;
    if (auto error = ParseGeneration(count_only, out)) return error;
    out.prompt = std::move(builder_).Finish();
    return std::nullopt;
  }

 private:
  // A `cache_control` on `block` (null or absent: none). Sets `marked`.
  std::optional<RequestError> CacheControl(const json::object& block, const std::string& where,
                                           bool& marked, bool count = true) {
    const json::value* cache = block.if_contains("cache_control");
    marked = false;
    if (cache == nullptr || cache->is_null()) return std::nullopt;
    const json::object* c = cache->if_object();
    if (c == nullptr || StringOr(c->if_contains("type")) != "ephemeral") {
      return Invalid(where + ".type: Input should be 'ephemeral'");
    }
    const json::value* ttl = c->if_contains("ttl");
    if (ttl != nullptr && !ttl->is_null() && StringOr(ttl) != "5m" && StringOr(ttl) != "1h") {
      return Invalid(where + ".ttl: Input should be '5m' or '1h'");
    }
    one_hour_ = StringOr(ttl) == "1h";
    marked = true;
    if (count) ++breakpoints_;
    return std::nullopt;
  }

  std::optional<RequestError> ParseTools() {
    const json::value* tools = request_.if_contains("tools");
    if (tools == nullptr || tools->is_null()) return std::nullopt;
    if (!tools->is_array()) return Invalid("tools: Input should be a valid list");
    std::size_t i = 0;
    for (const json::value& t : tools->get_array()) {
      const std::string where = "tools." + std::to_string(i++);
      const json::object* tool = t.if_object();
      if (tool == nullptr) return Invalid(where + ": Input should be a valid dictionary");
      const std::string_view type = StringOr(tool->if_contains("type"), "custom");
      if (type == "custom") {
        const json::value* name = tool->if_contains("name");
        if (name == nullptr || !name->is_string() || name->get_string().empty()) {
          return Invalid(where + ".custom.name: Field required");
        }
        const json::value* schema = tool->if_contains("input_schema");
        if (schema == nullptr || !schema->is_object()) {
          return Invalid(where + ".custom.input_schema: Field required");
        }
        const json::value* schema_type = schema->get_object().if_contains("type");
        if (schema_type != nullptr && StringOr(schema_type) != "object") {
          return Invalid(where + ".custom.input_schema.type: Input should be 'object'");
        }
        custom_tools_.push_back(tool);
      }
      bool marked = false;
      // Tools come first in Anthropic's cache order; the mock counts no tokens for them.
      if (auto error = CacheControl(*tool, where + ".cache_control", marked)) return error;
    }
    return std::nullopt;
  }

  std::optional<RequestError> ParseSystem() {
    const json::value* system = request_.if_contains("system");
    if (system == nullptr || system->is_null()) return std::nullopt;
    if (system->is_string()) {
      builder_.Begin("system");
      builder_.AddText(system->get_string());
      builder_.End();
      return std::nullopt;
    }
    if (!system->is_array()) return Invalid("system: Input should be a valid string");
    builder_.Begin("system");
    std::size_t i = 0;
    for (const json::value& b : system->get_array()) {
      const std::string where = "system." + std::to_string(i++);
      const json::object* block = b.if_object();
      if (block == nullptr || StringOr(block->if_contains("type")) != "text") {
        return Invalid(where + ".type: Input should be 'text'");
      }
      const json::value* text = block->if_contains("text");
      if (text == nullptr || !text->is_string()) return Invalid(where + ".text: Field required");
      builder_.AddText(text->get_string());
      bool marked = false;
      if (auto error = CacheControl(*block, where + ".cache_control", marked)) return error;
      if (marked) builder_.MarkBreakpoint();
    }
    builder_.End();
    return std::nullopt;
  }

  static std::string ImageUrl(const json::object& block) {
    const json::value* source = block.if_contains("source");
    const json::object* s = source ? source->if_object() : nullptr;
    if (s == nullptr) return {};
    const std::string_view type = StringOr(s->if_contains("type"));
    if (type == "base64") {
      return "data:" + std::string(StringOr(s->if_contains("media_type"))) + ";base64," +
             std::string(StringOr(s->if_contains("data")));
    }
    if (type == "url") return std::string(StringOr(s->if_contains("url")));
    if (type == "file") return "file:" + std::string(StringOr(s->if_contains("file_id")));
    return {};
  }

  // A tool_result block → one tool message (text of its content; images counted).
  std::optional<RequestError> AddToolResult(const json::object& block, const std::string& where) {
    if (!block.if_contains("tool_use_id") || !block.at("tool_use_id").is_string()) {
      return Invalid(where + ".tool_use_id: Field required");
    }
    std::string text;
    std::vector<std::string> images;
    if (const json::value* content = block.if_contains("content"); content && !content->is_null()) {
      if (content->is_string()) {
        text = content->get_string();
      } else if (content->is_array()) {
        for (const json::value& part : content->get_array()) {
          const json::object* p = part.if_object();
          if (p == nullptr) continue;
          const std::string_view type = StringOr(p->if_contains("type"));
          if (type == "text") text += StringOr(p->if_contains("text"));
          if (type == "image") images.push_back(ImageUrl(*p));
        }
      } else {
        return Invalid(where + ".content: Input should be a valid string");
      }
    }
    builder_.Begin("tool");
    builder_.AddText(CanonicalToolResult(text));
    for (const std::string& url : images) builder_.AddImage(url);
    builder_.End();
    bool marked = false;
    if (auto error = CacheControl(block, where + ".cache_control", marked)) return error;
    if (marked) builder_.MarkBreakpoint();
    return std::nullopt;
  }

  std::optional<RequestError> AddBlock(const json::object& block, std::string_view type,
                                       const std::string& where) {
    if (type == "text") {
      const json::value* text = block.if_contains("text");
      if (text == nullptr || !text->is_string()) return Invalid(where + ".text: Field required");
      builder_.AddText(text->get_string());
    } else if (type == "image") {
      const std::string url = ImageUrl(block);
      if (url.empty()) return Invalid(where + ".source: Field required");
      builder_.AddImage(url);
    } else if (type == "tool_use") {
      const json::value* name = block.if_contains("name");
      const json::value* id = block.if_contains("id");
      if (name == nullptr || !name->is_string()) return Invalid(where + ".name: Field required");
      if (id == nullptr || !id->is_string()) return Invalid(where + ".id: Field required");
      static const json::value kEmpty = json::object();
      const json::value* input = block.if_contains("input");
      builder_.AddToolCall(name->get_string(), input ? *input : kEmpty);
    }
    // thinking / redacted_thinking are not part of the prompt (OpenAI has no place for them),
    // nor are documents, search results and server-tool blocks.
    bool marked = false;
    if (auto error = CacheControl(block, where + ".cache_control", marked)) return error;
    if (marked) builder_.MarkBreakpoint();
    return std::nullopt;
  }

  std::optional<RequestError> ParseMessages() {
    const json::value* messages = request_.if_contains("messages");
    if (messages == nullptr || messages->is_null()) return Invalid("messages: Field required");
    if (!messages->is_array()) return Invalid("messages: Input should be a valid list");
    if (messages->get_array().empty()) return Invalid("messages: at least one message is required");
    std::size_t i = 0;
    for (const json::value& m : messages->get_array()) {
      const std::string where = "messages." + std::to_string(i++);
      const json::object* message = m.if_object();
      if (message == nullptr) return Invalid(where + ": Input should be a valid dictionary");
      const std::string_view role = StringOr(message->if_contains("role"));
      if (role != "user" && role != "assistant") {
        return Invalid(where + ".role: Input should be 'user' or 'assistant'");
      }
      const json::value* content = message->if_contains("content");
      if (content == nullptr || content->is_null()) return Invalid(where + ".content: Field required");
      if (content->is_string()) {
        builder_.Begin(role);
        builder_.AddText(content->get_string());
        builder_.End();
        continue;
      }
      if (!content->is_array()) return Invalid(where + ".content: Input should be a valid list");
      // Block types are checked first; tool results then become tool messages ahead of the
      // rest of the turn, as a translation to OpenAI places them.
      bool other_blocks = content->get_array().empty();
      std::size_t j = 0;
      for (const json::value& b : content->get_array()) {
        const std::string block_where = where + ".content." + std::to_string(j++);
        const json::object* block = b.if_object();
        if (block == nullptr) return Invalid(block_where + ": Input should be a valid dictionary");
        const json::value* type = block->if_contains("type");
        if (type == nullptr || !type->is_string()) return Invalid(block_where + ".type: Field required");
        if (type->get_string() == "tool_result") {
          if (role != "user") {
            return Invalid(block_where + ": tool_result blocks are only allowed in user messages");
          }
          if (auto error = AddToolResult(*block, block_where)) return error;
        } else {
          other_blocks = true;
        }
      }
      if (!other_blocks) continue;
      builder_.Begin(role);
      j = 0;
      for (const json::value& b : content->get_array()) {
        const std::string block_where = where + ".content." + std::to_string(j++);
        const json::object& block = b.get_object();
        const std::string_view type = block.at("type").get_string();
        if (type == "tool_result") continue;
        if (type == "tool_use" && role != "assistant") {
          return Invalid(block_where + ": tool_use blocks are only allowed in assistant messages");
        }
        if (auto error = AddBlock(block, type, block_where)) return error;
      }
      builder_.End();
    }
    return std::nullopt;
  }

  std::optional<RequestError> Range(std::string_view key, double low, double high) {
    const json::value* v = request_.if_contains(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (!v->is_number()) return Invalid(std::string(key) + ": Input should be a valid number");
    const double d = v->to_number<double>();
    if (d < low) {
      return Invalid(std::string(key) + ": Input should be greater than or equal to " + Number(low));
    }
    if (d > high) {
      return Invalid(std::string(key) + ": Input should be less than or equal to " + Number(high));
    }
    return std::nullopt;
  }

  std::optional<RequestError> ParseSampling() {
    if (auto error = Range("temperature", 0, 1)) return error;
    if (auto error = Range("top_p", 0, 1)) return error;
    if (const json::value* top_k = request_.if_contains("top_k"); top_k && !top_k->is_null()) {
      std::optional<std::int64_t> k = AsInteger(*top_k);
      if (!k || *k < 0) return Invalid("top_k: Input should be a valid integer >= 0");
    }
    if (const json::value* metadata = request_.if_contains("metadata");
        metadata && !metadata->is_null() && !metadata->is_object()) {
      return Invalid("metadata: Input should be a valid dictionary");
    }
    return std::nullopt;
  }

  std::optional<RequestError> ParseGeneration(bool count_only, ParsedMessages& out) {
    GenerationRequest& generation = out.generation;
    if (!count_only) {
      const json::value* max_tokens = request_.if_contains("max_tokens");
      if (max_tokens == nullptr || max_tokens->is_null()) return Invalid("max_tokens: Field required");
      std::optional<std::int64_t> n = AsInteger(*max_tokens);
      if (!n) return Invalid("max_tokens: Input should be a valid integer");
      if (*n < 1) return Invalid("max_tokens: Input should be greater than or equal to 1");
      generation.max_tokens = n;

      if (const json::value* stream = request_.if_contains("stream"); stream && !stream->is_null()) {
        if (!stream->is_bool()) return Invalid("stream: Input should be a valid boolean");
        out.stream = stream->get_bool();
      }
      if (const json::value* stops = request_.if_contains("stop_sequences"); stops && !stops->is_null()) {
        if (!stops->is_array()) return Invalid("stop_sequences: Input should be a valid list");
        for (const json::value& s : stops->get_array()) {
          if (!s.is_string()) return Invalid("stop_sequences: Input should be a valid string");
          generation.stop_sequences.emplace_back(s.get_string());
        }
      }
    }

    if (const json::value* thinking = request_.if_contains("thinking"); thinking && !thinking->is_null()) {
      const json::object* t = thinking->if_object();
      const std::string_view type = t ? StringOr(t->if_contains("type")) : std::string_view();
      if (type == "enabled") {
        const json::value* budget = t->if_contains("budget_tokens");
        std::optional<std::int64_t> b = budget ? AsInteger(*budget) : std::nullopt;
        if (!b) return Invalid("thinking.enabled.budget_tokens: Field required");
        if (*b < kMinThinkingBudget) {
          return Invalid("thinking.enabled.budget_tokens: Input should be greater than or equal to " +
                         std::to_string(kMinThinkingBudget));
        }
        if (generation.max_tokens && *generation.max_tokens <= *b) {
          return Invalid("`max_tokens` must be greater than `thinking.budget_tokens`. Please "
                         "consult our documentation at https://docs.claude.com/en/docs/"
                         "build-with-claude/extended-thinking#max-tokens-and-context-window-size");
        }
        generation.thinking = true;
        generation.thinking_budget = *b;
      } else if (type == "adaptive") {
        generation.thinking = true;
      } else if (type != "disabled" && type != "between_tools") {
        return Invalid("thinking: Input tag '" + std::string(type) +
                       "' found using 'type' does not match any of the expected tags: "
                       "'enabled', 'disabled', 'adaptive'");
      }
    }
    return ParseToolChoice(generation);
  }

  std::optional<RequestError> ParseToolChoice(GenerationRequest& generation) {
    const json::value* choice = request_.if_contains("tool_choice");
    if (choice == nullptr || choice->is_null()) return std::nullopt;
    const json::object* c = choice->if_object();
    if (c == nullptr) return Invalid("tool_choice: Input should be a valid dictionary");
    const std::string_view type = StringOr(c->if_contains("type"));
    if (type == "auto" || type == "none") return std::nullopt;
    if (type != "any" && type != "tool") {
      return Invalid("tool_choice: Input tag '" + std::string(type) +
                     "' found using 'type' does not match any of the expected tags: 'auto', "
                     "'any', 'tool', 'none'");
    }
    if (custom_tools_.empty()) {
      return Invalid("tool_choice: tool_choice.type '" + std::string(type) +
                     "' may only be specified while providing tools");
    }
    if (generation.thinking) {
      return Invalid("Thinking may not be enabled when tool_choice forces tool use.");
    }
    const json::object* tool = custom_tools_.front();
    if (type == "tool") {
      const json::value* name = c->if_contains("name");
      if (name == nullptr || !name->is_string()) return Invalid("tool_choice.tool.name: Field required");
      tool = nullptr;
      for (const json::object* t : custom_tools_) {
        if (StringOr(t->if_contains("name")) == name->get_string()) tool = t;
      }
      if (tool == nullptr) {
        return Invalid("tool_choice.name: Tool '" + std::string(name->get_string()) +
                       "' not found in the provided tools");
      }
    }
    generation.forced_tool =
        BuildToolCall(StringOr(tool->if_contains("name")), tool->if_contains("input_schema"));
    return std::nullopt;
  }

  const json::object& request_;
  PromptBuilder builder_;
  std::vector<const json::object*> custom_tools_;
  int breakpoints_ = 0;
  bool one_hour_ = false;
};

std::variant<ParsedMessages, RequestError> Parse(std::string_view body, bool count_only) {
  boost::system::error_code ec;
  json::parse_options options;
  options.max_depth = 128;
  json::value root = json::parse(body, ec, {}, options);
  if (ec || !root.is_object()) {
    return Invalid("There was an issue with your request body: it is not a JSON object.");
  }
  const json::object& request = root.get_object();
  const json::value* model = request.if_contains("model");
  if (model == nullptr || model->is_null()) return Invalid("model: Field required");
  if (!model->is_string() || model->get_string().empty()) {
    return Invalid("model: Input should be a valid string");
  }
  ParsedMessages parsed;
  MessagesParser parser(request, std::string(model->get_string()));
  if (auto error = parser.Parse(count_only, parsed)) return *std::move(error);
  return parsed;
}

std::string_view StopReason(Finish finish) {
  switch (finish) {
    case Finish::kLength: return "max_tokens";
    case Finish::kStopSequence: return "stop_sequence";
    case Finish::kToolCall: return "tool_use";
    case Finish::kStop: break;
  }
  return "end_turn";
}

std::int64_t UncachedInput(const Usage& usage) {
  return std::max<std::int64_t>(0, usage.prompt_tokens - usage.cache.read - usage.cache.write);
}

json::object UsageJson(const Reply& reply, std::int64_t output_tokens) {
  const Usage& usage = reply.usage;
  return json::object{
      {"input_tokens", UncachedInput(usage)},
      {"cache_creation_input_tokens", usage.cache.write},
      {"cache_read_input_tokens", usage.cache.read},
      {"cache_creation", json::object{
                             {"ephemeral_5m_input_tokens", reply.cache_one_hour ? 0 : usage.cache.write},
                             {"ephemeral_1h_input_tokens", reply.cache_one_hour ? usage.cache.write : 0},
                         }},
      {"output_tokens", output_tokens},
      {"service_tier", "standard"},
  };
}

json::value StopSequence(const Reply& reply) {
  if (reply.finish != Finish::kStopSequence) return nullptr;
  return json::value(reply.stop_sequence);
}

json::value ToolInput(const Reply& reply) {
  boost::system::error_code ec;
  json::value input = json::parse(reply.tool_call->arguments, ec);
  return ec ? json::value(json::object()) : input;
}

std::string Event(std::string_view name, const json::object& data) {
  std::string out = "event: ";
  out += name;
  out += "\ndata: ";
  out += json::serialize(data);
  out += "\n\n";
  return out;
}

}  // namespace

std::string AnthropicErrorBody(const RequestError& error, std::string_view request_id) {
  json::object body{
      {"type", "error"},
      {"error", json::object{{"type", ErrorKindsFor(error.status).anthropic_type},
                             {"message", error.message}}},
  };
  if (!request_id.empty()) body["request_id"] = request_id;
  return json::serialize(body);
}

std::string MessageStreamErrorFrame(const RequestError& error) {
  return Event("error", json::object{
                            {"type", "error"},
                            {"error", json::object{{"type", ErrorKindsFor(error.status).anthropic_type},
                                                   {"message", error.message}}},
                        });
}

std::variant<Reply, RequestError> PlanMessagesReply(std::string_view body, int reply_words) {
  std::variant<ParsedMessages, RequestError> parsed = Parse(body, /*count_only=*/false);
  if (RequestError* error = std::get_if<RequestError>(&parsed)) return *std::move(error);
  const ParsedMessages& request = std::get<ParsedMessages>(parsed);

  Reply reply = PlanReply(request.prompt, request.generation, reply_words);
  reply.stream = request.stream;
  reply.cache_one_hour = request.one_hour;
  if (request.automatic_cache) {
    reply.cache = AutomaticCachePlan(request.prompt);
    CachePlan explicit_marks = BreakpointCachePlan(request.prompt);
    for (const CacheProbe& probe : explicit_marks.writes) {
      reply.cache.writes.push_back(probe);
      reply.cache.lookups.push_back(probe);
    }
  } else if (request.breakpoints > 0) {
    reply.cache = BreakpointCachePlan(request.prompt);
  }
  return reply;
}

std::variant<std::int64_t, RequestError> CountMessageTokens(std::string_view body) {
  std::variant<ParsedMessages, RequestError> parsed = Parse(body, /*count_only=*/true);
  if (RequestError* error = std::get_if<RequestError>(&parsed)) return *std::move(error);
  return std::get<ParsedMessages>(parsed).prompt.tokens;
}

std::string MessageTokenCountBody(std::int64_t input_tokens) {
  return json::serialize(json::object{{"input_tokens", input_tokens}});
}

MessageIds NewMessageIds() {
  return MessageIds{"msg_" + RandomHex(24), "toolu_" + RandomHex(24)};
}

MessageIds MessageIdsFor(const Reply& reply) {
  // FNV-1a over what the answer says: the same request gets the same ids, so a relayed
  // answer can be compared byte for byte with one asked of the mock directly.
  auto fnv = [](std::string_view text, std::uint64_t h) {
    for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
    return h;
  };
  std::uint64_t h = fnv(reply.model, 14695981039346656037ull);
  h = fnv(reply.Text(), h);
  h = fnv(reply.ThinkingText(), h);
  if (reply.tool_call) h = fnv(reply.tool_call->name, h);
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(h),
                static_cast<unsigned long long>(fnv("toolu", h)));
  return MessageIds{"msg_" + std::string(hex, 24), "toolu_" + std::string(hex + 8, 24)};
}

std::string MessageBody(const Reply& reply, const MessageIds& ids) {
  json::array content;
  if (!reply.thinking_pieces.empty()) {
    content.push_back(json::object{{"type", "thinking"},
                                   {"thinking", reply.ThinkingText()},
                                   {"signature", reply.thinking_signature}});
  }
  if (reply.tool_call) {
    content.push_back(json::object{{"type", "tool_use"},
                                   {"id", ids.tool_use_id},
                                   {"name", reply.tool_call->name},
                                   {"input", ToolInput(reply)}});
  } else {
    content.push_back(json::object{{"type", "text"}, {"text", reply.Text()}});
  }
  json::object body{
      {"id", ids.message_id},
      {"type", "message"},
      {"role", "assistant"},
      {"model", reply.model},
      {"content", std::move(content)},
      {"stop_reason", StopReason(reply.finish)},
      {"stop_sequence", StopSequence(reply)},
      {"usage", UsageJson(reply, reply.usage.thinking_tokens + reply.usage.output_tokens)},
  };
  return json::serialize(body);
}

std::vector<SseFrame> MessageStreamFrames(const Reply& reply, const MessageIds& ids) {
  std::vector<SseFrame> frames;
  frames.push_back({FrameKind::kFirst,
                    Event("message_start",
                          json::object{{"type", "message_start"},
                                       {"message", json::object{
                                                       {"id", ids.message_id},
                                                       {"type", "message"},
                                                       {"role", "assistant"},
                                                       {"model", reply.model},
                                                       {"content", json::array()},
                                                       {"stop_reason", nullptr},
                                                       {"stop_sequence", nullptr},
                                                       {"usage", UsageJson(reply, 1)},
                                                   }}})});
  int index = 0;
  auto block_start = [&](json::object block) {
    frames.push_back({FrameKind::kStructure,
                      Event("content_block_start", json::object{{"type", "content_block_start"},
                                                                {"index", index},
                                                                {"content_block", std::move(block)}})});
    if (index == 0) frames.push_back({FrameKind::kStructure, Event("ping", json::object{{"type", "ping"}})});
  };
  auto delta = [&](FrameKind kind, json::object d) {
    frames.push_back({kind, Event("content_block_delta", json::object{{"type", "content_block_delta"},
                                                                      {"index", index},
                                                                      {"delta", std::move(d)}})});
  };
  auto block_stop = [&] {
    frames.push_back({FrameKind::kStructure,
                      Event("content_block_stop",
                            json::object{{"type", "content_block_stop"}, {"index", index}})});
    ++index;
  };

  if (!reply.thinking_pieces.empty()) {
    block_start(json::object{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}});
    for (const std::string& piece : reply.thinking_pieces) {
      delta(FrameKind::kContent, json::object{{"type", "thinking_delta"}, {"thinking", piece}});
    }
    delta(FrameKind::kStructure,
          json::object{{"type", "signature_delta"}, {"signature", reply.thinking_signature}});
    block_stop();
  }
  if (reply.tool_call) {
    block_start(json::object{{"type", "tool_use"},
                             {"id", ids.tool_use_id},
                             {"name", reply.tool_call->name},
                             {"input", json::object()}});
    for (const std::string& piece : reply.tool_call->argument_pieces) {
      delta(FrameKind::kContent, json::object{{"type", "input_json_delta"}, {"partial_json", piece}});
    }
  } else {
    block_start(json::object{{"type", "text"}, {"text", ""}});
    for (const std::string& piece : reply.content_pieces) {
      delta(FrameKind::kContent, json::object{{"type", "text_delta"}, {"text", piece}});
    }
  }
  block_stop();

  const Usage& usage = reply.usage;
  frames.push_back({FrameKind::kFinish,
                    Event("message_delta",
                          json::object{
                              {"type", "message_delta"},
                              {"delta", json::object{{"stop_reason", StopReason(reply.finish)},
                                                     {"stop_sequence", StopSequence(reply)}}},
                              {"usage", json::object{
                                            {"input_tokens", UncachedInput(usage)},
                                            {"cache_creation_input_tokens", usage.cache.write},
                                            {"cache_read_input_tokens", usage.cache.read},
                                            {"output_tokens", usage.thinking_tokens + usage.output_tokens},
                                        }},
                          })});
  frames.push_back({FrameKind::kDone, Event("message_stop", json::object{{"type", "message_stop"}})});
  return frames;
}

}  // namespace nexusflow::mock

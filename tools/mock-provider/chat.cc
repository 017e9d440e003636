#include "chat.h"

#include <algorithm>
#include <iterator>

#include <boost/json.hpp>

namespace nexusflow::mock {
namespace {

namespace json = boost::json;

RequestError InvalidRequest(std::string message, std::string param, std::string code = {}) {
  return RequestError{400, std::move(message), std::move(param), std::move(code)};
}

// Adds one message's content (a string, or text / image_url parts) to the prompt; a part
// carrying DashScope's `cache_control` is a cache breakpoint.
void AddContent(PromptBuilder& prompt, const json::value* content, bool& has_breakpoint) {
  if (content == nullptr) return;
  if (content->is_string()) {
    prompt.AddText(content->get_string());
    return;
  }
  if (!content->is_array()) return;
  for (const json::value& part : content->get_array()) {
    const json::object* p = part.if_object();
    if (p == nullptr) continue;
    if (StringOr(p->if_contains("type")) == "image_url") {
      std::string_view url;
      if (const json::value* image = p->if_contains("image_url"); image && image->is_object()) {
        url = StringOr(image->get_object().if_contains("url"));
      }
      prompt.AddImage(url);
    } else {
      prompt.AddText(StringOr(p->if_contains("text")));
    }
    if (const json::value* cache = p->if_contains("cache_control"); cache && cache->is_object()) {
      prompt.MarkBreakpoint();
      has_breakpoint = true;
    }
  }
}

// The text of a tool message: string content or its text parts.
std::string ToolMessageText(const json::value* content, bool& has_breakpoint) {
  std::string text;
  if (content == nullptr) return text;
  if (content->is_string()) return std::string(content->get_string());
  if (!content->is_array()) return text;
  for (const json::value& part : content->get_array()) {
    const json::object* p = part.if_object();
    if (p == nullptr) continue;
    text += StringOr(p->if_contains("text"));
    if (const json::value* cache = p->if_contains("cache_control"); cache && cache->is_object()) {
      has_breakpoint = true;
    }
  }
  return text;
}

void AddMessage(PromptBuilder& prompt, std::string_view role, const json::object& message,
                bool& has_breakpoint) {
  if (role == "tool" || role == "function") {
    bool breakpoint = false;
    prompt.AddToolResult(ToolMessageText(message.if_contains("content"), breakpoint));
    if (breakpoint) prompt.MarkBreakpoint();
    has_breakpoint = has_breakpoint || breakpoint;
    return;
  }
  prompt.Begin(role == "developer" ? "system" : role);
  AddContent(prompt, message.if_contains("content"), has_breakpoint);
  if (const json::value* calls = message.if_contains("tool_calls"); calls && calls->is_array()) {
    for (const json::value& call : calls->get_array()) {
      const json::object* c = call.if_object();
      if (c == nullptr) continue;
      if (const json::value* fn = c->if_contains("function"); fn && fn->is_object()) {
        prompt.AddToolCall(StringOr(fn->get_object().if_contains("name")),
                           StringOr(fn->get_object().if_contains("arguments")));
      }
    }
  }
  prompt.End();
}

// The tool the request forces, or nullptr when the model may answer with text.
// Sets `error` when tools/tool_choice are malformed the way OpenAI rejects.
const json::object* ForcedTool(const json::object& request, std::optional<RequestError>& error) {
  const json::value* tools = request.if_contains("tools");
  const json::value* choice = request.if_contains("tool_choice");
  if (tools && !tools->is_null() && !tools->is_array()) {
    error = InvalidRequest("Invalid type for 'tools': expected an array, but got " +
                               std::string(JsonKind(*tools)) + " instead.",
                           "tools", "invalid_type");
    return nullptr;
  }
  const json::array* tool_list = tools ? tools->if_array() : nullptr;
  const bool has_tools = tool_list && !tool_list->empty();
  if (choice == nullptr || choice->is_null()) return nullptr;
  if (!has_tools) {
    error = InvalidRequest(
        "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
        "tool_choice");
    return nullptr;
  }
  auto function_of = [](const json::value& tool) -> const json::object* {
    const json::object* t = tool.if_object();
    if (t == nullptr) return nullptr;
    const json::value* fn = t->if_contains("function");
    return fn ? fn->if_object() : nullptr;
  };

  std::string_view wanted;
  if (choice->is_string()) {
    std::string_view mode = choice->get_string();
    if (mode == "auto" || mode == "none") return nullptr;
    if (mode != "required") {
      error = InvalidRequest("Invalid value: '" + std::string(mode) +
                                 "'. Supported values are: 'none', 'auto', and 'required'.",
                             "tool_choice", "invalid_value");
      return nullptr;
    }
    for (const json::value& tool : *tool_list) {
      if (const json::object* fn = function_of(tool)) return fn;
    }
    error = InvalidRequest("Invalid value for 'tool_choice': no function tool to call.", "tool_choice");
    return nullptr;
  }
  if (const json::object* c = choice->if_object()) {
    if (StringOr(c->if_contains("type")) != "function") return nullptr;
    const json::value* fn = c->if_contains("function");
    wanted = fn && fn->is_object() ? StringOr(fn->get_object().if_contains("name")) : std::string_view();
    for (const json::value& tool : *tool_list) {
      const json::object* f = function_of(tool);
      if (f && StringOr(f->if_contains("name")) == wanted) return f;
    }
    error = InvalidRequest("Invalid value for 'tool_choice': function '" + std::string(wanted) +
                               "' not found in 'tools'.",
                           "tool_choice");
    return nullptr;
  }
  error = InvalidRequest("Invalid type for 'tool_choice': expected a string or an object, but got " +
                             std::string(JsonKind(*choice)) + " instead.",
                         "tool_choice", "invalid_type");
  return nullptr;
}

std::string_view FinishReason(Finish finish) {
  switch (finish) {
    case Finish::kLength: return "length";
    case Finish::kToolCall: return "tool_calls";
    case Finish::kStop:
    case Finish::kStopSequence: break;
  }
  return "stop";
}

json::object UsageJson(const Reply& reply) {
  const Usage& usage = reply.usage;
  const std::int64_t completion = usage.thinking_tokens + usage.output_tokens;
  json::object prompt_details{{"cached_tokens", usage.cache.read}, {"audio_tokens", 0}};
  if (reply.cache.requested) {
    // DashScope's explicit-cache fields; harmless to OpenAI clients.
    prompt_details["cache_creation_input_tokens"] = usage.cache.write;
    prompt_details["cache_creation"] = json::object{{"ephemeral_5m_input_tokens", usage.cache.write}};
    prompt_details["cache_type"] = "ephemeral";
  }
  return json::object{
      {"prompt_tokens", usage.prompt_tokens},
      {"completion_tokens", completion},
      {"total_tokens", usage.prompt_tokens + completion},
      {"prompt_tokens_details", std::move(prompt_details)},
      {"completion_tokens_details", json::object{{"reasoning_tokens", usage.thinking_tokens},
                                                 {"audio_tokens", 0},
                                                 {"accepted_prediction_tokens", 0},
                                                 {"rejected_prediction_tokens", 0}}},
  };
}

std::string Frame(const json::object& chunk) {
  std::string out = "data: ";
  out += json::serialize(chunk);
  out += "\n\n";
  return out;
}

std::optional<RequestError> ReadStop(const json::object& request, std::vector<std::string>& stops) {
  const json::value* stop = request.if_contains("stop");
  if (stop == nullptr || stop->is_null()) return std::nullopt;
  if (stop->is_string()) {
    stops.emplace_back(stop->get_string());
    return std::nullopt;
  }
  if (stop->is_array() && stop->get_array().size() <= 4) {
    for (const json::value& s : stop->get_array()) {
      if (!s.is_string()) {
        return InvalidRequest("Invalid type for 'stop': expected an array of strings.", "stop",
                              "invalid_type");
      }
      stops.emplace_back(s.get_string());
    }
    return std::nullopt;
  }
  return InvalidRequest("Invalid 'stop': expected a string or an array of at most 4 strings.",
                        "stop");
}

std::optional<RequestError> ReadBool(const json::object& request, std::string_view key, bool& out) {
  const json::value* v = request.if_contains(key);
  if (v == nullptr || v->is_null()) return std::nullopt;
  if (!v->is_bool()) {
    return InvalidRequest("Invalid type for '" + std::string(key) + "': expected a boolean, but got " +
                              std::string(JsonKind(*v)) + " instead.",
                          std::string(key), "invalid_type");
  }
  out = v->get_bool();
  return std::nullopt;
}

std::optional<RequestError> ReadPositiveInt(const json::object& request, std::string_view key,
                                            std::optional<std::int64_t>& out) {
  const json::value* v = request.if_contains(key);
  if (v == nullptr || v->is_null()) return std::nullopt;
  std::optional<std::int64_t> n = AsInteger(*v);
  if (!n) {
    return InvalidRequest("Invalid type for '" + std::string(key) +
                              "': expected an integer, but got " + std::string(JsonKind(*v)) +
                              " instead.",
                          std::string(key), "invalid_type");
  }
  if (*n < 1) {
    return InvalidRequest("Invalid '" + std::string(key) +
                              "': integer below minimum value. Expected a value >= 1, but got " +
                              std::to_string(*n) + " instead.",
                          std::string(key), "integer_below_min_value");
  }
  out = n;
  return std::nullopt;
}

}  // namespace

std::string ErrorBody(const RequestError& error) {
  json::object body{
      {"error", json::object{
                    {"message", error.message},
                    {"type", ErrorKindsFor(error.status).openai_type},
                    {"param", error.param.empty() ? json::value(nullptr) : json::value(error.param)},
                    {"code", error.code.empty() ? json::value(nullptr) : json::value(error.code)},
                }}};
  return json::serialize(body);
}

std::string ChatStreamErrorFrame(const RequestError& error) {
  std::string out = "data: ";
  out += ErrorBody(error);
  out += "\n\n";
  return out;
}

std::variant<Reply, RequestError> PlanChatReply(std::string_view body, int reply_words) {
  unsigned char scratch[16384];
  json::monotonic_resource resource(scratch, sizeof(scratch));
  json::parse_options options;
  options.max_depth = 128;
  boost::system::error_code ec;
  json::value root = json::parse(body, ec, &resource, options);
  if (ec || !root.is_object()) {
    return InvalidRequest(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
        "sent was not valid JSON.)",
        {});
  }
  const json::object& request = root.get_object();

  const json::value* model = request.if_contains("model");
  if (model == nullptr || !model->is_string() || model->get_string().empty()) {
    return InvalidRequest("you must provide a model parameter", "model");
  }

  const json::value* messages = request.if_contains("messages");
  if (messages == nullptr || messages->is_null()) {
    return InvalidRequest("Missing required parameter: 'messages'.", "messages",
                          "missing_required_parameter");
  }
  if (!messages->is_array()) {
    return InvalidRequest("Invalid type for 'messages': expected an array, but got " +
                              std::string(JsonKind(*messages)) + " instead.",
                          "messages", "invalid_type");
  }
  if (messages->get_array().empty()) {
    return InvalidRequest(
        "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
        "empty array instead.",
        "messages", "empty_array");
  }
  std::size_t index = 0;
  for (const json::value& m : messages->get_array()) {
    const json::object* message = m.if_object();
    const json::value* role = message ? message->if_contains("role") : nullptr;
    if (role == nullptr || !role->is_string()) {
      std::string param = "messages[" + std::to_string(index) + "]";
      return InvalidRequest("Invalid '" + param + "': expected an object with a string 'role'.",
                            param);
    }
    ++index;
  }

  // System and developer messages first, as one system message, the way Anthropic's
  // `system` and Gemini's `systemInstruction` carry them.
  PromptBuilder builder(std::string(model->get_string()));
  bool has_breakpoint = false;
  for (bool system_pass : {true, false}) {
    for (const json::value& m : messages->get_array()) {
      const json::object& message = m.get_object();
      const std::string_view role = message.at("role").get_string();
      if ((role == "system" || role == "developer") != system_pass) continue;
      AddMessage(builder, role, message, has_breakpoint);
    }
  }
  const Prompt prompt = std::move(builder).Finish();

  bool stream = false;
  if (auto error = ReadBool(request, "stream", stream)) return *std::move(error);
  bool include_usage = false;
  if (const json::value* so = request.if_contains("stream_options"); so && so->is_object()) {
    const json::value* include = so->get_object().if_contains("include_usage");
    include_usage = stream && include && include->is_bool() && include->get_bool();
  }

  GenerationRequest generation;
  for (std::string_view key : {"max_completion_tokens", "max_tokens"}) {
    if (auto error = ReadPositiveInt(request, key, generation.max_tokens)) return *std::move(error);
    if (generation.max_tokens) break;
  }
  if (auto error = ReadStop(request, generation.stop_sequences)) return *std::move(error);
  if (auto error = ReadBool(request, "enable_thinking", generation.thinking)) return *std::move(error);
  std::optional<std::int64_t> thinking_budget;
  if (auto error = ReadPositiveInt(request, "thinking_budget", thinking_budget)) return *std::move(error);
  generation.thinking_budget = thinking_budget.value_or(0);
  bool context_caching = false;
  if (auto error = ReadBool(request, "enable_context_caching", context_caching)) return *std::move(error);
  bool logprobs = false;
  if (auto error = ReadBool(request, "logprobs", logprobs)) return *std::move(error);

  std::optional<RequestError> tool_error;
  const json::object* tool = ForcedTool(request, tool_error);
  if (tool_error) return *std::move(tool_error);
  if (tool != nullptr) {
    generation.forced_tool = BuildToolCall(StringOr(tool->if_contains("name")),
                                           tool->if_contains("parameters"));
  }

  Reply reply = PlanReply(prompt, generation, reply_words);
  reply.stream = stream;
  reply.logprobs = logprobs;
  reply.include_usage = include_usage;
  if (has_breakpoint) {
    reply.cache = BreakpointCachePlan(prompt);
  } else if (context_caching) {
    reply.cache = AutomaticCachePlan(prompt);
  }
  return reply;
}

// The logprobs of content pieces, OpenAI's shape; the values are a function of the text.
json::object LogprobsJson(const std::vector<std::string>& pieces) {
  json::array content;
  for (const std::string& piece : pieces) {
    json::array bytes;
    for (unsigned char c : piece) bytes.push_back(c);
    content.push_back(json::object{{"token", piece},
                                   {"logprob", -static_cast<double>(piece.size() % 7 + 1) / 8},
                                   {"bytes", std::move(bytes)},
                                   {"top_logprobs", json::array()}});
  }
  return json::object{{"content", std::move(content)}, {"refusal", nullptr}};
}

ResponseIds NewResponseIds() {
  ResponseIds ids;
  ids.completion_id = "chatcmpl-" + RandomHex(24);
  ids.tool_call_id = "call_" + RandomHex(24);
  ids.created = UnixSeconds();
  return ids;
}

std::string ChatCompletionBody(const Reply& reply, const ResponseIds& ids) {
  json::object message{{"role", "assistant"}};
  if (reply.tool_call) {
    message["content"] = nullptr;
    message["tool_calls"] = json::array{json::object{
        {"id", ids.tool_call_id},
        {"type", "function"},
        {"function", json::object{{"name", reply.tool_call->name},
                                  {"arguments", reply.tool_call->arguments}}},
    }};
  } else {
    message["content"] = reply.Text();
  }
  if (!reply.thinking_pieces.empty()) message["reasoning_content"] = reply.ThinkingText();
  message["refusal"] = nullptr;

  json::object body{
      {"id", ids.completion_id},
      {"object", "chat.completion"},
      {"created", ids.created},
      {"model", reply.model},
      {"choices", json::array{json::object{
                      {"index", 0},
                      {"message", std::move(message)},
                      {"logprobs", reply.logprobs && !reply.tool_call
                                       ? json::value(LogprobsJson(reply.content_pieces))
                                       : json::value(nullptr)},
                      {"finish_reason", FinishReason(reply.finish)},
                  }}},
      {"usage", UsageJson(reply)},
      {"system_fingerprint", "fp_mock"},
  };
  return json::serialize(body);
}

std::vector<SseFrame> ChatStreamFrames(const Reply& reply, const ResponseIds& ids) {
  json::object base{
      {"id", ids.completion_id},
      {"object", "chat.completion.chunk"},
      {"created", ids.created},
      {"model", reply.model},
      {"system_fingerprint", "fp_mock"},
      {"choices", json::array()},
  };
  if (reply.include_usage) base["usage"] = nullptr;

  std::vector<SseFrame> frames;
  auto push_choice = [&](FrameKind kind, json::object delta, json::value finish_reason) {
    json::value logprobs = nullptr;
    if (reply.logprobs && kind == FrameKind::kContent && delta.contains("content"))
      logprobs = LogprobsJson({std::string(delta.at("content").as_string())});
    json::object chunk = base;
    chunk["choices"] = json::array{json::object{
        {"index", 0},
        {"delta", std::move(delta)},
        {"logprobs", std::move(logprobs)},
        {"finish_reason", std::move(finish_reason)},
    }};
    frames.push_back({kind, Frame(chunk)});
  };
  json::object tool_header{
      {"index", 0},
      {"id", ids.tool_call_id},
      {"type", "function"},
      {"function", json::object{{"name", reply.tool_call ? reply.tool_call->name : ""},
                                {"arguments", ""}}},
  };

  const bool thinking = !reply.thinking_pieces.empty();
  if (reply.tool_call && !thinking) {
    push_choice(FrameKind::kFirst,
                json::object{{"role", "assistant"},
                             {"content", nullptr},
                             {"tool_calls", json::array{tool_header}},
                             {"refusal", nullptr}},
                nullptr);
  } else {
    push_choice(FrameKind::kFirst,
                json::object{{"role", "assistant"},
                             {"content", reply.tool_call ? json::value(nullptr) : json::value("")},
                             {"refusal", nullptr}},
                nullptr);
  }
  for (const std::string& piece : reply.thinking_pieces) {
    push_choice(FrameKind::kContent, json::object{{"reasoning_content", piece}}, nullptr);
  }
  if (reply.tool_call) {
    if (thinking) {
      push_choice(FrameKind::kStructure, json::object{{"tool_calls", json::array{tool_header}}},
                  nullptr);
    }
    for (const std::string& piece : reply.tool_call->argument_pieces) {
      push_choice(FrameKind::kContent,
                  json::object{{"tool_calls", json::array{json::object{
                                                  {"index", 0},
                                                  {"function", json::object{{"arguments", piece}}},
                                              }}}},
                  nullptr);
    }
  } else {
    for (const std::string& piece : reply.content_pieces) {
      push_choice(FrameKind::kContent, json::object{{"content", piece}}, nullptr);
    }
  }
  push_choice(FrameKind::kFinish, json::object(), json::value(FinishReason(reply.finish)));

  if (reply.include_usage) {
    json::object chunk = base;
    chunk["usage"] = UsageJson(reply);
    frames.push_back({FrameKind::kUsage, Frame(chunk)});
  }
  frames.push_back({FrameKind::kDone, "data: [DONE]\n\n"});
  return frames;
}

namespace {
constexpr std::string_view kModelIds[] = {"gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "mock-small",
                                          "mock-large"};
constexpr std::int64_t kModelCreated = 1700000000;

json::object ModelJson(std::string_view id) {
  return json::object{{"id", id}, {"object", "model"}, {"created", kModelCreated},
                      {"owned_by", "nexusflow-mock"}};
}
}  // namespace

std::string ModelListBody() {
  json::array data;
  for (std::string_view id : kModelIds) data.push_back(ModelJson(id));
  return json::serialize(json::object{{"object", "list"}, {"data", std::move(data)}});
}

std::optional<std::string> ModelBody(std::string_view id) {
  if (std::find(std::begin(kModelIds), std::end(kModelIds), id) == std::end(kModelIds)) {
    return std::nullopt;
  }
  return json::serialize(ModelJson(id));
}

}  // namespace nexusflow::mock

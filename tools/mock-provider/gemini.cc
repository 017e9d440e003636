#include "gemini.h"

#include <optional>

#include <boost/json.hpp>

namespace nexusflow::mock {
namespace {

namespace json = boost::json;

constexpr std::size_t kMaxStopSequences = 5;

RequestError Invalid(std::string message) { return RequestError{400, std::move(message), {}, {}}; }

// Gemini's JSON mapping accepts both spellings of a field (`systemInstruction` and
// `system_instruction`); Google's own curl examples use either.
const json::value* Field(const json::object& o, std::string_view camel, std::string_view snake) {
  if (const json::value* v = o.if_contains(camel)) return v;
  return o.if_contains(snake);
}

const json::object* ObjectField(const json::object& o, std::string_view camel, std::string_view snake) {
  const json::value* v = Field(o, camel, snake);
  return v ? v->if_object() : nullptr;
}

// A functionResponse's text: a lone string field is unwrapped (`{"result":"sunny"}` →
// `sunny`, how translations wrap a plain tool result), anything else is compact JSON.
std::string FunctionResponseText(const json::object& call) {
  const json::value* response = call.if_contains("response");
  if (response == nullptr || response->is_null()) return {};
  if (response->is_string()) return std::string(response->get_string());
  if (const json::object* o = response->if_object(); o && o->size() == 1 && o->begin()->value().is_string()) {
    return std::string(o->begin()->value().get_string());
  }
  return json::serialize(*response);
}

struct ParsedGenerate {
  Prompt prompt;
  GenerationRequest generation;
  bool show_thoughts = false;
  bool cached_content = false;  // the request names an explicit cache
  int candidate_count = 1;      // generationConfig.candidateCount
};

class GenerateParser {
 public:
  GenerateParser(const json::object& request, std::string model)
      : request_(request), builder_(std::move(model)) {}

  std::optional<RequestError> Parse(bool count_only, ParsedGenerate& out) {
    const json::value* cached = Field(request_, "cachedContent", "cached_content");
    out.cached_content = cached && cached->is_string() && !cached->get_string().empty();
    if (auto error = ParseSystem()) return error;
    if (auto error = ParseContents(out.cached_content)) return error;
    out.prompt = std::move(builder_).Finish();
    if (count_only) return std::nullopt;
    if (auto error = ParseGenerationConfig(out)) return error;
    if (auto error = ParseTools()) return error;
    return ParseToolConfig(out.generation);
  }

 private:
  std::optional<RequestError> ParseSystem() {
    const json::value* system = Field(request_, "systemInstruction", "system_instruction");
    if (system == nullptr || system->is_null()) return std::nullopt;
    builder_.Begin("system");
    if (system->is_string()) {
      builder_.AddText(system->get_string());
    } else if (const json::object* s = system->if_object()) {
      // The SDK sends `{role:"user", parts}`: the role is ignored.
      if (const json::value* parts = s->if_contains("parts"); parts && parts->is_array()) {
        for (const json::value& part : parts->get_array()) {
          if (const json::object* p = part.if_object()) builder_.AddText(StringOr(p->if_contains("text")));
        }
      }
    } else {
      return Invalid("Invalid value at 'system_instruction' (type.googleapis.com/"
                     "google.ai.generativelanguage.v1beta.Content)");
    }
    builder_.End();
    return std::nullopt;
  }

  std::optional<RequestError> ParseContents(bool cached_content) {
    const json::value* contents = request_.if_contains("contents");
    if (contents == nullptr || contents->is_null() ||
        (contents->is_array() && contents->get_array().empty())) {
      return Invalid("* GenerateContentRequest.contents: contents is not specified\n");
    }
    if (!contents->is_array()) {
      return Invalid("Invalid value at 'contents' (type.googleapis.com/"
                     "google.ai.generativelanguage.v1beta.Content), expected a list");
    }
    const json::array& list = contents->get_array();
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string where = "contents[" + std::to_string(i) + "]";
      const json::object* content = list[i].if_object();
      if (content == nullptr) return Invalid("Invalid value at '" + where + "'");
      const std::string_view role = StringOr(content->if_contains("role"), "user");
      if (role != "user" && role != "model" && role != "function") {
        return Invalid("Please use a valid role: user, model.");
      }
      const json::value* parts = content->if_contains("parts");
      if (parts == nullptr || !parts->is_array() || parts->get_array().empty()) {
        return Invalid("* GenerateContentRequest." + where +
                       ".parts: contents.parts must not be empty.\n");
      }
      // With cachedContent the named cache holds everything before the last turn.
      if (cached_content && i + 1 == list.size()) builder_.MarkBreakpoint();

      // Function responses first, as tool messages, the way a translation to OpenAI has them.
      bool other_parts = false;
      for (const json::value& part : parts->get_array()) {
        const json::object* p = part.if_object();
        if (p == nullptr) return Invalid("Invalid value at '" + where + ".parts'");
        if (const json::object* response = ObjectField(*p, "functionResponse", "function_response")) {
          builder_.AddToolResult(FunctionResponseText(*response));
        } else {
          other_parts = true;
        }
      }
      if (!other_parts) continue;
      builder_.Begin(role == "model" ? "assistant" : "user");
      for (const json::value& part : parts->get_array()) AddPart(part.get_object());
      builder_.End();
    }
    return std::nullopt;
  }

  void AddPart(const json::object& part) {
    if (const json::value* text = part.if_contains("text"); text && text->is_string()) {
      // Earlier thoughts are not part of the prompt (OpenAI has no place for them).
      const json::value* thought = part.if_contains("thought");
      if (!(thought && thought->is_bool() && thought->get_bool())) builder_.AddText(text->get_string());
    } else if (const json::object* inline_data = ObjectField(part, "inlineData", "inline_data")) {
      builder_.AddImage("data:" + std::string(StringOr(Field(*inline_data, "mimeType", "mime_type"))) +
                        ";base64," + std::string(StringOr(inline_data->if_contains("data"))));
    } else if (const json::object* file = ObjectField(part, "fileData", "file_data")) {
      builder_.AddImage(StringOr(Field(*file, "fileUri", "file_uri")));
    } else if (const json::object* call = ObjectField(part, "functionCall", "function_call")) {
      static const json::value kEmpty = json::object();
      const json::value* args = call->if_contains("args");
      builder_.AddToolCall(StringOr(call->if_contains("name")), args && !args->is_null() ? *args : kEmpty);
    }
  }

  std::optional<RequestError> ParseGenerationConfig(ParsedGenerate& out) {
    const json::value* config_value = Field(request_, "generationConfig", "generation_config");
    if (config_value == nullptr || config_value->is_null()) return std::nullopt;
    const json::object* config = config_value->if_object();
    if (config == nullptr) return Invalid("Invalid value at 'generation_config'");
    GenerationRequest& generation = out.generation;

    if (const json::value* t = config->if_contains("temperature"); t && !t->is_null()) {
      if (!t->is_number() || t->to_number<double>() < 0 || t->to_number<double>() > 2) {
        return Invalid("* GenerateContentRequest.generation_config.temperature: temperature must "
                       "be in the range [0.0, 2.0]\n");
      }
    }
    if (const json::value* n = Field(*config, "candidateCount", "candidate_count"); n && !n->is_null()) {
      std::optional<std::int64_t> count = AsInteger(*n);
      if (!count || *count < 1) {
        return Invalid("* GenerateContentRequest.generation_config.candidate_count: must be positive\n");
      }
      if (*count > 8) {
        return Invalid("* GenerateContentRequest.generation_config.candidate_count: must be at most 8\n");
      }
      out.candidate_count = static_cast<int>(*count);
    }
    if (const json::value* max = Field(*config, "maxOutputTokens", "max_output_tokens"); max && !max->is_null()) {
      std::optional<std::int64_t> n = AsInteger(*max);
      if (!n || *n < 1) {
        return Invalid("* GenerateContentRequest.generation_config.max_output_tokens: "
                       "max_output_tokens must be positive.\n");
      }
      generation.max_tokens = n;
    }
    if (const json::value* stops = Field(*config, "stopSequences", "stop_sequences"); stops && !stops->is_null()) {
      if (!stops->is_array()) return Invalid("Invalid value at 'generation_config.stop_sequences'");
      if (stops->get_array().size() > kMaxStopSequences) {
        return Invalid("* GenerateContentRequest.generation_config.stop_sequences: the number of "
                       "stop_sequences must not exceed 5.\n");
      }
      for (const json::value& s : stops->get_array()) {
        if (!s.is_string()) return Invalid("Invalid value at 'generation_config.stop_sequences'");
        generation.stop_sequences.emplace_back(s.get_string());
      }
    }
    if (const json::object* thinking = ObjectField(*config, "thinkingConfig", "thinking_config")) {
      std::optional<std::int64_t> budget;
      if (const json::value* b = Field(*thinking, "thinkingBudget", "thinking_budget"); b && !b->is_null()) {
        budget = AsInteger(*b);
        if (!budget || *budget < -1) {
          return Invalid("* GenerateContentRequest.generation_config.thinking_config.thinking_budget: "
                         "must be -1 (dynamic), 0 (off) or positive\n");
        }
      }
      const json::value* include = Field(*thinking, "includeThoughts", "include_thoughts");
      const bool include_thoughts = include && include->is_bool() && include->get_bool();
      const bool level = !StringOr(Field(*thinking, "thinkingLevel", "thinking_level")).empty();
      // thinkingBudget 0 turns thinking off; -1 (dynamic), a budget, a level or asking for
      // the thoughts turns it on. Without includeThoughts the model thinks unseen (counted).
      generation.thinking = budget ? *budget != 0 : (include_thoughts || level);
      generation.thinking_budget = budget && *budget > 0 ? *budget : 0;
      out.show_thoughts = generation.thinking && include_thoughts;
    }
    return std::nullopt;
  }

  std::optional<RequestError> ParseTools() {
    const json::value* tools = request_.if_contains("tools");
    if (tools == nullptr || tools->is_null()) return std::nullopt;
    if (!tools->is_array()) return Invalid("Invalid value at 'tools'");
    for (std::size_t i = 0; i < tools->get_array().size(); ++i) {
      const json::object* tool = tools->get_array()[i].if_object();
      if (tool == nullptr) return Invalid("Invalid value at 'tools[" + std::to_string(i) + "]'");
      const json::value* declarations = Field(*tool, "functionDeclarations", "function_declarations");
      if (declarations == nullptr || !declarations->is_array()) continue;  // googleSearch, codeExecution...
      for (std::size_t j = 0; j < declarations->get_array().size(); ++j) {
        const json::object* d = declarations->get_array()[j].if_object();
        if (d == nullptr || StringOr(d->if_contains("name")).empty()) {
          return Invalid("* GenerateContentRequest.tools[" + std::to_string(i) +
                         "].function_declarations[" + std::to_string(j) +
                         "].name: [FIELD_INVALID] Invalid function name.\n");
        }
        declarations_.push_back(d);
      }
    }
    return std::nullopt;
  }

  std::optional<RequestError> ParseToolConfig(GenerationRequest& generation) {
    const json::object* tool_config = ObjectField(request_, "toolConfig", "tool_config");
    if (tool_config == nullptr) return std::nullopt;
    const json::object* calling = ObjectField(*tool_config, "functionCallingConfig", "function_calling_config");
    if (calling == nullptr) return std::nullopt;
    const std::string_view mode = StringOr(calling->if_contains("mode"), "AUTO");
    if (mode == "AUTO" || mode == "NONE" || mode == "VALIDATED" || mode == "MODE_UNSPECIFIED") {
      return std::nullopt;
    }
    if (mode != "ANY") {
      return Invalid("Invalid value at 'tool_config.function_calling_config.mode' "
                     "(type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), \"" +
                     std::string(mode) + "\"");
    }
    if (declarations_.empty()) {
      return Invalid("Function calling config is set without function_declarations.");
    }
    const json::object* chosen = declarations_.front();
    const json::value* allowed = Field(*calling, "allowedFunctionNames", "allowed_function_names");
    if (allowed && allowed->is_array() && !allowed->get_array().empty()) {
      chosen = nullptr;
      for (const json::value& name : allowed->get_array()) {
        for (const json::object* d : declarations_) {
          if (name.is_string() && StringOr(d->if_contains("name")) == name.get_string()) {
            chosen = d;
            break;
          }
        }
        if (chosen) break;
      }
      if (chosen == nullptr) {
        return Invalid("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                       "allowed_function_names must name declared functions.\n");
      }
    }
    const json::value* schema = Field(*chosen, "parametersJsonSchema", "parameters_json_schema");
    if (schema == nullptr) schema = chosen->if_contains("parameters");
    generation.forced_tool = BuildToolCall(StringOr(chosen->if_contains("name")), schema);
    return std::nullopt;
  }

  const json::object& request_;
  PromptBuilder builder_;
  std::vector<const json::object*> declarations_;
};

std::variant<ParsedGenerate, RequestError> Parse(std::string_view model, const json::object& request,
                                                 bool count_only) {
  ParsedGenerate parsed;
  GenerateParser parser(request, std::string(model));
  if (auto error = parser.Parse(count_only, parsed)) return *std::move(error);
  return parsed;
}

std::optional<json::value> ParseBody(std::string_view body) {
  boost::system::error_code ec;
  json::parse_options options;
  options.max_depth = 128;
  json::value root = json::parse(body, ec, {}, options);
  if (ec || !root.is_object()) return std::nullopt;
  return root;
}

RequestError InvalidJson() {
  return Invalid("Invalid JSON payload received. Expected a JSON object.");
}

std::string_view FinishReason(Finish finish) {
  return finish == Finish::kLength ? "MAX_TOKENS" : "STOP";
}

json::object UsageJson(const Reply& reply, std::int64_t thoughts, std::int64_t candidates) {
  const std::int64_t prompt = reply.usage.prompt_tokens;
  // Every candidate is generated: output counts once per candidate.
  thoughts *= reply.candidates;
  candidates *= reply.candidates;
  // Zero counts are left out, as the API does (proto3 JSON).
  json::object usage{{"promptTokenCount", prompt}};
  if (candidates > 0) usage["candidatesTokenCount"] = candidates;
  usage["totalTokenCount"] = prompt + candidates + thoughts;
  if (reply.usage.cache.read > 0) usage["cachedContentTokenCount"] = reply.usage.cache.read;
  if (thoughts > 0) usage["thoughtsTokenCount"] = thoughts;
  return usage;
}

json::object Response(const Reply& reply, std::string_view response_id, json::array parts,
                      std::optional<Finish> finish, json::object usage) {
  json::object candidate{{"content", json::object{{"parts", std::move(parts)}, {"role", "model"}}}};
  if (finish) candidate["finishReason"] = FinishReason(*finish);
  json::array all;
  for (int i = 0; i < reply.candidates; ++i) {
    candidate["index"] = i;
    all.push_back(candidate);
  }
  return json::object{
      {"candidates", std::move(all)},
      {"usageMetadata", std::move(usage)},
      {"modelVersion", reply.model},
      {"responseId", response_id},
  };
}

json::object FunctionCallPart(const Reply& reply) {
  boost::system::error_code ec;
  json::value args = json::parse(reply.tool_call->arguments, ec);
  if (ec) args = json::object();
  return json::object{{"functionCall", json::object{{"name", reply.tool_call->name}, {"args", std::move(args)}}}};
}

}  // namespace

std::string GeminiErrorBody(const RequestError& error, std::string_view reason) {
  json::object inner{
      {"code", error.status},
      {"message", error.message},
      {"status", ErrorKindsFor(error.status).gemini_status},
  };
  if (!reason.empty()) {
    inner["details"] = json::array{json::object{
        {"@type", "type.googleapis.com/google.rpc.ErrorInfo"},
        {"reason", reason},
        {"domain", "googleapis.com"},
        {"metadata", json::object{{"service", "generativelanguage.googleapis.com"}}},
    }};
  }
  return json::serialize(json::object{{"error", std::move(inner)}});
}

std::string GeminiStreamErrorFrame(const RequestError& error, bool sse, bool first) {
  if (sse) return "data: " + GeminiErrorBody(error) + "\n\n";
  return (first ? "[" : ",\r\n") + GeminiErrorBody(error) + "]";
}

std::variant<Reply, RequestError> PlanGenerateContent(std::string_view model, std::string_view body,
                                                      const GeminiOptions& options) {
  std::optional<json::value> root = ParseBody(body);
  if (!root) return InvalidJson();
  std::variant<ParsedGenerate, RequestError> parsed = Parse(model, root->get_object(), false);
  if (RequestError* error = std::get_if<RequestError>(&parsed)) return *std::move(error);
  const ParsedGenerate& request = std::get<ParsedGenerate>(parsed);

  Reply reply = PlanReply(request.prompt, request.generation, options.reply_words);
  reply.show_thinking = request.show_thoughts;
  reply.candidates = request.candidate_count;
  const Prompt& prompt = request.prompt;
  if (request.cached_content) {
    // A named cache exists before the request that uses it: always a read.
    reply.cache = BreakpointCachePlan(prompt);
    reply.cache.assume_hit = true;
  } else if (!prompt.messages.empty() && prompt.messages.front().role == "system") {
    const CacheProbe system = ProbeAt(prompt, EndOf(prompt, 0));
    if (system.tokens >= options.implicit_cache_min_tokens) {
      reply.cache.requested = true;
      reply.cache.writes.push_back(system);
      reply.cache.lookups.push_back(system);
    }
  }
  return reply;
}

std::variant<std::int64_t, RequestError> CountGeminiTokens(std::string_view model,
                                                           std::string_view body) {
  std::optional<json::value> root = ParseBody(body);
  if (!root) return InvalidJson();
  const json::object* request = &root->get_object();
  if (const json::object* inner = ObjectField(*request, "generateContentRequest", "generate_content_request")) {
    request = inner;
  }
  std::variant<ParsedGenerate, RequestError> parsed = Parse(model, *request, true);
  if (RequestError* error = std::get_if<RequestError>(&parsed)) return *std::move(error);
  return std::get<ParsedGenerate>(parsed).prompt.tokens;
}

std::string GeminiTokenCountBody(std::int64_t total_tokens) {
  return json::serialize(json::object{{"totalTokens", total_tokens}});
}

std::string NewResponseId() { return RandomHex(22); }

std::string GenerateContentBody(const Reply& reply, std::string_view response_id) {
  const bool thinking = !reply.thinking_pieces.empty();
  json::array parts;
  if (thinking && reply.show_thinking) {
    parts.push_back(json::object{{"text", reply.ThinkingText()}, {"thought", true}});
  }
  json::object answer = reply.tool_call ? FunctionCallPart(reply) : json::object{{"text", reply.Text()}};
  if (thinking) answer["thoughtSignature"] = reply.thinking_signature;
  parts.push_back(std::move(answer));
  json::object body = Response(reply, response_id, std::move(parts), reply.finish,
                               UsageJson(reply, reply.usage.thinking_tokens, reply.usage.output_tokens));
  return json::serialize(body);
}

std::vector<SseFrame> GenerateContentStreamFrames(const Reply& reply, std::string_view response_id) {
  std::vector<SseFrame> frames;
  auto push = [&](FrameKind kind, const json::object& chunk) {
    std::string bytes;
    if (reply.gemini_sse) {
      bytes = "data: " + json::serialize(chunk) + "\n\n";
    } else {
      bytes = (frames.empty() ? "[" : ",\r\n") + json::serialize(chunk);
    }
    frames.push_back({kind, std::move(bytes)});
  };

  const bool thinking = !reply.thinking_pieces.empty();
  std::int64_t thoughts = reply.show_thinking ? 0 : reply.usage.thinking_tokens;
  std::int64_t candidates = 0;
  if (thinking && reply.show_thinking) {
    for (const std::string& piece : reply.thinking_pieces) {
      ++thoughts;
      push(FrameKind::kContent,
           Response(reply, response_id, json::array{json::object{{"text", piece}, {"thought", true}}},
                    std::nullopt, UsageJson(reply, thoughts, candidates)));
    }
  }
  bool signed_part = false;
  auto sign = [&](json::object part) {
    if (thinking && !signed_part) part["thoughtSignature"] = reply.thinking_signature;
    signed_part = true;
    return part;
  };
  if (reply.tool_call) {
    candidates = reply.usage.output_tokens;
    push(FrameKind::kContent, Response(reply, response_id, json::array{sign(FunctionCallPart(reply))},
                                       std::nullopt, UsageJson(reply, thoughts, candidates)));
  } else {
    for (const std::string& piece : reply.content_pieces) {
      ++candidates;
      push(FrameKind::kContent, Response(reply, response_id, json::array{sign(json::object{{"text", piece}})},
                                         std::nullopt, UsageJson(reply, thoughts, candidates)));
    }
  }
  push(FrameKind::kFinish,
       Response(reply, response_id, json::array{json::object{{"text", ""}}}, reply.finish,
                UsageJson(reply, reply.usage.thinking_tokens, reply.usage.output_tokens)));
  if (!reply.gemini_sse) frames.push_back({FrameKind::kDone, "]"});
  return frames;
}

}  // namespace nexusflow::mock

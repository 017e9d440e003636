#include "services/provider-connector/gemini_upstream.h"

#include <boost/json.hpp>
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "libs/common/json_util.h"

namespace nexusflow::connector {
namespace json = boost::json;
namespace llmpb = ::nexusflow::llm::v1;

namespace {

json::value ParseOrNull(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  return ec ? json::value(nullptr) : v;
}

json::object InlineOrFile(const std::string& url, const llmpb::InlineData* inline_data) {
  if (inline_data)
    return json::object{{"inlineData", json::object{{"mimeType", inline_data->mime_type()},
                                                    {"data", absl::Base64Escape(inline_data->data())}}}};
  if (auto data = ParseDataUri(url))
    return json::object{{"inlineData", json::object{{"mimeType", data->media_type}, {"data", data->base64}}}};
  return json::object{{"fileData", json::object{{"fileUri", url}}}};
}

// A function response must be an object: anything else is wrapped.
json::value ResponseObject(const std::string& content) {
  json::value v = ParseOrNull(content);
  if (v.is_object()) return v;
  return json::object{{"result", v.is_null() ? json::value(content) : v}};
}

}  // namespace

std::string BuildGeminiBody(const llmpb::ChatRequest& req) {
  json::object body;
  json::array contents;
  json::array system;
  std::map<std::string, std::string> call_names;  // tool call id → function name
  auto append = [&](const char* role, json::value part) {
    if (!contents.empty() && contents.back().as_object().at("role").as_string() == role) {
      contents.back().as_object()["parts"].as_array().push_back(std::move(part));
      return;
    }
    contents.push_back(json::object{{"role", role}, {"parts", json::array{std::move(part)}}});
  };
  for (const auto& m : req.messages()) {
    if (m.role() == llmpb::ROLE_SYSTEM) {
      for (const auto& p : m.parts())
        if (p.has_text()) system.push_back(json::object{{"text", p.text()}});
      continue;
    }
    const char* role = m.role() == llmpb::ROLE_ASSISTANT ? "model" : "user";
    for (const auto& p : m.parts()) {
      switch (p.part_case()) {
        case llmpb::ContentPart::kText:
          if (!p.text().empty()) append(role, json::object{{"text", p.text()}});
          break;
        case llmpb::ContentPart::kImage:
          append(role, InlineOrFile(p.image().url(), p.image().has_inline_data() ? &p.image().inline_data() : nullptr));
          break;
        case llmpb::ContentPart::kDocument: {
          const auto& d = p.document();
          if (d.source_case() == llmpb::Document::kText)
            append(role, json::object{{"text", d.text()}});
          else
            append(role, InlineOrFile(d.url(), d.has_inline_data() ? &d.inline_data() : nullptr));
          break;
        }
        case llmpb::ContentPart::kToolCall: {
          const auto& c = p.tool_call();
          call_names[c.id()] = c.name();
          json::value args = ParseOrNull(c.arguments_json());
          json::object call{{"name", c.name()}, {"args", args.is_object() ? args : json::object{}}};
          json::object part{{"functionCall", std::move(call)}};
          if (!c.signature().empty()) part["thoughtSignature"] = c.signature();
          append("model", std::move(part));
          break;
        }
        case llmpb::ContentPart::kToolResult: {
          const auto& r = p.tool_result();
          std::string name = r.name();
          if (name.empty())
            if (auto it = call_names.find(r.tool_call_id()); it != call_names.end()) name = it->second;
          append("user", json::object{{"functionResponse",
                                       json::object{{"name", name}, {"response", ResponseObject(r.content())}}}});
          break;
        }
        default:
          break;  // reasoning is not sent back to Gemini
      }
    }
  }
  body["contents"] = std::move(contents);
  if (!system.empty()) body["systemInstruction"] = json::object{{"parts", std::move(system)}};
  json::object gen;
  const auto& s = req.sampling();
  if (s.has_temperature()) gen["temperature"] = s.temperature();
  if (s.has_top_p()) gen["topP"] = s.top_p();
  if (s.has_top_k()) gen["topK"] = s.top_k();
  if (s.has_max_output_tokens()) gen["maxOutputTokens"] = s.max_output_tokens();
  if (s.has_seed()) gen["seed"] = s.seed();
  if (s.has_presence_penalty()) gen["presencePenalty"] = s.presence_penalty();
  if (s.has_frequency_penalty()) gen["frequencyPenalty"] = s.frequency_penalty();
  if (s.n() > 1) gen["candidateCount"] = s.n();
  if (s.stop_sequences_size() > 0) {
    json::array stops;
    for (int i = 0; i < s.stop_sequences_size() && i < 5; ++i) stops.push_back(json::string(s.stop_sequences(i)));
    gen["stopSequences"] = std::move(stops);
  }
  const auto& rf = req.response_format();
  if (rf.type() == llmpb::ResponseFormat::TYPE_JSON_OBJECT || rf.type() == llmpb::ResponseFormat::TYPE_JSON_SCHEMA) {
    gen["responseMimeType"] = "application/json";
    if (!rf.schema_json().empty()) {
      json::value schema = ParseOrNull(rf.schema_json());
      if (schema.is_object()) gen["responseJsonSchema"] = std::move(schema);
    }
  }
  if (req.thinking().enabled() || req.thinking().include_thoughts()) {
    json::object tc;
    if (req.thinking().budget_tokens() > 0) tc["thinkingBudget"] = req.thinking().budget_tokens();
    if (req.thinking().include_thoughts() || req.thinking().enabled()) tc["includeThoughts"] = true;
    gen["thinkingConfig"] = std::move(tc);
  }
  if (!gen.empty()) body["generationConfig"] = std::move(gen);
  if (req.tools_size() > 0) {
    json::array decls;
    json::array builtins;  // Google's built-in tools, as the caller wrote them
    for (const auto& t : req.tools()) {
      if (!t.native_json().empty()) {
        if (t.native_protocol() == llmpb::PROTOCOL_GEMINI) builtins.push_back(ParseOrNull(t.native_json()));
        continue;
      }
      json::object d{{"name", t.name()}};
      if (!t.description().empty()) d["description"] = t.description();
      json::value params = ParseOrNull(t.parameters_json());
      if (params.is_object()) d["parametersJsonSchema"] = std::move(params);
      decls.push_back(std::move(d));
    }
    json::array tools;
    if (!decls.empty()) tools.push_back(json::object{{"functionDeclarations", std::move(decls)}});
    for (auto& b : builtins) tools.push_back(std::move(b));
    if (!tools.empty()) body["tools"] = std::move(tools);
  }
  if (req.has_tool_choice()) {
    const auto& tc = req.tool_choice();
    json::object cfg;
    if (tc.choice_case() == llmpb::ToolChoice::kFunctionName) {
      cfg = {{"mode", "ANY"}, {"allowedFunctionNames", json::array{json::string(tc.function_name())}}};
    } else if (tc.allowed_function_names_size() > 0) {
      json::array names;
      for (const auto& n : tc.allowed_function_names()) names.push_back(json::string(n));
      cfg = {{"mode", "ANY"}, {"allowedFunctionNames", std::move(names)}};
    } else {
      switch (tc.mode()) {
        case llmpb::ToolChoice::MODE_NONE: cfg = {{"mode", "NONE"}}; break;
        case llmpb::ToolChoice::MODE_REQUIRED: cfg = {{"mode", "ANY"}}; break;
        default: cfg = {{"mode", "AUTO"}};
      }
    }
    body["toolConfig"] = json::object{{"functionCallingConfig", std::move(cfg)}};
  }
  return json::serialize(body);
}

llmpb::Usage UsageFromGemini(const json::value& m) {
  int64_t prompt = JsonInt(m, "promptTokenCount").value_or(0) + JsonInt(m, "toolUsePromptTokenCount").value_or(0);
  int64_t cached = JsonInt(m, "cachedContentTokenCount").value_or(0);
  int64_t thoughts = JsonInt(m, "thoughtsTokenCount").value_or(0);
  llmpb::Usage u;
  u.set_input_tokens(std::max<int64_t>(prompt - cached, 0));
  u.set_cache_read_tokens(cached);
  u.set_output_tokens(JsonInt(m, "candidatesTokenCount").value_or(0) + thoughts);
  u.set_reasoning_tokens(thoughts);
  return u;
}

llmpb::FinishReason FinishReasonFromGemini(std::string_view r, bool called_tools) {
  if (r == "MAX_TOKENS") return llmpb::FINISH_REASON_LENGTH;
  if (r == "SAFETY" || r == "RECITATION" || r == "BLOCKLIST" || r == "PROHIBITED_CONTENT" ||
      r == "SPII" || r == "IMAGE_SAFETY")
    return llmpb::FINISH_REASON_CONTENT_FILTER;
  return called_tools ? llmpb::FINISH_REASON_TOOL_CALLS : llmpb::FINISH_REASON_STOP;
}

namespace {

int StatusOfGoogleStatus(std::string_view status, int64_t code) {
  if (status == "RESOURCE_EXHAUSTED") return 429;
  if (status == "INVALID_ARGUMENT" || status == "FAILED_PRECONDITION") return 400;
  if (status == "UNAVAILABLE") return 503;
  if (status == "DEADLINE_EXCEEDED") return 504;
  return code >= 400 && code < 600 ? static_cast<int>(code) : 502;
}

}  // namespace

absl::Status GeminiDecoder::Feed(std::string_view text, std::vector<llmpb::ChatEvent>& out) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object())
    return absl::DataLossError(absl::StrCat("upstream sent invalid JSON: ", ec.message()));
  if (const auto* err = JsonField(v, "error"); err && err->is_object()) {
    std::string status = JsonString(*err, "status").value_or("");
    llmpb::ChatEvent e;
    e.mutable_error()->set_http_status(StatusOfGoogleStatus(status, JsonInt(*err, "code").value_or(0)));
    e.mutable_error()->set_code(status.empty() ? "upstream_error" : status);
    e.mutable_error()->set_message(JsonString(*err, "message").value_or("upstream error"));
    e.mutable_error()->set_retryable(status == "UNAVAILABLE" || status == "RESOURCE_EXHAUSTED");
    out.push_back(std::move(e));
    return absl::OkStatus();
  }
  if (!started_) {
    started_ = true;
    llmpb::ChatEvent e;
    e.mutable_start()->set_response_id(JsonString(v, "responseId").value_or(""));
    e.mutable_start()->set_upstream_model(JsonString(v, "modelVersion").value_or(""));
    out.push_back(std::move(e));
  }
  if (const auto* cands = JsonField(v, "candidates"); cands && cands->is_array()) {
    for (const auto& cand : cands->get_array()) {
      int32_t choice = static_cast<int32_t>(JsonInt(cand, "index").value_or(0));
      CandidateState& state = candidates_[choice];
      const json::value* content = JsonField(cand, "content");
      const json::value* parts = content ? JsonField(*content, "parts") : nullptr;
      if (parts && parts->is_array()) {
        for (const auto& part : parts->get_array()) {
          if (const auto* call = JsonField(part, "functionCall"); call && call->is_object()) {
            state.called_tools = true;
            int dense = state.next_tool++;
            llmpb::ChatEvent start;
            start.set_choice_index(choice);
            auto* t = start.mutable_tool_call_start();
            t->set_index(dense);
            t->set_id(JsonString(*call, "id").value_or(choice == 0 ? absl::StrCat("call_", dense)
                                                                   : absl::StrCat("call_", choice, "_", dense)));
            t->set_name(JsonString(*call, "name").value_or(""));
            t->set_signature(JsonString(part, "thoughtSignature").value_or(""));
            out.push_back(std::move(start));
            const json::value* args = JsonField(*call, "args");
            std::string args_text = args ? json::serialize(*args) : "{}";
            output_chars_ += static_cast<int64_t>(args_text.size() + t->name().size());
            llmpb::ChatEvent delta;
            delta.set_choice_index(choice);
            delta.mutable_tool_call_delta()->set_index(dense);
            delta.mutable_tool_call_delta()->set_arguments_fragment(std::move(args_text));
            out.push_back(std::move(delta));
            continue;
          }
          auto text = JsonString(part, "text");
          if (!text) continue;
          output_chars_ += static_cast<int64_t>(text->size());
          llmpb::ChatEvent e;
          e.set_choice_index(choice);
          if (JsonBool(part, "thought").value_or(false)) {
            e.mutable_reasoning()->set_text(std::move(*text));
            e.mutable_reasoning()->set_signature(JsonString(part, "thoughtSignature").value_or(""));
          } else {
            e.mutable_text()->set_text(std::move(*text));
          }
          out.push_back(std::move(e));
        }
      }
      if (auto f = JsonString(cand, "finishReason");
          f && !f->empty() && *f != "FINISH_REASON_UNSPECIFIED" && !state.finished) {
        state.finished = true;
        llmpb::ChatEvent e;
        e.set_choice_index(choice);
        e.mutable_finish()->set_reason(FinishReasonFromGemini(*f, state.called_tools));
        out.push_back(std::move(e));
      }
    }
  }
  // usageMetadata is cumulative: the last one seen is the answer's.
  if (const auto* m = JsonField(v, "usageMetadata"); m && m->is_object()) {
    usage_ = UsageFromGemini(*m);
    has_usage_ = true;
  }
  return absl::OkStatus();
}

absl::Status GeminiDecoder::FeedEvent(std::string_view, std::string_view data,
                                      std::vector<llmpb::ChatEvent>& out) {
  return Feed(data, out);
}

absl::Status GeminiDecoder::FeedResponse(std::string_view body, std::vector<llmpb::ChatEvent>& out) {
  return Feed(body, out);
}

void GeminiDecoder::Finish(std::vector<llmpb::ChatEvent>& out) {
  if (closed_) return;
  closed_ = true;
  candidates_[0];  // the answer has at least one candidate, and every one finishes
  for (auto& [choice, state] : candidates_) {
    if (state.finished) continue;
    state.finished = true;
    llmpb::ChatEvent e;
    e.set_choice_index(choice);
    e.mutable_finish()->set_reason(state.called_tools ? llmpb::FINISH_REASON_TOOL_CALLS
                                                      : llmpb::FINISH_REASON_STOP);
    out.push_back(std::move(e));
  }
  AppendFinalUsage(has_usage_, usage_, prompt_estimate_, output_chars_, &usage_estimated_, out);
}

namespace {

class GeminiGenerateCodec : public UpstreamCodec {
 public:
  llmpb::Protocol protocol() const override { return llmpb::PROTOCOL_GEMINI; }

  UpstreamCall BuildCall(const llmpb::ChatRequest& request, const CallTarget& target) const override {
    UpstreamCall call;
    call.url = absl::StrCat(target.provider->base_url, "/v1beta/models/", target.upstream_model,
                            target.stream ? ":streamGenerateContent?alt=sse" : ":generateContent");
    call.headers.push_back("Content-Type: application/json");
    if (!target.provider->api_key.empty()) call.headers.push_back("x-goog-api-key: " + target.provider->api_key);
    if (target.stream) call.headers.push_back("Accept: text/event-stream");
    if (auto raw = PassThroughBody(request, protocol(), target.upstream_model)) {
      call.body = std::move(*raw);
      call.passthrough = true;
    } else {
      call.body = BuildGeminiBody(request);
    }
    return call;
  }

  std::unique_ptr<UpstreamDecoder> NewDecoder(int64_t prompt_estimate) const override {
    return std::make_unique<GeminiDecoder>(prompt_estimate);
  }

  std::string ErrorMessage(std::string_view body) const override {
    boost::system::error_code ec;
    json::value v = json::parse(body, ec);
    // Errors come as an object, or (from streamGenerateContent without alt) in an array.
    if (!ec && v.is_array() && !v.as_array().empty()) v = v.as_array()[0];
    if (ec || !v.is_object()) return "";
    const json::value* err = JsonField(v, "error");
    return err ? JsonString(*err, "message").value_or("") : "";
  }
};

}  // namespace

const UpstreamCodec& GeminiCodec() {
  static const GeminiGenerateCodec codec;
  return codec;
}

}  // namespace nexusflow::connector

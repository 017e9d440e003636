#include "gateway/protocols/openai.h"

#include <boost/json.hpp>

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "libs/common/json_util.h"
#include "libs/common/money.h"
#include "libs/common/sse.h"
#include "services/provider-connector/openai_upstream.h"
#include "services/routing/catalog.h"

// Parsing never throws: each step returns the first invalid parameter it met (with the
// OpenAI-style message), or nothing when the input was fine.

namespace nexusflow::gateway::openai {
namespace json = boost::json;
using llm::v1::ChatEvent;

namespace {

struct Invalid {
  std::string message;
  std::string param;
};
using Check = std::optional<Invalid>;

#define NF_CHECK(expr)             \
  do {                             \
    if (Check c_ = (expr)) return c_; \
  } while (0)

Invalid Bad(std::string param, std::string message) { return Invalid{std::move(message), std::move(param)}; }
Invalid BadType(const std::string& param, const char* expected) {
  return Bad(param, absl::StrCat("Invalid type for '", param, "': expected ", expected, "."));
}
Invalid Missing(const std::string& param) {
  return Bad(param, absl::StrCat("Missing required parameter: '", param, "'."));
}

// A field that is present and not null.
const json::value* Given(const json::value& v, std::string_view key) {
  const json::value* f = JsonField(v, key);
  return f && !f->is_null() ? f : nullptr;
}

Check NumberIn(const json::value& v, const std::string& param, double lo, double hi, double* out) {
  double d;
  if (v.is_double()) d = v.get_double();
  else if (v.is_int64()) d = static_cast<double>(v.get_int64());
  else if (v.is_uint64()) d = static_cast<double>(v.get_uint64());
  else return BadType(param, "a number");
  if (d < lo || d > hi)
    return Bad(param, absl::StrCat("Invalid '", param, "': ", d, " is not between ", lo, " and ", hi, "."));
  *out = d;
  return std::nullopt;
}

Check IntIn(const json::value& v, const std::string& param, int64_t lo, int64_t hi, int64_t* out) {
  int64_t n;
  if (v.is_int64()) n = v.get_int64();
  else if (v.is_uint64() && v.get_uint64() <= static_cast<uint64_t>(INT64_MAX)) n = static_cast<int64_t>(v.get_uint64());
  else if (auto whole = v.is_double() ? WholeNumber(v.get_double()) : std::nullopt) n = *whole;  // 2.0 from a JS client
  else return BadType(param, "an integer");
  if (n < lo || n > hi)
    return Bad(param, absl::StrCat("Invalid '", param, "': ", n, " is not between ", lo, " and ", hi, "."));
  *out = n;
  return std::nullopt;
}

Check Str(const json::value& v, const std::string& param, std::string* out) {
  if (!v.is_string()) return BadType(param, "a string");
  *out = std::string(v.get_string());
  return std::nullopt;
}

Check Bool(const json::value& v, const std::string& param, bool* out) {
  if (!v.is_bool()) return BadType(param, "a boolean");
  *out = v.get_bool();
  return std::nullopt;
}

// DashScope-style `cache_control: {"type":"ephemeral", "ttl"?: "5m"|"1h"}` on a part.
Check CacheMark(const json::value& part, const std::string& pp, llm::v1::ContentPart* out) {
  const json::value* cc = Given(part, "cache_control");
  if (!cc) return std::nullopt;
  std::string cp = pp + ".cache_control";
  if (!cc->is_object()) return BadType(cp, "an object");
  if (JsonString(*cc, "type").value_or("") != "ephemeral")
    return Bad(cp + ".type", absl::StrCat("Invalid value for '", cp, ".type': expected 'ephemeral'."));
  auto* mark = out->mutable_cache_control();
  if (const json::value* ttl = Given(*cc, "ttl")) {
    std::string t;
    NF_CHECK(Str(*ttl, cp + ".ttl", &t));
    if (t == "1h") mark->mutable_ttl()->set_seconds(3600);
    else if (t == "5m") mark->mutable_ttl()->set_seconds(300);
    else return Bad(cp + ".ttl", absl::StrCat("Invalid value for '", cp, ".ttl': '", t, "' (5m or 1h)."));
  }
  return std::nullopt;
}

// `content` of a message: a string or an array of parts. `text_only` for roles whose
// content may only hold text parts (system, developer, tool, assistant).
Check ParseContent(const json::value& content, const std::string& param, bool text_only,
                   llm::v1::Message* m) {
  if (content.is_null()) return std::nullopt;
  if (content.is_string()) {
    m->add_parts()->set_text(std::string(content.get_string()));
    return std::nullopt;
  }
  if (!content.is_array()) return BadType(param, "a string or an array of content parts");
  const auto& parts = content.get_array();
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string pp = absl::StrCat(param, "[", i, "]");
    const auto& part = parts[i];
    if (!part.is_object()) return BadType(pp, "an object");
    const json::value* tv = Given(part, "type");
    if (!tv) return Missing(pp + ".type");
    std::string type;
    NF_CHECK(Str(*tv, pp + ".type", &type));
    llm::v1::ContentPart* out = nullptr;
    if (type == "text") {
      const auto* t = Given(part, "text");
      if (!t) return Missing(pp + ".text");
      out = m->add_parts();
      NF_CHECK(Str(*t, pp + ".text", out->mutable_text()));
    } else if (type == "refusal" && m->role() == llm::v1::ROLE_ASSISTANT) {
      continue;  // an echoed refusal part: nothing to send back
    } else if (type == "image_url" && !text_only) {
      const auto* iu = Given(part, "image_url");
      std::string up = pp + ".image_url";
      if (!iu) return Missing(up);
      out = m->add_parts();
      auto* image = out->mutable_image();
      if (iu->is_string()) {
        image->set_url(std::string(iu->get_string()));
      } else if (iu->is_object()) {
        const auto* url = Given(*iu, "url");
        if (!url) return Missing(up + ".url");
        NF_CHECK(Str(*url, up + ".url", image->mutable_url()));
        if (const auto* d = Given(*iu, "detail")) {
          NF_CHECK(Str(*d, up + ".detail", image->mutable_detail()));
          const std::string& detail = image->detail();
          if (detail != "auto" && detail != "low" && detail != "high")
            return Bad(up + ".detail", absl::StrCat("Invalid value for '", up, ".detail': '", detail,
                                                    "' (auto, low or high)."));
        }
      } else {
        return BadType(up, "an object");
      }
      if (image->url().empty()) return Bad(up + ".url", absl::StrCat("Invalid '", up, ".url': must not be empty."));
    } else if (type == "input_audio") {
      return Bad(pp + ".type", absl::StrCat("Invalid value for '", pp,
                                            ".type': audio input ('input_audio') is not supported by this gateway."));
    } else {
      return Bad(pp + ".type", absl::StrCat("Invalid value for '", pp, ".type': '", type,
                                            text_only ? "' is not supported here (text)."
                                                      : "' is not supported (text, image_url)."));
    }
    NF_CHECK(CacheMark(part, pp, out));
  }
  return std::nullopt;
}

Check ParseToolCalls(const json::value& calls, const std::string& p, llm::v1::Message* m) {
  if (!calls.is_array()) return BadType(p, "an array");
  for (size_t j = 0; j < calls.get_array().size(); ++j) {
    const auto& call = calls.get_array()[j];
    std::string cp = absl::StrCat(p, "[", j, "]");
    if (!call.is_object()) return BadType(cp, "an object");
    const json::value* id = Given(call, "id");
    if (!id) return Missing(cp + ".id");
    if (const json::value* t = Given(call, "type"); t && !(t->is_string() && t->get_string() == "function"))
      return Bad(cp + ".type", absl::StrCat("Invalid value for '", cp, ".type': expected 'function'."));
    const json::value* fn = Given(call, "function");
    if (!fn) return Missing(cp + ".function");
    if (!fn->is_object()) return BadType(cp + ".function", "an object");
    const json::value* name = Given(*fn, "name");
    if (!name) return Missing(cp + ".function.name");
    auto* tc = m->add_parts()->mutable_tool_call();
    NF_CHECK(Str(*id, cp + ".id", tc->mutable_id()));
    NF_CHECK(Str(*name, cp + ".function.name", tc->mutable_name()));
    if (const json::value* args = Given(*fn, "arguments")) {
      NF_CHECK(Str(*args, cp + ".function.arguments", tc->mutable_arguments_json()));
      if (tc->arguments_json().empty()) tc->set_arguments_json("{}");
    } else {
      tc->set_arguments_json("{}");
    }
  }
  return std::nullopt;
}

Check ParseMessages(const json::value& v, llm::v1::ChatRequest* req) {
  if (!v.is_array()) return BadType("messages", "an array");
  const auto& msgs = v.get_array();
  if (msgs.empty()) return Bad("messages", "Invalid 'messages': empty array. Expected an array with minimum length 1.");
  for (size_t i = 0; i < msgs.size(); ++i) {
    std::string p = absl::StrCat("messages[", i, "]");
    const auto& msg = msgs[i];
    if (!msg.is_object()) return BadType(p, "an object");
    const json::value* rv = Given(msg, "role");
    if (!rv) return Missing(p + ".role");
    std::string role;
    NF_CHECK(Str(*rv, p + ".role", &role));
    auto* m = req->add_messages();
    if (const json::value* name = Given(msg, "name")) NF_CHECK(Str(*name, p + ".name", m->mutable_name()));
    const json::value* content = JsonField(msg, "content");
    std::string cp = p + ".content";
    if (role == "system" || role == "developer") {
      m->set_role(llm::v1::ROLE_SYSTEM);
      if (!content || content->is_null()) return Missing(cp);
      NF_CHECK(ParseContent(*content, cp, /*text_only=*/true, m));
    } else if (role == "user") {
      m->set_role(llm::v1::ROLE_USER);
      if (!content || content->is_null()) return Missing(cp);
      NF_CHECK(ParseContent(*content, cp, /*text_only=*/false, m));
    } else if (role == "assistant") {
      m->set_role(llm::v1::ROLE_ASSISTANT);
      if (content) NF_CHECK(ParseContent(*content, cp, /*text_only=*/true, m));
      if (const auto* calls = Given(msg, "tool_calls")) NF_CHECK(ParseToolCalls(*calls, p + ".tool_calls", m));
    } else if (role == "tool") {
      m->set_role(llm::v1::ROLE_TOOL);
      const json::value* id = Given(msg, "tool_call_id");
      if (!id) return Missing(p + ".tool_call_id");
      auto* part = m->add_parts();
      auto* tr = part->mutable_tool_result();
      NF_CHECK(Str(*id, p + ".tool_call_id", tr->mutable_tool_call_id()));
      if (content && content->is_array()) {
        llm::v1::Message tmp;
        NF_CHECK(ParseContent(*content, cp, /*text_only=*/true, &tmp));
        for (const auto& tp : tmp.parts()) {
          tr->mutable_content()->append(tp.text());
          if (tp.has_cache_control()) *part->mutable_cache_control() = tp.cache_control();
        }
      } else if (content && !content->is_null()) {
        NF_CHECK(Str(*content, cp, tr->mutable_content()));
      }
    } else {
      return Bad(p + ".role", absl::StrCat("Invalid value for '", p, ".role': '", role,
                                           "' (system, developer, user, assistant, tool)."));
    }
  }
  return std::nullopt;
}

Check ParseTools(const json::value& body, llm::v1::ChatRequest* req) {
  if (const auto* tools = Given(body, "tools")) {
    if (!tools->is_array()) return BadType("tools", "an array");
    for (size_t i = 0; i < tools->get_array().size(); ++i) {
      const auto& t = tools->get_array()[i];
      std::string p = absl::StrCat("tools[", i, "]");
      if (!t.is_object()) return BadType(p, "an object");
      if (JsonString(t, "type").value_or("") != "function")
        return Bad(p + ".type", absl::StrCat("Invalid value for '", p, ".type': only 'function' tools are supported."));
      const json::value* fn = Given(t, "function");
      if (!fn) return Missing(p + ".function");
      if (!fn->is_object()) return BadType(p + ".function", "an object");
      const json::value* nv = Given(*fn, "name");
      if (!nv) return Missing(p + ".function.name");
      auto* tool = req->add_tools();
      NF_CHECK(Str(*nv, p + ".function.name", tool->mutable_name()));
      if (tool->name().empty()) return Bad(p + ".function.name", absl::StrCat("Invalid '", p, ".function.name': must not be empty."));
      if (const auto* d = Given(*fn, "description"))
        NF_CHECK(Str(*d, p + ".function.description", tool->mutable_description()));
      if (const auto* params = Given(*fn, "parameters")) {
        if (!params->is_object()) return BadType(p + ".function.parameters", "a JSON Schema object");
        tool->set_parameters_json(json::serialize(*params));
      }
      if (const auto* s = Given(*fn, "strict")) {
        bool strict = false;
        NF_CHECK(Bool(*s, p + ".function.strict", &strict));
        tool->set_strict(strict);
      }
    }
  }
  if (const auto* tc = Given(body, "tool_choice")) {
    auto* choice = req->mutable_tool_choice();
    if (tc->is_string()) {
      std::string s(tc->get_string());
      if (s == "auto") choice->set_mode(llm::v1::ToolChoice::MODE_AUTO);
      else if (s == "none") choice->set_mode(llm::v1::ToolChoice::MODE_NONE);
      else if (s == "required") choice->set_mode(llm::v1::ToolChoice::MODE_REQUIRED);
      else return Bad("tool_choice", absl::StrCat("Invalid value for 'tool_choice': '", s, "' (none, auto, required or a function)."));
    } else {
      const json::value* fn = tc->is_object() ? Given(*tc, "function") : nullptr;
      auto name = fn ? JsonString(*fn, "name") : std::nullopt;
      if (!name) return Bad("tool_choice", "Invalid 'tool_choice': expected {\"type\":\"function\",\"function\":{\"name\":...}}.");
      bool known = std::any_of(req->tools().begin(), req->tools().end(),
                               [&](const auto& t) { return t.name() == *name; });
      if (!known) return Bad("tool_choice", absl::StrCat("Invalid 'tool_choice': no tool named '", *name, "' in 'tools'."));
      choice->set_function_name(*name);
    }
    if (req->tools_size() == 0 && choice->mode() != llm::v1::ToolChoice::MODE_NONE &&
        choice->mode() != llm::v1::ToolChoice::MODE_AUTO)
      return Bad("tool_choice", "Invalid 'tool_choice': 'tools' must be given when a tool is required.");
  }
  if (const auto* ptc = Given(body, "parallel_tool_calls")) {
    bool parallel = true;
    NF_CHECK(Bool(*ptc, "parallel_tool_calls", &parallel));
    req->set_parallel_tool_calls(parallel);
    if (!parallel && req->tools_size() > 0) req->mutable_tool_choice()->set_disable_parallel_tool_use(true);
  }
  return std::nullopt;
}

Check ParseResponseFormat(const json::value& v, llm::v1::ResponseFormat* rf) {
  if (!v.is_object()) return BadType("response_format", "an object");
  const json::value* tv = Given(v, "type");
  if (!tv) return Missing("response_format.type");
  std::string type;
  NF_CHECK(Str(*tv, "response_format.type", &type));
  if (type == "text") {
    rf->set_type(llm::v1::ResponseFormat::TYPE_TEXT);
  } else if (type == "json_object") {
    rf->set_type(llm::v1::ResponseFormat::TYPE_JSON_OBJECT);
  } else if (type == "json_schema") {
    rf->set_type(llm::v1::ResponseFormat::TYPE_JSON_SCHEMA);
    const json::value* js = Given(v, "json_schema");
    if (!js) return Missing("response_format.json_schema");
    if (!js->is_object()) return BadType("response_format.json_schema", "an object");
    const json::value* name = Given(*js, "name");
    if (!name) return Missing("response_format.json_schema.name");
    NF_CHECK(Str(*name, "response_format.json_schema.name", rf->mutable_name()));
    if (rf->name().empty() || rf->name().size() > 64)
      return Bad("response_format.json_schema.name",
                 "Invalid 'response_format.json_schema.name': 1 to 64 characters.");
    if (const json::value* schema = Given(*js, "schema")) {
      if (!schema->is_object()) return BadType("response_format.json_schema.schema", "a JSON Schema object");
      rf->set_schema_json(json::serialize(*schema));
    }
    if (const json::value* strict = Given(*js, "strict")) {
      bool s = false;
      NF_CHECK(Bool(*strict, "response_format.json_schema.strict", &s));
      rf->set_strict(s);
    }
    if (const json::value* d = Given(*js, "description"); d && !d->is_string())
      return BadType("response_format.json_schema.description", "a string");
  } else {
    return Bad("response_format.type", absl::StrCat("Invalid value for 'response_format.type': '", type,
                                                    "' (text, json_object or json_schema)."));
  }
  return std::nullopt;
}

Check ParseSampling(const json::value& body, llm::v1::ChatRequest* req) {
  auto* s = req->mutable_sampling();
  double d = 0;
  int64_t n = 0;
  if (auto* v = Given(body, "temperature")) { NF_CHECK(NumberIn(*v, "temperature", 0, 2, &d)); s->set_temperature(d); }
  if (auto* v = Given(body, "top_p")) { NF_CHECK(NumberIn(*v, "top_p", 0, 1, &d)); s->set_top_p(d); }
  if (auto* v = Given(body, "presence_penalty")) { NF_CHECK(NumberIn(*v, "presence_penalty", -2, 2, &d)); s->set_presence_penalty(d); }
  if (auto* v = Given(body, "frequency_penalty")) { NF_CHECK(NumberIn(*v, "frequency_penalty", -2, 2, &d)); s->set_frequency_penalty(d); }
  if (auto* v = Given(body, "seed")) { NF_CHECK(IntIn(*v, "seed", INT64_MIN, INT64_MAX, &n)); s->set_seed(n); }
  if (auto* v = Given(body, "n")) { NF_CHECK(IntIn(*v, "n", 1, 128, &n)); s->set_n(static_cast<int32_t>(n)); }
  // max_completion_tokens is the newer name and wins; max_tokens is still validated.
  if (auto* v = Given(body, "max_tokens")) {
    NF_CHECK(IntIn(*v, "max_tokens", 1, INT32_MAX, &n));
    s->set_max_output_tokens(static_cast<int32_t>(n));
  }
  if (auto* v = Given(body, "max_completion_tokens")) {
    NF_CHECK(IntIn(*v, "max_completion_tokens", 1, INT32_MAX, &n));
    s->set_max_output_tokens(static_cast<int32_t>(n));
  }
  if (auto* v = Given(body, "stop")) {
    if (v->is_string()) {
      s->add_stop_sequences(std::string(v->get_string()));
    } else if (v->is_array()) {
      if (v->get_array().size() > 4) return Bad("stop", "Invalid 'stop': at most 4 sequences.");
      for (size_t i = 0; i < v->get_array().size(); ++i)
        NF_CHECK(Str(v->get_array()[i], absl::StrCat("stop[", i, "]"), s->add_stop_sequences()));
    } else {
      return BadType("stop", "a string or an array of strings");
    }
  }
  if (auto* v = Given(body, "response_format")) NF_CHECK(ParseResponseFormat(*v, req->mutable_response_format()));
  // logprobs/top_logprobs are validated but have no canonical field yet: they would go in
  // SamplingParams (logprobs, top_logprobs) and come back as a per-token ChatEvent.
  bool logprobs = false;
  if (auto* v = Given(body, "logprobs")) NF_CHECK(Bool(*v, "logprobs", &logprobs));
  if (auto* v = Given(body, "top_logprobs")) {
    NF_CHECK(IntIn(*v, "top_logprobs", 0, 20, &n));
    if (!logprobs) return Bad("top_logprobs", "Invalid 'top_logprobs': 'logprobs' must be true when 'top_logprobs' is set.");
  }
  return std::nullopt;
}

// reasoning_effort → a thinking budget in tokens (what Qwen's thinking_budget and
// Anthropic's budget_tokens take): minimal 512, low 1024, medium 4096, high 16384;
// "none" turns thinking off.
Check ParseReasoning(const json::value& body, llm::v1::ChatRequest* req) {
  if (const auto* t = Given(body, "enable_thinking")) {
    bool enabled = false;
    NF_CHECK(Bool(*t, "enable_thinking", &enabled));
    req->mutable_thinking()->set_enabled(enabled);
  }
  if (const auto* t = Given(body, "thinking_budget")) {
    int64_t budget = 0;
    NF_CHECK(IntIn(*t, "thinking_budget", 1, INT32_MAX, &budget));
    req->mutable_thinking()->set_budget_tokens(static_cast<int32_t>(budget));
  }
  if (const auto* e = Given(body, "reasoning_effort")) {
    std::string effort;
    NF_CHECK(Str(*e, "reasoning_effort", &effort));
    static const std::map<std::string, int32_t> kBudget = {
        {"minimal", 512}, {"low", 1024}, {"medium", 4096}, {"high", 16384}};
    auto* th = req->mutable_thinking();
    if (effort == "none") {
      th->set_enabled(false);
      th->set_budget_tokens(0);
    } else if (auto it = kBudget.find(effort); it != kBudget.end()) {
      th->set_enabled(true);
      th->set_include_thoughts(true);
      if (th->budget_tokens() == 0) th->set_budget_tokens(it->second);
    } else {
      return Bad("reasoning_effort", absl::StrCat("Invalid value for 'reasoning_effort': '", effort,
                                                  "' (low, medium or high)."));
    }
  }
  return std::nullopt;
}

Check ParseBody(const json::value& obj, ParsedChat* out) {
  auto& req = out->request;
  const json::value* model = Given(obj, "model");
  if (!model) return Missing("model");
  NF_CHECK(Str(*model, "model", req.mutable_model()));
  if (req.model().empty()) return Bad("model", "Invalid 'model': must not be empty.");
  const json::value* messages = Given(obj, "messages");
  if (!messages) return Missing("messages");
  NF_CHECK(ParseMessages(*messages, &req));
  NF_CHECK(ParseTools(obj, &req));
  NF_CHECK(ParseSampling(obj, &req));
  NF_CHECK(ParseReasoning(obj, &req));
  bool b = false;
  if (const auto* s = Given(obj, "stream")) { NF_CHECK(Bool(*s, "stream", &b)); req.set_stream(b); }
  if (const auto* so = Given(obj, "stream_options")) {
    if (!req.stream()) return Bad("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
    if (!so->is_object()) return BadType("stream_options", "an object");
    if (const auto* iu = Given(*so, "include_usage")) NF_CHECK(Bool(*iu, "stream_options.include_usage", &out->include_usage));
    req.set_include_usage(out->include_usage);
  }
  if (const auto* u = Given(obj, "user")) NF_CHECK(Str(*u, "user", req.mutable_user()));
  if (const auto* c = Given(obj, "enable_context_caching")) {
    NF_CHECK(Bool(*c, "enable_context_caching", &b));
    req.set_enable_context_caching(b);
  }
  return std::nullopt;
}

#undef NF_CHECK

}  // namespace

bool ParseChatRequest(std::string_view body, ParsedChat* out, HttpError* error) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) {
    *error = {400, absl::StrCat("We could not parse the JSON body of your request: ",
                                ec ? ec.message() : "expected a JSON object", "."), "", ""};
    return false;
  }
  if (Check bad = ParseBody(v, out)) {
    *error = {400, bad->message, bad->param, ""};
    return false;
  }
  out->request.set_protocol(llm::v1::PROTOCOL_OPENAI);
  // An OpenAI-compatible upstream gets the caller's own body (unknown fields included),
  // unless it carries a NexusFlow extension that only the translation understands.
  if (!out->request.enable_context_caching() && !Given(v, "enable_context_caching")) {
    out->request.mutable_raw()->set_protocol(llm::v1::PROTOCOL_OPENAI);
    out->request.mutable_raw()->set_body(std::string(body));
  }
  return true;
}

namespace {

// prompt_tokens is the whole prompt: uncached input + cache reads + cache writes;
// completion_tokens includes reasoning (§A, §E).
json::object UsageJson(const llm::v1::Usage& u) {
  int64_t prompt = u.input_tokens() + u.cache_read_tokens() + u.cache_write_tokens();
  return json::object{
      {"prompt_tokens", prompt},
      {"completion_tokens", u.output_tokens()},
      {"total_tokens", prompt + u.output_tokens()},
      {"prompt_tokens_details", json::object{{"cached_tokens", u.cache_read_tokens()},
                                             {"cache_write_tokens", u.cache_write_tokens()}}},
      {"completion_tokens_details", json::object{{"reasoning_tokens", u.reasoning_tokens()}}}};
}

// Streams render one `choices[]` entry per ChatEvent.choice_index (n > 1). A ChatAnswer
// holds a single choice, so a sync body has exactly one, index 0.
class OpenAiRenderer : public ChatRenderer {
 public:
  OpenAiRenderer(std::string id, std::string model, int64_t created, bool include_usage)
      : id_(std::move(id)), model_(std::move(model)), created_(created), include_usage_(include_usage) {}

  ApiProtocol protocol() const override { return ApiProtocol::kOpenAI; }

  std::string SyncBody(const ChatAnswer& a) override {
    json::array choices;
    for (size_t i = 0; i < a.choice_count(); ++i) {
      const ChoiceContent& c = a.choice(i);
      choices.push_back(json::object{
          {"index", static_cast<int64_t>(i)},
          {"message", Message(c)},
          {"logprobs", nullptr},
          {"finish_reason", std::string(connector::FinishReasonToOpenAi(c.finish))}});
    }
    json::object body{
        {"id", id_},
        {"object", "chat.completion"},
        {"created", created_},
        {"model", model_},
        {"choices", std::move(choices)},
        {"usage", UsageJson(a.usage)}};
    return json::serialize(body);
  }

  static json::object Message(const ChoiceContent& a) {
    json::object message{{"role", "assistant"}};
    message["content"] = a.text.empty() && !a.tool_calls.empty() ? json::value(nullptr) : json::value(a.text);
    // What DeepSeek / Qwen clients read the reasoning from.
    if (!a.reasoning.empty()) message["reasoning_content"] = a.reasoning;
    if (!a.tool_calls.empty()) {
      json::array calls;
      for (const auto& c : a.tool_calls)
        calls.push_back(json::object{{"id", c.id}, {"type", "function"},
                                     {"function", json::object{{"name", c.name}, {"arguments", c.arguments}}}});
      message["tool_calls"] = std::move(calls);
    }
    message["refusal"] = nullptr;
    return message;
  }

  std::string StreamEvent(const ChatEvent& e) override {
    const int32_t index = e.choice_index();
    switch (e.event_case()) {
      case ChatEvent::kStart:
        return Delta(index, json::object{{"content", ""}});
      case ChatEvent::kText:
        return Delta(index, json::object{{"content", e.text().text()}});
      case ChatEvent::kReasoning:
        if (e.reasoning().text().empty()) return "";  // signatures have no OpenAI form
        return Delta(index, json::object{{"reasoning_content", e.reasoning().text()}});
      case ChatEvent::kToolCallStart:
        return Delta(index, json::object{{"tool_calls", json::array{json::object{
                                                            {"index", e.tool_call_start().index()},
                                                            {"id", e.tool_call_start().id()},
                                                            {"type", "function"},
                                                            {"function", json::object{{"name", e.tool_call_start().name()},
                                                                                      {"arguments", ""}}}}}}});
      case ChatEvent::kToolCallDelta:
        return Delta(index, json::object{{"tool_calls", json::array{json::object{
                                                            {"index", e.tool_call_delta().index()},
                                                            {"function", json::object{{"arguments", e.tool_call_delta().arguments_fragment()}}}}}}});
      case ChatEvent::kFinish: {
        auto& c = choices_[index];
        if (c.finished) return "";
        std::string out = c.opened ? "" : Delta(index, json::object{{"content", ""}});
        c.finished = true;
        return out + Chunk(index, json::object{}, connector::FinishReasonToOpenAi(e.finish().reason()));
      }
      case ChatEvent::kUsage: {
        std::string out = FinishOpenChoices();
        if (!include_usage_) return out;
        json::object chunk = Base();
        chunk["choices"] = json::array{};
        chunk["usage"] = UsageJson(e.usage());
        return out + SseData(json::serialize(chunk));
      }
      default:
        return "";
    }
  }

  std::string StreamError(const HttpError& error) override {
    return SseData(ErrorBody(ApiProtocol::kOpenAI, error, ""));
  }

  std::string StreamEnd() override { return FinishOpenChoices() + SseData("[DONE]"); }

 private:
  struct ChoiceState {
    bool opened = false;    // a delta carrying role was sent
    bool finished = false;  // a finish_reason was sent
  };

  json::object Base() const {
    return json::object{{"id", id_}, {"object", "chat.completion.chunk"}, {"created", created_}, {"model", model_}};
  }

  // A delta for `index`; the first one of each choice carries the role.
  std::string Delta(int32_t index, json::object delta) {
    auto& c = choices_[index];
    if (!c.opened) {
      c.opened = true;
      delta["role"] = "assistant";
    }
    return Chunk(index, std::move(delta), std::nullopt);
  }

  std::string Chunk(int32_t index, json::object delta, std::optional<std::string_view> finish_reason) {
    json::object chunk = Base();
    chunk["choices"] = json::array{json::object{
        {"index", index},
        {"delta", std::move(delta)},
        {"logprobs", nullptr},
        {"finish_reason", finish_reason ? json::value(json::string(*finish_reason)) : json::value(nullptr)}}};
    if (include_usage_) chunk["usage"] = nullptr;
    return SseData(json::serialize(chunk));
  }

  // The SDK's finalChatCompletion() needs a finish_reason on every choice it saw.
  std::string FinishOpenChoices() {
    std::string out;
    for (auto& [index, c] : choices_) {
      if (c.finished) continue;
      c.finished = true;
      out += Chunk(index, json::object{}, "stop");
    }
    return out;
  }

  std::string id_;
  std::string model_;
  int64_t created_;
  bool include_usage_;
  std::map<int32_t, ChoiceState> choices_;
};

}  // namespace

std::unique_ptr<ChatRenderer> NewChatRenderer(std::string completion_id, std::string model,
                                              int64_t created, bool include_usage) {
  return std::make_unique<OpenAiRenderer>(std::move(completion_id), std::move(model), created,
                                          include_usage);
}

namespace {

std::string Iso8601Utc(int64_t unix_seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix_seconds), absl::UTCTimeZone());
}

json::object ModelObject(const routing::v1::Model& m) {
  json::array protocols, capabilities;
  for (const auto& name : routing::InterfaceNames(m)) protocols.push_back(json::string(name));
  for (const auto& c : m.capabilities()) capabilities.push_back(json::string(c));
  const auto& price = m.price();
  // Media models are priced per image or per second of video, token models per million.
  json::object pricing{{"currency", "USD"}};
  if (price.image_nano_usd() > 0 || price.video_second_nano_usd() > 0) {
    if (price.image_nano_usd() > 0) pricing["image"] = FormatUsd(price.image_nano_usd());
    if (price.video_second_nano_usd() > 0) pricing["video_second"] = FormatUsd(price.video_second_nano_usd());
    pricing["unit"] = price.image_nano_usd() > 0 ? "per_image" : "per_second";
  } else {
    pricing["unit"] = "per_million_tokens";
    pricing["input"] = FormatUsd(price.input_nano_usd_per_mtok());
    pricing["output"] = FormatUsd(price.output_nano_usd_per_mtok());
    pricing["cache_read"] = FormatUsd(price.cache_read_nano_usd_per_mtok());
    pricing["cache_write"] = FormatUsd(price.cache_write_nano_usd_per_mtok());
    if (price.cache_write_1h_nano_usd_per_mtok() > 0)
      pricing["cache_write_1h"] = FormatUsd(price.cache_write_1h_nano_usd_per_mtok());
  }
  // OpenAI's model object, with the fields the Anthropic SDK's models.list() reads (type,
  // display_name, created_at) and NexusFlow's own; token limits only where they apply.
  json::object o{{"id", m.id()},
                 {"object", "model"},
                 {"created", m.created_unix()},
                 {"owned_by", m.owned_by()},
                 {"type", "model"},
                 {"display_name", m.id()},
                 {"created_at", Iso8601Utc(m.created_unix())},
                 {"supported_protocols", std::move(protocols)},
                 {"capabilities", std::move(capabilities)}};
  if (m.context_window() > 0) o["context_window"] = m.context_window();
  if (m.max_output_tokens() > 0) o["max_output_tokens"] = m.max_output_tokens();
  o["pricing"] = std::move(pricing);
  return o;
}

}  // namespace

std::string ModelJson(const routing::v1::Model& model) { return json::serialize(ModelObject(model)); }

std::string ModelListJson(const routing::v1::CatalogSnapshot& catalog,
                          const std::vector<std::string>& allowed) {
  json::array data;
  for (const auto& m : catalog.models()) {
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), m.id()) == allowed.end()) continue;
    data.push_back(ModelObject(m));
  }
  // One page: the Anthropic SDK pages by first_id / last_id / has_more.
  json::object list{{"object", "list"}, {"data", std::move(data)}, {"has_more", false}};
  const json::array& d = list["data"].as_array();
  list["first_id"] = d.empty() ? json::value(nullptr) : d.front().as_object().at("id");
  list["last_id"] = d.empty() ? json::value(nullptr) : d.back().as_object().at("id");
  return json::serialize(list);
}

}  // namespace nexusflow::gateway::openai

#include "gateway/protocols/openai.h"

#include <boost/json.hpp>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "libs/common/json_util.h"
#include "libs/common/money.h"
#include "libs/common/sse.h"
#include "services/provider-connector/openai_upstream.h"
#include "services/routing/catalog.h"

namespace nexusflow::gateway::openai {
namespace json = boost::json;
using llm::v1::ChatEvent;

namespace {

struct Invalid {
  std::string message;
  std::string param;
};

[[noreturn]] void Fail(std::string param, std::string message) {
  throw Invalid{std::move(message), std::move(param)};
}

double NumberIn(const json::value& v, const std::string& param, double lo, double hi) {
  double d;
  if (v.is_double()) d = v.get_double();
  else if (v.is_int64()) d = static_cast<double>(v.get_int64());
  else if (v.is_uint64()) d = static_cast<double>(v.get_uint64());
  else Fail(param, absl::StrCat("Invalid type for '", param, "': expected a number."));
  if (d < lo || d > hi)
    Fail(param, absl::StrCat("Invalid '", param, "': ", d, " is not between ", lo, " and ", hi, "."));
  return d;
}

int64_t IntIn(const json::value& v, const std::string& param, int64_t lo, int64_t hi) {
  int64_t n;
  if (v.is_int64()) n = v.get_int64();
  else if (v.is_uint64() && v.get_uint64() <= static_cast<uint64_t>(INT64_MAX)) n = static_cast<int64_t>(v.get_uint64());
  else Fail(param, absl::StrCat("Invalid type for '", param, "': expected an integer."));
  if (n < lo || n > hi)
    Fail(param, absl::StrCat("Invalid '", param, "': ", n, " is not between ", lo, " and ", hi, "."));
  return n;
}

const std::string& Str(const json::value& v, const std::string& param) {
  static thread_local std::string s;
  if (!v.is_string()) Fail(param, absl::StrCat("Invalid type for '", param, "': expected a string."));
  s = std::string(v.get_string());
  return s;
}

bool Bool(const json::value& v, const std::string& param) {
  if (!v.is_bool()) Fail(param, absl::StrCat("Invalid type for '", param, "': expected a boolean."));
  return v.get_bool();
}

void ParseContent(const json::value& content, const std::string& param, llm::v1::Message* m) {
  if (content.is_null()) return;
  if (content.is_string()) {
    m->add_parts()->set_text(std::string(content.get_string()));
    return;
  }
  if (!content.is_array())
    Fail(param, absl::StrCat("Invalid type for '", param, "': expected a string or an array of content parts."));
  const auto& parts = content.get_array();
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string pp = absl::StrCat(param, "[", i, "]");
    const auto& part = parts[i];
    if (!part.is_object()) Fail(pp, absl::StrCat("Invalid '", pp, "': expected an object."));
    auto type = JsonString(part, "type");
    if (!type) Fail(pp + ".type", absl::StrCat("Missing required parameter: '", pp, ".type'."));
    if (*type == "text") {
      const auto* t = JsonField(part, "text");
      if (!t) Fail(pp + ".text", absl::StrCat("Missing required parameter: '", pp, ".text'."));
      m->add_parts()->set_text(Str(*t, pp + ".text"));
    } else if (*type == "image_url") {
      const auto* iu = JsonField(part, "image_url");
      std::string up = pp + ".image_url";
      if (!iu) Fail(up, absl::StrCat("Missing required parameter: '", up, "'."));
      auto* image = m->add_parts()->mutable_image();
      if (iu->is_string()) {
        image->set_url(std::string(iu->get_string()));
      } else {
        const auto* url = JsonField(*iu, "url");
        if (!url) Fail(up + ".url", absl::StrCat("Missing required parameter: '", up, ".url'."));
        image->set_url(Str(*url, up + ".url"));
        if (auto d = JsonString(*iu, "detail")) image->set_detail(*d);
      }
      if (image->url().empty()) Fail(up + ".url", "Image URL must not be empty.");
    } else {
      Fail(pp + ".type", absl::StrCat("Invalid value for '", pp, ".type': '", *type,
                                      "' is not supported (text, image_url)."));
    }
  }
}

void ParseMessages(const json::value& v, llm::v1::ChatRequest* req) {
  if (!v.is_array()) Fail("messages", "Invalid type for 'messages': expected an array.");
  const auto& msgs = v.get_array();
  if (msgs.empty()) Fail("messages", "Invalid 'messages': empty array. Expected an array with minimum length 1.");
  for (size_t i = 0; i < msgs.size(); ++i) {
    std::string p = absl::StrCat("messages[", i, "]");
    const auto& msg = msgs[i];
    if (!msg.is_object()) Fail(p, absl::StrCat("Invalid '", p, "': expected an object."));
    auto role = JsonString(msg, "role");
    if (!role) Fail(p + ".role", absl::StrCat("Missing required parameter: '", p, ".role'."));
    auto* m = req->add_messages();
    if (auto name = JsonString(msg, "name")) m->set_name(*name);
    const json::value* content = JsonField(msg, "content");
    if (*role == "system" || *role == "developer") {
      m->set_role(llm::v1::ROLE_SYSTEM);
    } else if (*role == "user") {
      m->set_role(llm::v1::ROLE_USER);
      if (!content || content->is_null())
        Fail(p + ".content", absl::StrCat("Missing required parameter: '", p, ".content'."));
    } else if (*role == "assistant") {
      m->set_role(llm::v1::ROLE_ASSISTANT);
    } else if (*role == "tool") {
      m->set_role(llm::v1::ROLE_TOOL);
      auto id = JsonString(msg, "tool_call_id");
      if (!id) Fail(p + ".tool_call_id", absl::StrCat("Missing required parameter: '", p, ".tool_call_id'."));
      auto* tr = m->add_parts()->mutable_tool_result();
      tr->set_tool_call_id(*id);
      if (content && content->is_string()) {
        tr->set_content(std::string(content->get_string()));
      } else if (content && content->is_array()) {
        llm::v1::Message tmp;
        ParseContent(*content, p + ".content", &tmp);
        for (const auto& part : tmp.parts()) tr->mutable_content()->append(part.text());
      }
      continue;
    } else {
      Fail(p + ".role", absl::StrCat("Invalid value for '", p, ".role': '", *role,
                                     "' (system, developer, user, assistant, tool)."));
    }
    if (content) ParseContent(*content, p + ".content", m);
    if (const auto* calls = JsonField(msg, "tool_calls"); calls && !calls->is_null()) {
      if (!calls->is_array()) Fail(p + ".tool_calls", "Invalid type for 'tool_calls': expected an array.");
      for (size_t j = 0; j < calls->get_array().size(); ++j) {
        const auto& call = calls->get_array()[j];
        std::string cp = absl::StrCat(p, ".tool_calls[", j, "]");
        const json::value* fn = JsonField(call, "function");
        auto id = JsonString(call, "id");
        if (!id || !fn || !JsonString(*fn, "name"))
          Fail(cp, absl::StrCat("Invalid '", cp, "': id and function.name are required."));
        auto* tc = m->add_parts()->mutable_tool_call();
        tc->set_id(*id);
        tc->set_name(*JsonString(*fn, "name"));
        tc->set_arguments_json(JsonString(*fn, "arguments").value_or("{}"));
      }
    }
  }
}

void ParseTools(const json::value& body, llm::v1::ChatRequest* req) {
  if (const auto* tools = JsonField(body, "tools"); tools && !tools->is_null()) {
    if (!tools->is_array()) Fail("tools", "Invalid type for 'tools': expected an array.");
    for (size_t i = 0; i < tools->get_array().size(); ++i) {
      const auto& t = tools->get_array()[i];
      std::string p = absl::StrCat("tools[", i, "]");
      if (JsonString(t, "type").value_or("") != "function")
        Fail(p + ".type", absl::StrCat("Invalid '", p, ".type': only 'function' tools are supported."));
      const json::value* fn = JsonField(t, "function");
      if (!fn || !fn->is_object()) Fail(p + ".function", absl::StrCat("Missing required parameter: '", p, ".function'."));
      auto name = JsonString(*fn, "name");
      if (!name || name->empty()) Fail(p + ".function.name", absl::StrCat("Missing required parameter: '", p, ".function.name'."));
      auto* tool = req->add_tools();
      tool->set_name(*name);
      tool->set_description(JsonString(*fn, "description").value_or(""));
      if (const auto* params = JsonField(*fn, "parameters"); params && !params->is_null()) {
        if (!params->is_object()) Fail(p + ".function.parameters", "Invalid 'parameters': expected a JSON Schema object.");
        tool->set_parameters_json(json::serialize(*params));
      }
      tool->set_strict(JsonBool(*fn, "strict").value_or(false));
    }
  }
  if (const auto* tc = JsonField(body, "tool_choice"); tc && !tc->is_null()) {
    auto* choice = req->mutable_tool_choice();
    if (tc->is_string()) {
      std::string s(tc->get_string());
      if (s == "auto") choice->set_mode(llm::v1::ToolChoice::MODE_AUTO);
      else if (s == "none") choice->set_mode(llm::v1::ToolChoice::MODE_NONE);
      else if (s == "required") choice->set_mode(llm::v1::ToolChoice::MODE_REQUIRED);
      else Fail("tool_choice", absl::StrCat("Invalid value for 'tool_choice': '", s, "' (none, auto, required or a function)."));
    } else {
      const json::value* fn = JsonField(*tc, "function");
      auto name = fn ? JsonString(*fn, "name") : std::nullopt;
      if (!name) Fail("tool_choice", "Invalid 'tool_choice': expected {\"type\":\"function\",\"function\":{\"name\":...}}.");
      bool known = std::any_of(req->tools().begin(), req->tools().end(),
                               [&](const auto& t) { return t.name() == *name; });
      if (!known) Fail("tool_choice", absl::StrCat("Invalid 'tool_choice': no tool named '", *name, "' in 'tools'."));
      choice->set_function_name(*name);
    }
    if (req->tools_size() == 0 && choice->mode() != llm::v1::ToolChoice::MODE_NONE &&
        choice->mode() != llm::v1::ToolChoice::MODE_AUTO)
      Fail("tool_choice", "Invalid 'tool_choice': 'tools' must be given when a tool is required.");
  }
  if (const auto* ptc = JsonField(body, "parallel_tool_calls"); ptc && !ptc->is_null())
    req->set_parallel_tool_calls(Bool(*ptc, "parallel_tool_calls"));
}

void ParseSampling(const json::value& body, llm::v1::ChatRequest* req) {
  auto* s = req->mutable_sampling();
  auto field = [&](const char* k) -> const json::value* {
    const json::value* v = JsonField(body, k);
    return v && !v->is_null() ? v : nullptr;
  };
  if (auto* v = field("temperature")) s->set_temperature(NumberIn(*v, "temperature", 0, 2));
  if (auto* v = field("top_p")) s->set_top_p(NumberIn(*v, "top_p", 0, 1));
  if (auto* v = field("presence_penalty")) s->set_presence_penalty(NumberIn(*v, "presence_penalty", -2, 2));
  if (auto* v = field("frequency_penalty")) s->set_frequency_penalty(NumberIn(*v, "frequency_penalty", -2, 2));
  if (auto* v = field("seed")) s->set_seed(IntIn(*v, "seed", INT64_MIN, INT64_MAX));
  if (auto* v = field("n")) {
    int64_t n = IntIn(*v, "n", 1, 128);
    if (n > 1) Fail("n", "Invalid 'n': only n = 1 is supported.");
    s->set_n(1);
  }
  if (auto* v = field("max_completion_tokens")) {
    s->set_max_output_tokens(static_cast<int32_t>(IntIn(*v, "max_completion_tokens", 1, INT32_MAX)));
  } else if (auto* v2 = field("max_tokens")) {
    s->set_max_output_tokens(static_cast<int32_t>(IntIn(*v2, "max_tokens", 1, INT32_MAX)));
  }
  if (auto* v = field("stop")) {
    if (v->is_string()) {
      s->add_stop_sequences(std::string(v->get_string()));
    } else if (v->is_array()) {
      if (v->get_array().size() > 4) Fail("stop", "Invalid 'stop': at most 4 sequences.");
      for (const auto& x : v->get_array()) s->add_stop_sequences(Str(x, "stop"));
    } else {
      Fail("stop", "Invalid type for 'stop': expected a string or an array of strings.");
    }
  }
  if (auto* v = field("response_format")) {
    auto type = JsonString(*v, "type");
    auto* rf = req->mutable_response_format();
    if (!type || *type == "text") {
      rf->set_type(llm::v1::ResponseFormat::TYPE_TEXT);
    } else if (*type == "json_object") {
      rf->set_type(llm::v1::ResponseFormat::TYPE_JSON_OBJECT);
    } else if (*type == "json_schema") {
      rf->set_type(llm::v1::ResponseFormat::TYPE_JSON_SCHEMA);
      const json::value* js = JsonField(*v, "json_schema");
      if (!js || !js->is_object()) Fail("response_format.json_schema", "Missing required parameter: 'response_format.json_schema'.");
      rf->set_name(JsonString(*js, "name").value_or(""));
      rf->set_strict(JsonBool(*js, "strict").value_or(false));
      if (const auto* schema = JsonField(*js, "schema")) rf->set_schema_json(json::serialize(*schema));
    } else {
      Fail("response_format.type", absl::StrCat("Invalid value for 'response_format.type': '", *type, "'."));
    }
  }
}

}  // namespace

bool ParseChatRequest(std::string_view body, ParsedChat* out, HttpError* error) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) {
    *error = {400, absl::StrCat("We could not parse the JSON body of your request: ",
                                ec ? ec.message() : "expected a JSON object", "."), "", ""};
    return false;
  }
  const json::value& obj = v;
  auto& req = out->request;
  try {
    const json::value* model = JsonField(obj, "model");
    if (!model || model->is_null()) Fail("model", "Missing required parameter: 'model'.");
    req.set_model(Str(*model, "model"));
    if (req.model().empty()) Fail("model", "Invalid 'model': must not be empty.");
    const json::value* messages = JsonField(obj, "messages");
    if (!messages) Fail("messages", "Missing required parameter: 'messages'.");
    ParseMessages(*messages, &req);
    ParseTools(obj, &req);
    ParseSampling(obj, &req);
    if (const auto* s = JsonField(obj, "stream"); s && !s->is_null()) req.set_stream(Bool(*s, "stream"));
    if (const auto* so = JsonField(obj, "stream_options"); so && !so->is_null()) {
      if (!req.stream()) Fail("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
      if (const auto* iu = JsonField(*so, "include_usage"); iu && !iu->is_null())
        out->include_usage = Bool(*iu, "stream_options.include_usage");
    }
    if (const auto* u = JsonField(obj, "user"); u && !u->is_null()) req.set_user(Str(*u, "user"));
    if (const auto* c = JsonField(obj, "enable_context_caching"); c && !c->is_null())
      req.set_enable_context_caching(Bool(*c, "enable_context_caching"));
    if (const auto* t = JsonField(obj, "enable_thinking"); t && !t->is_null())
      req.mutable_thinking()->set_enabled(Bool(*t, "enable_thinking"));
  } catch (const Invalid& e) {
    *error = {400, e.message, e.param, ""};
    return false;
  }
  req.set_protocol(llm::v1::PROTOCOL_OPENAI);
  return true;
}

namespace {

json::object UsageJson(const llm::v1::Usage& u) {
  int64_t prompt = u.input_tokens() + u.cache_read_tokens() + u.cache_write_tokens();
  return json::object{
      {"prompt_tokens", prompt},
      {"completion_tokens", u.output_tokens()},
      {"total_tokens", prompt + u.output_tokens()},
      {"prompt_tokens_details", json::object{{"cached_tokens", u.cache_read_tokens()}}},
      {"completion_tokens_details", json::object{{"reasoning_tokens", u.reasoning_tokens()}}}};
}

class OpenAiRenderer : public ChatRenderer {
 public:
  OpenAiRenderer(std::string id, std::string model, int64_t created, bool include_usage)
      : id_(std::move(id)), model_(std::move(model)), created_(created), include_usage_(include_usage) {}

  ApiProtocol protocol() const override { return ApiProtocol::kOpenAI; }

  std::string SyncBody(const ChatAnswer& a) override {
    json::object message{{"role", "assistant"}};
    message["content"] = a.text.empty() && !a.tool_calls.empty() ? json::value(nullptr) : json::value(a.text);
    if (!a.reasoning.empty()) message["reasoning_content"] = a.reasoning;
    if (!a.tool_calls.empty()) {
      json::array calls;
      for (const auto& c : a.tool_calls)
        calls.push_back(json::object{{"id", c.id}, {"type", "function"},
                                     {"function", json::object{{"name", c.name}, {"arguments", c.arguments}}}});
      message["tool_calls"] = std::move(calls);
    }
    message["refusal"] = nullptr;
    json::object body{
        {"id", id_},
        {"object", "chat.completion"},
        {"created", created_},
        {"model", model_},
        {"choices", json::array{json::object{
                        {"index", 0},
                        {"message", std::move(message)},
                        {"logprobs", nullptr},
                        {"finish_reason", std::string(connector::FinishReasonToOpenAi(a.finish))}}}},
        {"usage", UsageJson(a.usage)}};
    return json::serialize(body);
  }

  std::string StreamEvent(const ChatEvent& e) override {
    switch (e.event_case()) {
      case ChatEvent::kStart:
        return Chunk(json::object{{"role", "assistant"}, {"content", ""}}, nullptr);
      case ChatEvent::kText:
        return Chunk(json::object{{"content", e.text().text()}}, nullptr);
      case ChatEvent::kReasoning:
        return Chunk(json::object{{"reasoning_content", e.reasoning().text()}}, nullptr);
      case ChatEvent::kToolCallStart:
        return Chunk(json::object{{"tool_calls", json::array{json::object{
                                                     {"index", e.tool_call_start().index()},
                                                     {"id", e.tool_call_start().id()},
                                                     {"type", "function"},
                                                     {"function", json::object{{"name", e.tool_call_start().name()},
                                                                               {"arguments", ""}}}}}}},
                     nullptr);
      case ChatEvent::kToolCallDelta:
        return Chunk(json::object{{"tool_calls", json::array{json::object{
                                                     {"index", e.tool_call_delta().index()},
                                                     {"function", json::object{{"arguments", e.tool_call_delta().arguments_fragment()}}}}}}},
                     nullptr);
      case ChatEvent::kFinish: {
        std::string reason(connector::FinishReasonToOpenAi(e.finish().reason()));
        return Chunk(json::object{}, reason.c_str());
      }
      case ChatEvent::kUsage: {
        if (!include_usage_) return "";
        json::object chunk = Base();
        chunk["choices"] = json::array{};
        chunk["usage"] = UsageJson(e.usage());
        return SseData(json::serialize(chunk));
      }
      default:
        return "";
    }
  }

  std::string StreamError(const HttpError& error) override {
    return SseData(ErrorBody(ApiProtocol::kOpenAI, error, ""));
  }

  std::string StreamEnd() override { return SseData("[DONE]"); }

 private:
  json::object Base() const {
    return json::object{{"id", id_}, {"object", "chat.completion.chunk"}, {"created", created_}, {"model", model_}};
  }

  std::string Chunk(json::object delta, const char* finish_reason) {
    json::object chunk = Base();
    chunk["choices"] = json::array{json::object{
        {"index", 0},
        {"delta", std::move(delta)},
        {"logprobs", nullptr},
        {"finish_reason", finish_reason ? json::value(finish_reason) : json::value(nullptr)}}};
    if (include_usage_) chunk["usage"] = nullptr;
    return SseData(json::serialize(chunk));
  }

  std::string id_;
  std::string model_;
  int64_t created_;
  bool include_usage_;
};

}  // namespace

std::unique_ptr<ChatRenderer> NewChatRenderer(std::string completion_id, std::string model,
                                              int64_t created, bool include_usage) {
  return std::make_unique<OpenAiRenderer>(std::move(completion_id), std::move(model), created,
                                          include_usage);
}

namespace {

json::object ModelObject(const routing::v1::Model& m) {
  json::array protocols, capabilities;
  for (int p : m.supported_protocols())
    protocols.push_back(json::string(routing::ProtocolName(static_cast<llm::v1::Protocol>(p))));
  for (const auto& c : m.capabilities()) capabilities.push_back(json::string(c));
  const auto& price = m.price();
  return json::object{
      {"id", m.id()},
      {"object", "model"},
      {"created", m.created_unix()},
      {"owned_by", m.owned_by()},
      {"supported_protocols", std::move(protocols)},
      {"capabilities", std::move(capabilities)},
      {"context_window", m.context_window()},
      {"max_output_tokens", m.max_output_tokens()},
      {"pricing", json::object{{"currency", "USD"},
                               {"unit", "per_million_tokens"},
                               {"input", FormatUsd(price.input_nano_usd_per_mtok())},
                               {"output", FormatUsd(price.output_nano_usd_per_mtok())},
                               {"cache_read", FormatUsd(price.cache_read_nano_usd_per_mtok())},
                               {"cache_write", FormatUsd(price.cache_write_nano_usd_per_mtok())}}}};
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
  return json::serialize(json::object{{"object", "list"}, {"data", std::move(data)}});
}

}  // namespace nexusflow::gateway::openai

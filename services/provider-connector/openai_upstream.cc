#include "services/provider-connector/openai_upstream.h"

#include <boost/json.hpp>

#include <algorithm>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "libs/common/json_util.h"

namespace nexusflow::connector {
namespace json = boost::json;

namespace {

json::value ParseOrNull(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  return ec ? json::value(nullptr) : v;
}

const char* RoleName(llmpb::Role role) {
  switch (role) {
    case llmpb::ROLE_SYSTEM: return "system";
    case llmpb::ROLE_ASSISTANT: return "assistant";
    case llmpb::ROLE_TOOL: return "tool";
    default: return "user";
  }
}

json::value ImagePart(const llmpb::Image& image) {
  json::object url;
  if (image.has_inline_data()) {
    std::string out = absl::StrCat("data:", image.inline_data().mime_type(), ";base64,",
                                   absl::Base64Escape(image.inline_data().data()));
    url["url"] = out;
  } else {
    url["url"] = image.url();
  }
  if (!image.detail().empty()) url["detail"] = image.detail();
  return json::object{{"type", "image_url"}, {"image_url", std::move(url)}};
}

// Which (message, part) pairs carry DashScope's explicit-cache mark: every canonical
// cache_control, moved back to the nearest part that can carry one (text, image, tool
// result), and with enable_context_caching the last such part of the prompt (the whole
// prompt is the prefix).
std::set<std::pair<int, int>> CacheMarks(const llmpb::ChatRequest& req) {
  auto markable = [](const llmpb::ContentPart& p) {
    return p.has_text() || p.has_image() || p.has_tool_result();
  };
  // The nearest markable part at or before (i, j).
  auto before = [&](int i, int j) -> std::optional<std::pair<int, int>> {
    for (; i >= 0; --i, j = i >= 0 ? req.messages(i).parts_size() - 1 : 0)
      for (; j >= 0; --j)
        if (markable(req.messages(i).parts(j))) return std::make_pair(i, j);
    return std::nullopt;
  };
  std::set<std::pair<int, int>> marks;
  for (int i = 0; i < req.messages_size(); ++i)
    for (int j = 0; j < req.messages(i).parts_size(); ++j)
      if (req.messages(i).parts(j).has_cache_control())
        if (auto at = before(i, j)) marks.insert(*at);
  if (req.enable_context_caching() && req.messages_size() > 0) {
    int last = req.messages_size() - 1;
    if (auto at = before(last, req.messages(last).parts_size() - 1)) marks.insert(*at);
  }
  return marks;
}

const json::object& EphemeralMark() {
  static const json::object mark{{"type", "ephemeral"}};
  return mark;
}

}  // namespace

std::string BuildOpenAiChatBody(const llmpb::ChatRequest& req, const std::string& upstream_model,
                                bool stream) {
  json::object body;
  body["model"] = upstream_model;
  const std::set<std::pair<int, int>> marks = CacheMarks(req);
  json::array messages;
  for (int mi = 0; mi < req.messages_size(); ++mi) {
    const auto& m = req.messages(mi);
    if (m.role() == llmpb::ROLE_TOOL) {
      for (int pj = 0; pj < m.parts_size(); ++pj) {
        const auto& p = m.parts(pj);
        if (!p.has_tool_result()) continue;
        json::object msg{{"role", "tool"}, {"tool_call_id", p.tool_result().tool_call_id()}};
        if (marks.count({mi, pj})) {
          msg["content"] = json::array{json::object{
              {"type", "text"}, {"text", p.tool_result().content()}, {"cache_control", EphemeralMark()}}};
        } else {
          msg["content"] = p.tool_result().content();
        }
        messages.push_back(std::move(msg));
      }
      continue;
    }
    json::object msg;
    msg["role"] = RoleName(m.role());
    if (!m.name().empty()) msg["name"] = m.name();
    json::array parts;
    json::array tool_calls;
    std::string text;
    bool only_text = true;
    bool marked = false;
    for (int pj = 0; pj < m.parts_size(); ++pj) {
      const auto& p = m.parts(pj);
      switch (p.part_case()) {
        case llmpb::ContentPart::kText:
          text += p.text();
          parts.push_back(json::object{{"type", "text"}, {"text", p.text()}});
          break;
        case llmpb::ContentPart::kImage:
          only_text = false;
          parts.push_back(ImagePart(p.image()));
          break;
        case llmpb::ContentPart::kToolCall:
          tool_calls.push_back(json::object{
              {"id", p.tool_call().id()},
              {"type", "function"},
              {"function", json::object{{"name", p.tool_call().name()},
                                        {"arguments", p.tool_call().arguments_json()}}}});
          continue;
        default:
          continue;  // thinking blocks are not sent to OpenAI-compatible upstreams
      }
      if (marks.count({mi, pj})) {
        parts.back().as_object()["cache_control"] = EphemeralMark();
        marked = true;
      }
    }
    if (marked || (!only_text && m.role() == llmpb::ROLE_USER)) {
      msg["content"] = std::move(parts);  // a cache mark needs the parts form
    } else if (m.role() == llmpb::ROLE_ASSISTANT && text.empty() && !tool_calls.empty()) {
      msg["content"] = nullptr;
    } else {
      msg["content"] = text;
    }
    if (!tool_calls.empty()) msg["tool_calls"] = std::move(tool_calls);
    messages.push_back(std::move(msg));
  }
  body["messages"] = std::move(messages);
  if (req.tools_size() > 0) {
    json::array tools;
    for (const auto& t : req.tools()) {
      if (!t.native_json().empty()) continue;  // no OpenAI form (the connector refuses such requests)
      json::object fn{{"name", t.name()}};
      if (!t.description().empty()) fn["description"] = t.description();
      json::value params = ParseOrNull(t.parameters_json());
      if (!params.is_null()) fn["parameters"] = std::move(params);
      if (t.strict()) fn["strict"] = true;
      tools.push_back(json::object{{"type", "function"}, {"function", std::move(fn)}});
    }
    body["tools"] = std::move(tools);
  }
  if (req.has_tool_choice()) {
    const auto& tc = req.tool_choice();
    if (tc.has_function_name()) {
      body["tool_choice"] = json::object{{"type", "function"},
                                         {"function", json::object{{"name", tc.function_name()}}}};
    } else if (tc.mode() == llmpb::ToolChoice::MODE_AUTO) {
      body["tool_choice"] = "auto";
    } else if (tc.mode() == llmpb::ToolChoice::MODE_NONE) {
      body["tool_choice"] = "none";
    } else if (tc.mode() == llmpb::ToolChoice::MODE_REQUIRED) {
      body["tool_choice"] = "required";
    }
    if (tc.disable_parallel_tool_use()) body["parallel_tool_calls"] = false;
  }
  if (req.has_parallel_tool_calls()) body["parallel_tool_calls"] = req.parallel_tool_calls();
  if (req.has_response_format()) {
    const auto& rf = req.response_format();
    if (rf.type() == llmpb::ResponseFormat::TYPE_JSON_OBJECT) {
      body["response_format"] = json::object{{"type", "json_object"}};
    } else if (rf.type() == llmpb::ResponseFormat::TYPE_JSON_SCHEMA) {
      json::object schema{{"name", rf.name().empty() ? "response" : rf.name()}};
      json::value s = ParseOrNull(rf.schema_json());
      if (!s.is_null()) schema["schema"] = std::move(s);
      if (rf.strict()) schema["strict"] = true;
      body["response_format"] =
          json::object{{"type", "json_schema"}, {"json_schema", std::move(schema)}};
    }
  }
  const auto& s = req.sampling();
  if (s.has_temperature()) body["temperature"] = s.temperature();
  if (s.has_top_p()) body["top_p"] = s.top_p();
  if (s.has_presence_penalty()) body["presence_penalty"] = s.presence_penalty();
  if (s.has_frequency_penalty()) body["frequency_penalty"] = s.frequency_penalty();
  if (s.has_seed()) body["seed"] = s.seed();
  // Several choices only for a streaming caller: a sync answer is assembled into one
  // ChatAnswer, which holds a single choice.
  if (s.n() > 1 && req.stream()) body["n"] = s.n();
  if (s.has_max_output_tokens()) body["max_tokens"] = s.max_output_tokens();
  if (s.stop_sequences_size() > 0) {
    json::array stop;
    for (const auto& x : s.stop_sequences()) stop.push_back(json::string(x));
    body["stop"] = std::move(stop);
  }
  if (req.has_thinking() && req.thinking().enabled()) {
    body["enable_thinking"] = true;
    if (req.thinking().budget_tokens() > 0) body["thinking_budget"] = req.thinking().budget_tokens();
  }
  if (!req.user().empty()) body["user"] = req.user();
  if (stream) {
    body["stream"] = true;
    body["stream_options"] = json::object{{"include_usage", true}};
  }
  return json::serialize(body);
}

llmpb::Usage UsageFromOpenAi(int64_t prompt, int64_t cached, int64_t cache_write,
                             int64_t completion, int64_t reasoning) {
  llmpb::Usage u;
  u.set_input_tokens(std::max<int64_t>(0, prompt - cached - cache_write));
  u.set_cache_read_tokens(std::max<int64_t>(0, cached));
  u.set_cache_write_tokens(std::max<int64_t>(0, cache_write));
  u.set_output_tokens(std::max<int64_t>(0, completion));
  u.set_reasoning_tokens(std::max<int64_t>(0, reasoning));
  return u;
}

llmpb::FinishReason FinishReasonFromOpenAi(std::string_view r) {
  if (r == "stop") return llmpb::FINISH_REASON_STOP;
  if (r == "length") return llmpb::FINISH_REASON_LENGTH;
  if (r == "tool_calls" || r == "function_call") return llmpb::FINISH_REASON_TOOL_CALLS;
  if (r == "content_filter") return llmpb::FINISH_REASON_CONTENT_FILTER;
  return llmpb::FINISH_REASON_STOP;
}

std::string_view FinishReasonToOpenAi(llmpb::FinishReason r) {
  switch (r) {
    case llmpb::FINISH_REASON_LENGTH: return "length";
    case llmpb::FINISH_REASON_TOOL_CALLS: return "tool_calls";
    case llmpb::FINISH_REASON_CONTENT_FILTER: return "content_filter";
    default: return "stop";
  }
}

absl::Status OpenAiDecoder::FeedChunk(std::string_view data, std::vector<llmpb::ChatEvent>& out) {
  if (data == "[DONE]") return absl::OkStatus();
  return Feed(data, false, out);
}

absl::Status OpenAiDecoder::FeedResponse(std::string_view body,
                                         std::vector<llmpb::ChatEvent>& out) {
  return Feed(body, true, out);
}

absl::Status OpenAiDecoder::Feed(std::string_view text, bool whole,
                                 std::vector<llmpb::ChatEvent>& out) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object())
    return absl::DataLossError(absl::StrCat("upstream sent invalid JSON: ", ec.message()));
  if (const auto* err = JsonField(v, "error"); err && err->is_object()) {
    llmpb::ChatEvent e;
    e.mutable_error()->set_http_status(502);
    e.mutable_error()->set_code(JsonString(*err, "code").value_or("upstream_error"));
    e.mutable_error()->set_message(JsonString(*err, "message").value_or("upstream error"));
    out.push_back(std::move(e));
    return absl::OkStatus();
  }
  if (!started_) {
    started_ = true;
    llmpb::ChatEvent e;
    auto* s = e.mutable_start();
    s->set_response_id(JsonString(v, "id").value_or(""));
    s->set_upstream_model(JsonString(v, "model").value_or(""));
    s->set_created_unix(JsonInt(v, "created").value_or(0));
    out.push_back(std::move(e));
  }
  // Some upstreams send `choices: null` on the usage chunk: only an array is read.
  if (const auto* choices = JsonField(v, "choices"); choices && choices->is_array()) {
    for (const auto& choice : choices->get_array()) {
      const int32_t index = static_cast<int32_t>(JsonInt(choice, "index").value_or(0));
      ChoiceState& state = Choice(index);
      auto emit = [&](llmpb::ChatEvent e) {
        e.set_choice_index(index);
        out.push_back(std::move(e));
      };
      const json::value* delta = JsonField(choice, whole ? "message" : "delta");
      if (delta && delta->is_object()) {
        if (auto r = JsonString(*delta, "reasoning_content"); r && !r->empty()) {
          output_chars_ += r->size();
          llmpb::ChatEvent e;
          e.mutable_reasoning()->set_text(*r);
          emit(std::move(e));
        }
        if (auto c = JsonString(*delta, "content"); c && !c->empty()) {
          output_chars_ += c->size();
          llmpb::ChatEvent e;
          e.mutable_text()->set_text(*c);
          emit(std::move(e));
        }
        if (const auto* calls = JsonField(*delta, "tool_calls"); calls && calls->is_array()) {
          int64_t position = 0;
          for (const auto& call : calls->get_array()) {
            int64_t up_index = JsonInt(call, "index").value_or(position);
            ++position;
            const json::value* fn = JsonField(call, "function");
            auto it = state.tool_index.find(up_index);
            if (it == state.tool_index.end()) {
              int dense = static_cast<int>(state.tool_index.size());
              it = state.tool_index.emplace(up_index, dense).first;
              llmpb::ChatEvent e;
              auto* st = e.mutable_tool_call_start();
              st->set_index(dense);
              st->set_id(JsonString(call, "id").value_or(absl::StrCat("call_", index, "_", dense)));
              st->set_name(fn ? JsonString(*fn, "name").value_or("") : "");
              emit(std::move(e));
            }
            if (fn) {
              if (auto args = JsonString(*fn, "arguments"); args && !args->empty()) {
                output_chars_ += args->size();
                llmpb::ChatEvent e;
                e.mutable_tool_call_delta()->set_index(it->second);
                e.mutable_tool_call_delta()->set_arguments_fragment(*args);
                emit(std::move(e));
              }
            }
          }
        }
      }
      if (auto fr = JsonString(choice, "finish_reason"); fr && !state.finished) {
        state.finished = true;
        llmpb::FinishReason reason = FinishReasonFromOpenAi(*fr);
        if (index == 0) finish_reason_ = reason;
        llmpb::ChatEvent e;
        e.mutable_finish()->set_reason(reason);
        emit(std::move(e));
      }
    }
    finished_ = !choices_.empty() &&
                std::all_of(choices_.begin(), choices_.end(), [](const auto& c) { return c.second.finished; });
  }
  if (const auto* usage = JsonField(v, "usage"); usage && usage->is_object()) {
    int64_t cached = 0, cache_write = 0, cache_write_1h = 0, reasoning = 0;
    // DashScope nests its write count (and the per-TTL split) in prompt_tokens_details;
    // some builds put them at the top level of usage. OpenAI says cache_write_tokens.
    auto read_writes = [&](const json::value& d) {
      if (auto w = JsonInt(d, "cache_write_tokens")) cache_write = *w;
      if (auto w = JsonInt(d, "cache_creation_input_tokens")) cache_write = *w;
      if (const auto* cc = JsonField(d, "cache_creation"); cc && cc->is_object()) {
        int64_t m5 = JsonInt(*cc, "ephemeral_5m_input_tokens").value_or(0);
        int64_t h1 = JsonInt(*cc, "ephemeral_1h_input_tokens").value_or(0);
        if (h1 > 0) cache_write_1h = h1;
        if (cache_write == 0) cache_write = m5 + h1;
      }
    };
    if (const auto* d = JsonField(*usage, "prompt_tokens_details"); d && d->is_object()) {
      cached = JsonInt(*d, "cached_tokens").value_or(0);
      read_writes(*d);
    }
    if (cache_write == 0) read_writes(*usage);
    if (const auto* d = JsonField(*usage, "completion_tokens_details"); d && d->is_object())
      reasoning = JsonInt(*d, "reasoning_tokens").value_or(0);
    usage_ = UsageFromOpenAi(JsonInt(*usage, "prompt_tokens").value_or(0), cached, cache_write,
                             JsonInt(*usage, "completion_tokens").value_or(0), reasoning);
    usage_.set_cache_write_1h_tokens(std::min(cache_write_1h, usage_.cache_write_tokens()));
    has_usage_ = true;
  }
  return absl::OkStatus();
}

void OpenAiDecoder::Finish(std::vector<llmpb::ChatEvent>& out) {
  if (closed_) return;
  closed_ = true;
  // Every choice ends with a finish (choice 0 even when nothing came).
  Choice(0);
  for (auto& [index, state] : choices_) {
    if (state.finished) continue;
    state.finished = true;
    llmpb::ChatEvent e;
    e.set_choice_index(index);
    e.mutable_finish()->set_reason(llmpb::FINISH_REASON_STOP);
    out.push_back(std::move(e));
  }
  finished_ = true;
  AppendFinalUsage(has_usage_, usage_, prompt_estimate_, output_chars_, &usage_estimated_, out);
}

}  // namespace nexusflow::connector

namespace nexusflow::connector {
namespace {

class OpenAiChatCodec : public UpstreamCodec {
 public:
  llmpb::Protocol protocol() const override { return llmpb::PROTOCOL_OPENAI; }

  UpstreamCall BuildCall(const llmpb::ChatRequest& request, const CallTarget& target) const override {
    UpstreamCall call;
    call.url = target.provider->base_url + "/chat/completions";
    call.headers.push_back("Content-Type: application/json");
    if (!target.provider->api_key.empty())
      call.headers.push_back("Authorization: Bearer " + target.provider->api_key);
    if (target.stream) call.headers.push_back("Accept: text/event-stream");
    std::optional<std::string> raw = PassThroughBody(request, protocol(), target.upstream_model);
    if (raw && target.stream && !request.include_usage()) raw = AskForStreamUsage(*raw);
    if (raw) {
      call.body = std::move(*raw);
      call.passthrough = true;
      if (target.stream && !request.include_usage()) call.relay_event = RelayUnlessUsageOnly;
    } else {
      call.body = BuildOpenAiChatBody(request, target.upstream_model, target.stream);
    }
    return call;
  }

  // Billing needs the upstream's usage: a caller's stream that did not ask for it asks
  // for it (stream_options.include_usage), and the usage-only chunk it brings is not
  // relayed to that caller.
  static std::optional<std::string> AskForStreamUsage(const std::string& body) {
    std::optional<std::string_view> options = TopLevelMember(body, "stream_options");
    if (!options) return SetTopLevelMember(body, "stream_options", R"({"include_usage":true})");
    boost::system::error_code ec;
    json::value v = json::parse(*options, ec);
    if (ec || !v.is_object()) return std::nullopt;
    v.as_object()["include_usage"] = true;
    return SetTopLevelMember(body, "stream_options", json::serialize(v));
  }

  static bool RelayUnlessUsageOnly(std::string_view, std::string_view data) {
    // Every chunk of such a stream carries "usage": only one whose usage is an object is
    // parsed here (the decoder parses each chunk anyway).
    size_t at = data.find("\"usage\"");
    if (at == std::string_view::npos) return true;
    at = data.find_first_not_of(" \t\r\n:", at + 7);
    if (at == std::string_view::npos || data[at] != '{') return true;
    boost::system::error_code ec;
    json::value v = json::parse(data, ec);
    if (ec || !v.is_object()) return true;
    const json::object& chunk = v.as_object();
    const json::value* choices = chunk.if_contains("choices");
    const json::value* usage = chunk.if_contains("usage");
    // `choices` empty, null or absent: some upstreams send the usage chunk with `choices:
    // null`, which the caller's SDK would choke on as well.
    bool no_choices = !choices || choices->is_null() ||
                      (choices->is_array() && choices->as_array().empty());
    bool usage_only = no_choices && usage && usage->is_object();
    return !usage_only;
  }

  std::unique_ptr<UpstreamDecoder> NewDecoder(int64_t prompt_estimate) const override {
    return std::make_unique<OpenAiDecoder>(prompt_estimate);
  }

  std::string ErrorMessage(std::string_view body) const override {
    OpenAiDecoder probe(0);
    std::vector<llmpb::ChatEvent> events;
    if (probe.FeedChunk(body, events).ok())
      for (const auto& e : events)
        if (e.has_error()) return e.error().message();
    return "";
  }
};

}  // namespace

const UpstreamCodec& OpenAiCodec() {
  static const OpenAiChatCodec codec;
  return codec;
}

}  // namespace nexusflow::connector

#include "services/provider-connector/anthropic_upstream.h"

#include <boost/json.hpp>

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "libs/common/json_util.h"

namespace nexusflow::connector {
namespace json = boost::json;
namespace llmpb = ::nexusflow::llm::v1;

namespace {

constexpr char kAnthropicVersion[] = "2023-06-01";

json::value ParseOrEmptyObject(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return json::object{};
  return v;
}

void AddCacheControl(const llmpb::CacheControl& cc, json::object& block) {
  json::object c{{"type", "ephemeral"}};
  if (cc.has_ttl() && cc.ttl().seconds() >= 3600) c["ttl"] = "1h";
  block["cache_control"] = std::move(c);
}

// An image or document source: base64 bytes, a data: URI (decoded to base64), or a URL.
json::object Source(const std::string& url, const llmpb::InlineData* inline_data) {
  if (inline_data)
    return json::object{{"type", "base64"},
                        {"media_type", inline_data->mime_type()},
                        {"data", absl::Base64Escape(inline_data->data())}};
  if (auto data = ParseDataUri(url))
    return json::object{{"type", "base64"}, {"media_type", data->media_type}, {"data", data->base64}};
  return json::object{{"type", "url"}, {"url", url}};
}

json::value Block(const llmpb::ContentPart& p) {
  json::object b;
  switch (p.part_case()) {
    case llmpb::ContentPart::kText:
      b = {{"type", "text"}, {"text", p.text()}};
      break;
    case llmpb::ContentPart::kImage:
      b = {{"type", "image"},
           {"source", Source(p.image().url(), p.image().has_inline_data() ? &p.image().inline_data() : nullptr)}};
      break;
    case llmpb::ContentPart::kDocument: {
      const auto& d = p.document();
      json::object source;
      if (d.source_case() == llmpb::Document::kText)
        source = {{"type", "text"}, {"media_type", "text/plain"}, {"data", d.text()}};
      else
        source = Source(d.url(), d.has_inline_data() ? &d.inline_data() : nullptr);
      b = {{"type", "document"}, {"source", std::move(source)}};
      if (!d.title().empty()) b["title"] = d.title();
      break;
    }
    case llmpb::ContentPart::kToolCall:
      b = {{"type", "tool_use"},
           {"id", p.tool_call().id()},
           {"name", p.tool_call().name()},
           {"input", ParseOrEmptyObject(p.tool_call().arguments_json())}};
      break;
    case llmpb::ContentPart::kToolResult: {
      const auto& r = p.tool_result();
      b = {{"type", "tool_result"}, {"tool_use_id", r.tool_call_id()}};
      if (r.parts_size() > 0) {
        json::array content;
        for (const auto& part : r.parts()) content.push_back(Block(part));
        b["content"] = std::move(content);
      } else {
        b["content"] = r.content();
      }
      if (r.is_error()) b["is_error"] = true;
      break;
    }
    case llmpb::ContentPart::kThinking:
      if (!p.thinking().redacted_data().empty())
        b = {{"type", "redacted_thinking"}, {"data", p.thinking().redacted_data()}};
      else
        b = {{"type", "thinking"}, {"thinking", p.thinking().text()}, {"signature", p.thinking().signature()}};
      break;
    default:
      b = {{"type", "text"}, {"text", ""}};
  }
  if (p.has_cache_control()) AddCacheControl(p.cache_control(), b);
  return b;
}

}  // namespace

std::string BuildAnthropicBody(const llmpb::ChatRequest& req, const std::string& upstream_model,
                               bool stream, int32_t default_max_tokens) {
  json::object body;
  body["model"] = upstream_model;
  const auto& s = req.sampling();
  body["max_tokens"] = s.has_max_output_tokens() ? s.max_output_tokens()
                                                 : (default_max_tokens > 0 ? default_max_tokens : 4096);
  json::array system;
  json::array messages;
  // Consecutive turns of one role merge (tool results travel in user turns), and a user
  // turn's tool_result blocks go ahead of the rest of it, as Anthropic requires.
  auto is_result = [](const json::value& block) { return block.at("type") == "tool_result"; };
  auto append = [&](const char* role, json::value block) {
    if (!messages.empty() && messages.back().as_object().at("role").as_string() == role) {
      json::array& content = messages.back().as_object()["content"].as_array();
      auto at = is_result(block) ? std::find_if_not(content.begin(), content.end(), is_result)
                                 : content.end();
      content.insert(at, std::move(block));
      return;
    }
    messages.push_back(json::object{{"role", role}, {"content", json::array{std::move(block)}}});
  };
  for (const auto& m : req.messages()) {
    if (m.role() == llmpb::ROLE_SYSTEM) {
      for (const auto& p : m.parts())
        if (p.has_text()) system.push_back(Block(p));
      continue;
    }
    const char* role = m.role() == llmpb::ROLE_ASSISTANT ? "assistant" : "user";
    for (const auto& p : m.parts()) {
      if (p.has_text() && p.text().empty() && !p.has_cache_control()) continue;  // Anthropic rejects empty text
      append(role, Block(p));
    }
  }
  // Anthropic's conversation opens with a user turn: one that opens with the model's (a
  // greeting the client shows, say) gets a minimal user turn before it.
  if (!messages.empty() && messages.front().as_object().at("role") == "assistant")
    messages.insert(messages.begin(),
                    json::object{{"role", "user"},
                                 {"content", json::array{json::object{{"type", "text"}, {"text", "."}}}}});
  if (!system.empty()) body["system"] = std::move(system);
  body["messages"] = std::move(messages);
  if (req.tools_size() > 0) {
    json::array tools;
    for (const auto& t : req.tools()) {
      if (!t.native_json().empty()) {  // a server tool, as the caller wrote it
        if (t.native_protocol() == llmpb::PROTOCOL_ANTHROPIC) tools.push_back(ParseOrEmptyObject(t.native_json()));
        continue;
      }
      json::object tool{{"name", t.name()}, {"input_schema", ParseOrEmptyObject(t.parameters_json())}};
      if (!t.description().empty()) tool["description"] = t.description();
      if (t.has_cache_control()) AddCacheControl(t.cache_control(), tool);
      tools.push_back(std::move(tool));
    }
    body["tools"] = std::move(tools);
  }
  if (req.has_tool_choice()) {
    const auto& tc = req.tool_choice();
    json::object choice;
    if (tc.choice_case() == llmpb::ToolChoice::kFunctionName) {
      choice = {{"type", "tool"}, {"name", tc.function_name()}};
    } else if (tc.allowed_function_names_size() == 1) {
      choice = {{"type", "tool"}, {"name", tc.allowed_function_names(0)}};
    } else {
      switch (tc.mode()) {
        case llmpb::ToolChoice::MODE_NONE: choice = {{"type", "none"}}; break;
        case llmpb::ToolChoice::MODE_REQUIRED: choice = {{"type", "any"}}; break;
        default: choice = {{"type", "auto"}};
      }
    }
    bool one_at_a_time = tc.disable_parallel_tool_use() ||
                         (req.has_parallel_tool_calls() && !req.parallel_tool_calls());
    if (one_at_a_time && choice["type"] != "none") choice["disable_parallel_tool_use"] = true;
    if (req.tools_size() > 0 || choice["type"] == "none") body["tool_choice"] = std::move(choice);
  }
  if (req.thinking().enabled())
    body["thinking"] = json::object{{"type", "enabled"},
                                    {"budget_tokens", req.thinking().budget_tokens() > 0 ? req.thinking().budget_tokens() : 1024}};
  // Anthropic's temperature is 0..1; OpenAI's and Gemini's go to 2.
  if (s.has_temperature()) body["temperature"] = std::min(1.0, std::max(0.0, s.temperature()));
  if (s.has_top_p()) body["top_p"] = s.top_p();
  if (s.has_top_k()) body["top_k"] = s.top_k();
  if (s.stop_sequences_size() > 0) {
    json::array stops;
    for (const auto& st : s.stop_sequences()) stops.push_back(json::string(st));
    body["stop_sequences"] = std::move(stops);
  }
  if (!req.user().empty()) body["metadata"] = json::object{{"user_id", req.user()}};
  if (stream) body["stream"] = true;
  return json::serialize(body);
}

llmpb::Usage UsageFromAnthropic(const json::value& u) {
  llmpb::Usage out;
  out.set_input_tokens(JsonInt(u, "input_tokens").value_or(0));
  out.set_cache_read_tokens(JsonInt(u, "cache_read_input_tokens").value_or(0));
  out.set_cache_write_tokens(JsonInt(u, "cache_creation_input_tokens").value_or(0));
  if (const auto* c = JsonField(u, "cache_creation"); c && c->is_object())
    out.set_cache_write_1h_tokens(JsonInt(*c, "ephemeral_1h_input_tokens").value_or(0));
  out.set_output_tokens(JsonInt(u, "output_tokens").value_or(0));
  return out;
}

llmpb::FinishReason FinishReasonFromAnthropic(std::string_view r) {
  if (r == "max_tokens" || r == "model_context_window_exceeded") return llmpb::FINISH_REASON_LENGTH;
  if (r == "tool_use") return llmpb::FINISH_REASON_TOOL_CALLS;
  if (r == "refusal") return llmpb::FINISH_REASON_CONTENT_FILTER;
  return llmpb::FINISH_REASON_STOP;  // end_turn, stop_sequence, pause_turn
}

namespace {

// The status a caller sees for an Anthropic error type that arrives in a stream.
int StatusOfErrorType(std::string_view type) {
  if (type == "overloaded_error") return 503;
  if (type == "rate_limit_error") return 429;
  if (type == "invalid_request_error") return 400;
  if (type == "request_too_large") return 413;
  return 502;
}

}  // namespace

void AnthropicDecoder::Start(const json::value& message, std::vector<llmpb::ChatEvent>& out) {
  if (started_) return;
  started_ = true;
  llmpb::ChatEvent e;
  auto* s = e.mutable_start();
  s->set_response_id(JsonString(message, "id").value_or(""));
  s->set_upstream_model(JsonString(message, "model").value_or(""));
  if (const auto* u = JsonField(message, "usage"); u && u->is_object()) {
    MergeUsage(*u);
    *s->mutable_input_usage() = usage_;
    s->mutable_input_usage()->set_output_tokens(0);
  }
  out.push_back(std::move(e));
}

// Usage fields arrive in message_start and again (cumulative) in message_delta: the
// latest value of each wins.
void AnthropicDecoder::MergeUsage(const json::value& u) {
  has_usage_ = true;
  if (auto v = JsonInt(u, "input_tokens")) usage_.set_input_tokens(*v);
  if (auto v = JsonInt(u, "cache_read_input_tokens")) usage_.set_cache_read_tokens(*v);
  if (auto v = JsonInt(u, "cache_creation_input_tokens")) usage_.set_cache_write_tokens(*v);
  if (const auto* c = JsonField(u, "cache_creation"); c && c->is_object())
    if (auto v = JsonInt(*c, "ephemeral_1h_input_tokens")) usage_.set_cache_write_1h_tokens(*v);
  if (auto v = JsonInt(u, "output_tokens")) usage_.set_output_tokens(*v);
}

void AnthropicDecoder::SetFinish(const json::value& holder, std::vector<llmpb::ChatEvent>& out) {
  auto reason = JsonString(holder, "stop_reason");
  if (!reason || finished_) return;
  finished_ = true;
  llmpb::ChatEvent e;
  e.mutable_finish()->set_reason(FinishReasonFromAnthropic(*reason));
  if (auto seq = JsonString(holder, "stop_sequence")) e.mutable_finish()->set_stop_sequence(*seq);
  out.push_back(std::move(e));
}

void AnthropicDecoder::FlushPendingInput(int64_t block_index, std::vector<llmpb::ChatEvent>& out) {
  auto pending = pending_input_.find(block_index);
  if (pending == pending_input_.end()) return;
  llmpb::ChatEvent e;
  e.mutable_tool_call_delta()->set_index(tool_index_[block_index]);
  e.mutable_tool_call_delta()->set_arguments_fragment(std::move(pending->second));
  pending_input_.erase(pending);
  out.push_back(std::move(e));
}

absl::Status AnthropicDecoder::FeedEvent(std::string_view event, std::string_view data,
                                         std::vector<llmpb::ChatEvent>& out) {
  boost::system::error_code ec;
  json::value v = json::parse(data, ec);
  if (ec || !v.is_object())
    return absl::DataLossError(absl::StrCat("upstream sent invalid JSON: ", ec.message()));
  std::string type = event.empty() ? JsonString(v, "type").value_or("") : std::string(event);
  if (type == "ping" || type == "message_stop") return absl::OkStatus();
  if (type == "error") {
    const json::value* err = JsonField(v, "error");
    std::string etype = err ? JsonString(*err, "type").value_or("api_error") : "api_error";
    llmpb::ChatEvent e;
    e.mutable_error()->set_http_status(StatusOfErrorType(etype));
    e.mutable_error()->set_code(etype);
    e.mutable_error()->set_message(err ? JsonString(*err, "message").value_or("upstream error") : "upstream error");
    e.mutable_error()->set_retryable(etype == "overloaded_error" || etype == "rate_limit_error");
    out.push_back(std::move(e));
    return absl::OkStatus();
  }
  if (type == "message_start") {
    if (const auto* m = JsonField(v, "message"); m && m->is_object()) Start(*m, out);
    return absl::OkStatus();
  }
  if (!started_) Start(json::object{}, out);
  if (type == "content_block_stop") {
    FlushPendingInput(JsonInt(v, "index").value_or(-1), out);
    return absl::OkStatus();
  }
  if (type == "content_block_start") {
    int64_t index = JsonInt(v, "index").value_or(0);
    const json::value* block = JsonField(v, "content_block");
    if (!block) return absl::OkStatus();
    std::string btype = JsonString(*block, "type").value_or("");
    llmpb::ChatEvent e;
    if (btype == "tool_use") {
      int dense = next_tool_++;
      tool_index_[index] = dense;
      auto* t = e.mutable_tool_call_start();
      t->set_index(dense);
      t->set_id(JsonString(*block, "id").value_or(""));
      t->set_name(JsonString(*block, "name").value_or(""));
      output_chars_ += static_cast<int64_t>(t->name().size());
      const json::value* input = JsonField(*block, "input");
      pending_input_[index] = input && input->is_object() ? json::serialize(*input) : "{}";
      out.push_back(std::move(e));
    } else if (btype == "text") {
      std::string text = JsonString(*block, "text").value_or("");
      if (!text.empty()) {
        output_chars_ += static_cast<int64_t>(text.size());
        e.mutable_text()->set_text(std::move(text));
        out.push_back(std::move(e));
      }
    } else if (btype == "redacted_thinking") {
      // Opaque: nothing to show, but a later turn must send it back.
      e.mutable_reasoning()->set_redacted_data(JsonString(*block, "data").value_or(""));
      out.push_back(std::move(e));
    }
    return absl::OkStatus();
  }
  if (type == "content_block_delta") {
    const json::value* delta = JsonField(v, "delta");
    if (!delta) return absl::OkStatus();
    std::string dtype = JsonString(*delta, "type").value_or("");
    llmpb::ChatEvent e;
    if (dtype == "text_delta") {
      std::string text = JsonString(*delta, "text").value_or("");
      output_chars_ += static_cast<int64_t>(text.size());
      e.mutable_text()->set_text(std::move(text));
    } else if (dtype == "input_json_delta") {
      auto it = tool_index_.find(JsonInt(v, "index").value_or(-1));
      if (it == tool_index_.end()) return absl::OkStatus();
      std::string piece = JsonString(*delta, "partial_json").value_or("");
      if (piece.empty()) return absl::OkStatus();
      pending_input_.erase(it->first);
      output_chars_ += static_cast<int64_t>(piece.size());
      e.mutable_tool_call_delta()->set_index(it->second);
      e.mutable_tool_call_delta()->set_arguments_fragment(std::move(piece));
    } else if (dtype == "thinking_delta") {
      std::string text = JsonString(*delta, "thinking").value_or("");
      output_chars_ += static_cast<int64_t>(text.size());
      e.mutable_reasoning()->set_text(std::move(text));
    } else if (dtype == "signature_delta") {
      e.mutable_reasoning()->set_signature(JsonString(*delta, "signature").value_or(""));
    } else {
      return absl::OkStatus();
    }
    out.push_back(std::move(e));
    return absl::OkStatus();
  }
  if (type == "message_delta") {
    // Every block has ended by now, even when an upstream left out a content_block_stop.
    while (!pending_input_.empty()) FlushPendingInput(pending_input_.begin()->first, out);
    if (const auto* u = JsonField(v, "usage"); u && u->is_object()) {
      MergeUsage(*u);
      output_counted_ = true;
    }
    if (const auto* d = JsonField(v, "delta"); d && d->is_object()) SetFinish(*d, out);
  }
  return absl::OkStatus();
}

absl::Status AnthropicDecoder::FeedResponse(std::string_view body, std::vector<llmpb::ChatEvent>& out) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object())
    return absl::DataLossError(absl::StrCat("upstream sent invalid JSON: ", ec.message()));
  if (JsonString(v, "type").value_or("") == "error") return FeedEvent("error", body, out);
  Start(v, out);
  if (const auto* content = JsonField(v, "content"); content && content->is_array()) {
    for (const auto& block : content->get_array()) {
      std::string btype = JsonString(block, "type").value_or("");
      llmpb::ChatEvent e;
      if (btype == "text") {
        std::string text = JsonString(block, "text").value_or("");
        output_chars_ += static_cast<int64_t>(text.size());
        e.mutable_text()->set_text(std::move(text));
      } else if (btype == "thinking") {
        e.mutable_reasoning()->set_text(JsonString(block, "thinking").value_or(""));
        e.mutable_reasoning()->set_signature(JsonString(block, "signature").value_or(""));
      } else if (btype == "redacted_thinking") {
        e.mutable_reasoning()->set_redacted_data(JsonString(block, "data").value_or(""));
      } else if (btype == "tool_use") {
        int dense = next_tool_++;
        auto* t = e.mutable_tool_call_start();
        t->set_index(dense);
        t->set_id(JsonString(block, "id").value_or(""));
        t->set_name(JsonString(block, "name").value_or(""));
        out.push_back(std::move(e));
        e = llmpb::ChatEvent{};
        const json::value* input = JsonField(block, "input");
        e.mutable_tool_call_delta()->set_index(dense);
        e.mutable_tool_call_delta()->set_arguments_fragment(input ? json::serialize(*input) : "{}");
      } else {
        continue;
      }
      out.push_back(std::move(e));
    }
  }
  if (const auto* u = JsonField(v, "usage"); u && u->is_object()) {
    usage_ = UsageFromAnthropic(*u);
    has_usage_ = true;
    output_counted_ = true;
  }
  SetFinish(v, out);
  return absl::OkStatus();
}

void AnthropicDecoder::Finish(std::vector<llmpb::ChatEvent>& out) {
  if (closed_) return;
  closed_ = true;
  if (!finished_) {
    finished_ = true;
    llmpb::ChatEvent e;
    e.mutable_finish()->set_reason(llmpb::FINISH_REASON_STOP);
    out.push_back(std::move(e));
  }
  if (has_usage_ && !output_counted_) {
    // Cut before message_delta (an error event, a dropped connection): the input counts
    // are message_start's, the output is counted from what arrived, like an answer
    // without usage.
    usage_.set_output_tokens(std::max(usage_.output_tokens(), (output_chars_ + 3) / 4));
    usage_estimated_ = true;
  }
  AppendFinalUsage(has_usage_, usage_, prompt_estimate_, output_chars_, &usage_estimated_, out);
}

namespace {

class AnthropicMessagesCodec : public UpstreamCodec {
 public:
  llmpb::Protocol protocol() const override { return llmpb::PROTOCOL_ANTHROPIC; }

  UpstreamCall BuildCall(const llmpb::ChatRequest& request, const CallTarget& target) const override {
    UpstreamCall call;
    call.url = target.provider->base_url + "/v1/messages";
    call.headers.push_back("Content-Type: application/json");
    call.headers.push_back(absl::StrCat("anthropic-version: ", kAnthropicVersion));
    if (!target.provider->api_key.empty()) call.headers.push_back("x-api-key: " + target.provider->api_key);
    if (request.betas_size() > 0)
      call.headers.push_back(absl::StrCat("anthropic-beta: ", absl::StrJoin(request.betas(), ",")));
    if (target.stream) call.headers.push_back("Accept: text/event-stream");
    if (auto raw = PassThroughBody(request, protocol(), target.upstream_model)) {
      call.body = std::move(*raw);
      call.passthrough = true;
    } else {
      call.body = BuildAnthropicBody(request, target.upstream_model, target.stream,
                                     target.default_max_output_tokens);
    }
    return call;
  }

  std::unique_ptr<UpstreamDecoder> NewDecoder(int64_t prompt_estimate) const override {
    return std::make_unique<AnthropicDecoder>(prompt_estimate);
  }

  std::string ErrorMessage(std::string_view body) const override {
    boost::system::error_code ec;
    json::value v = json::parse(body, ec);
    if (ec || !v.is_object()) return "";
    const json::value* err = JsonField(v, "error");
    return err ? JsonString(*err, "message").value_or("") : "";
  }
};

}  // namespace

const UpstreamCodec& AnthropicCodec() {
  static const AnthropicMessagesCodec codec;
  return codec;
}

}  // namespace nexusflow::connector

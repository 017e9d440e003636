#include "services/provider-connector/upstream_codec.h"

#include <boost/json.hpp>

#include "services/provider-connector/anthropic_upstream.h"
#include "services/provider-connector/gemini_upstream.h"
#include "services/provider-connector/openai_upstream.h"

namespace nexusflow::connector {
namespace {

void SkipSpace(std::string_view s, size_t& i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
}

// Past a string token starting at s[i] == '"'; false if unterminated.
bool SkipString(std::string_view s, size_t& i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      ++i;
      return true;
    }
  }
  return false;
}

// Past one JSON value (strings may hold brackets).
bool SkipValue(std::string_view s, size_t& i) {
  SkipSpace(s, i);
  if (i >= s.size()) return false;
  if (s[i] == '"') return SkipString(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      char c = s[i];
      if (c == '"') {
        if (!SkipString(s, i)) return false;
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) {
          ++i;
          return true;
        }
      }
      ++i;
    }
    return false;
  }
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
         s[i] != '\n' && s[i] != '\r' && s[i] != '\t')
    ++i;
  return true;
}

}  // namespace

namespace {

// The [start, end) of the value of top-level member `key` of the JSON object `body`;
// {npos, npos} when the object has no such member; nullopt when `body` is not an object
// this scanner can walk.
std::optional<std::pair<size_t, size_t>> FindTopLevelMember(std::string_view body, std::string_view key) {
  constexpr size_t npos = std::string_view::npos;
  size_t i = 0;
  SkipSpace(body, i);
  if (i >= body.size() || body[i] != '{') return std::nullopt;
  ++i;
  SkipSpace(body, i);
  if (i < body.size() && body[i] == '}') return std::make_pair(npos, npos);
  while (true) {
    SkipSpace(body, i);
    if (i >= body.size() || body[i] != '"') return std::nullopt;
    size_t key_start = i;
    if (!SkipString(body, i)) return std::nullopt;
    std::string_view name = body.substr(key_start + 1, i - key_start - 2);
    SkipSpace(body, i);
    if (i >= body.size() || body[i] != ':') return std::nullopt;
    ++i;
    SkipSpace(body, i);
    size_t value_start = i;
    if (!SkipValue(body, i)) return std::nullopt;
    if (name == key) return std::make_pair(value_start, i);
    SkipSpace(body, i);
    if (i >= body.size()) return std::nullopt;
    if (body[i] == '}') return std::make_pair(npos, npos);
    if (body[i] != ',') return std::nullopt;
    ++i;
  }
}

}  // namespace

std::optional<std::string> ReplaceTopLevelModel(std::string_view body, std::string_view model) {
  auto at = FindTopLevelMember(body, "model");
  if (!at || at->first == std::string_view::npos || body[at->first] != '"') return std::nullopt;
  return SetTopLevelMember(body, "model", boost::json::serialize(boost::json::string(model)));
}

std::optional<std::string> SetTopLevelMember(std::string_view body, std::string_view key,
                                             std::string_view value_json) {
  auto at = FindTopLevelMember(body, key);
  if (!at) return std::nullopt;
  std::string out;
  out.reserve(body.size() + key.size() + value_json.size() + 4);
  if (at->first != std::string_view::npos) {
    out.append(body.substr(0, at->first));
    out.append(value_json);
    out.append(body.substr(at->second));
    return out;
  }
  // Absent: inserted as the first member.
  size_t open = body.find('{');
  size_t i = open + 1;
  SkipSpace(body, i);
  bool empty = body[i] == '}';
  out.append(body.substr(0, open + 1));
  out.append(boost::json::serialize(boost::json::string(key)));
  out.push_back(':');
  out.append(value_json);
  if (!empty) out.push_back(',');
  out.append(body.substr(open + 1));
  return out;
}

std::optional<std::string_view> TopLevelMember(std::string_view body, std::string_view key) {
  auto at = FindTopLevelMember(body, key);
  if (!at || at->first == std::string_view::npos) return std::nullopt;
  return body.substr(at->first, at->second - at->first);
}

void AppendFinalUsage(bool reported, llm::v1::Usage& usage, int64_t prompt_estimate,
                      int64_t output_chars, bool* estimated, std::vector<llm::v1::ChatEvent>& out) {
  if (!reported) {
    *estimated = true;
    usage.set_input_tokens(prompt_estimate);
    usage.set_output_tokens((output_chars + 3) / 4);
  }
  llm::v1::ChatEvent e;
  *e.mutable_usage() = usage;
  out.push_back(std::move(e));
}

std::optional<DataUri> ParseDataUri(std::string_view url) {
  if (url.substr(0, 5) != "data:") return std::nullopt;
  auto semi = url.find(';');
  auto comma = url.find(',');
  if (semi == std::string_view::npos || comma == std::string_view::npos || semi > comma) return std::nullopt;
  return DataUri{std::string(url.substr(5, semi - 5)), std::string(url.substr(comma + 1))};
}

std::optional<std::string> PassThroughBody(const llm::v1::ChatRequest& request,
                                           llm::v1::Protocol protocol,
                                           std::string_view upstream_model) {
  if (request.raw().protocol() != protocol || request.raw().body().empty()) return std::nullopt;
  if (protocol == llm::v1::PROTOCOL_GEMINI) return request.raw().body();  // the model is in the URL
  return ReplaceTopLevelModel(request.raw().body(), upstream_model);
}

std::optional<std::string> UnservableElement(const llm::v1::ChatRequest& request,
                                             llm::v1::Protocol protocol) {
  auto name = [](llm::v1::Protocol p) {
    return p == llm::v1::PROTOCOL_ANTHROPIC ? "anthropic" : p == llm::v1::PROTOCOL_GEMINI ? "gemini" : "openai";
  };
  for (int i = 0; i < request.tools_size(); ++i) {
    const auto& t = request.tools(i);
    if (!t.native_json().empty() && t.native_protocol() != protocol)
      return "tools[" + std::to_string(i) + "] (" + t.name() + ") is a built-in tool of the " +
             name(t.native_protocol()) + " protocol, and this model's upstream speaks " + name(protocol);
  }
  if (protocol == llm::v1::PROTOCOL_ANTHROPIC) return std::nullopt;
  for (int i = 0; i < request.messages_size(); ++i) {
    for (const auto& p : request.messages(i).parts()) {
      bool file = (p.has_image() && !p.image().file_id().empty()) ||
                  (p.has_document() && !p.document().file_id().empty());
      if (file)
        return "messages[" + std::to_string(i) + "] refers to an Anthropic Files API file, and this model's "
               "upstream speaks " + name(protocol);
    }
  }
  return std::nullopt;
}

const UpstreamCodec* CodecForKind(std::string_view kind) {
  if (kind == "openai") return &OpenAiCodec();
  if (kind == "anthropic") return &AnthropicCodec();
  if (kind == "gemini") return &GeminiCodec();
  return nullptr;
}

const std::vector<std::string>& CodecKinds() {
  static const std::vector<std::string> kinds = {"openai", "anthropic", "gemini"};
  return kinds;
}

}  // namespace nexusflow::connector

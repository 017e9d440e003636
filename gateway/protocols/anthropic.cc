// Anthropic Messages at the edge. Parsing checks the body the way Anthropic's own API
// does (messages name the field by its dotted path, e.g. "messages.1.content.0.type:
// Field required") and maps it onto the canonical request: tool_result blocks become
// ROLE_TOOL messages ahead of the rest of their user turn (PROTOCOLS.md §E). Rendering
// turns canonical events into the Messages SSE sequence, opening a content block lazily
// and closing it when the kind of content (or the tool) changes; the finish is held until
// the usage is known, because message_delta carries both.
#include "gateway/protocols/anthropic.h"

#include "libs/common/json_util.h"

#include <algorithm>
#include <boost/json.hpp>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "libs/common/sse.h"

namespace nexusflow::gateway::anthropic {
namespace json = boost::json;
namespace llmpb = ::nexusflow::llm::v1;
using llmpb::ChatEvent;

namespace {

// ---------------------------------------------------------------------------------------
// Parsing

std::string At(const std::string& path, const std::string& key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}
std::string At(const std::string& path, size_t index) { return absl::StrCat(path, ".", index); }

// A field of `o`; JSON null counts as absent, as it does for Anthropic's optional fields.
const json::value* Get(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  return it == o.end() || it->value().is_null() ? nullptr : &it->value();
}

using Names = std::vector<std::string>;

// "'a'", "'a' or 'b'", "'a', 'b' or 'c'" (pydantic's wording, which Anthropic's errors use).
std::string OneOf(const Names& names) {
  std::string out;
  size_t i = 0;
  for (auto n : names) {
    if (i > 0) out += i + 1 == names.size() ? " or " : ", ";
    absl::StrAppend(&out, "'", n, "'");
    ++i;
  }
  return out;
}

bool In(const std::string& s, const Names& names) {
  for (auto n : names)
    if (s == n) return true;
  return false;
}

// Where a content block appears decides which block types it may be.
enum class Place { kSystem, kUser, kAssistant, kToolResult, kDocumentContent };

const Names& TagsFor(Place place) {
  static const Names text{"text"};
  static const Names user{"text", "image", "document", "tool_result"};
  static const Names assistant{"text", "thinking", "redacted_thinking", "tool_use"};
  static const Names tool_result{"text", "image", "document"};
  switch (place) {
    case Place::kUser:
      return user;
    case Place::kAssistant:
      return assistant;
    case Place::kToolResult:
      return tool_result;
    default:
      return text;
  }
}

const char* PlaceName(Place place) {
  switch (place) {
    case Place::kSystem:
      return "system content";
    case Place::kUser:
      return "user messages";
    case Place::kAssistant:
      return "assistant messages";
    case Place::kToolResult:
      return "tool_result content";
    case Place::kDocumentContent:
      return "document content";
  }
  return "";
}

// Reads one request. Every check returns false after recording the first failure in
// `error`, so callers only pass the failure up.
class MessagesReader {
 public:
  explicit MessagesReader(HttpError* error) : error_(error) {}

  bool Read(const json::object& body, llmpb::ChatRequest* req) {
    std::string model;
    if (!RequiredString(body, "", "model", &model)) return false;
    if (model.empty()) return Fail("model", "String should have at least 1 character");
    req->set_model(model);

    // Required, as Anthropic requires it (the gateway fills a default only when it
    // translates another protocol towards Anthropic, PROTOCOLS.md §E). 0 is allowed: it
    // warms the prompt cache without generating.
    const json::value* max_tokens = Get(body, "max_tokens");
    if (!max_tokens) return Missing("max_tokens");
    int64_t n = 0;
    if (!Int(*max_tokens, "max_tokens", 0, INT32_MAX, &n)) return false;
    req->mutable_sampling()->set_max_output_tokens(static_cast<int32_t>(n));

    if (const auto* v = Get(body, "system"); v && !System(*v, req)) return false;
    const json::value* messages = Get(body, "messages");
    if (!messages) return Missing("messages");
    if (!Messages(*messages, req)) return false;
    if (const auto* v = Get(body, "cache_control")) {
      // Top-level cache_control: the breakpoint goes on the last block of the request.
      llmpb::CacheControl cc;
      if (!CacheControl(*v, "cache_control", &cc)) return false;
      for (int i = req->messages_size() - 1; i >= 0; --i) {
        auto* m = req->mutable_messages(i);
        if (m->parts_size() == 0) continue;
        auto* last = m->mutable_parts(m->parts_size() - 1);
        if (!last->has_cache_control()) *last->mutable_cache_control() = cc;
        break;
      }
    }
    if (const auto* v = Get(body, "tools"); v && !Tools(*v, req)) return false;
    if (const auto* v = Get(body, "tool_choice"); v && !ToolChoice(*v, req)) return false;
    if (const auto* v = Get(body, "thinking"); v && !Thinking(*v, req)) return false;
    if (const auto* v = Get(body, "output_config"); v && !OutputConfig(*v, req)) return false;

    auto* s = req->mutable_sampling();
    if (const auto* v = Get(body, "stop_sequences")) {
      const json::array* a = nullptr;
      if (!Array(*v, "stop_sequences", &a)) return false;
      for (size_t i = 0; i < a->size(); ++i) {
        std::string seq;
        if (!String((*a)[i], At("stop_sequences", i), &seq)) return false;
        s->add_stop_sequences(std::move(seq));
      }
    }
    double d = 0;
    if (const auto* v = Get(body, "temperature")) {
      if (!Number(*v, "temperature", 0, 1, &d)) return false;
      s->set_temperature(d);
    }
    if (const auto* v = Get(body, "top_p")) {
      if (!Number(*v, "top_p", 0, 1, &d)) return false;
      s->set_top_p(d);
    }
    if (const auto* v = Get(body, "top_k")) {
      int64_t k = 0;
      if (!Int(*v, "top_k", 0, INT32_MAX, &k)) return false;
      s->set_top_k(static_cast<int32_t>(k));
    }
    if (const auto* v = Get(body, "metadata")) {
      const json::object* md = nullptr;
      if (!Object(*v, "metadata", &md)) return false;
      if (const auto* u = Get(*md, "user_id")) {
        std::string user;
        if (!String(*u, "metadata.user_id", &user)) return false;
        req->set_user(std::move(user));
      }
    }
    if (const auto* v = Get(body, "stream")) {
      bool stream = false;
      if (!Bool(*v, "stream", &stream)) return false;
      req->set_stream(stream);
    }
    return true;
  }

 private:
  // -- failures and typed reads --

  bool Fail(const std::string& path, const std::string& what) {
    *error_ =
        HttpError(400, path.empty() ? std::string(what) : absl::StrCat(path, ": ", what), path);
    return false;
  }
  bool Missing(const std::string& path) { return Fail(path, "Field required"); }
  bool BadTag(const std::string& path, const std::string& tag, const Names& tags) {
    std::vector<std::string> quoted;
    for (const auto& t : tags) quoted.push_back(absl::StrCat("'", t, "'"));
    return Fail(path, absl::StrCat("Input tag '", tag,
                                   "' found using 'type' does not match any of the expected tags: ",
                                   absl::StrJoin(quoted, ", ")));
  }

  bool Object(const json::value& v, const std::string& path, const json::object** out) {
    if (!v.is_object()) return Fail(path, "Input should be a valid dictionary");
    *out = &v.get_object();
    return true;
  }
  bool Array(const json::value& v, const std::string& path, const json::array** out) {
    if (!v.is_array()) return Fail(path, "Input should be a valid list");
    *out = &v.get_array();
    return true;
  }
  bool String(const json::value& v, const std::string& path, std::string* out) {
    if (!v.is_string()) return Fail(path, "Input should be a valid string");
    *out = std::string(v.get_string());
    return true;
  }
  bool Bool(const json::value& v, const std::string& path, bool* out) {
    if (!v.is_bool()) return Fail(path, "Input should be a valid boolean");
    *out = v.get_bool();
    return true;
  }
  bool Int(const json::value& v, const std::string& path, int64_t lo, int64_t hi, int64_t* out) {
    int64_t n = 0;
    if (v.is_int64()) {
      n = v.get_int64();
    } else if (v.is_uint64()) {
      n = v.get_uint64() > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX
                                                            : static_cast<int64_t>(v.get_uint64());
    } else if (auto whole = v.is_double() ? WholeNumber(v.get_double()) : std::nullopt) {
      n = *whole;  // 8.0 is an integer, as pydantic sees it
    } else {
      return Fail(path, "Input should be a valid integer");
    }
    if (n < lo) return Fail(path, absl::StrCat("Input should be greater than or equal to ", lo));
    if (n > hi) return Fail(path, absl::StrCat("Input should be less than or equal to ", hi));
    *out = n;
    return true;
  }
  bool Number(const json::value& v, const std::string& path, double lo, double hi, double* out) {
    double d = 0;
    if (v.is_double())
      d = v.get_double();
    else if (v.is_int64())
      d = static_cast<double>(v.get_int64());
    else if (v.is_uint64())
      d = static_cast<double>(v.get_uint64());
    else
      return Fail(path, "Input should be a valid number");
    if (d < lo) return Fail(path, absl::StrCat("Input should be greater than or equal to ", lo));
    if (d > hi) return Fail(path, absl::StrCat("Input should be less than or equal to ", hi));
    *out = d;
    return true;
  }
  // A required string field `key` of the object at `path`.
  bool RequiredString(const json::object& o, const std::string& path, const std::string& key,
                      std::string* out) {
    const json::value* v = Get(o, key);
    if (!v) return Missing(At(path, key));
    return String(*v, At(path, key), out);
  }
  // The `type` tag of the object at `path`.
  bool Type(const json::object& o, const std::string& path, std::string* out) {
    return RequiredString(o, path, "type", out);
  }

  // -- pieces --

  bool CacheControl(const json::value& v, const std::string& path, llmpb::CacheControl* out) {
    const json::object* o = nullptr;
    if (!Object(v, path, &o)) return false;
    std::string type;
    if (!Type(*o, path, &type)) return false;
    if (type != "ephemeral") return BadTag(At(path, "type"), type, {"ephemeral"});
    if (const auto* t = Get(*o, "ttl")) {
      std::string ttl;
      if (!String(*t, At(path, "ttl"), &ttl)) return false;
      if (ttl == "5m")
        out->mutable_ttl()->set_seconds(300);
      else if (ttl == "1h")
        out->mutable_ttl()->set_seconds(3600);
      else
        return Fail(At(path, "ttl"), absl::StrCat("Input should be ", OneOf({"5m", "1h"})));
    }
    return true;
  }

  // Sets part->cache_control from the block's own cache_control, when it has one.
  bool BlockCacheControl(const json::object& block, const std::string& path,
                         llmpb::ContentPart* part) {
    const json::value* cc = Get(block, "cache_control");
    return !cc || CacheControl(*cc, At(path, "cache_control"), part->mutable_cache_control());
  }

  // Bytes of a base64 source.
  bool Base64Data(const json::object& source, const std::string& path, std::string* out) {
    std::string data;
    if (!RequiredString(source, path, "data", &data)) return false;
    if (!absl::Base64Unescape(data, out)) return Fail(At(path, "data"), "Invalid base64 data");
    return true;
  }

  // The `source` object of an image or document block (at `sp`) and its `type`.
  bool Source(const json::object& block, const std::string& sp, const json::object** source, std::string* type) {
    const json::value* sv = Get(block, "source");
    if (!sv) return Missing(sp);
    if (!Object(*sv, sp, source)) return false;
    return Type(**source, sp, type);
  }

  bool Image(const json::object& block, const std::string& path, llmpb::Image* image) {
    std::string sp = At(path, "source");
    const json::object* source = nullptr;
    std::string type;
    if (!Source(block, sp, &source, &type)) return false;
    if (type == "base64") {
      std::string media_type;
      if (!RequiredString(*source, sp, "media_type", &media_type)) return false;
      if (!In(media_type, {"image/jpeg", "image/png", "image/gif", "image/webp"}))
        return Fail(At(sp, "media_type"),
                    absl::StrCat("Input should be ",
                                 OneOf({"image/jpeg", "image/png", "image/gif", "image/webp"})));
      auto* inline_data = image->mutable_inline_data();
      inline_data->set_mime_type(media_type);
      return Base64Data(*source, sp, inline_data->mutable_data());
    }
    if (type == "url") {
      std::string url;
      if (!RequiredString(*source, sp, "url", &url)) return false;
      image->set_url(std::move(url));
      return true;
    }
    if (type == "file") return RequiredString(*source, sp, "file_id", image->mutable_file_id());
    return BadTag(At(sp, "type"), type, {"base64", "file", "url"});
  }

  bool Document(const json::object& block, const std::string& path, llmpb::Document* doc) {
    std::string sp = At(path, "source");
    const json::object* source = nullptr;
    std::string type;
    if (!Source(block, sp, &source, &type)) return false;
    if (type == "base64") {
      std::string media_type;
      if (!RequiredString(*source, sp, "media_type", &media_type)) return false;
      if (media_type != "application/pdf")
        return Fail(At(sp, "media_type"),
                    absl::StrCat("Input should be ", OneOf({"application/pdf"})));
      auto* inline_data = doc->mutable_inline_data();
      inline_data->set_mime_type(media_type);
      if (!Base64Data(*source, sp, inline_data->mutable_data())) return false;
    } else if (type == "text") {
      std::string media_type, data;
      if (!RequiredString(*source, sp, "media_type", &media_type)) return false;
      if (media_type != "text/plain")
        return Fail(At(sp, "media_type"), absl::StrCat("Input should be ", OneOf({"text/plain"})));
      if (!RequiredString(*source, sp, "data", &data)) return false;
      doc->set_text(std::move(data));
    } else if (type == "url") {
      std::string url;
      if (!RequiredString(*source, sp, "url", &url)) return false;
      doc->set_url(std::move(url));
    } else if (type == "file") {
      if (!RequiredString(*source, sp, "file_id", doc->mutable_file_id())) return false;
    } else if (type == "content") {
      // A document given as text blocks: the canonical document is their text.
      const json::value* cv = Get(*source, "content");
      std::string cp = At(sp, "content");
      if (!cv) return Missing(cp);
      if (cv->is_string()) {
        doc->set_text(std::string(cv->get_string()));
      } else {
        llmpb::Message tmp;
        if (!Content(*cv, cp, Place::kDocumentContent, &tmp)) return false;
        std::vector<std::string> texts;
        for (const auto& p : tmp.parts()) texts.push_back(p.text());
        doc->set_text(absl::StrJoin(texts, "\n"));
      }
    } else {
      return BadTag(At(sp, "type"), type, {"base64", "content", "file", "text", "url"});
    }
    if (const auto* t = Get(block, "title")) {
      std::string title;
      if (!String(*t, At(path, "title"), &title)) return false;
      doc->set_title(std::move(title));
    }
    return true;
  }

  bool ToolResult(const json::object& block, const std::string& path, llmpb::ToolResult* result) {
    std::string id;
    if (!RequiredString(block, path, "tool_use_id", &id)) return false;
    result->set_tool_call_id(id);
    if (auto it = tool_names_.find(id); it != tool_names_.end()) result->set_name(it->second);
    if (const auto* v = Get(block, "is_error")) {
      bool is_error = false;
      if (!Bool(*v, At(path, "is_error"), &is_error)) return false;
      result->set_is_error(is_error);
    }
    const json::value* cv = Get(block, "content");
    if (!cv) return true;
    std::string cp = At(path, "content");
    if (cv->is_string()) {
      result->set_content(std::string(cv->get_string()));
      return true;
    }
    llmpb::Message tmp;
    if (!Content(*cv, cp, Place::kToolResult, &tmp)) return false;
    std::vector<std::string> texts;
    for (auto& p : *tmp.mutable_parts()) {
      if (p.has_text()) texts.push_back(p.text());
      *result->add_parts() = std::move(p);
    }
    result->set_content(absl::StrJoin(texts, "\n"));
    return true;
  }

  // One content block at `path`, placed in `place`.
  bool Block(const json::value& v, const std::string& path, Place place, llmpb::ContentPart* part) {
    const json::object* block = nullptr;
    if (!Object(v, path, &block)) return false;
    std::string type;
    if (!Type(*block, path, &type)) return false;
    const Names& tags = TagsFor(place);
    if (!In(type, tags)) {
      bool known = In(type, {"text", "image", "document", "tool_use", "tool_result", "thinking",
                             "redacted_thinking"});
      if (known)
        return Fail(path,
                    absl::StrCat("'", type, "' blocks are not allowed in ", PlaceName(place)));
      return BadTag(At(path, "type"), type, tags);
    }
    if (type == "text") {
      std::string text;
      if (!RequiredString(*block, path, "text", &text)) return false;
      part->set_text(std::move(text));
    } else if (type == "image") {
      if (!Image(*block, path, part->mutable_image())) return false;
    } else if (type == "document") {
      if (!Document(*block, path, part->mutable_document())) return false;
    } else if (type == "tool_use") {
      auto* call = part->mutable_tool_call();
      std::string id, name;
      if (!RequiredString(*block, path, "id", &id) || !RequiredString(*block, path, "name", &name))
        return false;
      const json::value* input = Get(*block, "input");
      if (!input) return Missing(At(path, "input"));
      const json::object* input_object = nullptr;
      if (!Object(*input, At(path, "input"), &input_object)) return false;
      tool_names_[id] = name;
      call->set_id(std::move(id));
      call->set_name(std::move(name));
      call->set_arguments_json(json::serialize(*input_object));
    } else if (type == "tool_result") {
      if (!ToolResult(*block, path, part->mutable_tool_result())) return false;
    } else if (type == "thinking") {
      auto* thinking = part->mutable_thinking();
      if (!RequiredString(*block, path, "thinking", thinking->mutable_text()) ||
          !RequiredString(*block, path, "signature", thinking->mutable_signature()))
        return false;
    } else if (type == "redacted_thinking") {
      if (!RequiredString(*block, path, "data", part->mutable_thinking()->mutable_redacted_data()))
        return false;
    }
    return BlockCacheControl(*block, path, part);
  }

  // Content given as a string or a list of blocks, appended to `m` in order.
  bool Content(const json::value& v, const std::string& path, Place place, llmpb::Message* m) {
    if (v.is_string()) {
      m->add_parts()->set_text(std::string(v.get_string()));
      return true;
    }
    if (!v.is_array()) return Fail(path, "Input should be a valid string or a valid list");
    const auto& blocks = v.get_array();
    for (size_t i = 0; i < blocks.size(); ++i)
      if (!Block(blocks[i], At(path, i), place, m->add_parts())) return false;
    return true;
  }

  bool System(const json::value& v, llmpb::ChatRequest* req) {
    llmpb::Message m;
    m.set_role(llmpb::ROLE_SYSTEM);
    if (!Content(v, "system", Place::kSystem, &m)) return false;
    if (m.parts_size() == 1 && m.parts(0).text().empty() && !m.parts(0).has_cache_control())
      return true;
    if (m.parts_size() > 0) *req->add_messages() = std::move(m);
    return true;
  }

  bool Messages(const json::value& v, llmpb::ChatRequest* req) {
    const json::array* messages = nullptr;
    if (!Array(v, "messages", &messages)) return false;
    if (messages->empty()) return Fail("messages", "at least one message is required");
    for (size_t i = 0; i < messages->size(); ++i) {
      std::string path = At("messages", i);
      const json::object* msg = nullptr;
      if (!Object((*messages)[i], path, &msg)) return false;
      std::string role;
      if (!RequiredString(*msg, path, "role", &role)) return false;
      const json::value* content = Get(*msg, "content");
      std::string cp = At(path, "content");
      llmpb::Message m;
      Place place;
      if (role == "user") {
        m.set_role(llmpb::ROLE_USER);
        place = Place::kUser;
      } else if (role == "assistant") {
        m.set_role(llmpb::ROLE_ASSISTANT);
        place = Place::kAssistant;
      } else if (role == "system") {  // the SDK's SystemMessageParam
        m.set_role(llmpb::ROLE_SYSTEM);
        place = Place::kSystem;
      } else {
        return Fail(At(path, "role"),
                    absl::StrCat("Input should be ", OneOf({"user", "assistant", "system"})));
      }
      if (!content) return Missing(cp);
      if (!Content(*content, cp, place, &m)) return false;
      // Tool results answer the calls of the turn before; canonically they are ROLE_TOOL
      // messages, ahead of whatever else the user said in the same turn.
      bool had_results = false;
      llmpb::Message rest;
      rest.set_role(m.role());
      for (auto& part : *m.mutable_parts()) {
        if (part.has_tool_result()) {
          had_results = true;
          auto* tool = req->add_messages();
          tool->set_role(llmpb::ROLE_TOOL);
          *tool->add_parts() = std::move(part);
        } else {
          *rest.add_parts() = std::move(part);
        }
      }
      if (!had_results || rest.parts_size() > 0) *req->add_messages() = std::move(rest);
    }
    return true;
  }

  bool Tools(const json::value& v, llmpb::ChatRequest* req) {
    const json::array* tools = nullptr;
    if (!Array(v, "tools", &tools)) return false;
    for (size_t i = 0; i < tools->size(); ++i) {
      std::string path = At("tools", i);
      const json::object* t = nullptr;
      if (!Object((*tools)[i], path, &t)) return false;
      if (const auto* tv = Get(*t, "type")) {
        std::string type;
        if (!String(*tv, At(path, "type"), &type)) return false;
        // Anthropic's server and schema-less tools (web search, code execution, bash, …)
        // have no canonical form: kept as written, for an Anthropic upstream only.
        if (type != "custom") {
          auto* tool = req->add_tools();
          if (!RequiredString(*t, path, "name", tool->mutable_name())) return false;
          tool->set_native_json(json::serialize(*t));
          tool->set_native_protocol(llmpb::PROTOCOL_ANTHROPIC);
          continue;
        }
      }
      auto* tool = req->add_tools();
      if (!RequiredString(*t, path, "name", tool->mutable_name())) return false;
      if (tool->name().empty())
        return Fail(At(path, "name"), "String should have at least 1 character");
      if (const auto* d = Get(*t, "description");
          d && !String(*d, At(path, "description"), tool->mutable_description()))
        return false;
      const json::value* schema = Get(*t, "input_schema");
      if (!schema) return Missing(At(path, "input_schema"));
      const json::object* schema_object = nullptr;
      if (!Object(*schema, At(path, "input_schema"), &schema_object)) return false;
      tool->set_parameters_json(json::serialize(*schema_object));
      if (const auto* s = Get(*t, "strict")) {
        bool strict = false;
        if (!Bool(*s, At(path, "strict"), &strict)) return false;
        tool->set_strict(strict);
      }
      if (const auto* cc = Get(*t, "cache_control");
          cc && !CacheControl(*cc, At(path, "cache_control"), tool->mutable_cache_control()))
        return false;
    }
    return true;
  }

  bool ToolChoice(const json::value& v, llmpb::ChatRequest* req) {
    const json::object* tc = nullptr;
    if (!Object(v, "tool_choice", &tc)) return false;
    std::string type;
    if (!Type(*tc, "tool_choice", &type)) return false;
    auto* choice = req->mutable_tool_choice();
    if (type == "auto") {
      choice->set_mode(llmpb::ToolChoice::MODE_AUTO);
    } else if (type == "any") {
      choice->set_mode(llmpb::ToolChoice::MODE_REQUIRED);
    } else if (type == "none") {
      choice->set_mode(llmpb::ToolChoice::MODE_NONE);
    } else if (type == "tool") {
      std::string name;
      if (!RequiredString(*tc, "tool_choice", "name", &name)) return false;
      bool known = false;
      for (const auto& t : req->tools()) known = known || t.name() == name;
      if (!known)
        return Fail("tool_choice.name", absl::StrCat("no tool named '", name, "' in 'tools'"));
      choice->set_function_name(std::move(name));
    } else {
      return BadTag("tool_choice.type", type, {"auto", "any", "tool", "none"});
    }
    if ((type == "any" || type == "tool") && req->tools_size() == 0)
      return Fail("tool_choice", absl::StrCat("tool_choice of type '", type, "' requires 'tools'"));
    if (const auto* d = Get(*tc, "disable_parallel_tool_use")) {
      bool disable = false;
      if (!Bool(*d, "tool_choice.disable_parallel_tool_use", &disable)) return false;
      choice->set_disable_parallel_tool_use(disable);
    }
    return true;
  }

  bool Thinking(const json::value& v, llmpb::ChatRequest* req) {
    const json::object* t = nullptr;
    if (!Object(v, "thinking", &t)) return false;
    std::string type;
    if (!Type(*t, "thinking", &type)) return false;
    auto* thinking = req->mutable_thinking();
    if (type == "disabled") {
      thinking->set_enabled(false);
      return true;
    }
    if (type == "enabled") {
      const json::value* b = Get(*t, "budget_tokens");
      if (!b) return Missing("thinking.budget_tokens");
      int64_t budget = 0;
      if (!Int(*b, "thinking.budget_tokens", 1024, INT32_MAX, &budget)) return false;
      thinking->set_budget_tokens(static_cast<int32_t>(budget));
    } else if (type != "adaptive" && type != "between_tools") {
      return BadTag("thinking.type", type, {"enabled", "disabled", "adaptive", "between_tools"});
    }
    // adaptive / between_tools: the model decides how much to think (budget 0 = default).
    thinking->set_enabled(true);
    std::string display = "summarized";
    if (const auto* d = Get(*t, "display")) {
      if (!String(*d, "thinking.display", &display)) return false;
      if (!In(display, {"summarized", "omitted"}))
        return Fail("thinking.display",
                    absl::StrCat("Input should be ", OneOf({"summarized", "omitted"})));
    }
    thinking->set_include_thoughts(display != "omitted");
    return true;
  }

  bool OutputConfig(const json::value& v, llmpb::ChatRequest* req) {
    const json::object* oc = nullptr;
    if (!Object(v, "output_config", &oc)) return false;
    if (const auto* e = Get(*oc, "effort")) {
      // No canonical field: it reaches an Anthropic upstream through the raw body.
      std::string effort;
      if (!String(*e, "output_config.effort", &effort)) return false;
      if (!In(effort, {"low", "medium", "high", "xhigh", "max"}))
        return Fail(
            "output_config.effort",
            absl::StrCat("Input should be ", OneOf({"low", "medium", "high", "xhigh", "max"})));
    }
    if (const auto* f = Get(*oc, "format")) {
      const json::object* format = nullptr;
      if (!Object(*f, "output_config.format", &format)) return false;
      std::string type;
      if (!Type(*format, "output_config.format", &type)) return false;
      if (type != "json_schema") return BadTag("output_config.format.type", type, {"json_schema"});
      const json::value* schema = Get(*format, "schema");
      if (!schema) return Missing("output_config.format.schema");
      const json::object* schema_object = nullptr;
      if (!Object(*schema, "output_config.format.schema", &schema_object)) return false;
      auto* rf = req->mutable_response_format();
      rf->set_type(llmpb::ResponseFormat::TYPE_JSON_SCHEMA);
      rf->set_schema_json(json::serialize(*schema_object));
    }
    return true;
  }

  HttpError* error_;
  std::map<std::string, std::string> tool_names_;  // tool_use id → tool name, for results
};

}  // namespace

bool ParseMessagesRequest(std::string_view body, const std::map<std::string, std::string>& headers,
                          [[maybe_unused]] int64_t default_max_tokens, ParsedMessages* out,
                          HttpError* error) {
  if (headers.find("anthropic-version") == headers.end()) {
    *error = HttpError(400, "anthropic-version: header is required", "anthropic-version");
    return false;
  }
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) {
    *error = HttpError(400, absl::StrCat("The request body is not valid JSON: ",
                                         ec ? ec.message() : "expected a JSON object"));
    return false;
  }
  auto& req = out->request;
  MessagesReader reader(error);
  if (!reader.Read(v.get_object(), &req)) return false;
  if (auto it = headers.find("anthropic-beta"); it != headers.end()) {
    for (absl::string_view beta : absl::StrSplit(it->second, ',')) {
      beta = absl::StripAsciiWhitespace(beta);
      if (!beta.empty()) req.add_betas(std::string(beta));
    }
  }
  req.set_protocol(llmpb::PROTOCOL_ANTHROPIC);
  req.mutable_raw()->set_protocol(llmpb::PROTOCOL_ANTHROPIC);
  req.mutable_raw()->set_body(std::string(body));
  return true;
}

// ---------------------------------------------------------------------------------------
// Rendering

namespace {

// Canonical → Anthropic stop_reason (PROTOCOLS.md §E).
const char* StopReason(llmpb::FinishReason reason, const std::string& stop_sequence) {
  switch (reason) {
    case llmpb::FINISH_REASON_LENGTH:
      return "max_tokens";
    case llmpb::FINISH_REASON_TOOL_CALLS:
      return "tool_use";
    case llmpb::FINISH_REASON_CONTENT_FILTER:
      return "refusal";
    default:
      return stop_sequence.empty() ? "end_turn" : "stop_sequence";
  }
}

json::value StopSequence(const std::string& s) {
  return s.empty() ? json::value(nullptr) : json::value(s);
}

// Canonical input_tokens already excludes cache reads and writes, as Anthropic's does.
json::object UsageJson(const llmpb::Usage& u) {
  return json::object{{"input_tokens", u.input_tokens()},
                      {"output_tokens", u.output_tokens()},
                      {"cache_creation_input_tokens", u.cache_write_tokens()},
                      {"cache_read_input_tokens", u.cache_read_tokens()}};
}

// A tool call's arguments as the object Anthropic's `input` must be; arguments that are
// empty or not a JSON object (a model's malformed output) become {}.
json::value ToolInput(const std::string& arguments) {
  boost::system::error_code ec;
  json::value v = json::parse(arguments, ec);
  if (ec || !v.is_object()) return json::object{};
  return v;
}

class MessagesRenderer : public ChatRenderer {
 public:
  MessagesRenderer(std::string id, std::string model)
      : id_(std::move(id)), model_(std::move(model)) {}

  ApiProtocol protocol() const override { return ApiProtocol::kAnthropic; }

  std::string SyncBody(const ChatAnswer& a) override {
    using Kind = ChatAnswer::Block::Kind;
    json::array content;
    for (const auto& b : a.blocks) {
      switch (b.kind) {
        case Kind::kText:
          content.push_back(json::object{{"type", "text"}, {"text", b.text}});
          break;
        case Kind::kThinking:
          content.push_back(
              json::object{{"type", "thinking"}, {"thinking", b.text}, {"signature", b.signature}});
          break;
        case Kind::kRedactedThinking:
          content.push_back(json::object{{"type", "redacted_thinking"}, {"data", b.data}});
          break;
        case Kind::kToolCall: {
          if (b.tool_call >= a.tool_calls.size()) break;
          const auto& call = a.tool_calls[b.tool_call];
          content.push_back(json::object{{"type", "tool_use"},
                                         {"id", call.id},
                                         {"name", call.name},
                                         {"input", ToolInput(call.arguments)}});
          break;
        }
      }
    }
    json::object body{{"id", id_},
                      {"type", "message"},
                      {"role", "assistant"},
                      {"model", model_},
                      {"content", std::move(content)},
                      {"stop_reason", StopReason(a.finish, a.stop_sequence)},
                      {"stop_sequence", StopSequence(a.stop_sequence)},
                      {"usage", UsageJson(a.usage)}};
    return json::serialize(body);
  }

  std::string StreamEvent(const ChatEvent& e) override {
    if (stopped_) return "";
    std::string out;
    switch (e.event_case()) {
      case ChatEvent::kStart:
        if (!started_) {
          usage_ = e.start().input_usage();
          out += MessageStart();
        }
        break;
      case ChatEvent::kText:
        if (e.text().text().empty()) break;
        if (open_ != Open::kText) {
          out += Begin();
          out += OpenBlock(Open::kText, json::object{{"type", "text"}, {"text", ""}});
        }
        out += Delta(json::object{{"type", "text_delta"}, {"text", e.text().text()}});
        break;
      case ChatEvent::kReasoning: {
        const auto& r = e.reasoning();
        if (!r.redacted_data().empty()) {
          out += Begin();
          out += OpenBlock(Open::kRedacted, json::object{{"type", "redacted_thinking"},
                                                         {"data", r.redacted_data()}});
          out += CloseBlock();
          break;
        }
        if (r.text().empty() && r.signature().empty()) break;
        // A thinking block ends with its signature: reasoning after it opens another.
        if (open_ != Open::kThinking || signed_) {
          out += Begin();
          out += OpenBlock(Open::kThinking,
                           json::object{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}});
        }
        if (!r.text().empty())
          out += Delta(json::object{{"type", "thinking_delta"}, {"thinking", r.text()}});
        if (!r.signature().empty()) {
          out += Delta(json::object{{"type", "signature_delta"}, {"signature", r.signature()}});
          signed_ = true;
        }
        break;
      }
      case ChatEvent::kToolCallStart: {
        const auto& s = e.tool_call_start();
        out += Begin();
        out += OpenBlock(Open::kTool, json::object{{"type", "tool_use"},
                                                   {"id", s.id()},
                                                   {"name", s.name()},
                                                   {"input", json::object{}}});
        tool_ = s.index();
        break;
      }
      case ChatEvent::kToolCallDelta: {
        // Anthropic cannot reopen a block: a fragment of a tool other than the open one
        // (never sent by the upstreams' decoders) has nowhere to go.
        const auto& d = e.tool_call_delta();
        if (open_ != Open::kTool || d.index() != tool_ || d.arguments_fragment().empty()) break;
        out += Delta(
            json::object{{"type", "input_json_delta"}, {"partial_json", d.arguments_fragment()}});
        tool_has_input_ = true;
        break;
      }
      case ChatEvent::kFinish:
        out += Begin();
        finish_ = e.finish();
        break;
      case ChatEvent::kUsage:
        out += Begin();
        usage_ = e.usage();
        out += MessageEnd();
        break;
      default:
        break;
    }
    return out;
  }

  std::string StreamError(const HttpError& error) override {
    stopped_ = true;
    // The stream form carries no request_id (the response headers do).
    boost::system::error_code ec;
    json::value body = json::parse(ErrorBody(ApiProtocol::kAnthropic, error, ""), ec);
    if (!ec && body.is_object()) body.get_object().erase("request_id");
    return SseNamed("error", json::serialize(body));
  }

  std::string StreamEnd() override {
    if (stopped_) return "";
    std::string out = Begin();
    return out + MessageEnd();
  }

 private:
  enum class Open { kNone, kText, kThinking, kRedacted, kTool };

  static std::string Frame(std::string_view type, json::object fields) {
    json::object data{{"type", type}};
    for (auto& f : fields) data.emplace(f.key(), std::move(f.value()));
    return SseNamed(type, json::serialize(data));
  }

  std::string MessageStart() {
    started_ = true;
    return Frame("message_start",
                 json::object{{"message", json::object{{"id", id_},
                                                       {"type", "message"},
                                                       {"role", "assistant"},
                                                       {"model", model_},
                                                       {"content", json::array{}},
                                                       {"stop_reason", nullptr},
                                                       {"stop_sequence", nullptr},
                                                       {"usage", UsageJson(usage_)}}}});
  }

  // Before content or the end: message_start if it has not gone out, and the open block
  // closed.
  std::string Begin() {
    std::string out;
    if (!started_) out += MessageStart();
    out += CloseBlock();
    return out;
  }

  std::string OpenBlock(Open kind, json::object block) {
    open_ = kind;
    index_ = next_index_++;
    signed_ = false;
    tool_has_input_ = false;
    return Frame("content_block_start",
                 json::object{{"index", index_}, {"content_block", std::move(block)}});
  }

  std::string Delta(json::object delta) {
    return Frame("content_block_delta",
                 json::object{{"index", index_}, {"delta", std::move(delta)}});
  }

  std::string CloseBlock() {
    if (open_ == Open::kNone) return "";
    std::string out;
    // A tool called without arguments still has an input object; a thinking block from
    // an upstream that signs nothing still ends with the one signature_delta clients expect.
    if (open_ == Open::kTool && !tool_has_input_)
      out += Delta(json::object{{"type", "input_json_delta"}, {"partial_json", "{}"}});
    if (open_ == Open::kThinking && !signed_)
      out += Delta(json::object{{"type", "signature_delta"}, {"signature", ""}});
    out += Frame("content_block_stop", json::object{{"index", index_}});
    open_ = Open::kNone;
    return out;
  }

  std::string MessageEnd() {
    stopped_ = true;
    llmpb::StreamFinish finish = finish_.value_or(llmpb::StreamFinish{});
    return Frame(
               "message_delta",
               json::object{
                   {"delta", json::object{{"stop_reason",
                                           StopReason(finish.reason(), finish.stop_sequence())},
                                          {"stop_sequence", StopSequence(finish.stop_sequence())}}},
                   {"usage", UsageJson(usage_)}}) +
           Frame("message_stop", json::object{});
  }

  std::string id_;
  std::string model_;
  bool started_ = false;  // message_start went out
  bool stopped_ = false;  // message_stop (or an error) went out: nothing follows
  Open open_ = Open::kNone;
  int index_ = -1;      // Anthropic index of the open block
  int next_index_ = 0;  // dense from 0
  int tool_ = -1;       // canonical index of the open tool_use block's call
  bool tool_has_input_ = false;
  bool signed_ = false;                        // the open thinking block had its signature_delta
  std::optional<llmpb::StreamFinish> finish_;  // held until the usage arrives
  llmpb::Usage usage_;  // the latest known: StreamStart.input_usage, then the final usage
};

}  // namespace

std::unique_ptr<ChatRenderer> NewMessagesRenderer(std::string message_id, std::string model) {
  return std::make_unique<MessagesRenderer>(std::move(message_id), std::move(model));
}

std::string CountTokensJson(int64_t input_tokens) {
  return json::serialize(json::object{{"input_tokens", input_tokens}});
}

}  // namespace nexusflow::gateway::anthropic

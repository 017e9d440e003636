#include "gateway/protocols/gemini.h"

#include "libs/common/json_util.h"

#include <boost/json.hpp>

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace nexusflow::gateway::gemini {
namespace json = boost::json;
using llm::v1::ChatEvent;

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------
namespace {

constexpr absl::string_view kTypeUrl = "type.googleapis.com/google.ai.generativelanguage.v1beta.";
constexpr size_t kMaxStopSequences = 5;
constexpr int64_t kMaxCandidates = 8;
const std::initializer_list<std::string_view> kPartFields = {
    "text", "inline_data", "function_call", "function_response", "file_data", "executable_code",
    "code_execution_result", "tool_call", "tool_response", "thought", "thought_signature",
    "video_metadata", "part_metadata", "media_resolution"};

// This Abseil's string_view is a type of its own, not std::string_view.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// generation_config → proto JSON name: "generation_config" → "generationConfig".
std::string SnakeToCamel(std::string_view snake) {
  std::string out;
  out.reserve(snake.size());
  bool upper = false;
  for (char c : snake) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out += upper ? absl::ascii_toupper(static_cast<unsigned char>(c)) : c;
    upper = false;
  }
  return out;
}

// Whether `key` is `snake` in proto JSON's camelCase, without building the camelCase name.
bool IsCamelOf(std::string_view key, std::string_view snake) {
  size_t k = 0;
  for (size_t i = 0; i < snake.size(); ++i, ++k) {
    char want = snake[i];
    if (want == '_' && i + 1 < snake.size()) want = absl::ascii_toupper(static_cast<unsigned char>(snake[++i]));
    if (k >= key.size() || key[k] != want) return false;
  }
  return k == key.size();
}

std::string Join(std::string_view path, std::string_view name) {
  return path.empty() ? std::string(name) : absl::StrCat(Sv(path), ".", Sv(name));
}

std::string Item(std::string_view path, size_t i) { return absl::StrCat(Sv(path), "[", i, "]"); }

// The non-null fields of one JSON object, by their snake_case names (proto3 JSON reads a
// null as an absent field).
class Fields {
 public:
  const json::value* operator[](std::string_view snake) const {
    for (const auto& [name, value] : fields_)
      if (name == snake) return value;
    return nullptr;
  }
  bool has(std::string_view snake) const { return (*this)[snake] != nullptr; }

 private:
  friend class RequestParser;
  std::vector<std::pair<std::string_view, const json::value*>> fields_;
};

// Function names Google accepts.
bool ValidFunctionName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  if (!absl::ascii_isalpha(static_cast<unsigned char>(name[0])) && name[0] != '_') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == ':' || c == '-';
  });
}

// Count keywords are int64 in Gemini's Schema proto, which proto3 JSON writes as strings.
bool IsCountKeyword(std::string_view key) {
  return key == "maxItems" || key == "minItems" || key == "maxLength" || key == "minLength" ||
         key == "maxProperties" || key == "minProperties";
}

// Gemini Schema (OpenAPI subset: upper-case types, `nullable`, `propertyOrdering`) → JSON
// Schema, for upstreams of other protocols. Keys Gemini does not define are kept as they
// are: most are JSON Schema's own (additionalProperties, $ref, …).
json::value JsonSchemaFromGemini(const json::value& schema) {
  if (!schema.is_object()) return schema;
  json::object out;
  bool nullable = false;
  for (const auto& kv : schema.get_object()) {
    std::string key = SnakeToCamel(kv.key());
    const json::value& v = kv.value();
    if (v.is_null()) continue;
    if (key == "type") {
      if (!v.is_string()) {
        out["type"] = v;
        continue;
      }
      std::string type = absl::AsciiStrToLower(std::string(v.get_string()));
      if (type != "type_unspecified") out["type"] = type;
    } else if (key == "nullable") {
      nullable = v.is_bool() && v.get_bool();
    } else if (key == "properties" && v.is_object()) {
      json::object props;
      for (const auto& p : v.get_object()) props[p.key()] = JsonSchemaFromGemini(p.value());
      out["properties"] = std::move(props);
    } else if (key == "items") {
      out["items"] = JsonSchemaFromGemini(v);
    } else if (key == "anyOf" && v.is_array()) {
      json::array any;
      for (const auto& x : v.get_array()) any.push_back(JsonSchemaFromGemini(x));
      out["anyOf"] = std::move(any);
    } else if (key == "propertyOrdering" || key == "example") {
      continue;  // Gemini-only hints
    } else if (key == "format" && v.is_string() && v.get_string() == "enum") {
      continue;  // Gemini marks string enums so; JSON Schema has `enum` alone
    } else if (IsCountKeyword(key) && v.is_string()) {
      int64_t n;
      if (absl::SimpleAtoi(Sv(v.get_string()), &n)) out[key] = n;
      else out[key] = v;
    } else {
      out[key] = v;
    }
  }
  if (nullable) {
    if (auto* type = out.if_contains("type"); type && type->is_string()) {
      json::value t = *type;
      *type = json::array{t, "null"};
    } else if (auto* any = out.if_contains("anyOf"); any && any->is_array()) {
      any->as_array().push_back(json::object{{"type", "null"}});
    }
    if (auto* e = out.if_contains("enum"); e && e->is_array()) e->as_array().push_back(nullptr);
  }
  return out;
}

// A function call seen in a model turn, for pairing the responses that follow.
struct SeenCall {
  std::string id;
  std::string name;
  size_t content = 0;  // index in `contents`
  bool answered = false;
};

// One request body → canonical. Every method returns false after recording the first
// error; nothing throws.
class RequestParser {
 public:
  RequestParser(std::string_view message_name, HttpError* error)
      : message_name_(message_name), error_(error) {}

  // A GenerateContentRequest object found at `path` ("" at the top level).
  bool Generate(const json::value& body, const std::string& path, ParsedGenerate* out) {
    Fields f;
    if (!Message(body, path, "GenerateContentRequest",
                 {"model", "contents", "tools", "tool_config", "safety_settings",
                  "system_instruction", "generation_config", "cached_content", "service_tier",
                  "labels", "store", "continuation_token"},
                 &f))
      return false;
    auto& req = out->request;
    if (const auto* v = f["system_instruction"]; v && !SystemInstruction(*v, Join(path, "system_instruction"), &req))
      return false;
    const json::value* contents = f["contents"];
    if (!contents) return Bad(Join(path, "contents"), "contents is not specified");
    if (!Contents(*contents, Join(path, "contents"), &req)) return false;
    if (const auto* v = f["tools"]; v && !Tools(*v, Join(path, "tools"), &req)) return false;
    if (const auto* v = f["tool_config"]; v && !ToolConfig(*v, Join(path, "tool_config"), &req)) return false;
    if (const auto* v = f["generation_config"]; v && !GenerationConfig(*v, Join(path, "generation_config"), &req))
      return false;
    if (const auto* v = f["safety_settings"]) {  // accepted and ignored: no upstream has them
      const json::array* settings;
      if (!List(*v, Join(path, "safety_settings"), "SafetySetting", &settings)) return false;
    }
    if (const auto* v = f["cached_content"]; v && !String(*v, Join(path, "cached_content"), &out->cached_content))
      return false;
    if (const auto* v = f["model"]) {  // the path names the model; the body's is ignored
      std::string ignored;
      if (!String(*v, Join(path, "model"), &ignored)) return false;
    }
    return true;
  }

  // A CountTokensRequest: `contents`, or a whole `generateContentRequest`.
  bool CountTokens(const json::value& body, ParsedGenerate* out) {
    Fields f;
    if (!Message(body, "", "CountTokensRequest", {"contents", "generate_content_request"}, &f)) return false;
    if (f.has("contents") && f.has("generate_content_request"))
      return Bad("generate_content_request", "contents and generate_content_request cannot both be set");
    if (const auto* g = f["generate_content_request"]) return Generate(*g, "generate_content_request", out);
    const json::value* contents = f["contents"];
    if (!contents) return Bad("contents", "contents is not specified");
    return Contents(*contents, "contents", &out->request);
  }

  bool Fail(std::string path, std::string message) {
    *error_ = HttpError(400, std::move(message), std::move(path));
    return false;
  }

 private:
  // A value of the wrong type, as Google words it.
  bool Invalid(const std::string& path, std::string_view type, const json::value& v) {
    return Fail(path, absl::StrCat("Invalid value at '", path, "' (", Sv(type), "), ", json::serialize(v)));
  }
  // A well-typed value Google would refuse.
  bool Bad(const std::string& path, std::string_view message) {
    return Fail(path, absl::StrCat("* ", Sv(message_name_), ".", path, ": ", Sv(message)));
  }

  // `v` as a message of `type` whose fields are `known` (snake_case; camelCase accepted).
  bool Message(const json::value& v, const std::string& path, std::string_view type,
               std::initializer_list<std::string_view> known, Fields* out) {
    const json::object* obj = v.if_object();
    if (!obj) return Invalid(path, absl::StrCat(kTypeUrl, Sv(type)), v);
    for (const auto& kv : *obj) {
      std::string_view key = kv.key();
      const std::string_view* name = nullptr;
      for (const auto& k : known) {
        if (key == k || IsCamelOf(key, k)) {
          name = &k;
          break;
        }
      }
      if (!name) {
        std::string where = path.empty() ? std::string() : absl::StrCat(" at '", path, "'");
        return Fail(Join(path, key), absl::StrCat("Invalid JSON payload received. Unknown name \"", Sv(key), "\"",
                                                  where, ": Cannot find field."));
      }
      if (out->has(*name))
        return Fail(Join(path, *name), absl::StrCat("Invalid JSON payload received. Duplicate field \"", Sv(*name),
                                                    "\"", path.empty() ? "" : absl::StrCat(" at '", path, "'"), "."));
      if (!kv.value().is_null()) out->fields_.emplace_back(*name, &kv.value());
    }
    return true;
  }

  bool List(const json::value& v, const std::string& path, std::string_view item_type, const json::array** out) {
    *out = v.if_array();
    if (!*out) return Invalid(path, absl::StrCat(kTypeUrl, Sv(item_type)), v);
    return true;
  }

  bool String(const json::value& v, const std::string& path, std::string* out) {
    if (!v.is_string()) return Invalid(path, "TYPE_STRING", v);
    *out = std::string(v.get_string());
    return true;
  }

  bool Bool(const json::value& v, const std::string& path, bool* out) {
    if (!v.is_bool()) return Invalid(path, "TYPE_BOOL", v);
    *out = v.get_bool();
    return true;
  }

  // proto3 JSON numbers: a JSON number or a numeric string.
  bool Float(const json::value& v, const std::string& path, double* out) {
    if (v.is_double()) *out = v.get_double();
    else if (v.is_int64()) *out = static_cast<double>(v.get_int64());
    else if (v.is_uint64()) *out = static_cast<double>(v.get_uint64());
    else if (!v.is_string() || !absl::SimpleAtod(Sv(v.get_string()), out))
      return Invalid(path, "TYPE_FLOAT", v);
    return true;
  }

  bool Int32(const json::value& v, const std::string& path, int64_t* out) {
    int64_t n = 0;
    bool ok = true;
    if (v.is_int64()) {
      n = v.get_int64();
    } else if (v.is_uint64()) {
      ok = v.get_uint64() <= static_cast<uint64_t>(INT32_MAX);
      n = static_cast<int64_t>(std::min<uint64_t>(v.get_uint64(), INT32_MAX));
    } else if (v.is_double()) {
      auto whole = WholeNumber(v.get_double());
      ok = whole.has_value();
      n = whole.value_or(0);
    } else if (v.is_string()) {
      ok = absl::SimpleAtoi(Sv(v.get_string()), &n);
    } else {
      ok = false;
    }
    if (!ok || n < INT32_MIN || n > INT32_MAX) return Invalid(path, "TYPE_INT32", v);
    *out = n;
    return true;
  }

  bool SystemInstruction(const json::value& v, const std::string& path, llm::v1::ChatRequest* req) {
    Fields f;
    if (!Message(v, path, "Content", {"role", "parts"}, &f)) return false;  // role: ignored
    if (const auto* role = f["role"]) {
      std::string ignored;
      if (!String(*role, Join(path, "role"), &ignored)) return false;
    }
    const json::value* parts_v = f["parts"];
    if (!parts_v) return true;
    const json::array* parts;
    if (!List(*parts_v, Join(path, "parts"), "Part", &parts)) return false;
    llm::v1::Message m;
    m.set_role(llm::v1::ROLE_SYSTEM);
    for (size_t i = 0; i < parts->size(); ++i) {
      std::string pp = Item(Join(path, "parts"), i);
      Fields pf;
      if (!Message((*parts)[i], pp, "Part", kPartFields, &pf)) return false;
      const json::value* text = pf["text"];
      if (!text) return Bad(pp, "a system instruction holds text parts only");
      if (!String(*text, Join(pp, "text"), m.add_parts()->mutable_text())) return false;
    }
    if (m.parts_size() > 0) *req->add_messages() = std::move(m);
    return true;
  }

  bool Contents(const json::value& v, const std::string& path, llm::v1::ChatRequest* req) {
    const json::array* contents;
    if (!List(v, path, "Content", &contents)) return false;
    if (contents->empty()) return Bad(path, "contents is not specified");
    for (size_t c = 0; c < contents->size(); ++c)
      if (!Content((*contents)[c], Item(path, c), c, req)) return false;
    return true;
  }

  bool Content(const json::value& v, const std::string& path, size_t index, llm::v1::ChatRequest* req) {
    Fields f;
    if (!Message(v, path, "Content", {"role", "parts"}, &f)) return false;
    std::string role;
    if (const auto* r = f["role"]; r && !String(*r, Join(path, "role"), &role)) return false;
    // A single-turn request may leave the role out; "function" is the older name of the
    // turn that carries function responses.
    bool model_turn = role == "model";
    if (!model_turn && !role.empty() && role != "user" && role != "function")
      return Bad(Join(path, "role"), "Please use a valid role: user, model.");
    const json::value* parts_v = f["parts"];
    const json::array* parts = nullptr;
    if (parts_v && !List(*parts_v, Join(path, "parts"), "Part", &parts)) return false;
    if (!parts || parts->empty()) return Bad(Join(path, "parts"), "contents.parts must not be empty.");

    llm::v1::Message results;  // function responses, sent before the rest of a user turn
    results.set_role(llm::v1::ROLE_TOOL);
    llm::v1::Message m;
    m.set_role(model_turn ? llm::v1::ROLE_ASSISTANT : llm::v1::ROLE_USER);
    for (size_t p = 0; p < parts->size(); ++p)
      if (!Part((*parts)[p], Item(Join(path, "parts"), p), model_turn, index, p, &m, &results)) return false;
    if (results.parts_size() > 0) *req->add_messages() = std::move(results);
    if (m.parts_size() > 0) *req->add_messages() = std::move(m);
    return true;
  }

  bool Part(const json::value& v, const std::string& path, bool model_turn, size_t c, size_t p,
            llm::v1::Message* m, llm::v1::Message* results) {
    Fields f;
    if (!Message(v, path, "Part", kPartFields, &f)) return false;
    // Part.data is a oneof.
    std::string_view data;
    for (std::string_view name : {"text", "inline_data", "function_call", "function_response", "file_data",
                                  "executable_code", "code_execution_result", "tool_call", "tool_response"}) {
      if (!f.has(name)) continue;
      if (!data.empty())
        return Fail(Join(path, name), absl::StrCat("Invalid value at '", path, "' (oneof), oneof field 'data' is "
                                                   "already set. Cannot set '", SnakeToCamel(name), "'"));
      data = name;
    }
    bool thought = false;
    if (const auto* t = f["thought"]; t && !Bool(*t, Join(path, "thought"), &thought)) return false;
    std::string signature;
    if (const auto* s = f["thought_signature"]; s && !String(*s, Join(path, "thought_signature"), &signature))
      return false;
    std::string field = Join(path, data);

    if (data.empty()) {
      // A bare thought signature (Gemini may close its reasoning so): keep it with the
      // reasoning it signs.
      if (model_turn && !signature.empty()) return Thought("", signature, m);
      return Bad(Join(path, "data"), "required oneof field 'data' must have one initialized field");
    }
    if (data == "text") {
      std::string text;
      if (!String(*f["text"], field, &text)) return false;
      // A signature on a plain text part has no canonical home; it is dropped.
      if (model_turn && thought) return Thought(std::move(text), signature, m);
      m->add_parts()->set_text(std::move(text));
      return true;
    }
    if (data == "inline_data") return InlineData(*f["inline_data"], field, m);
    if (data == "file_data") return FileData(*f["file_data"], field, m);
    if (data == "function_call") {
      if (!model_turn) return Bad(field, "a function call belongs in a model turn");
      return FunctionCall(*f["function_call"], field, c, p, signature, m);
    }
    if (data == "function_response") {
      if (model_turn) return Bad(field, "a function response belongs in a user turn");
      return FunctionResponse(*f["function_response"], field, c, p, results);
    }
    return Bad(field, "Google's built-in tools (code execution, search, server-side tool calls) are not "
                      "available through NexusFlow");
  }

  // Reasoning given back. Gemini splits one thought over many parts when it streams:
  // consecutive thought parts make one Thinking, closed by the part that carries the
  // signature.
  bool Thought(std::string text, const std::string& signature, llm::v1::Message* m) {
    if (m->parts_size() > 0) {
      auto* last = m->mutable_parts(m->parts_size() - 1);
      if (last->has_thinking() && last->thinking().signature().empty()) {
        last->mutable_thinking()->mutable_text()->append(text);
        last->mutable_thinking()->set_signature(signature);
        return true;
      }
    }
    auto* thinking = m->add_parts()->mutable_thinking();
    thinking->set_text(std::move(text));
    thinking->set_signature(signature);
    return true;
  }

  // Bytes fields are base64 in proto3 JSON; Google takes the URL-safe alphabet too.
  bool Bytes(const json::value& v, const std::string& path, std::string* out) {
    if (!v.is_string()) return Invalid(path, "TYPE_BYTES", v);
    std::string_view s = v.get_string();
    if (absl::Base64Unescape(Sv(s), out) || absl::WebSafeBase64Unescape(Sv(s), out)) return true;
    return Fail(path, absl::StrCat("Invalid value at '", path, "' (TYPE_BYTES), Base64 decoding failed for ",
                                   json::serialize(v)));
  }

  bool Blob(const json::value& v, const std::string& path, llm::v1::InlineData* out) {
    Fields f;
    if (!Message(v, path, "Blob", {"mime_type", "data"}, &f)) return false;
    const json::value* mime = f["mime_type"];
    if (!mime) return Bad(Join(path, "mime_type"), "mime_type is not specified");
    if (!String(*mime, Join(path, "mime_type"), out->mutable_mime_type())) return false;
    const json::value* data = f["data"];
    if (!data) return Bad(Join(path, "data"), "data is not specified");
    return Bytes(*data, Join(path, "data"), out->mutable_data());
  }

  // Images become Image parts, everything else (PDF, audio, text…) a Document.
  bool InlineData(const json::value& v, const std::string& path, llm::v1::Message* m) {
    llm::v1::InlineData blob;
    if (!Blob(v, path, &blob)) return false;
    auto* part = m->add_parts();
    if (absl::StartsWith(blob.mime_type(), "image/")) *part->mutable_image()->mutable_inline_data() = std::move(blob);
    else *part->mutable_document()->mutable_inline_data() = std::move(blob);
    return true;
  }

  // A file by URI (Files API, gs://, https). Only a Gemini upstream can read Files API URIs.
  bool FileData(const json::value& v, const std::string& path, llm::v1::Message* m) {
    Fields f;
    if (!Message(v, path, "FileData", {"mime_type", "file_uri"}, &f)) return false;
    std::string mime, uri;
    if (const auto* x = f["mime_type"]; x && !String(*x, Join(path, "mime_type"), &mime)) return false;
    const json::value* u = f["file_uri"];
    if (!u) return Bad(Join(path, "file_uri"), "file_uri is not specified");
    if (!String(*u, Join(path, "file_uri"), &uri)) return false;
    if (uri.empty()) return Bad(Join(path, "file_uri"), "file_uri must not be empty");
    auto* part = m->add_parts();
    if (absl::StartsWith(mime, "image/")) part->mutable_image()->set_url(std::move(uri));
    else part->mutable_document()->set_url(std::move(uri));
    return true;
  }

  bool FunctionCall(const json::value& v, const std::string& path, size_t c, size_t p,
                    const std::string& signature, llm::v1::Message* m) {
    Fields f;
    if (!Message(v, path, "FunctionCall", {"id", "name", "args", "partial_args", "will_continue"}, &f))
      return false;
    std::string id, name;
    if (const auto* x = f["id"]; x && !String(*x, Join(path, "id"), &id)) return false;
    if (const auto* x = f["name"]; x && !String(*x, Join(path, "name"), &name)) return false;
    if (name.empty()) return Bad(Join(path, "name"), "Name cannot be empty.");
    std::string args = "{}";
    if (const auto* a = f["args"]) {
      if (!a->is_object()) return Invalid(Join(path, "args"), "type.googleapis.com/google.protobuf.Struct", *a);
      args = json::serialize(*a);
    }
    if (id.empty()) id = absl::StrCat("call_", c, "_", p);
    calls_.push_back({id, name, c, false});
    auto* call = m->add_parts()->mutable_tool_call();
    call->set_id(std::move(id));
    call->set_name(std::move(name));
    call->set_arguments_json(std::move(args));
    call->set_signature(signature);
    return true;
  }

  // The call a response answers (see gemini.h).
  std::string PairResponse(const std::string& id, const std::string& name, size_t c, size_t p) {
    if (!id.empty()) {
      for (auto& call : calls_) {
        if (call.id == id) {
          call.answered = true;
          return id;
        }
      }
    }
    SeenCall* best = nullptr;
    for (auto& call : calls_)
      if (!call.answered && call.name == name && (!best || call.content > best->content)) best = &call;
    if (best) {
      best->answered = true;
      return best->id;
    }
    return id.empty() ? absl::StrCat("call_", c, "_", p) : id;
  }

  bool FunctionResponse(const json::value& v, const std::string& path, size_t c, size_t p,
                        llm::v1::Message* results) {
    Fields f;
    if (!Message(v, path, "FunctionResponse", {"id", "name", "response", "parts", "will_continue", "scheduling"}, &f))
      return false;
    std::string id, name;
    if (const auto* x = f["id"]; x && !String(*x, Join(path, "id"), &id)) return false;
    if (const auto* x = f["name"]; x && !String(*x, Join(path, "name"), &name)) return false;
    if (name.empty()) return Bad(Join(path, "name"), "Name cannot be empty.");
    auto* result = results->add_parts()->mutable_tool_result();
    result->set_tool_call_id(PairResponse(id, name, c, p));
    result->set_name(name);
    // The response object as JSON text. By Gemini's convention `output` holds a result and
    // `error` a failure.
    if (const auto* r = f["response"]) {
      if (!r->is_object()) return Invalid(Join(path, "response"), "type.googleapis.com/google.protobuf.Struct", *r);
      result->set_content(json::serialize(*r));
      result->set_is_error(r->get_object().contains("error") && !r->get_object().contains("output"));
    } else {
      result->set_content("{}");
    }
    if (const auto* parts_v = f["parts"]) {  // multimodal results (images, files)
      const json::array* parts;
      std::string pp = Join(path, "parts");
      if (!List(*parts_v, pp, "FunctionResponsePart", &parts)) return false;
      llm::v1::Message media;
      for (size_t i = 0; i < parts->size(); ++i) {
        std::string ip = Item(pp, i);
        Fields pf;
        if (!Message((*parts)[i], ip, "FunctionResponsePart", {"inline_data", "file_data"}, &pf)) return false;
        if (const auto* d = pf["inline_data"]) {
          if (!InlineData(*d, Join(ip, "inline_data"), &media)) return false;
        } else if (const auto* fd = pf["file_data"]) {
          if (!FileData(*fd, Join(ip, "file_data"), &media)) return false;
        } else {
          return Bad(Join(ip, "data"), "required oneof field 'data' must have one initialized field");
        }
      }
      for (auto& part : *media.mutable_parts()) *result->add_parts() = std::move(part);
    }
    return true;
  }

  bool Tools(const json::value& v, const std::string& path, llm::v1::ChatRequest* req) {
    const json::array* tools;
    if (!List(v, path, "Tool", &tools)) return false;
    for (size_t i = 0; i < tools->size(); ++i) {
      std::string tp = Item(path, i);
      Fields f;
      if (!Message((*tools)[i], tp, "Tool",
                   {"function_declarations", "google_search_retrieval", "code_execution", "google_search",
                    "url_context", "computer_use", "file_search", "google_maps", "mcp_servers"},
                   &f))
        return false;
      // Google's built-in tools have no canonical form: kept as written, for a Gemini
      // upstream only.
      for (std::string_view builtin : {"google_search_retrieval", "code_execution", "google_search", "url_context",
                                       "computer_use", "file_search", "google_maps", "mcp_servers"}) {
        if (!f.has(builtin)) continue;
        auto* tool = req->add_tools();
        tool->set_name(std::string(builtin));
        tool->set_native_json(json::serialize(json::object{{builtin, *f[builtin]}}));
        tool->set_native_protocol(llm::v1::PROTOCOL_GEMINI);
      }
      const json::value* decls_v = f["function_declarations"];
      if (!decls_v) continue;
      const json::array* decls;
      std::string dp = Join(tp, "function_declarations");
      if (!List(*decls_v, dp, "FunctionDeclaration", &decls)) return false;
      for (size_t j = 0; j < decls->size(); ++j)
        if (!FunctionDeclaration((*decls)[j], Item(dp, j), req)) return false;
    }
    return true;
  }

  bool FunctionDeclaration(const json::value& v, const std::string& path, llm::v1::ChatRequest* req) {
    Fields f;
    if (!Message(v, path, "FunctionDeclaration",
                 {"name", "description", "behavior", "parameters", "parameters_json_schema", "response",
                  "response_json_schema"},
                 &f))
      return false;
    llm::v1::Tool tool;
    if (const auto* x = f["name"]; x && !String(*x, Join(path, "name"), tool.mutable_name())) return false;
    if (!ValidFunctionName(tool.name()))
      return Bad(Join(path, "name"),
                 "[FIELD_INVALID] Invalid function name. Must start with a letter or an underscore. Must be "
                 "alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum "
                 "length of 64.");
    for (const auto& t : req->tools())
      if (t.name() == tool.name())
        return Bad(Join(path, "name"), absl::StrCat("Duplicate function declaration found: ", tool.name()));
    if (const auto* x = f["description"]; x && !String(*x, Join(path, "description"), tool.mutable_description()))
      return false;
    const json::value* params = f["parameters"];
    const json::value* json_schema = f["parameters_json_schema"];
    if (params && json_schema)
      return Bad(Join(path, "parameters_json_schema"), "parameters and parameters_json_schema cannot both be set");
    if (params) {
      if (!params->is_object()) return Invalid(Join(path, "parameters"), absl::StrCat(kTypeUrl, "Schema"), *params);
      tool.set_parameters_json(json::serialize(JsonSchemaFromGemini(*params)));
    } else if (json_schema) {
      if (!json_schema->is_object())
        return Bad(Join(path, "parameters_json_schema"), "parameters_json_schema must be a JSON Schema object");
      tool.set_parameters_json(json::serialize(*json_schema));
    }
    *req->add_tools() = std::move(tool);
    return true;
  }

  bool ToolConfig(const json::value& v, const std::string& path, llm::v1::ChatRequest* req) {
    Fields f;
    if (!Message(v, path, "ToolConfig",
                 {"function_calling_config", "retrieval_config", "include_server_side_tool_invocations"}, &f))
      return false;
    const json::value* fcc = f["function_calling_config"];
    if (!fcc) return true;
    std::string cp = Join(path, "function_calling_config");
    Fields cf;
    if (!Message(*fcc, cp, "FunctionCallingConfig", {"mode", "allowed_function_names", "stream_function_call_arguments"},
                 &cf))
      return false;
    std::string mode = "MODE_UNSPECIFIED";
    if (const auto* m = cf["mode"]) {
      // An enum: its name, or its number.
      static constexpr std::string_view kModes[] = {"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"};
      bool known = false;
      if (m->is_string()) {
        mode = std::string(m->get_string());
        known = std::find(std::begin(kModes), std::end(kModes), mode) != std::end(kModes);
      } else if (m->is_int64() && m->get_int64() >= 0 && m->get_int64() < 5) {
        mode = std::string(kModes[m->get_int64()]);
        known = true;
      }
      if (!known) return Invalid(Join(cp, "mode"), absl::StrCat(kTypeUrl, "FunctionCallingConfig.Mode"), *m);
    }
    std::vector<std::string> allowed;
    if (const auto* names_v = cf["allowed_function_names"]) {
      std::string np = Join(cp, "allowed_function_names");
      const json::array* names;
      if (!names_v->is_array()) return Invalid(np, "TYPE_STRING", *names_v);
      names = &names_v->get_array();
      for (size_t i = 0; i < names->size(); ++i) {
        std::string name;
        if (!String((*names)[i], Item(np, i), &name)) return false;
        bool declared = std::any_of(req->tools().begin(), req->tools().end(),
                                    [&](const llm::v1::Tool& t) { return t.name() == name; });
        if (!declared)
          return Bad(Item(np, i), absl::StrCat("function ", name, " is not declared in function_declarations"));
        allowed.push_back(std::move(name));
      }
      if (!allowed.empty() && mode != "ANY" && mode != "VALIDATED")
        return Bad(np, "allowed_function_names may be set only when the mode is ANY or VALIDATED");
    }
    auto* choice = req->mutable_tool_choice();
    if (mode == "AUTO" || mode == "VALIDATED") {
      // VALIDATED (call or answer, calls held to their schema) has no canonical twin: AUTO.
      choice->set_mode(llm::v1::ToolChoice::MODE_AUTO);
    } else if (mode == "NONE") {
      choice->set_mode(llm::v1::ToolChoice::MODE_NONE);
    } else if (mode == "ANY") {
      if (req->tools_size() == 0)
        return Bad(Join(cp, "mode"), "mode ANY needs at least one function declaration in tools");
      if (allowed.size() == 1) {
        choice->set_function_name(allowed[0]);
        return true;
      }
      choice->set_mode(llm::v1::ToolChoice::MODE_REQUIRED);
    }
    for (auto& name : allowed) choice->add_allowed_function_names(std::move(name));
    return true;
  }

  bool GenerationConfig(const json::value& v, const std::string& path, llm::v1::ChatRequest* req) {
    Fields f;
    if (!Message(v, path, "GenerationConfig",
                 {"stop_sequences", "response_mime_type", "response_schema", "response_json_schema",
                  "response_modalities", "candidate_count", "max_output_tokens", "temperature", "top_p", "top_k",
                  "seed", "presence_penalty", "frequency_penalty", "response_logprobs", "logprobs",
                  "enable_enhanced_civic_answers", "speech_config", "thinking_config", "image_config",
                  "media_resolution"},
                 &f))
      return false;
    auto* s = req->mutable_sampling();
    auto number = [&](std::string_view name, double lo, double hi, double* out) -> std::optional<bool> {
      const json::value* x = f[name];
      if (!x) return std::nullopt;
      std::string fp = Join(path, name);
      if (!Float(*x, fp, out)) return false;
      if (*out < lo || *out > hi)
        return Bad(fp, absl::StrCat(Sv(name), " must be between ", lo, " and ", hi, ", got ", *out));
      return true;
    };
    auto integer = [&](std::string_view name, int64_t lo, int64_t hi, int64_t* out) -> std::optional<bool> {
      const json::value* x = f[name];
      if (!x) return std::nullopt;
      std::string fp = Join(path, name);
      if (!Int32(*x, fp, out)) return false;
      if (*out < lo || *out > hi)
        return Bad(fp, absl::StrCat(Sv(name), " must be between ", lo, " and ", hi, ", got ", *out));
      return true;
    };
    double d = 0;
    int64_t n = 0;
    if (auto ok = number("temperature", 0, 2, &d)) {
      if (!*ok) return false;
      s->set_temperature(d);
    }
    if (auto ok = number("top_p", 0, 1, &d)) {
      if (!*ok) return false;
      s->set_top_p(d);
    }
    if (auto ok = integer("top_k", 0, INT32_MAX, &n)) {  // 0: the default
      if (!*ok) return false;
      if (n > 0) s->set_top_k(static_cast<int32_t>(n));
    }
    if (auto ok = integer("max_output_tokens", 0, INT32_MAX, &n)) {  // 0: the default
      if (!*ok) return false;
      if (n > 0) s->set_max_output_tokens(static_cast<int32_t>(n));
    }
    if (auto ok = integer("candidate_count", 0, kMaxCandidates, &n)) {  // 0: one
      if (!*ok) return false;
      if (n > 0) s->set_n(static_cast<int32_t>(n));
    }
    if (auto ok = integer("seed", INT32_MIN, INT32_MAX, &n)) {
      if (!*ok) return false;
      s->set_seed(n);
    }
    if (auto ok = number("presence_penalty", -2, 2, &d)) {
      if (!*ok) return false;
      s->set_presence_penalty(d);
    }
    if (auto ok = number("frequency_penalty", -2, 2, &d)) {
      if (!*ok) return false;
      s->set_frequency_penalty(d);
    }
    if (const auto* stops_v = f["stop_sequences"]) {
      std::string sp = Join(path, "stop_sequences");
      if (!stops_v->is_array()) return Invalid(sp, "TYPE_STRING", *stops_v);
      const auto& stops = stops_v->get_array();
      if (stops.size() > kMaxStopSequences)
        return Bad(sp, absl::StrCat("stop_sequences may hold at most ", kMaxStopSequences, " sequences, got ",
                                    stops.size()));
      for (size_t i = 0; i < stops.size(); ++i)
        if (!String(stops[i], Item(sp, i), s->add_stop_sequences())) return false;
    }
    if (const auto* modalities_v = f["response_modalities"]) {
      std::string mp = Join(path, "response_modalities");
      if (!modalities_v->is_array()) return Invalid(mp, absl::StrCat(kTypeUrl, "GenerationConfig.Modality"), *modalities_v);
      const auto& modalities = modalities_v->get_array();
      for (size_t i = 0; i < modalities.size(); ++i) {
        std::string modality;
        if (!String(modalities[i], Item(mp, i), &modality)) return false;
        if (modality != "TEXT" && modality != "MODALITY_UNSPECIFIED")
          return Bad(Item(mp, i), absl::StrCat("NexusFlow answers generateContent with text only, not ", modality));
      }
    }
    if (!ResponseFormat(f, path, req)) return false;
    if (const auto* t = f["thinking_config"]) return ThinkingConfig(*t, Join(path, "thinking_config"), req);
    return true;
  }

  bool ResponseFormat(const Fields& f, const std::string& path, llm::v1::ChatRequest* req) {
    std::string mime;
    std::string mp = Join(path, "response_mime_type");
    if (const auto* m = f["response_mime_type"]; m && !String(*m, mp, &mime)) return false;
    const json::value* schema = f["response_schema"];
    const json::value* json_schema = f["response_json_schema"];
    if (schema && json_schema)
      return Bad(Join(path, "response_json_schema"), "response_schema and response_json_schema cannot both be set");
    if (!mime.empty() && mime != "text/plain" && mime != "application/json" && mime != "application/xml" &&
        mime != "application/yaml" && mime != "text/x.enum")
      return Bad(mp, "allowed mimetypes are `text/plain`, `application/json`, `application/xml`, "
                     "`application/yaml` and `text/x.enum`.");
    if (schema && !schema->is_object())
      return Invalid(Join(path, "response_schema"), absl::StrCat(kTypeUrl, "Schema"), *schema);
    if (json_schema && !json_schema->is_object())
      return Bad(Join(path, "response_json_schema"), "response_json_schema must be a JSON Schema object");
    if ((schema || json_schema) && mime != "application/json" && !(schema && mime == "text/x.enum"))
      return Bad(mp, "a response schema needs response_mime_type `application/json`");
    if (mime.empty()) return true;
    auto* rf = req->mutable_response_format();
    if (mime != "application/json") {
      // xml, yaml and text/x.enum are plain text to the canonical request; the enum schema
      // has no canonical home and is not forwarded.
      rf->set_type(llm::v1::ResponseFormat::TYPE_TEXT);
      return true;
    }
    if (!schema && !json_schema) {
      rf->set_type(llm::v1::ResponseFormat::TYPE_JSON_OBJECT);
      return true;
    }
    rf->set_type(llm::v1::ResponseFormat::TYPE_JSON_SCHEMA);
    rf->set_name("response");  // Gemini schemas have no name; OpenAI requires one
    rf->set_schema_json(json::serialize(schema ? JsonSchemaFromGemini(*schema) : *json_schema));
    return true;
  }

  bool ThinkingConfig(const json::value& v, const std::string& path, llm::v1::ChatRequest* req) {
    Fields f;
    if (!Message(v, path, "ThinkingConfig", {"include_thoughts", "thinking_budget", "thinking_level"}, &f))
      return false;
    auto* t = req->mutable_thinking();
    bool include = false;
    if (const auto* x = f["include_thoughts"]; x && !Bool(*x, Join(path, "include_thoughts"), &include)) return false;
    t->set_include_thoughts(include);
    if (include) t->set_enabled(true);
    if (const auto* x = f["thinking_budget"]) {
      int64_t budget = 0;
      std::string bp = Join(path, "thinking_budget");
      if (!Int32(*x, bp, &budget)) return false;
      if (budget < -1) return Bad(bp, "thinking_budget must be -1 (dynamic), 0 (off) or a number of tokens");
      // -1: the model decides how much (canonical budget 0 = provider default); 0: off.
      t->set_enabled(budget != 0);
      t->set_budget_tokens(budget > 0 ? static_cast<int32_t>(budget) : 0);
      if (budget == 0) t->set_include_thoughts(false);
    }
    if (const auto* x = f["thinking_level"]) {  // Gemini 3 levels: thinking on, provider's budget
      std::string level;
      if (!String(*x, Join(path, "thinking_level"), &level)) return false;
      if (level != "THINKING_LEVEL_UNSPECIFIED") t->set_enabled(true);
    }
    return true;
  }

  std::string_view message_name_;
  HttpError* error_;
  std::vector<SeenCall> calls_;
};

bool ParseBody(std::string_view body, json::value* out, HttpError* error) {
  boost::system::error_code ec;
  *out = json::parse(body, ec);
  if (ec) {
    *error = HttpError(400, absl::StrCat("Invalid JSON payload received. ", ec.message(), "."));
    return false;
  }
  if (!out->is_object()) {
    *error = HttpError(400, "Invalid JSON payload received. Root element must be a message.");
    return false;
  }
  return true;
}

bool SetModel(std::string model, llm::v1::ChatRequest* req, HttpError* error) {
  if (absl::StartsWith(model, "models/")) model.erase(0, 7);
  if (model.empty()) {
    *error = HttpError(400, "* GenerateContentRequest.model: model is not specified", "model");
    return false;
  }
  req->set_model(std::move(model));
  return true;
}

}  // namespace

bool ParseGenerateContentRequest(std::string_view body, std::string model, bool stream,
                                 ParsedGenerate* out, HttpError* error) {
  json::value v;
  if (!ParseBody(body, &v, error)) return false;
  auto& req = out->request;
  if (!SetModel(std::move(model), &req, error)) return false;
  RequestParser parser("GenerateContentRequest", error);
  if (!parser.Generate(v, "", out)) return false;
  req.set_stream(stream);
  req.set_protocol(llm::v1::PROTOCOL_GEMINI);
  req.mutable_raw()->set_protocol(llm::v1::PROTOCOL_GEMINI);
  req.mutable_raw()->set_body(std::string(body));
  return true;
}

bool ParseCountTokensRequest(std::string_view body, std::string model, ParsedGenerate* out,
                             HttpError* error) {
  json::value v;
  if (!ParseBody(body, &v, error)) return false;
  auto& req = out->request;
  if (!SetModel(std::move(model), &req, error)) return false;
  RequestParser parser("CountTokensRequest", error);
  if (!parser.CountTokens(v, out)) return false;
  req.set_protocol(llm::v1::PROTOCOL_GEMINI);
  return true;
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------
namespace {

std::string_view FinishReasonName(llm::v1::FinishReason reason) {
  switch (reason) {
    case llm::v1::FINISH_REASON_LENGTH: return "MAX_TOKENS";
    case llm::v1::FINISH_REASON_CONTENT_FILTER: return "SAFETY";
    // A function call ends with STOP in Gemini; an unknown end is reported as a natural one.
    default: return "STOP";
  }
}

// promptTokenCount is the whole prompt (cached included); output splits into candidates
// and thoughts.
json::object UsageMetadata(const llm::v1::Usage& u) {
  int64_t prompt = u.input_tokens() + u.cache_read_tokens() + u.cache_write_tokens();
  int64_t thoughts = std::min(u.reasoning_tokens(), u.output_tokens());
  json::object m{{"promptTokenCount", prompt},
                 {"candidatesTokenCount", u.output_tokens() - thoughts},
                 {"totalTokenCount", prompt + u.output_tokens()}};
  if (u.cache_read_tokens() > 0) m["cachedContentTokenCount"] = u.cache_read_tokens();
  if (thoughts > 0) m["thoughtsTokenCount"] = thoughts;
  return m;
}

// Gemini's args are an object; arguments that are not one (cut short by the token limit,
// say) are kept as text under "arguments" rather than lost.
json::value ArgsObject(const std::string& arguments) {
  if (arguments.empty()) return json::object{};
  boost::system::error_code ec;
  json::value v = json::parse(arguments, ec);
  if (!ec && v.is_object()) return v;
  return json::object{{"arguments", arguments}};
}

// A function call part; `signature` is the thoughtSignature a Gemini upstream gave the call,
// which the caller must send back with it.
json::object FunctionCallPart(const std::string& id, const std::string& name, const std::string& arguments,
                              const std::string& signature) {
  json::object fc{{"name", name}, {"args", ArgsObject(arguments)}};
  if (!id.empty()) fc["id"] = id;
  json::object part{{"functionCall", std::move(fc)}};
  if (!signature.empty()) part["thoughtSignature"] = signature;
  return part;
}

json::object ThoughtPart(const std::string& text, const std::string& signature) {
  json::object part{{"text", text}, {"thought", true}};
  if (!signature.empty()) part["thoughtSignature"] = signature;
  return part;
}

// The parts of a whole answer, in the order they arrived.
json::array AnswerParts(const ChoiceContent& a) {
  json::array parts;
  if (a.blocks.empty()) {  // an answer assembled without its order
    if (!a.reasoning.empty()) parts.push_back(ThoughtPart(a.reasoning, ""));
    if (!a.text.empty()) parts.push_back(json::object{{"text", a.text}});
    for (const auto& call : a.tool_calls) parts.push_back(FunctionCallPart(call.id, call.name, call.arguments, call.signature));
  }
  for (const auto& b : a.blocks) {
    switch (b.kind) {
      case ChatAnswer::Block::Kind::kText: parts.push_back(json::object{{"text", b.text}}); break;
      case ChatAnswer::Block::Kind::kThinking: parts.push_back(ThoughtPart(b.text, b.signature)); break;
      case ChatAnswer::Block::Kind::kRedactedThinking: break;  // Anthropic's opaque data: nothing to show
      case ChatAnswer::Block::Kind::kToolCall:
        if (b.tool_call < a.tool_calls.size()) {
          const auto& call = a.tool_calls[b.tool_call];
          parts.push_back(FunctionCallPart(call.id, call.name, call.arguments, call.signature));
        }
        break;
    }
  }
  if (parts.empty()) parts.push_back(json::object{{"text", ""}});
  return parts;
}

json::object Candidate(json::array parts, int32_t index, std::optional<llm::v1::FinishReason> finish) {
  json::object c{{"content", json::object{{"parts", std::move(parts)}, {"role", "model"}}}};
  if (finish) c["finishReason"] = FinishReasonName(*finish);
  c["index"] = index;
  return c;
}

class GenerateRenderer : public ChatRenderer {
 public:
  GenerateRenderer(std::string response_id, std::string model_version, bool sse)
      : response_id_(std::move(response_id)), model_version_(std::move(model_version)), sse_(sse) {}

  ApiProtocol protocol() const override { return ApiProtocol::kGemini; }

  std::string SyncBody(const ChatAnswer& a) override {
    json::array candidates;
    for (size_t i = 0; i < a.choice_count(); ++i)
      candidates.push_back(Candidate(AnswerParts(a.choice(i)), static_cast<int32_t>(i), a.choice(i).finish));
    return json::serialize(Response(std::move(candidates), &a.usage));
  }

  std::string StreamEvent(const ChatEvent& e) override {
    const int32_t index = e.choice_index();
    switch (e.event_case()) {
      case ChatEvent::kStart:
        choices_[index];
        return Open();
      case ChatEvent::kText: {
        if (e.text().text().empty()) return "";
        std::string out = FlushCalls(index);
        return out + Frame(Response(json::array{Candidate(json::array{json::object{{"text", e.text().text()}}},
                                                          index, std::nullopt)},
                                    nullptr));
      }
      case ChatEvent::kReasoning: {
        const auto& r = e.reasoning();
        if (r.text().empty() && r.signature().empty()) return "";
        std::string out = FlushCalls(index);
        return out + Frame(Response(
                         json::array{Candidate(json::array{ThoughtPart(r.text(), r.signature())}, index, std::nullopt)},
                         nullptr));
      }
      case ChatEvent::kToolCallStart: {
        // Gemini sends a call whole: held until its arguments are complete (§E).
        auto& calls = choices_[index].calls;
        const auto& start = e.tool_call_start();
        auto& call = calls[start.index()];
        call.id = start.id();
        call.name = start.name();
        call.signature = start.signature();
        return "";
      }
      case ChatEvent::kToolCallDelta:
        choices_[index].calls[e.tool_call_delta().index()].arguments += e.tool_call_delta().arguments_fragment();
        return "";
      case ChatEvent::kFinish:
        choices_[index].finish = e.finish().reason();
        return "";
      case ChatEvent::kUsage:
        return Final(&e.usage());
      default:
        return "";
    }
  }

  // Google's API has no error event: a failure after the 200 is one more element whose
  // only field is `error` (numeric code, status name), which the SDK turns into an
  // ApiError. In a JSON array the element also closes the array, as nothing follows.
  std::string StreamError(const HttpError& error) override {
    std::string body = ErrorBody(ApiProtocol::kGemini, error, "");
    if (sse_) return absl::StrCat("data: ", body, "\r\n\r\n");
    std::string out = Open();
    if (elements_++ > 0) out += ",\r\n";
    return absl::StrCat(out, body, "]");
  }

  std::string StreamEnd() override {
    std::string out = Final(nullptr);
    if (!sse_) out += Open() + "]";
    return out;
  }

 private:
  struct HeldCall {
    std::string id;
    std::string name;
    std::string arguments;
    std::string signature;  // Gemini thoughtSignature of the call
  };
  struct Choice {
    std::map<int32_t, HeldCall> calls;  // by tool index: emitted in that order
    std::optional<llm::v1::FinishReason> finish;
  };

  json::object Response(json::array candidates, const llm::v1::Usage* usage) const {
    json::object r{{"candidates", std::move(candidates)}};
    if (usage) r["usageMetadata"] = UsageMetadata(*usage);
    r["modelVersion"] = model_version_;
    r["responseId"] = response_id_;
    return r;
  }

  // "[" once, before anything else of a JSON-array stream.
  std::string Open() {
    if (sse_ || opened_) return "";
    opened_ = true;
    return "[";
  }

  std::string Frame(const json::object& response) {
    std::string body = json::serialize(response);
    if (sse_) return absl::StrCat("data: ", body, "\r\n\r\n");
    std::string out = Open();
    if (elements_++ > 0) out += ",\r\n";
    return out + body;
  }

  json::array TakeCalls(Choice& choice) {
    json::array parts;
    for (const auto& [index, call] : choice.calls)
      parts.push_back(FunctionCallPart(call.id, call.name, call.arguments, call.signature));
    choice.calls.clear();
    return parts;
  }

  // Calls held so far, before output of another kind.
  std::string FlushCalls(int32_t index) {
    auto it = choices_.find(index);
    if (it == choices_.end() || it->second.calls.empty()) return "";
    return Frame(Response(json::array{Candidate(TakeCalls(it->second), index, std::nullopt)}, nullptr));
  }

  // The last response: the calls still held, the finish reason of every candidate and
  // the usage of the whole answer (when known).
  std::string Final(const llm::v1::Usage* usage) {
    if (final_sent_) return "";
    final_sent_ = true;
    if (choices_.empty()) choices_[0];
    json::array candidates;
    for (auto& [index, choice] : choices_) {
      json::array parts = TakeCalls(choice);
      if (parts.empty()) parts.push_back(json::object{{"text", ""}});
      candidates.push_back(
          Candidate(std::move(parts), index, choice.finish.value_or(llm::v1::FINISH_REASON_STOP)));
    }
    return Frame(Response(std::move(candidates), usage));
  }

  std::string response_id_;
  std::string model_version_;
  bool sse_;
  bool opened_ = false;
  bool final_sent_ = false;
  int elements_ = 0;
  std::map<int32_t, Choice> choices_;
};

}  // namespace

std::unique_ptr<ChatRenderer> NewGenerateRenderer(std::string response_id, std::string model_version,
                                                  bool sse) {
  return std::make_unique<GenerateRenderer>(std::move(response_id), std::move(model_version), sse);
}

// ---------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------
namespace {

bool OnGemini(const routing::v1::Model& m) {
  if (m.supported_protocols().empty()) return true;
  return std::find(m.supported_protocols().begin(), m.supported_protocols().end(), llm::v1::PROTOCOL_GEMINI) !=
         m.supported_protocols().end();
}

json::object ModelObject(const routing::v1::Model& m) {
  json::array methods;
  if (std::find(m.capabilities().begin(), m.capabilities().end(), "chat") != m.capabilities().end()) {
    methods.push_back("generateContent");
    methods.push_back("streamGenerateContent");
    methods.push_back("countTokens");
  }
  // The catalog has no version of its own: the model's release date stands in for it.
  std::string version = m.created_unix() > 0
                            ? absl::FormatTime("%Y-%m-%d", absl::FromUnixSeconds(m.created_unix()), absl::UTCTimeZone())
                            : "001";
  std::string description = m.owned_by().empty() ? absl::StrCat(m.id(), ", served by NexusFlow.")
                                                  : absl::StrCat(m.id(), " by ", m.owned_by(), ", served by NexusFlow.");
  return json::object{{"name", absl::StrCat("models/", m.id())},
                      {"baseModelId", m.id()},
                      {"version", version},
                      {"displayName", m.id()},
                      {"description", description},
                      {"inputTokenLimit", m.context_window()},
                      {"outputTokenLimit", m.max_output_tokens()},
                      {"supportedGenerationMethods", std::move(methods)}};
}

}  // namespace

std::string ModelJson(const routing::v1::Model& model) { return json::serialize(ModelObject(model)); }

std::string ModelListJson(const routing::v1::CatalogSnapshot& catalog, const std::vector<std::string>& allowed,
                          int page_size, int offset) {
  json::array models;
  int index = 0;
  bool more = false;
  for (const auto& m : catalog.models()) {
    if (!OnGemini(m)) continue;
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), m.id()) == allowed.end()) continue;
    if (index++ < offset) continue;
    if (page_size > 0 && static_cast<int>(models.size()) == page_size) {
      more = true;
      break;
    }
    models.push_back(ModelObject(m));
  }
  json::object out{{"models", std::move(models)}};
  // The token is the offset of the next page: opaque to the SDK, which only sends it back.
  if (more) out["nextPageToken"] = std::to_string(offset + page_size);
  return json::serialize(out);
}

std::string CountTokensJson(int64_t total) { return json::serialize(json::object{{"totalTokens", total}}); }

}  // namespace nexusflow::gateway::gemini

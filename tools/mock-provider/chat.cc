#include "chat.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <iterator>
#include <random>

#include <boost/json.hpp>

namespace nexusflow::mock {
namespace {

namespace json = boost::json;

constexpr std::string_view kVocabulary[] = {
    "alpha",   "amber",   "anchor",  "apple",   "arrow",   "aspen",   "atlas",   "autumn",
    "basil",   "beacon",  "birch",   "blossom", "breeze",  "bridge",  "canyon",  "cedar",
    "cloud",   "comet",   "copper",  "coral",   "crystal", "delta",   "desert",  "dune",
    "echo",    "ember",   "falcon",  "fern",    "field",   "forest",  "galaxy",  "garden",
    "glacier", "granite", "harbor",  "hazel",   "horizon", "island",  "ivory",   "jasper",
    "lagoon",  "lantern", "maple",   "meadow",  "meteor",  "mirror",  "nebula",  "ocean",
    "orbit",   "pebble",  "pine",    "prairie", "quartz",  "river",   "saffron", "signal",
    "spruce",  "summit",  "thunder", "tundra",  "valley",  "willow",  "winter",  "zephyr"};
constexpr std::size_t kVocabularySize = std::size(kVocabulary);

constexpr std::int64_t kImagePartTokens = 85;
constexpr std::int64_t kPerMessageTokens = 4;
constexpr int kMaxMarkerWords = 100000;
constexpr std::int64_t kMaxMarkerDelayMs = 10 * 60 * 1000;
constexpr int kMaxSchemaDepth = 32;

constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr std::uint64_t kFnvPrime = 0x100000001b3ULL;

std::uint64_t Fnv1a(std::uint64_t hash, std::string_view bytes) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= kFnvPrime;
  }
  return hash;
}

std::uint64_t SplitMix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Characters as Python's len() counts them for valid UTF-8: bytes that start a code point.
std::int64_t CodePoints(std::string_view s) {
  return std::count_if(s.begin(), s.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

std::string_view StringOr(const json::value* v, std::string_view fallback = {}) {
  if (v != nullptr && v->is_string()) return v->get_string();
  return fallback;
}

std::optional<std::int64_t> AsInteger(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) return static_cast<std::int64_t>(std::min<std::uint64_t>(v.get_uint64(), INT64_MAX));
  if (v.is_double() && std::isfinite(v.get_double()) && v.get_double() == std::floor(v.get_double()) &&
      std::abs(v.get_double()) < 9e18) {
    return static_cast<std::int64_t>(v.get_double());
  }
  return std::nullopt;
}

std::optional<double> AsNumber(const json::value* v) {
  if (v == nullptr || !v->is_number()) return std::nullopt;
  return v->to_number<double>();
}

std::string_view JsonKind(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64: return "an integer";
    case json::kind::double_: return "a number";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
  }
  return "a value";
}

std::string_view ErrorType(int status) {
  switch (status) {
    case 402: return "insufficient_quota";
    case 403: return "permission_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string_view DefaultErrorCode(int status) {
  switch (status) {
    case 401: return "invalid_api_key";
    case 402: return "insufficient_balance";
    case 404: return "model_not_found";
    case 429: return "rate_limit_exceeded";
    default: return {};
  }
}

OpenAiError InvalidRequest(std::string message, std::string param, std::string code = {}) {
  return OpenAiError{400, std::move(message), std::move(param), std::move(code)};
}

// What one message contributes to the prompt: its text (string content, text parts, tool
// call names and arguments) and its images.
struct MessageText {
  std::string text;
  std::string image_urls;  // hashed into the seed, not counted
  std::int64_t images = 0;
};

MessageText ExtractMessageText(const json::object& message) {
  MessageText out;
  if (const json::value* content = message.if_contains("content")) {
    if (content->is_string()) {
      out.text = content->get_string();
    } else if (content->is_array()) {
      for (const json::value& part : content->get_array()) {
        const json::object* p = part.if_object();
        if (p == nullptr) continue;
        std::string_view type = StringOr(p->if_contains("type"));
        if (type == "image_url") {
          ++out.images;
          if (const json::value* image = p->if_contains("image_url"); image && image->is_object()) {
            out.image_urls += StringOr(image->get_object().if_contains("url"));
          }
          out.image_urls += '\x1f';
        } else {
          out.text += StringOr(p->if_contains("text"));
        }
      }
    }
  }
  if (const json::value* calls = message.if_contains("tool_calls"); calls && calls->is_array()) {
    for (const json::value& call : calls->get_array()) {
      const json::object* c = call.if_object();
      if (c == nullptr) continue;
      if (const json::value* fn = c->if_contains("function"); fn && fn->is_object()) {
        out.text += StringOr(fn->get_object().if_contains("name"));
        out.text += StringOr(fn->get_object().if_contains("arguments"));
      }
    }
  }
  return out;
}

std::optional<std::int64_t> ParseMarkerValue(std::string_view text) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 0) return std::nullopt;
  return value;
}

MockMarkers ParseMarkers(std::string_view text) {
  MockMarkers markers;
  constexpr std::string_view kOpen = "[mock:";
  std::size_t pos = 0;
  while ((pos = text.find(kOpen, pos)) != std::string_view::npos) {
    pos += kOpen.size();
    std::size_t close = text.find(']', pos);
    if (close == std::string_view::npos) break;
    std::string_view marker = text.substr(pos, close - pos);
    pos = close + 1;
    std::size_t eq = marker.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = marker.substr(0, eq);
    std::optional<std::int64_t> value = ParseMarkerValue(marker.substr(eq + 1));
    if (!value) continue;
    if (key == "status" && *value >= 100 && *value <= 599) {
      markers.status = static_cast<int>(*value);
    } else if (key == "words") {
      markers.words = static_cast<int>(std::min<std::int64_t>(*value, kMaxMarkerWords));
    } else if (key == "delay") {
      markers.delay_ms = std::min(*value, kMaxMarkerDelayMs);
    } else if (key == "drop-after") {
      markers.drop_after = static_cast<int>(std::min<std::int64_t>(*value, INT32_MAX));
    } else if (key == "chunk-delay") {
      markers.chunk_delay_ms = std::min(*value, kMaxMarkerDelayMs);
    }
  }
  return markers;
}

// Fills a tool's required arguments from its JSON schema with small deterministic values.
class ToolArgumentsBuilder {
 public:
  explicit ToolArgumentsBuilder(const json::value& root) : root_(root) {}

  json::value Build(const json::value& schema, std::string_view name, int depth) const {
    if (depth > kMaxSchemaDepth) return nullptr;
    const json::object* s = Resolve(schema, depth);
    if (s == nullptr) return Word(name);
    if (const json::value* values = s->if_contains("enum"); values && values->is_array() &&
                                                            !values->get_array().empty()) {
      return values->get_array().front();
    }
    if (const json::value* constant = s->if_contains("const")) return *constant;

    std::string_view type = TypeOf(*s);
    if (type == "object") return BuildObject(*s, depth);
    if (type == "array") {
      json::array items;
      const json::value* item_schema = s->if_contains("items");
      std::int64_t count = 1;
      if (const json::value* min = s->if_contains("minItems")) {
        count = std::clamp<std::int64_t>(AsInteger(*min).value_or(1), 1, 16);
      }
      for (std::int64_t i = 0; i < count; ++i) {
        items.push_back(item_schema ? Build(*item_schema, name, depth + 1) : json::value(Word(name)));
      }
      return items;
    }
    if (type == "integer") {
      std::int64_t v = 1;
      if (auto min = AsNumber(s->if_contains("minimum"))) {
        v = static_cast<std::int64_t>(std::ceil(*min));
      } else if (auto exclusive = AsNumber(s->if_contains("exclusiveMinimum"))) {
        v = static_cast<std::int64_t>(std::floor(*exclusive)) + 1;
      }
      if (auto max = AsNumber(s->if_contains("maximum")); max && *max < static_cast<double>(v)) {
        v = static_cast<std::int64_t>(std::floor(*max));
      }
      return v;
    }
    if (type == "number") {
      double v = 1.5;
      if (auto min = AsNumber(s->if_contains("minimum")); min && *min > v) v = *min;
      if (auto max = AsNumber(s->if_contains("maximum")); max && *max < v) v = *max;
      return v;
    }
    if (type == "boolean") return true;
    if (type == "null") return nullptr;
    return StringFor(*s, name);
  }

  json::value BuildObject(const json::object& s, int depth) const {
    json::object out;
    const json::value* properties = s.if_contains("properties");
    const json::value* required = s.if_contains("required");
    if (required == nullptr || !required->is_array()) return out;
    for (const json::value& key : required->get_array()) {
      if (!key.is_string()) continue;
      std::string_view name = key.get_string();
      const json::value* property = nullptr;
      if (properties && properties->is_object()) property = properties->get_object().if_contains(name);
      out[name] = property ? Build(*property, name, depth + 1) : json::value(Word(name));
    }
    return out;
  }

 private:
  // Follows local `$ref`s and takes the first non-null branch of anyOf/oneOf/allOf.
  const json::object* Resolve(const json::value& schema, int depth) const {
    const json::value* current = &schema;
    for (int hops = 0; hops < kMaxSchemaDepth - depth + 1; ++hops) {
      const json::object* s = current->if_object();
      if (s == nullptr) return nullptr;
      if (const json::value* ref = s->if_contains("$ref"); ref && ref->is_string()) {
        std::string_view pointer = ref->get_string();
        if (!pointer.starts_with('#')) return nullptr;
        boost::system::error_code ec;
        const json::value* target = root_.find_pointer(pointer.substr(1), ec);
        if (target == nullptr) return nullptr;
        current = target;
        continue;
      }
      const json::value* branch = nullptr;
      for (std::string_view key : {"anyOf", "oneOf", "allOf"}) {
        const json::value* options = s->if_contains(key);
        if (options == nullptr || !options->is_array()) continue;
        for (const json::value& option : options->get_array()) {
          const json::object* o = option.if_object();
          if (o && StringOr(o->if_contains("type")) == "null") continue;
          branch = &option;
          break;
        }
        if (branch) break;
      }
      if (branch == nullptr || s->contains("type") || s->contains("properties")) return s;
      current = branch;
    }
    return nullptr;
  }

  static std::string_view TypeOf(const json::object& s) {
    if (const json::value* type = s.if_contains("type")) {
      if (type->is_string()) return type->get_string();
      if (type->is_array()) {
        for (const json::value& t : type->get_array()) {
          if (t.is_string() && t.get_string() != "null") return t.get_string();
        }
        return "null";
      }
    }
    if (s.contains("properties") || s.contains("required")) return "object";
    if (s.contains("items")) return "array";
    return "string";
  }

  static json::string Word(std::string_view name) {
    return json::string(kVocabulary[Fnv1a(kFnvOffset, name) % kVocabularySize]);
  }

  static json::value StringFor(const json::object& s, std::string_view name) {
    std::string_view format = StringOr(s.if_contains("format"));
    if (format == "date-time") return "2025-01-01T00:00:00Z";
    if (format == "date") return "2025-01-01";
    if (format == "time") return "00:00:00";
    if (format == "email") return "mock@example.com";
    if (format == "uri" || format == "url") return "https://example.com/mock";
    if (format == "uuid") return "00000000-0000-4000-8000-000000000000";
    return Word(name);
  }

  const json::value& root_;
};

// Two or three fragments of `arguments`, never splitting a UTF-8 sequence.
std::vector<std::string> SplitArguments(std::string_view arguments) {
  const std::size_t n = arguments.size();
  std::vector<std::size_t> cuts;
  if (n == 2) cuts = {1};
  if (n >= 3) cuts = {n / 3, 2 * n / 3};
  std::vector<std::string> pieces;
  std::size_t start = 0;
  for (std::size_t cut : cuts) {
    while (cut < n && (static_cast<unsigned char>(arguments[cut]) & 0xC0) == 0x80) ++cut;
    if (cut <= start || cut >= n) continue;
    pieces.emplace_back(arguments.substr(start, cut - start));
    start = cut;
  }
  pieces.emplace_back(arguments.substr(start));
  return pieces;
}

// The tool the request forces, or nullptr when the model may answer with text.
// Sets `error` when tools/tool_choice are malformed the way OpenAI rejects.
const json::object* ForcedTool(const json::object& request, std::optional<OpenAiError>& error) {
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

json::object UsageJson(const ChatUsage& usage) {
  return json::object{
      {"prompt_tokens", usage.prompt_tokens},
      {"completion_tokens", usage.completion_tokens},
      {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
      {"prompt_tokens_details", json::object{{"cached_tokens", 0}, {"audio_tokens", 0}}},
      {"completion_tokens_details", json::object{{"reasoning_tokens", 0},
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

}  // namespace

OpenAiError ErrorForStatus(int status, std::string message) {
  return OpenAiError{status, std::move(message), {}, std::string(DefaultErrorCode(status))};
}

std::string ErrorBody(const OpenAiError& error) {
  json::object body{
      {"error", json::object{
                    {"message", error.message},
                    {"type", ErrorType(error.status)},
                    {"param", error.param.empty() ? json::value(nullptr) : json::value(error.param)},
                    {"code", error.code.empty() ? json::value(nullptr) : json::value(error.code)},
                }}};
  return json::serialize(body);
}

std::variant<ChatReply, OpenAiError> PlanChatReply(std::string_view body, int reply_words) {
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

  ChatReply reply;
  const json::value* model = request.if_contains("model");
  if (model == nullptr || !model->is_string() || model->get_string().empty()) {
    return InvalidRequest("you must provide a model parameter", "model");
  }
  reply.model = model->get_string();

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

  // The seed covers the model and each message's role and text, not the raw JSON, so a
  // gateway that reorders keys or adds null fields still gets the same answer.
  std::uint64_t seed = Fnv1a(kFnvOffset, reply.model);
  std::string last_user_text;
  std::size_t index = 0;
  for (const json::value& m : messages->get_array()) {
    const json::object* message = m.if_object();
    const json::value* role = message ? message->if_contains("role") : nullptr;
    if (role == nullptr || !role->is_string()) {
      std::string param = "messages[" + std::to_string(index) + "]";
      return InvalidRequest("Invalid '" + param + "': expected an object with a string 'role'.",
                            param);
    }
    MessageText text = ExtractMessageText(*message);
    reply.usage.prompt_tokens +=
        kPerMessageTokens + (CodePoints(text.text) + 3) / 4 + kImagePartTokens * text.images;
    seed = Fnv1a(seed, "\x1e");
    seed = Fnv1a(seed, role->get_string());
    seed = Fnv1a(seed, "\x1f");
    seed = Fnv1a(seed, text.text);
    seed = Fnv1a(seed, "\x1f");
    seed = Fnv1a(seed, text.image_urls);
    if (role->get_string() == "user") last_user_text = std::move(text.text);
    ++index;
  }
  reply.markers = ParseMarkers(last_user_text);

  if (const json::value* stream = request.if_contains("stream"); stream && !stream->is_null()) {
    if (!stream->is_bool()) {
      return InvalidRequest("Invalid type for 'stream': expected a boolean, but got " +
                                std::string(JsonKind(*stream)) + " instead.",
                            "stream", "invalid_type");
    }
    reply.stream = stream->get_bool();
  }
  if (const json::value* so = request.if_contains("stream_options"); so && so->is_object()) {
    const json::value* include = so->get_object().if_contains("include_usage");
    reply.include_usage = reply.stream && include && include->is_bool() && include->get_bool();
  }

  std::optional<std::int64_t> max_tokens;
  for (std::string_view key : {"max_completion_tokens", "max_tokens"}) {
    const json::value* v = request.if_contains(key);
    if (v == nullptr || v->is_null()) continue;
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
    max_tokens = n;
    break;
  }

  std::optional<OpenAiError> tool_error;
  const json::object* tool = ForcedTool(request, tool_error);
  if (tool_error) return *std::move(tool_error);

  if (tool != nullptr) {
    ForcedToolCall call;
    call.name = StringOr(tool->if_contains("name"));
    static const json::value kEmptySchema = json::object();
    const json::value* parameters = tool->if_contains("parameters");
    const json::value& schema = parameters ? *parameters : kEmptySchema;
    ToolArgumentsBuilder builder(schema);
    json::value arguments = json::object();
    if (const json::object* s = schema.if_object()) arguments = builder.BuildObject(*s, 0);
    call.arguments = json::serialize(arguments);
    call.argument_pieces = SplitArguments(call.arguments);
    reply.usage.completion_tokens = std::max<std::int64_t>(1, (CodePoints(call.arguments) + 3) / 4);
    reply.finish_reason = "tool_calls";
    reply.tool_call = std::move(call);
    return reply;
  }

  std::int64_t words = reply.markers.words.value_or(reply_words);
  reply.finish_reason = "stop";
  if (max_tokens && *max_tokens < words) {
    words = *max_tokens;
    reply.finish_reason = "length";
  }
  reply.content_pieces.reserve(static_cast<std::size_t>(words));
  std::uint64_t state = seed;
  for (std::int64_t i = 0; i < words; ++i) {
    std::string_view word = kVocabulary[SplitMix64(state) % kVocabularySize];
    std::string piece;
    piece.reserve(word.size() + 1);
    if (i > 0) piece += ' ';
    piece += word;
    reply.content_pieces.push_back(std::move(piece));
  }
  reply.usage.completion_tokens = words;
  return reply;
}

std::string RandomHex(std::size_t chars) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(chars, '0');
  std::uint64_t bits = 0;
  for (std::size_t i = 0; i < chars; ++i) {
    if (i % 16 == 0) bits = rng();
    out[i] = kDigits[bits & 0xF];
    bits >>= 4;
  }
  return out;
}

ResponseIds NewResponseIds() {
  ResponseIds ids;
  ids.completion_id = "chatcmpl-" + RandomHex(24);
  ids.tool_call_id = "call_" + RandomHex(24);
  ids.created = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  return ids;
}

std::string ChatCompletionBody(const ChatReply& reply, const ResponseIds& ids) {
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
    std::string content;
    for (const std::string& piece : reply.content_pieces) content += piece;
    message["content"] = std::move(content);
  }
  message["refusal"] = nullptr;

  json::object body{
      {"id", ids.completion_id},
      {"object", "chat.completion"},
      {"created", ids.created},
      {"model", reply.model},
      {"choices", json::array{json::object{
                      {"index", 0},
                      {"message", std::move(message)},
                      {"logprobs", nullptr},
                      {"finish_reason", reply.finish_reason},
                  }}},
      {"usage", UsageJson(reply.usage)},
      {"system_fingerprint", "fp_mock"},
  };
  return json::serialize(body);
}

std::vector<SseFrame> ChatStreamFrames(const ChatReply& reply, const ResponseIds& ids) {
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
    json::object chunk = base;
    chunk["choices"] = json::array{json::object{
        {"index", 0},
        {"delta", std::move(delta)},
        {"logprobs", nullptr},
        {"finish_reason", std::move(finish_reason)},
    }};
    frames.push_back({kind, Frame(chunk)});
  };

  if (reply.tool_call) {
    push_choice(FrameKind::kFirst,
                json::object{
                    {"role", "assistant"},
                    {"content", nullptr},
                    {"tool_calls", json::array{json::object{
                                       {"index", 0},
                                       {"id", ids.tool_call_id},
                                       {"type", "function"},
                                       {"function", json::object{{"name", reply.tool_call->name},
                                                                 {"arguments", ""}}},
                                   }}},
                    {"refusal", nullptr},
                },
                nullptr);
    for (const std::string& piece : reply.tool_call->argument_pieces) {
      push_choice(FrameKind::kContent,
                  json::object{{"tool_calls", json::array{json::object{
                                                  {"index", 0},
                                                  {"function", json::object{{"arguments", piece}}},
                                              }}}},
                  nullptr);
    }
  } else {
    push_choice(FrameKind::kFirst,
                json::object{{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}}, nullptr);
    for (const std::string& piece : reply.content_pieces) {
      push_choice(FrameKind::kContent, json::object{{"content", piece}}, nullptr);
    }
  }
  push_choice(FrameKind::kFinish, json::object(), json::value(reply.finish_reason));

  if (reply.include_usage) {
    json::object chunk = base;
    chunk["usage"] = UsageJson(reply.usage);
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

#include "reply.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <climits>
#include <cmath>
#include <iterator>
#include <random>

#include <boost/json.hpp>

#include "libs/common/image_size.h"

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
// Thinking words come from their own stream of the seed, so they never repeat the text.
constexpr std::uint64_t kThinkingSalt = 0x7468696e6b696e67ULL;  // "thinking"


std::vector<std::string> Words(std::uint64_t state, std::int64_t count) {
  std::vector<std::string> pieces;
  pieces.reserve(static_cast<std::size_t>(std::max<std::int64_t>(count, 0)));
  for (std::int64_t i = 0; i < count; ++i) {
    std::string_view word = kVocabulary[SplitMix64(state) % kVocabularySize];
    std::string piece;
    piece.reserve(word.size() + 1);
    if (i > 0) piece += ' ';
    piece += word;
    pieces.push_back(std::move(piece));
  }
  return pieces;
}

std::string Join(const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& piece : pieces) out += piece;
  return out;
}

std::optional<std::int64_t> ParseMarkerValue(std::string_view text) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 0) return std::nullopt;
  return value;
}

// Text as a byte-level tokenizer sees it, roughly: four ASCII characters a token, and a
// token for every other character (CJK, accented letters, emoji).
std::int64_t TextTokens(std::string_view text) {
  std::int64_t ascii = 0, other = 0;
  for (unsigned char c : text) {
    if (c < 0x80) ++ascii;
    else if ((c & 0xC0) != 0x80) ++other;  // the lead byte of a multi-byte character
  }
  return (ascii + 3) / 4 + other;
}

// The first `images` images of `m`, each at its own count.
std::int64_t ImageTokens(const PromptMessage& m, std::int64_t images) {
  std::int64_t tokens = 0;
  for (std::int64_t i = 0; i < images && i < static_cast<std::int64_t>(m.image_tokens.size()); ++i)
    tokens += m.image_tokens[static_cast<std::size_t>(i)];
  return tokens;
}

std::int64_t MessageTokens(const PromptMessage& m, std::size_t text_bytes, std::int64_t images) {
  return kPerMessageTokens + TextTokens(std::string_view(m.text).substr(0, text_bytes)) +
         ImageTokens(m, images);
}

std::int64_t MessageTokens(const PromptMessage& m) { return MessageTokens(m, m.text.size(), m.images); }

// OpenAI's count for an image at high detail: fit in 2048 x 2048, shortest side at most
// 768, then 170 a 512-pixel tile plus 85; 85 for an image whose size is unknown (a URL).
std::int64_t ImageTokensOf(std::string_view url) {
  std::optional<ImageSize> size = SniffDataUrlImageSize(url);
  if (!size) return kImagePartTokens;
  double w = static_cast<double>(size->width), h = static_cast<double>(size->height);
  double fit = std::min({1.0, 2048 / w, 2048 / h});
  w *= fit;
  h *= fit;
  double shortest = std::min(w, h);
  if (shortest > 768) {
    w *= 768 / shortest;
    h *= 768 / shortest;
  }
  auto tiles = [](double side) { return (static_cast<std::int64_t>(std::ceil(side)) + 511) / 512; };
  return kImagePartTokens + 170 * tiles(w) * tiles(h);
}

// The hash state after one message (or the prefix of one) has been fed in.
std::uint64_t FeedMessage(std::uint64_t hash, std::string_view role, std::string_view text,
                          std::string_view image_urls) {
  hash = Fnv1a(hash, "\x1e");
  hash = Fnv1a(hash, role);
  hash = Fnv1a(hash, "\x1f");
  hash = Fnv1a(hash, text);
  hash = Fnv1a(hash, "\x1f");
  return Fnv1a(hash, image_urls);
}

// Cache keys live in their own hash domain (the seed never equals a key by construction).
std::uint64_t CacheKeyStart(const Prompt& prompt) {
  return Fnv1a(Fnv1a(kFnvOffset, "cache\x1d"), prompt.model);
}

// The first `images` URLs of `image_urls` (each ends in '\x1f').
std::string_view ImageUrlsPrefix(std::string_view image_urls, std::int64_t images) {
  std::size_t end = 0;
  for (std::int64_t i = 0; i < images && end < image_urls.size(); ++i) {
    std::size_t sep = image_urls.find('\x1f', end);
    if (sep == std::string_view::npos) return image_urls;
    end = sep + 1;
  }
  return image_urls.substr(0, end);
}

bool Before(const PromptPosition& a, const PromptPosition& b) {
  if (a.message != b.message) return a.message < b.message;
  if (a.text_bytes != b.text_bytes) return a.text_bytes < b.text_bytes;
  return a.images < b.images;
}

// Probes at the end of each of the first `count` messages, hashed incrementally.
void AddMessageEndProbes(const Prompt& prompt, std::size_t count, std::vector<CacheProbe>& out) {
  std::uint64_t hash = CacheKeyStart(prompt);
  std::int64_t tokens = 0;
  for (std::size_t i = 0; i < count && i < prompt.messages.size(); ++i) {
    const PromptMessage& m = prompt.messages[i];
    hash = FeedMessage(hash, m.role, m.text, m.image_urls);
    tokens += MessageTokens(m);
    out.push_back(CacheProbe{hash, tokens});
  }
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

    const std::string type = TypeOf(*s);
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
          if (o && Lower(StringOr(o->if_contains("type"))) == "null") continue;
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

  // Gemini's Schema spells types in upper case (`OBJECT`, `STRING`).
  static std::string Lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return out;
  }

  static std::string TypeOf(const json::object& s) {
    if (const json::value* type = s.if_contains("type")) {
      if (type->is_string()) return Lower(type->get_string());
      if (type->is_array()) {
        for (const json::value& t : type->get_array()) {
          if (t.is_string() && Lower(t.get_string()) != "null") return Lower(t.get_string());
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

// Cuts `pieces` at the first stop sequence found in their concatenation; returns it.
std::optional<std::string> ApplyStopSequences(std::vector<std::string>& pieces,
                                              const std::vector<std::string>& stops) {
  if (stops.empty() || pieces.empty()) return std::nullopt;
  const std::string text = Join(pieces);
  std::size_t cut = std::string::npos;
  const std::string* matched = nullptr;
  for (const std::string& stop : stops) {
    if (stop.empty()) continue;
    const std::size_t at = text.find(stop);
    if (at < cut) {
      cut = at;
      matched = &stop;
    }
  }
  if (matched == nullptr) return std::nullopt;
  std::size_t kept = 0;
  std::size_t count = 0;
  for (; count < pieces.size() && kept < cut; ++count) {
    if (kept + pieces[count].size() > cut) pieces[count].resize(cut - kept);
    kept += pieces[count].size();
  }
  pieces.resize(count);
  return *matched;
}

// An opaque but deterministic signature: 48 hex digits (valid base64 too, for Gemini's
// `thoughtSignature`, which is bytes on the wire).
std::string Signature(std::uint64_t seed, std::string_view thinking) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  std::uint64_t hash = Fnv1a(seed, thinking);
  for (int round = 0; round < 3; ++round) {
    hash = Fnv1a(hash, "signature");
    for (int i = 0; i < 16; ++i) out += kDigits[(hash >> (4 * i)) & 0xF];
  }
  return out;
}

}  // namespace

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

ErrorKinds ErrorKindsFor(int status) {
  struct Row {
    int status;
    ErrorKinds kinds;
  };
  // OpenAI type / code, Anthropic type, Gemini status. Rows not listed fall back by class.
  static constexpr Row kRows[] = {
      {400, {"invalid_request_error", "", "invalid_request_error", "INVALID_ARGUMENT"}},
      {401, {"invalid_request_error", "invalid_api_key", "authentication_error", "UNAUTHENTICATED"}},
      {402, {"insufficient_quota", "insufficient_balance", "billing_error", "FAILED_PRECONDITION"}},
      {403, {"permission_error", "", "permission_error", "PERMISSION_DENIED"}},
      {404, {"invalid_request_error", "model_not_found", "not_found_error", "NOT_FOUND"}},
      {409, {"invalid_request_error", "", "invalid_request_error", "ABORTED"}},
      {413, {"invalid_request_error", "", "request_too_large", "INVALID_ARGUMENT"}},
      {429, {"rate_limit_error", "rate_limit_exceeded", "rate_limit_error", "RESOURCE_EXHAUSTED"}},
      {499, {"invalid_request_error", "", "invalid_request_error", "CANCELLED"}},
      {500, {"server_error", "", "api_error", "INTERNAL"}},
      {501, {"server_error", "", "api_error", "UNIMPLEMENTED"}},
      {502, {"server_error", "", "api_error", "UNAVAILABLE"}},
      {503, {"server_error", "", "api_error", "UNAVAILABLE"}},
      {504, {"server_error", "", "timeout_error", "DEADLINE_EXCEEDED"}},
      {529, {"server_error", "", "overloaded_error", "UNAVAILABLE"}},
  };
  for (const Row& row : kRows) {
    if (row.status == status) return row.kinds;
  }
  if (status >= 500) return {"server_error", "", "api_error", "INTERNAL"};
  return {"invalid_request_error", "", "invalid_request_error", "INVALID_ARGUMENT"};
}

RequestError ErrorForStatus(int status, std::string message) {
  return RequestError{status, std::move(message), {}, std::string(ErrorKindsFor(status).openai_code)};
}

RequestError ForcedStatusError(int status) {
  const std::string n = std::to_string(status);
  return ErrorForStatus(status, "mock-provider: status " + n + " forced by [mock:status=" + n + "]");
}

std::string CompactJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return std::string(text);
  return json::serialize(v);
}

std::string CanonicalToolResult(std::string_view text) {
  std::size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || text[first] != '{') return std::string(text);
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::string(text);
  return json::serialize(v);
}

PromptBuilder::PromptBuilder(std::string model) { prompt_.model = std::move(model); }

void PromptBuilder::Begin(std::string_view role) {
  End();
  const bool merge = !prompt_.messages.empty() && prompt_.messages.back().role == role &&
                     role != "tool";
  if (!merge) {
    PromptMessage message;
    message.role = role;
    prompt_.messages.push_back(std::move(message));
  }
  open_ = true;
}

void PromptBuilder::AddText(std::string_view text) {
  if (open_) prompt_.messages.back().text += text;
}

void PromptBuilder::AddImage(std::string_view url) {
  if (!open_) return;
  PromptMessage& m = prompt_.messages.back();
  m.image_urls += url;
  m.image_urls += '\x1f';
  m.image_tokens.push_back(ImageTokensOf(url));
  ++m.images;
}

void PromptBuilder::AddToolCall(std::string_view name, std::string_view arguments) {
  if (!open_) return;
  pending_tool_calls_ += name;
  pending_tool_calls_ += CompactJson(arguments);
}

void PromptBuilder::AddToolCall(std::string_view name, const json::value& arguments) {
  if (!open_) return;
  pending_tool_calls_ += name;
  pending_tool_calls_ += json::serialize(arguments);
}

void PromptBuilder::End() {
  if (!open_) return;
  prompt_.messages.back().text += pending_tool_calls_;
  pending_tool_calls_.clear();
  open_ = false;
  if (breakpoint_at_end_) {
    prompt_.breakpoints.push_back(EndOf(prompt_, prompt_.messages.size() - 1));
    breakpoint_at_end_ = false;
  }
}

void PromptBuilder::AddToolResult(std::string_view text) {
  Begin("tool");
  AddText(CanonicalToolResult(text));
  End();
}

void PromptBuilder::MarkBreakpoint() {
  if (prompt_.messages.empty()) return;
  if (open_ && !pending_tool_calls_.empty()) {
    breakpoint_at_end_ = true;
    return;
  }
  prompt_.breakpoints.push_back(EndOf(prompt_, prompt_.messages.size() - 1));
}

Prompt PromptBuilder::Finish() && {
  End();
  // The seed covers the model and each message's role and text, not the raw JSON, so a
  // gateway that reorders keys or adds null fields still gets the same answer.
  std::uint64_t seed = Fnv1a(kFnvOffset, prompt_.model);
  for (const PromptMessage& m : prompt_.messages) {
    prompt_.tokens += MessageTokens(m);
    seed = FeedMessage(seed, m.role, m.text, m.image_urls);
    if (m.role == "user") prompt_.last_user_text = m.text;
  }
  prompt_.seed = seed;
  return std::move(prompt_);
}

PromptPosition EndOf(const Prompt& prompt, std::size_t message) {
  const PromptMessage& m = prompt.messages[message];
  return PromptPosition{message, m.text.size(), m.images};
}

std::int64_t TokensAt(const Prompt& prompt, const PromptPosition& position) {
  std::int64_t tokens = 0;
  for (std::size_t i = 0; i < position.message && i < prompt.messages.size(); ++i) {
    tokens += MessageTokens(prompt.messages[i]);
  }
  if (position.message < prompt.messages.size()) {
    const PromptMessage& m = prompt.messages[position.message];
    tokens += MessageTokens(m, position.text_bytes, std::min(position.images, m.images));
  }
  return tokens;
}

CacheProbe ProbeAt(const Prompt& prompt, const PromptPosition& position) {
  std::uint64_t hash = CacheKeyStart(prompt);
  for (std::size_t i = 0; i < position.message && i < prompt.messages.size(); ++i) {
    const PromptMessage& m = prompt.messages[i];
    hash = FeedMessage(hash, m.role, m.text, m.image_urls);
  }
  if (position.message < prompt.messages.size()) {
    const PromptMessage& m = prompt.messages[position.message];
    hash = FeedMessage(hash, m.role, std::string_view(m.text).substr(0, position.text_bytes),
                       ImageUrlsPrefix(m.image_urls, position.images));
  }
  return CacheProbe{hash, TokensAt(prompt, position)};
}

CachePlan BreakpointCachePlan(const Prompt& prompt) {
  CachePlan plan;
  plan.requested = true;
  if (prompt.breakpoints.empty()) return plan;
  PromptPosition last = prompt.breakpoints.front();
  for (const PromptPosition& b : prompt.breakpoints) {
    if (Before(last, b)) last = b;
    CacheProbe probe = ProbeAt(prompt, b);
    plan.writes.push_back(probe);
    plan.lookups.push_back(probe);
  }
  AddMessageEndProbes(prompt, last.message, plan.lookups);
  return plan;
}

CachePlan AutomaticCachePlan(const Prompt& prompt) {
  CachePlan plan;
  plan.requested = true;
  AddMessageEndProbes(prompt, prompt.messages.size(), plan.lookups);
  if (!plan.lookups.empty()) plan.writes.push_back(plan.lookups.back());
  return plan;
}

ToolCall BuildToolCall(std::string_view name, const json::value* schema) {
  ToolCall call;
  call.name = name;
  json::value arguments = json::object();
  if (schema != nullptr) {
    if (const json::object* s = schema->if_object()) {
      arguments = ToolArgumentsBuilder(*schema).BuildObject(*s, 0);
    }
  }
  call.arguments = json::serialize(arguments);
  call.argument_pieces = SplitArguments(call.arguments);
  return call;
}

std::string Reply::Text() const { return Join(content_pieces); }
std::string Reply::ThinkingText() const { return Join(thinking_pieces); }

Reply PlanReply(const Prompt& prompt, const GenerationRequest& generation, int reply_words) {
  Reply reply;
  reply.model = prompt.model;
  reply.markers = ParseMarkers(prompt.last_user_text);
  reply.usage.prompt_tokens = prompt.tokens;

  std::int64_t budget = generation.max_tokens.value_or(INT64_MAX);
  bool truncated = false;
  if (generation.thinking) {
    std::int64_t words = kThinkingWords;
    if (generation.thinking_budget > 0) words = std::min(words, generation.thinking_budget);
    if (words > budget) {
      words = budget;
      truncated = true;
    }
    reply.thinking_pieces = Words(prompt.seed ^ kThinkingSalt, words);
    reply.thinking_signature = Signature(prompt.seed, reply.ThinkingText());
    reply.usage.thinking_tokens = words;
    budget -= words;
  }

  if (generation.forced_tool) {
    reply.tool_call = generation.forced_tool;
    reply.usage.output_tokens =
        std::max<std::int64_t>(1, (CodePoints(reply.tool_call->arguments) + 3) / 4);
    reply.finish = Finish::kToolCall;
    return reply;
  }

  std::int64_t words = reply.markers.words.value_or(reply_words);
  if (words > budget) {
    words = budget;
    truncated = true;
  }
  reply.content_pieces = Words(prompt.seed, words);
  reply.finish = truncated ? Finish::kLength : Finish::kStop;
  if (std::optional<std::string> stop =
          ApplyStopSequences(reply.content_pieces, generation.stop_sequences)) {
    reply.finish = Finish::kStopSequence;
    reply.stop_sequence = std::move(*stop);
  }
  reply.usage.output_tokens = static_cast<std::int64_t>(reply.content_pieces.size());
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

std::int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view StringOr(const json::value* v, std::string_view fallback) {
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

// Characters as Python's len() counts them for valid UTF-8: bytes that start a code point.
std::int64_t CodePoints(std::string_view s) {
  return std::count_if(s.begin(), s.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

std::int64_t CountTextTokens(std::string_view text) { return TextTokens(text); }

}  // namespace nexusflow::mock

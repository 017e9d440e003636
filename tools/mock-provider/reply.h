// What every protocol's answer is made of, independent of the wire format: the prompt in a
// canonical form (so an OpenAI, an Anthropic and a Gemini request saying the same thing get
// the same seed and the same token count), the `[mock:...]` markers, the reply plan (words,
// thinking, a forced tool call, the finish), the cache probes, and the one table of error
// kinds per HTTP status. Pure functions of their arguments: no sockets, clocks or flags.
//
// chat.cc (OpenAI), anthropic.cc and gemini.cc each parse their protocol's request into a
// PromptBuilder and a GenerationRequest, call PlanReply, and serialise the Reply back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

namespace nexusflow::mock {

// Largest request body the provider reads; anything bigger is answered 413.
inline constexpr std::size_t kMaxBodyBytes = 8 * 1024 * 1024;

// Words of the thinking text when thinking is on (capped by the request's thinking budget).
inline constexpr int kThinkingWords = 8;

// Fault-injection markers found in the text of the last user message.
struct MockMarkers {
  int status = 0;                  // [mock:status=NNN]; 0 when absent
  std::optional<int> words;        // [mock:words=N]: reply length in words
  std::int64_t delay_ms = 0;       // [mock:delay=MS]: extra wait before answering
  std::optional<int> drop_after;   // [mock:drop-after=N]: streaming only
  std::optional<std::int64_t> chunk_delay_ms;  // [mock:chunk-delay=MS]: replaces --chunk-delay-ms
};

MockMarkers ParseMarkers(std::string_view text);

// A request the mock rejects (or a status it was told to answer), in any protocol: the
// serialisers turn it into that protocol's error body.
struct RequestError {
  int status = 400;
  std::string message;
  std::string param;  // OpenAI `param`; empty → null
  std::string code;   // OpenAI `code`; empty → null
};

// The error vocabulary of each protocol for one HTTP status: the one table every error path
// uses (PROTOCOLS.md §0 and each vendor's documented types).
struct ErrorKinds {
  std::string_view openai_type;     // invalid_request_error, rate_limit_error, ...
  std::string_view openai_code;     // default `code`; empty → null
  std::string_view anthropic_type;  // invalid_request_error, overloaded_error, ...
  std::string_view gemini_status;   // INVALID_ARGUMENT, UNAVAILABLE, ...
};
ErrorKinds ErrorKindsFor(int status);

// An error with the status's default OpenAI code (401 invalid_api_key, 404 model_not_found...).
RequestError ErrorForStatus(int status, std::string message);
// The error a `[mock:status=N]` marker asks for.
RequestError ForcedStatusError(int status);

// One message of the canonical prompt. Roles are system | user | assistant | tool whatever
// the protocol called them (Gemini `model` → assistant, OpenAI `developer` → system,
// Anthropic `tool_result` blocks and Gemini `functionResponse` parts → tool messages).
struct PromptMessage {
  std::string role;
  std::string text;        // text parts in order, then each tool call's name + compact arguments
  std::string image_urls;  // each image's URL (a `data:` URL for inline data) + '\x1f'
  std::int64_t images = 0;
  std::vector<std::int64_t> image_tokens;  // each image's tokens (by its size, when inline)
};

// A place in the prompt where a cached prefix ends: every message before `message` whole,
// then the first `text_bytes` bytes and `images` images of `message`.
struct PromptPosition {
  std::size_t message = 0;
  std::size_t text_bytes = 0;
  std::int64_t images = 0;
};

struct Prompt {
  std::string model;
  std::vector<PromptMessage> messages;
  std::vector<PromptPosition> breakpoints;  // explicit cache marks, in prompt order
  std::uint64_t seed = 0;                   // FNV-1a over model and messages
  std::int64_t tokens = 0;                  // the prompt's input tokens (cached ones included)
  std::string last_user_text;               // where the markers are read from
};

// Collects one request's prompt in the canonical form. Protocol parsers call Begin/Add*/End
// per source message; the builder merges consecutive user (or assistant, or system) messages
// into one, as gateways do when they translate, so a translated request keeps its answer.
class PromptBuilder {
 public:
  explicit PromptBuilder(std::string model);

  void Begin(std::string_view role);
  void AddText(std::string_view text);
  void AddImage(std::string_view url);
  // `arguments` is JSON text; it is hashed and counted in compact form when it parses.
  void AddToolCall(std::string_view name, std::string_view arguments);
  void AddToolCall(std::string_view name, const boost::json::value& arguments);
  void End();
  // A whole tool message (a tool result).
  void AddToolResult(std::string_view text);

  // A cache breakpoint after everything added so far (after a tool call: at the message's
  // end). Before any message (a breakpoint on a tool definition) the prefix is empty: the
  // mock counts no tokens for tools, so there is nothing to cache and nothing is recorded.
  void MarkBreakpoint();

  // Seals the prompt: appends pending tool calls, computes the seed and the token count.
  Prompt Finish() &&;

 private:
  Prompt prompt_;
  bool open_ = false;
  std::string pending_tool_calls_;  // appended to the open message's text at End()
  bool breakpoint_at_end_ = false;
};

// Canonical text of a tool result: a JSON object is compacted, anything else kept as is.
std::string CanonicalToolResult(std::string_view text);
// Compact JSON of `text` when it parses, else `text` itself.
std::string CompactJson(std::string_view text);

// The token rule, the same for every protocol: per message 4 + ceil(code points / 4) +
// 85 per image. A prefix counts its last message partially by the same rule.
std::int64_t TokensAt(const Prompt& prompt, const PromptPosition& position);
PromptPosition EndOf(const Prompt& prompt, std::size_t message);

// What the process-wide prompt cache is asked about one request (see prompt_cache.h).
struct CacheProbe {
  std::uint64_t key = 0;     // hash of the model and the prefix
  std::int64_t tokens = 0;   // input tokens of the prefix
};
struct CachePlan {
  bool requested = false;           // the request marked something for caching
  bool assume_hit = false;          // the writes count as read even unseen (Gemini cachedContent)
  std::vector<CacheProbe> writes;   // prefixes remembered once answered
  std::vector<CacheProbe> lookups;  // prefixes an earlier write may match (writes included)
};
CacheProbe ProbeAt(const Prompt& prompt, const PromptPosition& position);
// Breakpoints are written; they and every message end before the last one are looked up
// (Anthropic's look-back, so a breakpoint moved to the newest turn still reads the old one).
CachePlan BreakpointCachePlan(const Prompt& prompt);
// The whole prompt is written; every message end is looked up (OpenAI-style automatic
// caching, Anthropic's top-level `cache_control`).
CachePlan AutomaticCachePlan(const Prompt& prompt);

struct CacheUsage {
  std::int64_t read = 0;   // cached tokens served
  std::int64_t write = 0;  // tokens newly written to the cache
};

// A tool call the request forces.
struct ToolCall {
  std::string name;
  std::string arguments;                     // a JSON object, serialised
  std::vector<std::string> argument_pieces;  // streamed fragments; concatenated = arguments
};

// Builds the call's arguments from the tool's JSON schema (Gemini's upper-case types too):
// every required property, filled with small deterministic values.
ToolCall BuildToolCall(std::string_view name, const boost::json::value* schema);

// How the answer ends, before each protocol names it.
enum class Finish {
  kStop,          // OpenAI stop, Anthropic end_turn, Gemini STOP
  kLength,        // length, max_tokens, MAX_TOKENS
  kStopSequence,  // stop, stop_sequence, STOP
  kToolCall,      // tool_calls, tool_use, STOP
};

// Everything the answer depends on besides the prompt.
struct GenerationRequest {
  std::optional<std::int64_t> max_tokens;   // output budget, thinking included
  std::vector<std::string> stop_sequences;  // cut the text at the first one found
  bool thinking = false;
  std::int64_t thinking_budget = 0;         // > 0 caps the thinking words
  std::optional<ToolCall> forced_tool;
};

struct Usage {
  std::int64_t prompt_tokens = 0;    // all input, cached included
  std::int64_t thinking_tokens = 0;  // one per thinking word
  std::int64_t output_tokens = 0;    // text words, or the tool call; thinking excluded
  CacheUsage cache;                  // filled by PromptCache::Resolve when answered
};

// Everything one answer contains except ids and timestamps; the same plan serialises to each
// protocol, synchronous or streamed.
struct Reply {
  std::string model;
  bool stream = false;
  MockMarkers markers;
  std::vector<std::string> thinking_pieces;  // one per word; empty → no thinking
  bool show_thinking = true;                 // Gemini without includeThoughts: counted, not sent
  std::string thinking_signature;
  std::vector<std::string> content_pieces;   // one per word; concatenated = the text
  std::optional<ToolCall> tool_call;         // set → the answer is this call, not text
  Finish finish = Finish::kStop;
  std::string stop_sequence;                 // the one matched (kStopSequence)
  Usage usage;
  CachePlan cache;

  // Protocol details the serialisers need.
  bool include_usage = false;  // OpenAI stream_options.include_usage
  bool logprobs = false;       // OpenAI logprobs: one entry per content piece
  int candidates = 1;          // Gemini candidateCount: that many copies of the answer
  bool cache_one_hour = false; // Anthropic: the last cache_control asked for ttl "1h"
  bool gemini_sse = true;      // Gemini stream: SSE (alt=sse) or a JSON array

  std::string Text() const;
  std::string ThinkingText() const;
};

// The shared answer: text (or the forced call), thinking, limits, stop sequences, usage.
Reply PlanReply(const Prompt& prompt, const GenerationRequest& generation, int reply_words);

// Random lowercase hex, `chars` long; for ids only (not cryptographic).
// FNV-1a 64 of `bytes` continued from `hash` (0xcbf29ce484222325 to start): seeds.
inline std::uint64_t Fnv1a(std::uint64_t hash, std::string_view bytes) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

// The next number of a splitmix64 stream: deterministic "random" words and values.
inline std::uint64_t SplitMix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::string RandomHex(std::size_t chars);
// Tokens of a text as the mock counts them: four ASCII characters a token, a token for every
// other character.
std::int64_t CountTextTokens(std::string_view text);
std::int64_t UnixSeconds();

// One frame of a streamed answer and what the stream writer does around it.
enum class FrameKind {
  kFirst,      // opens the stream (OpenAI role chunk, Anthropic message_start)
  kContent,    // one word, thinking word or tool-argument piece: paced, counted by drop-after
  kStructure,  // block start/stop, ping, signature: sent without waiting
  kFinish,     // the frame that ends the answer (drop-after stops before it)
  kUsage,      // OpenAI usage chunk
  kDone,       // the stream's terminator
};

struct SseFrame {
  FrameKind kind;
  std::string bytes;
};

// Small helpers the protocol parsers share.
std::string_view StringOr(const boost::json::value* v, std::string_view fallback = {});
std::optional<std::int64_t> AsInteger(const boost::json::value& v);
std::optional<double> AsNumber(const boost::json::value* v);
std::string_view JsonKind(const boost::json::value& v);
std::int64_t CodePoints(std::string_view s);

}  // namespace nexusflow::mock

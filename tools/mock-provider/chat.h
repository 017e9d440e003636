// The mock provider's answers to OpenAI chat requests, as pure functions of the request
// body: no sockets, clocks or flags in here, so the logic can be driven from a unit test.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace nexusflow::mock {

// Largest request body the provider reads; anything bigger is answered 413.
inline constexpr std::size_t kMaxBodyBytes = 8 * 1024 * 1024;

// Fault-injection markers found in the text of the last user message.
struct MockMarkers {
  int status = 0;                  // [mock:status=NNN]; 0 when absent
  std::optional<int> words;        // [mock:words=N]: reply length in words
  std::int64_t delay_ms = 0;       // [mock:delay=MS]: extra wait before answering
  std::optional<int> drop_after;   // [mock:drop-after=N]: streaming only
  std::optional<std::int64_t> chunk_delay_ms;  // [mock:chunk-delay=MS]: replaces --chunk-delay-ms
};

// An OpenAI error answer: HTTP status plus the `{"error":{...}}` body fields.
struct OpenAiError {
  int status = 400;
  std::string message;
  std::string param;  // empty → JSON null
  std::string code;   // empty → JSON null
};

// Error with the `type` and `code` the protocol table gives for `status`.
OpenAiError ErrorForStatus(int status, std::string message);
// `{"error":{"message","type","param","code"}}`; `type` follows from the status.
std::string ErrorBody(const OpenAiError& error);

struct ChatUsage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
};

// The call made when the request forces a tool.
struct ForcedToolCall {
  std::string name;
  std::string arguments;                     // a JSON object, serialised
  std::vector<std::string> argument_pieces;  // streamed fragments; concatenated = arguments
};

// Everything the answer to one well-formed chat request contains, except its ids and
// timestamp. Two requests with the same model, messages, tools and limits get equal plans.
struct ChatReply {
  std::string model;
  bool stream = false;
  bool include_usage = false;
  std::vector<std::string> content_pieces;  // one per word; concatenated = message.content
  std::optional<ForcedToolCall> tool_call;  // set → the answer is this call, not text
  std::string finish_reason;                // stop | length | tool_calls
  ChatUsage usage;
  MockMarkers markers;
};

// Validates a `POST /v1/chat/completions` body and decides the answer. `reply_words` is the
// default reply length. Returns a 400 error for a request OpenAI would reject.
std::variant<ChatReply, OpenAiError> PlanChatReply(std::string_view body, int reply_words);

// Per-response identifiers, fresh for every answer.
struct ResponseIds {
  std::string completion_id;  // chatcmpl-<hex>
  std::string tool_call_id;   // call_<hex>
  std::int64_t created = 0;   // unix seconds
};

ResponseIds NewResponseIds();
// Random lowercase hex, `chars` long; for ids only (not cryptographic).
std::string RandomHex(std::size_t chars);

// The `chat.completion` object of a non-streaming answer.
std::string ChatCompletionBody(const ChatReply& reply, const ResponseIds& ids);

enum class FrameKind {
  kFirst,    // role chunk (or the tool call's header chunk)
  kContent,  // one word, or one piece of tool arguments
  kFinish,   // empty delta with finish_reason
  kUsage,    // choices:[] with usage (include_usage only)
  kDone,     // data: [DONE]
};

struct SseFrame {
  FrameKind kind;
  std::string bytes;  // "data: ...\n\n"
};

// All frames of a streamed answer, in order.
std::vector<SseFrame> ChatStreamFrames(const ChatReply& reply, const ResponseIds& ids);

// `GET /v1/models` and `GET /v1/models/{id}` (nullopt for an unknown id).
std::string ModelListBody();
std::optional<std::string> ModelBody(std::string_view id);

}  // namespace nexusflow::mock

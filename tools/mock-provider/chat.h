// The mock provider's OpenAI chat side (PROTOCOLS.md §A, with DashScope's thinking and
// explicit-cache extensions, §D): request → Reply, Reply → `chat.completion` or chunks.
// Pure functions of their arguments, so the logic can be driven from a unit test.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "reply.h"

namespace nexusflow::mock {

// `{"error":{"message","type","param","code"}}`; `type` follows from the status.
std::string ErrorBody(const RequestError& error);

// Validates a `POST /v1/chat/completions` body and decides the answer. `reply_words` is the
// default reply length. Returns a 400 error for a request OpenAI would reject.
//
// Besides OpenAI's fields it reads DashScope's `enable_thinking` / `thinking_budget` (the
// answer then carries `reasoning_content`), `cache_control` on content parts (explicit cache
// breakpoints) and NexusFlow's `enable_context_caching: true` (automatic prefix caching).
std::variant<Reply, RequestError> PlanChatReply(std::string_view body, int reply_words);

// Per-response identifiers, fresh for every answer.
struct ResponseIds {
  std::string completion_id;  // chatcmpl-<hex>
  std::string tool_call_id;   // call_<hex>
  std::int64_t created = 0;   // unix seconds
};

ResponseIds NewResponseIds();

// The `chat.completion` object of a non-streaming answer.
std::string ChatCompletionBody(const Reply& reply, const ResponseIds& ids);

// All frames of a streamed answer, in order: `data: <chunk>\n\n` ... `data: [DONE]\n\n`.
std::vector<SseFrame> ChatStreamFrames(const Reply& reply, const ResponseIds& ids);

// A failure after the stream has started: `data: {"error":{...}}\n\n`.
std::string ChatStreamErrorFrame(const RequestError& error);

// `GET /v1/models` and `GET /v1/models/{id}` (nullopt for an unknown id).
std::string ModelListBody();
std::optional<std::string> ModelBody(std::string_view id);

}  // namespace nexusflow::mock

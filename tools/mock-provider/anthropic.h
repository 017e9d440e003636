// The mock provider's Anthropic Messages side (PROTOCOLS.md §B): request → Reply, and Reply →
// a `message` object or its SSE event sequence. Pure functions of their arguments.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "reply.h"

namespace nexusflow::mock {

// `{"type":"error","error":{"type","message"},"request_id"}`; `type` follows from the status.
std::string AnthropicErrorBody(const RequestError& error, std::string_view request_id);

// Validates a `POST /v1/messages` body the way Anthropic does (max_tokens required, roles,
// block shapes, tool_choice, thinking budget, at most 4 cache_control blocks, temperature
// 0–1) and decides the answer.
std::variant<Reply, RequestError> PlanMessagesReply(std::string_view body, int reply_words);

// `POST /v1/messages/count_tokens`: the same body without max_tokens → the input tokens.
std::variant<std::int64_t, RequestError> CountMessageTokens(std::string_view body);
std::string MessageTokenCountBody(std::int64_t input_tokens);

// Per-response identifiers, fresh for every answer.
struct MessageIds {
  std::string message_id;   // msg_<hex>
  std::string tool_use_id;  // toolu_<hex>
};
MessageIds NewMessageIds();
// Ids derived from the answer itself (the same request, the same ids).
MessageIds MessageIdsFor(const Reply& reply);

// The `message` object of a non-streaming answer.
std::string MessageBody(const Reply& reply, const MessageIds& ids);

// Every event of a streamed answer: message_start, per block content_block_start (+ ping
// after the first), deltas, content_block_stop, then message_delta and message_stop.
std::vector<SseFrame> MessageStreamFrames(const Reply& reply, const MessageIds& ids);

// A failure after the stream has started: `event: error\ndata: {"type":"error",...}\n\n`.
std::string MessageStreamErrorFrame(const RequestError& error);

}  // namespace nexusflow::mock

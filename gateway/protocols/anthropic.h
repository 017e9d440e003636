#pragma once
// Anthropic Messages (PROTOCOLS.md §B): /v1/messages request parsing and validation into
// the canonical ChatRequest, the JSON and SSE rendering of canonical answers, and the
// /v1/messages/count_tokens body.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "gateway/protocols/renderer.h"
#include "nexusflow/llm/v1/chat.pb.h"

namespace nexusflow::gateway::anthropic {

struct ParsedMessages {
  llm::v1::ChatRequest request;
};

// Parses and validates a /v1/messages body. `headers` are keyed in lower case:
// `anthropic-version` is required (any value); `anthropic-beta`, a comma list, becomes
// request.betas. The body is kept in request.raw for a native pass-through. On failure
// fills `error` (400; the message names the field the way Anthropic's does, e.g.
// "messages.1.content.0.type: Field required", and `param` holds that path) and returns
// false.
// `max_tokens` is required, as on Anthropic's API: an absent one is a 400 whatever
// `default_max_tokens` is. The gateway fills a default only when it translates another
// protocol towards Anthropic (PROTOCOLS.md §E, the connector's job), so
// `default_max_tokens` is not used here.
bool ParseMessagesRequest(std::string_view body, const std::map<std::string, std::string>& headers,
                          int64_t default_max_tokens, ParsedMessages* out, HttpError* error);

// Renders answers as Anthropic messages: `message_id` is the "msg_…" id the caller sees,
// `model` the model name the caller asked for. Streams follow the Messages SSE sequence
// (message_start, content blocks opened lazily, message_delta once the usage is known,
// message_stop).
std::unique_ptr<ChatRenderer> NewMessagesRenderer(std::string message_id, std::string model);

// The /v1/messages/count_tokens answer: {"input_tokens":N}.
std::string CountTokensJson(int64_t input_tokens);

}  // namespace nexusflow::gateway::anthropic

// The mock provider's Gemini side (PROTOCOLS.md §C, generativelanguage v1beta): request →
// Reply, and Reply → a GenerateContentResponse or its stream (SSE with `alt=sse`, else one
// JSON array sent element by element). Pure functions of their arguments.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "reply.h"

namespace nexusflow::mock {

struct GeminiOptions {
  int reply_words = 16;
  // Implicit caching: a systemInstruction of at least this many tokens is the cached prefix
  // (the first request writes it, which Gemini does not report; later ones read it).
  std::int64_t implicit_cache_min_tokens = 1024;
};

// `{"error":{"code","message","status"}}`, plus an ErrorInfo detail when `reason` is set
// (`API_KEY_INVALID`).
std::string GeminiErrorBody(const RequestError& error, std::string_view reason = {});

// Validates a `models/{model}:generateContent` (or stream) body and decides the answer; the
// caller sets `stream` and `gemini_sse` from the method and `alt`.
std::variant<Reply, RequestError> PlanGenerateContent(std::string_view model, std::string_view body,
                                                      const GeminiOptions& options);

// `models/{model}:countTokens`: `{contents}` or `{generateContentRequest}` → totalTokens.
std::variant<std::int64_t, RequestError> CountGeminiTokens(std::string_view model,
                                                           std::string_view body);
std::string GeminiTokenCountBody(std::int64_t total_tokens);

// responseId: fresh per answer.
std::string NewResponseId();

std::string GenerateContentBody(const Reply& reply, std::string_view response_id);

// Every chunk of a streamed answer: thought words (with includeThoughts), text words (or the
// whole function call), then a last chunk with finishReason and the final usage. With
// `reply.gemini_sse` each is `data: <json>\n\n`; otherwise `[`, `,\r\n` and `]` frame a JSON
// array.
std::vector<SseFrame> GenerateContentStreamFrames(const Reply& reply, std::string_view response_id);

// A failure after the stream has started; `first` when no chunk was sent yet (array form).
std::string GeminiStreamErrorFrame(const RequestError& error, bool sse, bool first);

}  // namespace nexusflow::mock

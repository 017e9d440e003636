#pragma once
// What a billing hold reserves: an upper bound of the tokens a request can be charged, so
// that the hold covers the settlement and concurrent requests cannot drive a balance below
// zero. A chat request's rate-limit lease counts the same bound against the TPM limit (the
// prompt, plus the output when max tokens are given), so the requests admitted within a
// minute never use more than the limit; its release replaces it with the actual count.
//
// Prompt bound, in tokens:
//   text (messages, system, tool calls and results, thinking, tool definitions, plain-text
//   documents): one token per UTF-8 byte: a byte-level tokenizer's token covers at least
//   one byte, so no tokenizer counts more (CJK text, three bytes a character, stays covered);
//   each message adds 8 tokens of framing;
//   an image of known size (inline data, or a data: URL; the size read from the file's
//   header): the largest of what OpenAI (high detail: 85 + 170 per 512-pixel tile after
//   fitting 2048 and 768), Anthropic (width × height / 750 after fitting 1568 pixels, at
//   most 1,600) and Gemini (258 per 768-pixel tile) count; detail "low" still counts as
//   high, since not every provider honours it;
//   an image or document the gateway cannot size (a URL, a PDF): kUnknownMediaTokens for an
//   image, the model's context window for a document;
//   the whole capped at the model's context window when the catalog gives one.
// Output bound: the request's max tokens, else the model's maximum output, plus the thinking
// budget when thinking is on.
#include <cstdint>

#include "nexusflow/llm/v1/chat.pb.h"

namespace nexusflow::gateway {

constexpr int64_t kUnknownMediaTokens = 2000;
constexpr int64_t kMessageFramingTokens = 8;

// Tokens of one image of `width` × `height` pixels, the largest of the providers' counts.
int64_t ImageTokenBound(int64_t width, int64_t height);

// `context_window` 0 = unknown (no cap; unsized documents then count kUnknownMediaTokens).
int64_t PromptTokenBound(const llm::v1::ChatRequest& request, int64_t context_window);

// `max_output` is what the upstream is allowed to write (the request's or the model's).
int64_t OutputTokenBound(const llm::v1::ChatRequest& request, int64_t max_output);

}  // namespace nexusflow::gateway

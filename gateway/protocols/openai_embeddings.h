#pragma once
// OpenAI embeddings (POST /v1/embeddings, PROTOCOLS.md §A): request parsing and validation,
// and the response in float or base64 encoding.
#include <string>
#include <string_view>

#include "libs/common/status_map.h"
#include "nexusflow/llm/v1/embedding.pb.h"

namespace nexusflow::gateway::openai {

// Inputs per request, as OpenAI allows.
inline constexpr int kMaxEmbeddingInputs = 2048;

struct ParsedEmbeddings {
  llm::v1::EmbedRequest request;
  bool base64 = false;  // encoding_format "base64" (the OpenAI SDKs' default)
};

// `input` is a string, an array of strings, an array of token ids or an array of such
// arrays; none may be empty; at most kMaxEmbeddingInputs of them. On failure fills `error`
// (400 naming the parameter) and returns false.
bool ParseEmbeddingsRequest(std::string_view body, ParsedEmbeddings* out, HttpError* error);

// {"object":"list","data":[{"object":"embedding","index","embedding"}],"model","usage"}; a
// float vector as the shortest decimal of each float32, base64 as its little-endian bytes.
std::string EmbeddingsBody(const llm::v1::EmbedResponse& response, std::string_view model, bool base64);

// Tokens of the inputs at most (a token per UTF-8 byte of text, one per token id), for
// holds; and a best guess (four bytes a token), for rate limits and a missing usage.
int64_t EmbeddingTokenBound(const llm::v1::EmbedRequest& request);
int64_t EmbeddingTokenEstimate(const llm::v1::EmbedRequest& request);

}  // namespace nexusflow::gateway::openai

#pragma once
// OpenAI embeddings (POST /v1/embeddings), as OpenAI and DashScope's compatible mode answer
// them: a deterministic unit vector per input (a function of the model and the input), in
// float or base64 (little-endian float32) encoding, usage in prompt tokens.
#include <string>
#include <string_view>
#include <variant>

#include "reply.h"

namespace nexusflow::mock {

inline constexpr int kEmbeddingDefaultDimensions = 1024;
inline constexpr int kEmbeddingMaxDimensions = 2048;
inline constexpr int kEmbeddingMaxInputs = 2048;
inline constexpr std::int64_t kEmbeddingMaxInputTokens = 8192;

// The response body, or the error OpenAI gives for the request.
std::variant<std::string, RequestError> EmbeddingsBody(std::string_view body);

}  // namespace nexusflow::mock

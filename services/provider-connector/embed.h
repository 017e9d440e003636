#pragma once
// Embeddings on an OpenAI-compatible upstream (POST {base}/embeddings: OpenAI, DashScope's
// compatible mode, any server of that shape): the request body and the answer's decoding.
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nexusflow/llm/v1/embedding.pb.h"

namespace nexusflow::connector {

// The body for `request` at the deployment's `upstream_model`; vectors asked as floats
// (every OpenAI-compatible server speaks that encoding).
std::string BuildOpenAiEmbedBody(const llm::v1::EmbedRequest& request, std::string_view upstream_model);

// The answer: one vector per input, in input order (whatever order `data` came in), and
// usage (prompt tokens as input). An answer without usage gets none (input_tokens 0).
absl::StatusOr<llm::v1::EmbedResponse> ParseOpenAiEmbedResponse(std::string_view body, int expected_inputs);

}  // namespace nexusflow::connector

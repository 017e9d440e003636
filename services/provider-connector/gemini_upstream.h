#pragma once
// The Gemini generateContent upstream wire format (PROTOCOLS.md §C): canonical request →
// GenerateContentRequest, and GenerateContentResponse objects (one whole, or one per SSE
// event with alt=sse) → canonical events.
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

#include "services/provider-connector/upstream_codec.h"

namespace nexusflow::connector {

std::string BuildGeminiBody(const llm::v1::ChatRequest& request);

// Gemini usage → canonical: promptTokenCount includes the cached tokens; output is the
// candidates' tokens plus the thoughts'.
llm::v1::Usage UsageFromGemini(const boost::json::value& usage_metadata);

llm::v1::FinishReason FinishReasonFromGemini(std::string_view reason, bool called_tools);

class GeminiDecoder : public UpstreamDecoder {
 public:
  explicit GeminiDecoder(int64_t prompt_estimate) : prompt_estimate_(prompt_estimate) {}
  absl::Status FeedEvent(std::string_view event, std::string_view data,
                         std::vector<llm::v1::ChatEvent>& out) override;
  absl::Status FeedResponse(std::string_view body, std::vector<llm::v1::ChatEvent>& out) override;
  void Finish(std::vector<llm::v1::ChatEvent>& out) override;
  bool started() const override { return started_; }
  bool usage_estimated() const override { return usage_estimated_; }

 private:
  absl::Status Feed(std::string_view json_text, std::vector<llm::v1::ChatEvent>& out);

  int64_t prompt_estimate_;
  bool started_ = false;
  bool closed_ = false;
  bool has_usage_ = false;
  bool usage_estimated_ = false;
  llm::v1::Usage usage_;
  // Per candidate (candidateCount > 1): tool indexes are dense per candidate, and each
  // candidate finishes on its own.
  struct CandidateState {
    int next_tool = 0;
    bool called_tools = false;  // a STOP then means tool calls
    bool finished = false;
  };
  std::map<int32_t, CandidateState> candidates_;
  int64_t output_chars_ = 0;
};

// The Gemini codec: POST {base_url}/v1beta/models/{model}:generateContent, or
// :streamGenerateContent?alt=sse, with x-goog-api-key.
const UpstreamCodec& GeminiCodec();

}  // namespace nexusflow::connector

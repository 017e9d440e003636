#pragma once
// The OpenAI-compatible upstream wire format (OpenAI, DashScope compatible-mode, DeepSeek,
// vLLM …): canonical request → request body, and response body / SSE stream → canonical
// events.
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "nexusflow/llm/v1/chat.pb.h"
#include "services/provider-connector/upstream_codec.h"

namespace nexusflow::connector {

namespace llmpb = ::nexusflow::llm::v1;

// The chat/completions body for `upstream_model`. Streams always ask for usage.
std::string BuildOpenAiChatBody(const llmpb::ChatRequest& request,
                                const std::string& upstream_model, bool stream);

// OpenAI usage → canonical: prompt_tokens includes cached tokens and cache writes.
llmpb::Usage UsageFromOpenAi(int64_t prompt_tokens, int64_t cached_tokens,
                             int64_t cache_write_tokens, int64_t completion_tokens,
                             int64_t reasoning_tokens);

// Turns OpenAI chunks (stream) or one response (sync) into canonical events, in order:
// start, deltas, finish, then usage last (from Finish).
class OpenAiDecoder : public UpstreamDecoder {
 public:
  // `prompt_estimate`: tokens to bill as input if the upstream never reports usage.
  explicit OpenAiDecoder(int64_t prompt_estimate) : prompt_estimate_(prompt_estimate) {}

  // One SSE data payload (a chat.completion.chunk, "[DONE]" or an error object).
  absl::Status FeedChunk(std::string_view data, std::vector<llmpb::ChatEvent>& out);
  absl::Status FeedEvent(std::string_view, std::string_view data,
                         std::vector<llmpb::ChatEvent>& out) override {
    return FeedChunk(data, out);
  }
  // A whole non-streamed chat.completion body.
  absl::Status FeedResponse(std::string_view body, std::vector<llmpb::ChatEvent>& out) override;
  // Closes the answer: a finish event if none came, and the usage event.
  void Finish(std::vector<llmpb::ChatEvent>& out) override;

  bool started() const override { return started_; }
  bool finished() const { return finished_; }
  bool usage_estimated() const override { return usage_estimated_; }
  int64_t output_chars() const { return output_chars_; }

 private:
  absl::Status Feed(std::string_view json, bool whole, std::vector<llmpb::ChatEvent>& out);

  int64_t prompt_estimate_;
  bool started_ = false;
  bool finished_ = false;
  bool closed_ = false;
  bool has_usage_ = false;
  bool usage_estimated_ = false;
  llmpb::Usage usage_;
  llmpb::FinishReason finish_reason_ = llmpb::FINISH_REASON_UNSPECIFIED;
  std::map<int64_t, int> tool_index_;  // upstream index → dense index
  int64_t output_chars_ = 0;
};

// The OpenAI chat completions codec: POST {base_url}/chat/completions, Bearer key.
const UpstreamCodec& OpenAiCodec();

llmpb::FinishReason FinishReasonFromOpenAi(std::string_view reason);
std::string_view FinishReasonToOpenAi(llmpb::FinishReason reason);

}  // namespace nexusflow::connector

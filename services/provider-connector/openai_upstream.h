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
// Reads cached_tokens, OpenAI's cache_write_tokens and DashScope's
// cache_creation_input_tokens / cache_creation.ephemeral_{5m,1h}_input_tokens.
llmpb::Usage UsageFromOpenAi(int64_t prompt_tokens, int64_t cached_tokens,
                             int64_t cache_write_tokens, int64_t completion_tokens,
                             int64_t reasoning_tokens);

// Turns OpenAI chunks (stream) or one response (sync) into canonical events, in order:
// start, deltas, finish, then usage last (from Finish). With n > 1 every event carries
// its choice's index (ChatEvent.choice_index) and tool indexes are dense per choice;
// `reasoning_content` (DeepSeek, Qwen) becomes ReasoningDelta.
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
  // Every choice seen has finished (choice 0 at least).
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
  // Per choice (n > 1): upstream tool index → dense index, and whether it finished.
  struct ChoiceState {
    std::map<int64_t, int> tool_index;
    bool finished = false;
  };
  ChoiceState& Choice(int32_t index) { return choices_[index]; }
  std::map<int32_t, ChoiceState> choices_;
  int64_t output_chars_ = 0;
};

// The OpenAI chat completions codec: POST {base_url}/chat/completions, Bearer key.
const UpstreamCodec& OpenAiCodec();

llmpb::FinishReason FinishReasonFromOpenAi(std::string_view reason);
std::string_view FinishReasonToOpenAi(llmpb::FinishReason reason);

}  // namespace nexusflow::connector

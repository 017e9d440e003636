#pragma once
// The Anthropic Messages upstream wire format (PROTOCOLS.md §B): canonical request →
// /v1/messages body, and response body / SSE event stream → canonical events.
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

#include "services/provider-connector/upstream_codec.h"

namespace nexusflow::connector {

// The /v1/messages body. `default_max_tokens` fills Anthropic's required max_tokens when
// the request sets no output limit.
std::string BuildAnthropicBody(const llm::v1::ChatRequest& request,
                               const std::string& upstream_model, bool stream,
                               int32_t default_max_tokens);

// Anthropic usage → canonical: input_tokens excludes the cache reads and writes.
llm::v1::Usage UsageFromAnthropic(const boost::json::value& usage);

llm::v1::FinishReason FinishReasonFromAnthropic(std::string_view stop_reason);

class AnthropicDecoder : public UpstreamDecoder {
 public:
  explicit AnthropicDecoder(int64_t prompt_estimate) : prompt_estimate_(prompt_estimate) {}
  absl::Status FeedEvent(std::string_view event, std::string_view data,
                         std::vector<llm::v1::ChatEvent>& out) override;
  absl::Status FeedResponse(std::string_view body, std::vector<llm::v1::ChatEvent>& out) override;
  void Finish(std::vector<llm::v1::ChatEvent>& out) override;
  bool started() const override { return started_; }
  bool usage_estimated() const override { return usage_estimated_; }

 private:
  void Start(const boost::json::value& message, std::vector<llm::v1::ChatEvent>& out);
  void MergeUsage(const boost::json::value& usage);
  void SetFinish(const boost::json::value& holder, std::vector<llm::v1::ChatEvent>& out);
  // The arguments of tool block `block_index` when none arrived in fragments.
  void FlushPendingInput(int64_t block_index, std::vector<llm::v1::ChatEvent>& out);

  int64_t prompt_estimate_;
  bool started_ = false;
  bool finished_ = false;
  bool closed_ = false;
  bool has_usage_ = false;
  // message_delta (or a whole response) gave the output count; message_start's is a
  // placeholder (Anthropic sends 1), not what the answer produced.
  bool output_counted_ = false;
  bool usage_estimated_ = false;
  llm::v1::Usage usage_;
  std::map<int64_t, int> tool_index_;  // content block index → dense tool index
  // Tool blocks (by content block index) that have had no argument fragment yet, with the
  // input their content_block_start carried: sent as the arguments at content_block_stop,
  // so a call whose partial_json was empty still has an object ("{}").
  std::map<int64_t, std::string> pending_input_;
  int next_tool_ = 0;
  int64_t output_chars_ = 0;
};

// The Anthropic Messages codec: POST {base_url}/v1/messages with x-api-key and
// anthropic-version; the request's anthropic-beta flags are forwarded.
const UpstreamCodec& AnthropicCodec();

}  // namespace nexusflow::connector

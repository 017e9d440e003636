#pragma once
// A chat answer assembled from canonical events, for non-streamed responses, usage and
// the access log.
#include <optional>
#include <string>
#include <vector>

#include "nexusflow/llm/v1/chat.pb.h"

namespace nexusflow::gateway {

struct ChatAnswer {
  struct ToolCall {
    std::string id;
    std::string name;
    std::string arguments;
  };
  std::string response_id;
  std::string upstream_model;
  std::string deployment_id;
  int64_t created = 0;
  std::string text;
  std::string reasoning;
  std::vector<ToolCall> tool_calls;
  llm::v1::FinishReason finish = llm::v1::FINISH_REASON_UNSPECIFIED;
  llm::v1::Usage usage;
  bool has_usage = false;
  std::optional<llm::v1::StreamError> error;

  void Apply(const llm::v1::ChatEvent& event);
};

}  // namespace nexusflow::gateway

#pragma once
// A chat answer assembled from canonical events, for non-streamed responses, usage and
// the access log.
#include <optional>
#include <string>
#include <vector>

#include "nexusflow/llm/v1/chat.pb.h"

namespace nexusflow::gateway {

// The content of one choice of an answer.
struct ChoiceContent {
  struct ToolCall {
    std::string id;
    std::string name;
    std::string arguments;
    std::string signature;  // Gemini thoughtSignature, to send back with the call
  };
  // One piece of content in the order it arrived, for protocols whose answer is a list of
  // blocks (Anthropic): text, reasoning with its signature, and tool calls interleave, and
  // a later turn must send the reasoning back in place.
  struct Block {
    enum class Kind { kText, kThinking, kRedactedThinking, kToolCall };
    Kind kind = Kind::kText;
    std::string text;       // kText: the text; kThinking: the reasoning
    std::string signature;  // kThinking: provider signature, passed back unchanged
    std::string data;       // kRedactedThinking: opaque provider data
    size_t tool_call = 0;   // kToolCall: index into tool_calls
  };
  // The whole text, reasoning and tool calls (what OpenAI renders and billing estimates
  // read); `blocks` holds the same content in order.
  std::string text;
  std::string reasoning;
  std::vector<ToolCall> tool_calls;
  std::vector<Block> blocks;
  llm::v1::FinishReason finish = llm::v1::FINISH_REASON_UNSPECIFIED;
  std::string stop_sequence;  // the stop sequence hit, when the upstream said which

  // Applies a content or finish event of this choice.
  void ApplyContent(const llm::v1::ChatEvent& event);

 private:
  void AddToolCallBlock(size_t index);
};

// The answer: choice 0 in the inherited fields (every protocol has it), further choices
// (OpenAI `n`, Gemini `candidateCount`) in `more_choices`, index 1 first.
struct ChatAnswer : ChoiceContent {
  std::string response_id;
  std::string upstream_model;
  std::string deployment_id;
  int64_t created = 0;
  std::vector<ChoiceContent> more_choices;
  llm::v1::Usage usage;
  bool has_usage = false;
  std::optional<llm::v1::StreamError> error;

  void Apply(const llm::v1::ChatEvent& event);
  size_t choice_count() const { return 1 + more_choices.size(); }
  const ChoiceContent& choice(size_t i) const { return i == 0 ? *this : more_choices[i - 1]; }
};

}  // namespace nexusflow::gateway

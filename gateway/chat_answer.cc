#include "gateway/chat_answer.h"

#include <algorithm>
#include <utility>

namespace nexusflow::gateway {

void ChoiceContent::AddToolCallBlock(size_t index) {
  bool known = std::any_of(blocks.begin(), blocks.end(), [&](const Block& b) {
    return b.kind == Block::Kind::kToolCall && b.tool_call == index;
  });
  if (known) return;
  Block b;
  b.kind = Block::Kind::kToolCall;
  b.tool_call = index;
  blocks.push_back(std::move(b));
}

// Choices past 0 (OpenAI n, Gemini candidateCount) are bounded by the request's own
// limit (128); an index beyond that is dropped rather than allocated.
constexpr int32_t kMaxChoices = 128;

void ChatAnswer::Apply(const llm::v1::ChatEvent& e) {
  switch (e.event_case()) {
    case llm::v1::ChatEvent::kStart:
      response_id = e.start().response_id();
      upstream_model = e.start().upstream_model();
      deployment_id = e.start().deployment_id();
      created = e.start().created_unix();
      return;
    case llm::v1::ChatEvent::kUsage:
      usage = e.usage();
      has_usage = true;
      return;
    case llm::v1::ChatEvent::kError: error = e.error(); return;
    default: break;
  }
  int32_t index = e.choice_index();
  if (index <= 0) return ApplyContent(e);
  if (index >= kMaxChoices) return;
  if (more_choices.size() < static_cast<size_t>(index)) more_choices.resize(index);
  more_choices[index - 1].ApplyContent(e);
}

void ChoiceContent::ApplyContent(const llm::v1::ChatEvent& e) {
  switch (e.event_case()) {
    case llm::v1::ChatEvent::kText: {
      const std::string& t = e.text().text();
      text += t;
      if (t.empty()) break;
      if (blocks.empty() || blocks.back().kind != Block::Kind::kText) blocks.push_back(Block{});
      blocks.back().text += t;
      break;
    }
    case llm::v1::ChatEvent::kReasoning: {
      const auto& r = e.reasoning();
      reasoning += r.text();
      if (!r.redacted_data().empty()) {
        Block b;
        b.kind = Block::Kind::kRedactedThinking;
        b.data = r.redacted_data();
        blocks.push_back(std::move(b));
        break;
      }
      if (r.text().empty() && r.signature().empty()) break;
      // A signature ends its thinking block: reasoning after it is a new block.
      if (blocks.empty() || blocks.back().kind != Block::Kind::kThinking ||
          !blocks.back().signature.empty()) {
        blocks.emplace_back();
        blocks.back().kind = Block::Kind::kThinking;
      }
      blocks.back().text += r.text();
      if (!r.signature().empty()) blocks.back().signature = r.signature();
      break;
    }
    case llm::v1::ChatEvent::kToolCallStart: {
      size_t i = static_cast<size_t>(e.tool_call_start().index());
      if (tool_calls.size() <= i) tool_calls.resize(i + 1);
      tool_calls[i].id = e.tool_call_start().id();
      tool_calls[i].name = e.tool_call_start().name();
      tool_calls[i].signature = e.tool_call_start().signature();
      AddToolCallBlock(i);
      break;
    }
    case llm::v1::ChatEvent::kToolCallDelta: {
      size_t i = static_cast<size_t>(e.tool_call_delta().index());
      if (tool_calls.size() <= i) tool_calls.resize(i + 1);
      tool_calls[i].arguments += e.tool_call_delta().arguments_fragment();
      AddToolCallBlock(i);
      break;
    }
    case llm::v1::ChatEvent::kFinish:
      finish = e.finish().reason();
      stop_sequence = e.finish().stop_sequence();
      break;
    default: break;
  }
}

}  // namespace nexusflow::gateway

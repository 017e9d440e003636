#include "gateway/chat_answer.h"

namespace nexusflow::gateway {

void ChatAnswer::Apply(const llm::v1::ChatEvent& e) {
  switch (e.event_case()) {
    case llm::v1::ChatEvent::kStart:
      response_id = e.start().response_id();
      upstream_model = e.start().upstream_model();
      deployment_id = e.start().deployment_id();
      created = e.start().created_unix();
      break;
    case llm::v1::ChatEvent::kText: text += e.text().text(); break;
    case llm::v1::ChatEvent::kReasoning: reasoning += e.reasoning().text(); break;
    case llm::v1::ChatEvent::kToolCallStart: {
      size_t i = static_cast<size_t>(e.tool_call_start().index());
      if (tool_calls.size() <= i) tool_calls.resize(i + 1);
      tool_calls[i].id = e.tool_call_start().id();
      tool_calls[i].name = e.tool_call_start().name();
      break;
    }
    case llm::v1::ChatEvent::kToolCallDelta: {
      size_t i = static_cast<size_t>(e.tool_call_delta().index());
      if (tool_calls.size() <= i) tool_calls.resize(i + 1);
      tool_calls[i].arguments += e.tool_call_delta().arguments_fragment();
      break;
    }
    case llm::v1::ChatEvent::kFinish: finish = e.finish().reason(); break;
    case llm::v1::ChatEvent::kUsage:
      usage = e.usage();
      has_usage = true;
      break;
    case llm::v1::ChatEvent::kError: error = e.error(); break;
    default: break;
  }
}

}  // namespace nexusflow::gateway

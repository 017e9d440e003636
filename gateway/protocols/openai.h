#pragma once
// OpenAI chat completions: request parsing and validation, JSON and SSE rendering, and
// the model list.
#include <memory>
#include <string>
#include <string_view>

#include "gateway/protocols/renderer.h"
#include "nexusflow/llm/v1/chat.pb.h"
#include "nexusflow/routing/v1/routing.pb.h"

namespace nexusflow::gateway::openai {

struct ParsedChat {
  llm::v1::ChatRequest request;
  bool include_usage = false;  // stream_options.include_usage
};

// Parses and validates a /v1/chat/completions body (PROTOCOLS.md §A) without throwing. On
// failure fills `error` (400 naming the offending parameter) and returns false.
// reasoning_effort maps to ThinkingConfig{enabled, budget_tokens}: minimal 512, low 1024,
// medium 4096, high 16384 (an explicit thinking_budget wins); "none" disables thinking.
// logprobs/top_logprobs are validated; the canonical request has no field for them, so they
// reach an upstream only by pass-through (OpenAI-compatible upstreams get the raw body).
bool ParseChatRequest(std::string_view body, ParsedChat* out, HttpError* error);

// Streams render choices[] per ChatEvent.choice_index; a sync body lists every choice of
// the ChatAnswer (n > 1).
std::unique_ptr<ChatRenderer> NewChatRenderer(std::string completion_id, std::string model,
                                              int64_t created, bool include_usage);

// One model object, with NexusFlow's extra fields.
std::string ModelJson(const routing::v1::Model& model);
std::string ModelListJson(const routing::v1::CatalogSnapshot& catalog,
                          const std::vector<std::string>& allowed);

}  // namespace nexusflow::gateway::openai

#pragma once
// Gemini v1beta (PROTOCOLS.md §C): generateContent / streamGenerateContent request parsing
// and validation into the canonical ChatRequest, rendering of GenerateContentResponse as a
// whole body, as SSE (`alt=sse`) or as a streamed JSON array, and the model list.
//
// Field names: Google's API reads proto3 JSON, so every field is accepted in its camelCase
// (`generationConfig`) and its snake_case (`generation_config`) spelling. Errors follow
// Google's wording and name the field by its snake_case path, as Google does:
//   unknown field   Invalid JSON payload received. Unknown name "foo" at 'generation_config': Cannot find field.
//   wrong type      Invalid value at 'generation_config.temperature' (TYPE_FLOAT), "hot"
//   bad value       * GenerateContentRequest.contents[0].parts: contents.parts must not be empty.
// all 400 INVALID_ARGUMENT, with HttpError::param holding the path.
//
// Function-call ids. Gemini pairs a functionResponse with its functionCall by name (and by
// `id` when the client kept it); the canonical request needs ids that pair exactly, so:
//   - a functionCall keeps its `id` when it has one, else gets `call_<c>_<p>`, c and p being
//     its indexes in `contents` and in that content's `parts`;
//   - a functionResponse takes its `id` when that id is one of an earlier call's; else the
//     first not yet answered call of the same name in the most recent model turn that has
//     one (so two calls of `f` answered by two responses of `f` pair in order); with no such
//     call, its own `id`, or `call_<c>_<p>` of the response itself: an orphan that upstreams
//     which check pairing will refuse.
// The renderer sends the canonical call id back as `functionCall.id`, and the SDK returns it
// in the functionResponse, so ids made upstream survive the round trip.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/protocols/renderer.h"
#include "nexusflow/llm/v1/chat.pb.h"
#include "nexusflow/routing/v1/routing.pb.h"

namespace nexusflow::gateway::gemini {

struct ParsedGenerate {
  llm::v1::ChatRequest request;
  // `cachedContent`: the name of a cache stored at Google ("cachedContents/…"). The canonical
  // request cannot carry it (its content lives at Google's side), so no upstream sees it;
  // the route may refuse it or answer without it. Empty when not given.
  std::string cached_content;
};

// Parses and validates a generateContent / streamGenerateContent body. `model` is the id
// from the path (a leading "models/" is dropped); `stream` says which method was called.
// On failure fills `error` (400, Google's wording, param = the field's path) and returns
// false.
bool ParseGenerateContentRequest(std::string_view body, std::string model, bool stream,
                                 ParsedGenerate* out, HttpError* error);

// Parses a countTokens body: `{contents}` or `{generateContentRequest: {…}}` (not both),
// into the request whose prompt is to be counted. Errors as above.
bool ParseCountTokensRequest(std::string_view body, std::string model, ParsedGenerate* out,
                             HttpError* error);

// The renderer for one answer. `response_id` and `model_version` go into every response
// object; `sse` is `alt=sse` on streamGenerateContent (else a streamed JSON array, whose
// Content-Type Google sends as application/json).
std::unique_ptr<ChatRenderer> NewGenerateRenderer(std::string response_id,
                                                  std::string model_version, bool sse);

// One model in Gemini's shape (GET /v1beta/models/{model}).
std::string ModelJson(const routing::v1::Model& model);
// `{"models":[…]}`: the models offered on the Gemini protocol, limited to `allowed` unless
// it is empty, from the `offset`-th on, at most `page_size` of them (0: all), with a
// nextPageToken when more follow.
std::string ModelListJson(const routing::v1::CatalogSnapshot& catalog,
                          const std::vector<std::string>& allowed, int page_size = 0,
                          int offset = 0);
// `{"totalTokens":N}`.
std::string CountTokensJson(int64_t total);

}  // namespace nexusflow::gateway::gemini

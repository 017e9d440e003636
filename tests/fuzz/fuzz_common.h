#pragma once
// What the fuzz targets share: the connector's way of feeding an upstream answer to a
// decoder, the gateway's way of rendering the events, and the upstream bodies built from
// a parsed request. Each mirrors its production caller (connector_service.cc,
// chat_pipeline.cc) so that a crash here is one a hostile peer could cause there.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/chat_answer.h"
#include "gateway/protocols/anthropic.h"
#include "gateway/protocols/gemini.h"
#include "gateway/protocols/openai.h"
#include "libs/common/sse.h"
#include "services/provider-connector/anthropic_upstream.h"
#include "services/provider-connector/gemini_upstream.h"
#include "services/provider-connector/openai_upstream.h"

namespace nexusflow::fuzz {

using llm::v1::ChatEvent;

inline std::string_view AsText(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

[[noreturn]] inline void Fail(const char* what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  std::abort();
}

// The SSE frames of `bytes`, checked to be the same whether the bytes come in one read or
// one byte a read (framing must not depend on where reads split).
inline std::vector<SseEvent> Frames(std::string_view bytes) {
  SseParser whole, bytewise;
  std::vector<SseEvent> a, b;
  whole.Feed(bytes, a);
  for (size_t i = 0; i < bytes.size(); ++i) bytewise.Feed(bytes.substr(i, 1), b);
  if (a.size() != b.size()) Fail("SseParser: event count depends on read boundaries");
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].event != b[i].event || a[i].data != b[i].data)
      Fail("SseParser: event content depends on read boundaries");
  if (whole.Pending() != bytewise.Pending()) Fail("SseParser: Pending depends on read boundaries");
  return a;
}

// A failure after the stream began, as the connector reports it (FailMidStream): the
// error, then the decoder's closing events without a finish.
inline void FailMidStream(connector::UpstreamDecoder& decoder, const std::string& message,
                          std::vector<ChatEvent>& events) {
  ChatEvent e;
  e.mutable_error()->set_http_status(502);
  e.mutable_error()->set_code("upstream_protocol_error");
  e.mutable_error()->set_message(message);
  events.push_back(std::move(e));
  std::vector<ChatEvent> closing;
  decoder.Finish(closing);
  for (auto& c : closing)
    if (!c.has_finish()) events.push_back(std::move(c));
}

// A streamed answer: `bytes` are the upstream's response body.
inline std::vector<ChatEvent> DecodeStream(connector::UpstreamDecoder& decoder,
                                           std::string_view bytes) {
  std::vector<ChatEvent> events;
  for (const auto& f : Frames(bytes)) {
    if (auto s = decoder.FeedEvent(f.event, f.data, events); !s.ok()) {
      FailMidStream(decoder, std::string(s.message()), events);
      return events;
    }
  }
  bool had_error = false;
  for (const auto& e : events) had_error |= e.has_error();
  if (!had_error) decoder.Finish(events);
  return events;
}

// A non-streamed answer: `body` is the whole response body.
inline std::vector<ChatEvent> DecodeWhole(connector::UpstreamDecoder& decoder,
                                          std::string_view body) {
  std::vector<ChatEvent> events;
  if (auto s = decoder.FeedResponse(body, events); !s.ok()) {
    FailMidStream(decoder, std::string(s.message()), events);
    return events;
  }
  bool had_error = false;
  for (const auto& e : events) had_error |= e.has_error();
  if (!had_error) decoder.Finish(events);
  return events;
}

inline std::vector<std::unique_ptr<gateway::ChatRenderer>> AllRenderers() {
  std::vector<std::unique_ptr<gateway::ChatRenderer>> r;
  r.push_back(gateway::openai::NewChatRenderer("chatcmpl-fuzz", "fuzz-model", 1700000000, true));
  r.push_back(gateway::anthropic::NewMessagesRenderer("msg_fuzz", "fuzz-model"));
  r.push_back(gateway::gemini::NewGenerateRenderer("req_fuzz", "fuzz-model", true));
  r.push_back(gateway::gemini::NewGenerateRenderer("req_fuzz", "fuzz-model", false));
  return r;
}

// The events rendered in every public protocol, streamed and whole, the way the gateway
// does it (chat_pipeline.cc): errors and usage are not stream events; an error ends the
// stream with StreamError and a whole answer with an error body instead of SyncBody.
inline void RenderAll(const std::vector<ChatEvent>& events) {
  for (auto& renderer : AllRenderers()) {
    gateway::ChatAnswer answer;
    std::string frames;
    for (const auto& e : events) {
      answer.Apply(e);
      if (!e.has_error() && !e.has_usage()) frames += renderer->StreamEvent(e);
    }
    if (answer.error) {
      int status = answer.error->http_status() ? answer.error->http_status() : 502;
      frames += renderer->StreamError({status, answer.error->message(), "", ""});
      continue;
    }
    if (answer.has_usage) {
      ChatEvent usage;
      *usage.mutable_usage() = answer.usage;
      frames += renderer->StreamEvent(usage);
    }
    frames += renderer->StreamEnd();
  }
  for (auto& renderer : AllRenderers()) {
    gateway::ChatAnswer answer;
    for (const auto& e : events) answer.Apply(e);
    if (!answer.error) (void)renderer->SyncBody(answer);
  }
}

// A parsed request sent upstream in every protocol, streamed and not, and passed through
// as the caller's own body where it came in that protocol.
inline void BuildUpstreamBodies(const llm::v1::ChatRequest& request) {
  for (bool stream : {false, true}) {
    (void)connector::BuildOpenAiChatBody(request, "upstream-model", stream);
    (void)connector::BuildAnthropicBody(request, "upstream-model", stream, 4096);
  }
  (void)connector::BuildGeminiBody(request);
  for (auto p : {llm::v1::PROTOCOL_OPENAI, llm::v1::PROTOCOL_ANTHROPIC, llm::v1::PROTOCOL_GEMINI})
    (void)connector::PassThroughBody(request, p, "upstream-model");
}

// One upstream answer through a fresh decoder each way (stream and whole), then rendered.
template <typename Decoder>
void FuzzUpstream(std::string_view input) {
  {
    Decoder decoder(/*prompt_estimate=*/17);
    RenderAll(DecodeStream(decoder, input));
  }
  {
    Decoder decoder(/*prompt_estimate=*/17);
    RenderAll(DecodeWhole(decoder, input));
  }
}

}  // namespace nexusflow::fuzz

// Protocol translation cost, per (edge protocol, upstream protocol) pair:
//
//   request/<edge>-><upstream>  a ~4 KB streaming chat body in the edge protocol (system
//                               prompt, five turns with one tool call and its result, a tool
//                               with a JSON schema, sampling parameters; the same content in
//                               each protocol) parsed by the edge parser into the canonical
//                               ChatRequest, then the upstream body built by the upstream
//                               codec's BuildCall. Same-protocol pairs take the codec's native
//                               pass-through when the edge parser kept the raw body.
//   chunk/<edge>-><upstream>    one SSE event of a streamed answer in the upstream protocol
//                               (a ~20-word text delta) fed through SseParser and the upstream
//                               decoder, the canonical events rendered by the edge renderer's
//                               StreamEvent. Decoder and renderer are made once, already past
//                               their start (and the first content block), so this is the
//                               steady-state cost of one relayed chunk.
//   ref_request/<edge>          boost::json::parse + serialize of the same request body.
//   ref_chunk/<upstream>        boost::json::parse + serialize of the same chunk's JSON.
//
// Every benchmark checks its result once before timing (parse accepted, body non-empty and
// valid JSON naming the content, the rendered frame carrying the delta's text) and fails
// with SkipWithError otherwise. Bytes/s count the input bytes (request body, SSE event).
#include <benchmark/benchmark.h>

#include <boost/json.hpp>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/protocols/anthropic.h"
#include "gateway/protocols/gemini.h"
#include "gateway/protocols/openai.h"
#include "libs/common/sse.h"
#include "services/provider-connector/upstream_codec.h"

namespace {

namespace json = boost::json;
namespace llmpb = nexusflow::llm::v1;
using nexusflow::SseEvent;
using nexusflow::SseParser;
using nexusflow::gateway::ChatRenderer;
using nexusflow::HttpError;

const char* const kProtocols[] = {"openai", "anthropic", "gemini"};

// --- the shared request content --------------------------------------------------------

constexpr std::string_view kSystem =
    "You are Atlas, the customer-support assistant of Northwind Outfitters, an online retailer "
    "of outdoor clothing and camping equipment that ships to the European Union, the United "
    "Kingdom and Switzerland. Answer in the customer's language, politely and concisely, in at "
    "most three short paragraphs. Never invent order data: when a question depends on an order, "
    "call get_order_status with the order number the customer gave, and quote dates, carriers "
    "and amounts exactly as the tool returns them. If the customer has not given an order "
    "number, ask for it; it has the form NW- followed by eight digits. Returns are accepted "
    "within 30 days of delivery for unworn items with their tags; refunds go back to the "
    "original payment method within five business days of the warehouse receiving the parcel. "
    "Do not promise compensation, discounts or delivery dates that the tool did not give. "
    "If the customer is upset, acknowledge it briefly before answering. Orders placed before "
    "14:00 on a business day leave the warehouse the same day; standard delivery takes two to "
    "four business days, express one to two, and parcels to Switzerland may wait one more day "
    "at customs.";

constexpr std::string_view kUser1 =
    "Hi, I ordered a down sleeping bag and two merino base layers last week, order NW-20481937, "
    "and the tracking page has said 'label created' for four days now. I need the sleeping bag "
    "before a trip to the Vercors that starts on Saturday morning, so I'm getting a bit worried. "
    "Can you tell me where the parcel actually is and whether it will arrive in time? If it "
    "won't, what are my options?";

constexpr std::string_view kAssistant1 =
    "I'm sorry for the worry. Let me check the current status of order NW-20481937 for you.";

constexpr std::string_view kToolResult =
    R"({"order_id":"NW-20481937","status":"in_transit","carrier":"DHL Parcel","tracking_number":"JVGL0624851937","shipped_at":"2026-11-24T16:05:00+01:00","estimated_delivery":"2026-11-28","destination_city":"Lyon","items":[{"sku":"SB-DOWN-REG","name":"Alpine Down Sleeping Bag, regular","quantity":1,"status":"shipped"},{"sku":"BL-MERINO-M","name":"Merino 200 Base Layer, M","quantity":2,"status":"shipped"}],"last_scan":{"at":"2026-11-26T21:40:00+01:00","location":"Rotterdam hub","event":"departed facility"}})";

constexpr std::string_view kAssistant2 =
    "Good news: your parcel left our Rotterdam hub on Wednesday evening with DHL Parcel "
    "(tracking JVGL0624851937) and is expected in Lyon on Friday 28 November, the day before "
    "your trip. The 'label created' status you saw came from the first scan only; the carrier's "
    "own page will show the newer events.";

constexpr std::string_view kUser2 =
    "Thanks, that's a relief. If it turns out that the sleeping bag doesn't fit me, can I return "
    "just the bag and keep the base layers? And would the refund go back to my credit card?";

json::object OrderSchema() {
  return json::object{
      {"type", "object"},
      {"properties",
       json::object{
           {"order_id", json::object{{"type", "string"},
                                     {"description", "The order number, NW- followed by eight digits."}}},
           {"include_items", json::object{{"type", "boolean"},
                                          {"description", "Also return the order's items and their state."}}},
           {"include_history", json::object{{"type", "boolean"},
                                            {"description", "Also return every carrier scan, oldest first."}}},
           {"language", json::object{{"type", "string"},
                                     {"enum", json::array{"en", "fr", "de", "it", "es", "nl"}},
                                     {"description", "Language of the carrier event texts."}}},
       }},
      {"required", json::array{"order_id"}},
  };
}
constexpr std::string_view kToolName = "get_order_status";
constexpr std::string_view kToolDescription =
    "Look up a Northwind order: its status, carrier, tracking number, estimated delivery and, "
    "on request, its items and scan history.";
const json::object kToolArgs{{"order_id", "NW-20481937"}, {"include_items", true}};

// Gemini's Schema spells types in upper case.
json::value GeminiSchema(const json::value& v) {
  if (v.is_object()) {
    json::object out;
    for (const auto& [k, x] : v.as_object()) {
      if (k == "type" && x.is_string()) {
        std::string t(x.as_string());
        for (auto& c : t) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        out[k] = t;
      } else {
        out[k] = GeminiSchema(x);
      }
    }
    return out;
  }
  if (v.is_array()) {
    json::array out;
    for (const auto& x : v.as_array()) out.push_back(GeminiSchema(x));
    return out;
  }
  return v;
}

std::string OpenAiBody() {
  json::array messages{
      json::object{{"role", "system"}, {"content", kSystem}},
      json::object{{"role", "user"}, {"content", kUser1}},
      json::object{{"role", "assistant"},
                   {"content", kAssistant1},
                   {"tool_calls", json::array{json::object{
                                      {"id", "call_Qm7LwT2xk9PaV1"},
                                      {"type", "function"},
                                      {"function", json::object{{"name", kToolName},
                                                                {"arguments", json::serialize(kToolArgs)}}}}}}},
      json::object{{"role", "tool"}, {"tool_call_id", "call_Qm7LwT2xk9PaV1"}, {"content", kToolResult}},
      json::object{{"role", "assistant"}, {"content", kAssistant2}},
      json::object{{"role", "user"}, {"content", kUser2}},
  };
  json::object body{
      {"model", "gpt-4o"},
      {"messages", std::move(messages)},
      {"tools", json::array{json::object{
                    {"type", "function"},
                    {"function", json::object{{"name", kToolName},
                                              {"description", kToolDescription},
                                              {"parameters", OrderSchema()}}}}}},
      {"tool_choice", "auto"},
      {"temperature", 0.7},
      {"top_p", 0.9},
      {"max_tokens", 1024},
      {"stop", json::array{"\n\nCustomer:"}},
      {"stream", true},
      {"stream_options", json::object{{"include_usage", true}}},
      {"user", "customer-20481937"},
  };
  return json::serialize(body);
}

std::string AnthropicBody() {
  json::array messages{
      json::object{{"role", "user"}, {"content", kUser1}},
      json::object{{"role", "assistant"},
                   {"content", json::array{json::object{{"type", "text"}, {"text", kAssistant1}},
                                           json::object{{"type", "tool_use"},
                                                        {"id", "toolu_01Qm7LwT2xk9PaV1"},
                                                        {"name", kToolName},
                                                        {"input", kToolArgs}}}}},
      json::object{{"role", "user"},
                   {"content", json::array{json::object{{"type", "tool_result"},
                                                        {"tool_use_id", "toolu_01Qm7LwT2xk9PaV1"},
                                                        {"content", kToolResult}}}}},
      json::object{{"role", "assistant"}, {"content", kAssistant2}},
      json::object{{"role", "user"}, {"content", kUser2}},
  };
  json::object body{
      {"model", "claude-sonnet-4-5"},
      {"system", kSystem},
      {"messages", std::move(messages)},
      {"tools", json::array{json::object{{"name", kToolName},
                                         {"description", kToolDescription},
                                         {"input_schema", OrderSchema()}}}},
      {"tool_choice", json::object{{"type", "auto"}}},
      {"temperature", 0.7},
      {"top_p", 0.9},
      {"max_tokens", 1024},
      {"stop_sequences", json::array{"\n\nCustomer:"}},
      {"stream", true},
      {"metadata", json::object{{"user_id", "customer-20481937"}}},
  };
  return json::serialize(body);
}

std::string GeminiBody() {
  auto text = [](std::string_view t) { return json::object{{"text", t}}; };
  json::array contents{
      json::object{{"role", "user"}, {"parts", json::array{text(kUser1)}}},
      json::object{{"role", "model"},
                   {"parts", json::array{text(kAssistant1),
                                         json::object{{"functionCall", json::object{{"name", kToolName},
                                                                                    {"args", kToolArgs}}}}}}},
      json::object{{"role", "user"},
                   {"parts", json::array{json::object{
                                 {"functionResponse",
                                  json::object{{"name", kToolName}, {"response", json::parse(kToolResult)}}}}}}},
      json::object{{"role", "model"}, {"parts", json::array{text(kAssistant2)}}},
      json::object{{"role", "user"}, {"parts", json::array{text(kUser2)}}},
  };
  json::object body{
      {"contents", std::move(contents)},
      {"systemInstruction", json::object{{"parts", json::array{text(kSystem)}}}},
      {"tools", json::array{json::object{
                    {"functionDeclarations",
                     json::array{json::object{{"name", kToolName},
                                              {"description", kToolDescription},
                                              {"parameters", GeminiSchema(OrderSchema())}}}}}}},
      {"toolConfig", json::object{{"functionCallingConfig", json::object{{"mode", "AUTO"}}}}},
      {"generationConfig", json::object{{"temperature", 0.7},
                                        {"topP", 0.9},
                                        {"maxOutputTokens", 1024},
                                        {"stopSequences", json::array{"\n\nCustomer:"}}}},
  };
  return json::serialize(body);
}

const std::string& RequestBody(std::string_view edge) {
  static const std::string openai = OpenAiBody(), anthropic = AnthropicBody(), gemini = GeminiBody();
  return edge == "openai" ? openai : edge == "anthropic" ? anthropic : gemini;
}

// --- edge parsing ----------------------------------------------------------------------

const std::map<std::string, std::string> kAnthropicHeaders = {{"anthropic-version", "2023-06-01"}};

// Parses `body` with the edge protocol's parser into `out`; false (and `error`) on refusal.
bool ParseEdge(std::string_view edge, std::string_view body, llmpb::ChatRequest* out, HttpError* error) {
  namespace gw = nexusflow::gateway;
  if (edge == "openai") {
    gw::openai::ParsedChat parsed;
    if (!gw::openai::ParseChatRequest(body, &parsed, error)) return false;
    *out = std::move(parsed.request);
  } else if (edge == "anthropic") {
    gw::anthropic::ParsedMessages parsed;
    if (!gw::anthropic::ParseMessagesRequest(body, kAnthropicHeaders, 4096, &parsed, error)) return false;
    *out = std::move(parsed.request);
  } else {
    gw::gemini::ParsedGenerate parsed;
    if (!gw::gemini::ParseGenerateContentRequest(body, "gemini-2.5-flash", true, &parsed, error)) return false;
    *out = std::move(parsed.request);
  }
  return true;
}

std::unique_ptr<ChatRenderer> NewRenderer(std::string_view edge) {
  namespace gw = nexusflow::gateway;
  if (edge == "openai") return gw::openai::NewChatRenderer("chatcmpl-nf-bench", "gpt-4o", 1764230000, true);
  if (edge == "anthropic") return gw::anthropic::NewMessagesRenderer("msg_nf_bench", "claude-sonnet-4-5");
  return gw::gemini::NewGenerateRenderer("nf-bench", "gemini-2.5-flash", /*sse=*/true);
}

// --- upstream chunks -------------------------------------------------------------------

constexpr std::string_view kDeltaText =
    "The order shipped on Tuesday from the Rotterdam warehouse and should reach your address "
    "in Lyon by Friday afternoon, tracking included. ";

std::string OpenAiChunk(json::object delta) {
  return json::serialize(json::object{
      {"id", "chatcmpl-BPx4k2RzQ8mV3nW7cY1tH6jL0sDf"},
      {"object", "chat.completion.chunk"},
      {"created", 1764230000},
      {"model", "gpt-4o-2024-08-06"},
      {"service_tier", "default"},
      {"system_fingerprint", "fp_f5bdcc3276"},
      {"choices", json::array{json::object{{"index", 0},
                                           {"delta", std::move(delta)},
                                           {"logprobs", nullptr},
                                           {"finish_reason", nullptr}}}},
      {"usage", nullptr},
  });
}

std::string GeminiChunk(std::string_view text) {
  return json::serialize(json::object{
      {"candidates", json::array{json::object{
                         {"content", json::object{{"parts", json::array{json::object{{"text", text}}}},
                                                  {"role", "model"}}},
                         {"index", 0}}}},
      {"usageMetadata", json::object{{"promptTokenCount", 812}, {"totalTokenCount", 812},
                                     {"promptTokensDetails", json::array{json::object{
                                                                 {"modality", "TEXT"}, {"tokenCount", 812}}}}}},
      {"modelVersion", "gemini-2.5-flash"},
      {"responseId", "x7InaZ2fKcWqvdIPq8SL8QQ"},
  });
}

struct Chunk {
  std::string event;               // "" when the frame has no event: line
  std::string data;                // its JSON
  std::string Frame() const {      // the bytes on the wire
    return event.empty() ? nexusflow::SseData(data) : nexusflow::SseNamed(event, data);
  }
};

// Frames that start an answer (start event, first content block), then the steady chunk.
std::vector<Chunk> Preamble(std::string_view upstream) {
  if (upstream == "openai")
    return {{"", OpenAiChunk(json::object{{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}})},
            {"", OpenAiChunk(json::object{{"content", "Yes"}})}};
  if (upstream == "anthropic")
    return {{"message_start",
             json::serialize(json::object{
                 {"type", "message_start"},
                 {"message", json::object{{"id", "msg_01XFDUDYJgAACzvnptvVoYEL"},
                                          {"type", "message"},
                                          {"role", "assistant"},
                                          {"model", "claude-sonnet-4-5-20250929"},
                                          {"content", json::array{}},
                                          {"stop_reason", nullptr},
                                          {"stop_sequence", nullptr},
                                          {"usage", json::object{{"input_tokens", 812},
                                                                 {"cache_creation_input_tokens", 0},
                                                                 {"cache_read_input_tokens", 0},
                                                                 {"output_tokens", 1}}}}}})},
            {"content_block_start",
             R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
            {"ping", R"({"type": "ping"})"},
            {"content_block_delta",
             R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Yes"}})"}};
  return {{"", GeminiChunk("Yes")}};
}

Chunk SteadyChunk(std::string_view upstream) {
  if (upstream == "openai") return {"", OpenAiChunk(json::object{{"content", kDeltaText}})};
  if (upstream == "anthropic")
    return {"content_block_delta",
            json::serialize(json::object{
                {"type", "content_block_delta"},
                {"index", 0},
                {"delta", json::object{{"type", "text_delta"}, {"text", kDeltaText}}}})};
  return {"", GeminiChunk(kDeltaText)};
}

// --- benchmarks ------------------------------------------------------------------------

void BM_Request(benchmark::State& state, std::string edge, std::string upstream) {
  const std::string& body = RequestBody(edge);
  nexusflow::ProviderConfig provider{upstream, "https://api.example.com/v1", "sk-bench-0123456789"};
  const nexusflow::connector::UpstreamCodec* codec = nexusflow::connector::CodecForKind(upstream);
  if (!codec) return state.SkipWithError("no codec");
  const nexusflow::connector::CallTarget target{&provider, "m", true, 4096};
  {  // the result, checked once
    llmpb::ChatRequest request;
    HttpError error;
    if (!ParseEdge(edge, body, &request, &error))
      return state.SkipWithError(("edge parser refused the body: " + error.message).c_str());
    if (request.messages_size() < 5 || request.tools_size() != 1)
      return state.SkipWithError("parsed request lacks turns or the tool");
    auto call = codec->BuildCall(request, target);
    boost::system::error_code ec;
    json::value v = json::parse(call.body, ec);
    if (ec || !v.is_object() || call.body.find("NW-20481937") == std::string::npos ||
        call.body.find("get_order_status") == std::string::npos)
      return state.SkipWithError("upstream body is empty, not JSON or lost the content");
    state.counters["out_bytes"] = static_cast<double>(call.body.size());
    state.counters["passthrough"] = call.passthrough ? 1 : 0;
  }
  for (auto _ : state) {
    llmpb::ChatRequest request;
    HttpError error;
    bool ok = ParseEdge(edge, body, &request, &error);
    benchmark::DoNotOptimize(ok);
    auto call = codec->BuildCall(request, target);
    benchmark::DoNotOptimize(call.body.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(body.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_Chunk(benchmark::State& state, std::string edge, std::string upstream) {
  const auto* codec = nexusflow::connector::CodecForKind(upstream);
  auto decoder = codec->NewDecoder(812);
  auto renderer = NewRenderer(edge);
  SseParser parser;
  std::vector<SseEvent> sse;
  std::vector<llmpb::ChatEvent> events;
  std::string frames;
  for (const Chunk& c : Preamble(upstream)) {
    sse.clear();
    parser.Feed(c.Frame(), sse);
    for (const auto& e : sse) {
      events.clear();
      if (!decoder->FeedEvent(e.event, e.data, events).ok()) return state.SkipWithError("preamble refused");
      for (const auto& ev : events) frames += renderer->StreamEvent(ev);
    }
  }
  if (!decoder->started() || frames.empty()) return state.SkipWithError("the stream did not start");
  const std::string wire = SteadyChunk(upstream).Frame();
  {  // the result, checked once
    sse.clear();
    parser.Feed(wire, sse);
    if (sse.size() != 1) return state.SkipWithError("SseParser did not return one event");
    events.clear();
    if (!decoder->FeedEvent(sse[0].event, sse[0].data, events).ok())
      return state.SkipWithError("decoder refused the chunk");
    std::string out;
    for (const auto& ev : events) out += renderer->StreamEvent(ev);
    if (events.size() != 1 || !events[0].has_text() || events[0].text().text() != kDeltaText ||
        out.find("Rotterdam warehouse") == std::string::npos)
      return state.SkipWithError("the rendered frame lost the delta");
    state.counters["out_bytes"] = static_cast<double>(out.size());
  }
  for (auto _ : state) {
    sse.clear();
    parser.Feed(wire, sse);
    for (const auto& e : sse) {
      events.clear();
      auto status = decoder->FeedEvent(e.event, e.data, events);
      benchmark::DoNotOptimize(status);
      for (const auto& ev : events) {
        std::string out = renderer->StreamEvent(ev);
        benchmark::DoNotOptimize(out.data());
      }
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(wire.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_Reference(benchmark::State& state, std::string text) {
  {
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec || json::serialize(v).size() < text.size() / 2) return state.SkipWithError("reference parse failed");
  }
  for (auto _ : state) {
    json::value v = json::parse(text);
    std::string out = json::serialize(v);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(text.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

}  // namespace

int main(int argc, char** argv) {
  for (const char* p : kProtocols) {
    std::fprintf(stderr, "fixture %-9s request body %zu bytes, chunk event %zu bytes (JSON %zu)\n", p,
                 RequestBody(p).size(), SteadyChunk(p).Frame().size(), SteadyChunk(p).data.size());
    benchmark::RegisterBenchmark((std::string("ref_request/") + p).c_str(), BM_Reference, RequestBody(p));
    benchmark::RegisterBenchmark((std::string("ref_chunk/") + p).c_str(), BM_Reference, SteadyChunk(p).data);
  }
  for (const char* edge : kProtocols)
    for (const char* upstream : kProtocols) {
      std::string pair = std::string(edge) + "->" + upstream;
      benchmark::RegisterBenchmark(("request/" + pair).c_str(), BM_Request, edge, upstream);
      benchmark::RegisterBenchmark(("chunk/" + pair).c_str(), BM_Chunk, edge, upstream);
    }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

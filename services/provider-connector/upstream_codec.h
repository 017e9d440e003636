#pragma once
// An upstream wire protocol, as the connector needs it: how a canonical chat request
// becomes one HTTP call to a deployment, and how the answer (a whole body, or a stream
// of server-sent events) becomes canonical events. One codec per protocol, chosen by the
// provider's `kind` in config; the connector's retry, failover, flow control and billing
// rules are the same whichever codec runs.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "libs/config/config.h"
#include "nexusflow/llm/v1/chat.pb.h"

namespace nexusflow::connector {

// How to call one deployment.
struct CallTarget {
  const ProviderConfig* provider = nullptr;
  std::string upstream_model;         // the model's name at the provider
  bool stream = false;
  int32_t default_max_output_tokens = 0;  // for protocols that require a limit
};

// What to send.
struct UpstreamCall {
  std::string url;
  std::vector<std::string> headers;  // "Name: value", credentials included
  std::string body;
  // The body is the caller's own (same protocol), and the answer is relayed as it comes.
  bool passthrough = false;
  // With `passthrough` on a stream: the answer is relayed event by event, only the events
  // this accepts (the others are still decoded, for usage). Unset: the bytes are relayed
  // as they come.
  std::function<bool(std::string_view event, std::string_view data)> relay_event;
};

// What in `request` an upstream speaking `protocol` cannot take, described for the caller
// ("tools[0] (web_search) is a server tool of the anthropic protocol"); nullopt when it can
// take all of it. Such elements (provider-native tools, provider file ids) reach only an
// upstream of their own protocol.
std::optional<std::string> UnservableElement(const llm::v1::ChatRequest& request,
                                             llm::v1::Protocol protocol);

// The caller's body, when it was written in `protocol`, with its top-level "model"
// replaced by `upstream_model` and every other byte kept (unknown fields included);
// nullopt when the request did not come in that protocol or the body cannot be edited.
std::optional<std::string> PassThroughBody(const llm::v1::ChatRequest& request,
                                           llm::v1::Protocol protocol,
                                           std::string_view upstream_model);
// `body` with the string value of its top-level "model" member replaced; nullopt when the
// body is not a JSON object with such a member.
std::optional<std::string> ReplaceTopLevelModel(std::string_view body, std::string_view model);
// `body` with its top-level member `key` set to the JSON text `value_json` (replaced in
// place, or inserted first when absent), every other byte kept; nullopt when `body` is not
// a JSON object.
std::optional<std::string> SetTopLevelMember(std::string_view body, std::string_view key,
                                             std::string_view value_json);
// The JSON text of top-level member `key`, when `body` is an object that has it.
std::optional<std::string_view> TopLevelMember(std::string_view body, std::string_view key);

// Turns one answer into canonical events, in order: start, deltas, finish, then usage
// last (from Finish). One per attempt.
class UpstreamDecoder {
 public:
  virtual ~UpstreamDecoder() = default;
  // One server-sent event of a streamed answer (`event` is "" when the frame had none).
  virtual absl::Status FeedEvent(std::string_view event, std::string_view data,
                                 std::vector<llm::v1::ChatEvent>& out) = 0;
  // A whole non-streamed answer.
  virtual absl::Status FeedResponse(std::string_view body, std::vector<llm::v1::ChatEvent>& out) = 0;
  // Closes the answer: a finish event if none came, and the usage event (estimated from
  // the prompt estimate and the output seen when the upstream reported none).
  virtual void Finish(std::vector<llm::v1::ChatEvent>& out) = 0;
  // Some of the answer has been decoded (a retry would now repeat output).
  virtual bool started() const = 0;
  virtual bool usage_estimated() const = 0;
};

class UpstreamCodec {
 public:
  virtual ~UpstreamCodec() = default;
  virtual llm::v1::Protocol protocol() const = 0;
  // The call for `request` on a deployment.
  virtual UpstreamCall BuildCall(const llm::v1::ChatRequest& request, const CallTarget& target) const = 0;
  virtual std::unique_ptr<UpstreamDecoder> NewDecoder(int64_t prompt_estimate) const = 0;
  // The message of an upstream error body, or "" when the body is not one this protocol
  // writes.
  virtual std::string ErrorMessage(std::string_view body) const = 0;
};

// The last event of every answer: the upstream's usage, or, when it reported none, the
// prompt estimate and about four characters a token of the output seen (`*estimated`
// then turns true).
void AppendFinalUsage(bool reported, llm::v1::Usage& usage, int64_t prompt_estimate,
                      int64_t output_chars, bool* estimated, std::vector<llm::v1::ChatEvent>& out);

// A data: URI's media type and base64 payload; nullopt for any other URL.
struct DataUri {
  std::string media_type;
  std::string base64;
};
std::optional<DataUri> ParseDataUri(std::string_view url);

// The codec for a provider kind ("openai", …); null for a kind without one.
const UpstreamCodec* CodecForKind(std::string_view kind);
// The kinds that have a codec, for config validation and messages.
const std::vector<std::string>& CodecKinds();

}  // namespace nexusflow::connector

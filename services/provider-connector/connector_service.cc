#include "services/provider-connector/connector_service.h"

#include <prometheus/counter.h>
#include <prometheus/histogram.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "libs/rpc/internal_auth.h"
#include "libs/common/sse.h"
#include "libs/loop/event_loops.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/stream_writer.h"
#include "services/provider-connector/deployment_health.h"
#include "services/provider-connector/embed.h"
#include "services/provider-connector/openai_upstream.h"

namespace nexusflow::connector {
namespace {

using llm::v1::ChatEvent;

struct Families {
  prometheus::Family<prometheus::Counter>& upstream;
  prometheus::Family<prometheus::Histogram>& ttfb;
  prometheus::Family<prometheus::Counter>& failovers;
  prometheus::Family<prometheus::Counter>& estimated;
  LatencyHistogramFamily& duration;
};

Families& Metrics() {
  static Families f{
      prometheus::BuildCounter()
          .Name("nexusflow_connector_upstream_requests_total")
          .Help("Upstream HTTP attempts by provider, deployment and outcome (HTTP status, "
                "timeout or transport_error)")
          .Register(MetricsRegistry()),
      prometheus::BuildHistogram()
          .Name("nexusflow_connector_upstream_first_byte_seconds")
          .Help("Time from sending to the first response byte, by provider and deployment")
          .Register(MetricsRegistry()),
      prometheus::BuildCounter()
          .Name("nexusflow_connector_failovers_total")
          .Help("Attempts that moved on to the next deployment, by provider that failed")
          .Register(MetricsRegistry()),
      prometheus::BuildCounter()
          .Name("nexusflow_connector_usage_estimated_total")
          .Help("Answers whose upstream reported no usage, billed on an estimate")
          .Register(MetricsRegistry()),
      NewLatencyHistogram("nexusflow_connector_upstream_duration_seconds",
                          "Time from sending an upstream attempt to its end (last byte or "
                          "error), by provider and deployment")};
  return f;
}

constexpr size_t kMaxErrorBody = 64 << 10;
constexpr size_t kMaxResponseBody = 64 << 20;
// One server-sent event (a line or a multi-line data field) may not grow past this
// while it waits for its end: a stream without line ends cannot exhaust memory.
constexpr size_t kMaxSseEvent = 4 << 20;

// Drives one Chat RPC through its candidates. Lives until the last callback.
class ChatAttempt : public std::enable_shared_from_this<ChatAttempt> {
 public:
  ChatAttempt(const Config::ProviderConnector& config, HttpClient& http, DeploymentHealth& health,
              pb::ChatCall call, std::shared_ptr<StreamSink<pb::ChatChunk>> writer)
      : config_(config),
        http_(http),
        health_(health),
        call_(std::move(call)),
        writer_(std::move(writer)),
        prompt_estimate_(EstimatePromptTokens(call_.request())) {}

  void Begin() {
    auto self = shared_from_this();
    writer_->SetOnCancel([self] {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->cancelled_ = true;
      if (self->transfer_id_) self->http_.Cancel(self->transfer_id_);
    });
    // The consumer caught up: let the paused transfer go on.
    writer_->SetOnDrain([self] {
      std::lock_guard<std::mutex> lock(self->mu_);
      if (self->paused_ && self->transfer_id_) self->http_.Resume(self->transfer_id_);
      self->paused_ = false;
    });
    order_ = health_.Order(call_.candidates());
    started_at_ = health_.now();
    Next();
  }

 private:
  void Next() {
    std::lock_guard<std::mutex> lock(mu_);
    while (position_ < order_.indexes.size()) {
      const auto& dep = call_.candidates(order_.indexes[position_]);
      auto prov = config_.providers.find(dep.provider());
      if (prov == config_.providers.end()) {
        errors_.push_back(absl::StrCat(dep.provider(), ": not configured"));
        ++position_;
        continue;
      }
      const UpstreamCodec* codec = CodecForKind(prov->second.kind);
      if (!codec) {
        errors_.push_back(absl::StrCat(dep.provider(), ": no codec for kind '", prov->second.kind, "'"));
        ++position_;
        continue;
      }
      if (auto why = UnservableElement(call_.request(), codec->protocol())) {
        unservable_ = std::move(*why);
        errors_.push_back(absl::StrCat(dep.provider(), ": ", unservable_));
        ++position_;
        continue;
      }
      // The request's retry budget: attempts, and a deadline for starting another.
      if (attempts_ >= config_.max_attempts) {
        errors_.push_back(absl::StrCat("no attempt left after ", attempts_));
        break;
      }
      if (attempts_ > 0 &&
          health_.now() - started_at_ >= std::chrono::milliseconds(config_.retry_deadline_ms)) {
        errors_.push_back(absl::StrCat("retry deadline of ", config_.retry_deadline_ms, " ms passed"));
        break;
      }
      ticket_ = health_.Admit(dep, order_.panic);
      if (!ticket_) {
        errors_.push_back(absl::StrCat(dep.provider(), ": ejected"));
        ++position_;
        continue;
      }
      ++attempts_;
      provider_ = dep.provider();
      deployment_ = dep.id();
      codec_ = codec;
      decoder_ = codec->NewDecoder(prompt_estimate_);
      sse_ = SseParser();
      stream_ = call_.request().stream();
      CallTarget target{&prov->second, dep.upstream_model(), stream_, call_.default_max_output_tokens()};
      UpstreamCall wire = codec->BuildCall(call_.request(), target);
      auto http_call = std::make_shared<HttpCall>();
      http_call->url = std::move(wire.url);
      http_call->headers = std::move(wire.headers);
      http_call->headers.push_back(absl::StrCat("X-Request-Id: ", call_.request().request_id()));
      http_call->body = std::move(wire.body);
      passthrough_ = wire.passthrough;
      relay_event_ = std::move(wire.relay_event);
      http_call->connect_timeout_ms = config_.connect_timeout_ms;
      http_call->timeout_ms = config_.request_timeout_ms;
      http_call->first_byte_timeout_ms = config_.first_byte_timeout_ms;
      auto self = shared_from_this();
      http_call->on_body = [self](long status, std::string_view bytes) {
        if (status < 300 && self->stream_) {
          // A consumer that is behind pauses the upstream instead of growing a buffer.
          std::lock_guard<std::mutex> lock(self->mu_);
          if (self->writer_->full()) {
            self->paused_ = true;
            return BodyAction::kPause;
          }
        }
        return self->OnBody(status, bytes) ? BodyAction::kContinue : BodyAction::kAbort;
      };
      // The call outlives its on_done (the client holds it while calling).
      http_call->on_done = [self, wire_call = http_call.get()](long status, const std::string& err,
                                                                 bool timed_out) {
        self->OnDone(status, err, timed_out, *wire_call);
      };
      sent_at_ = std::chrono::steady_clock::now();
      first_byte_ = false;
      body_.clear();
      transfer_id_ = http_.Start(std::move(http_call));
      return;
    }
    // Every candidate failed before answering.
    ChatEvent e;
    auto* err = e.mutable_error();
    if (attempts_ == 0 && !unservable_.empty() && AllUnservable()) {
      // No deployment speaks what the request needs: the caller's to change.
      err->set_http_status(400);
      err->set_code("invalid_request");
      err->set_message(absl::StrCat("This request cannot be served by this model: ", unservable_, "."));
      Send(std::move(e));
      writer_->Finish(grpc::Status::OK);
      return;
    }
    auto wait = health_.RetryAfterLeft(call_.candidates());
    if (attempts_ == 0 && wait > std::chrono::seconds(0)) {
      // Every deployment asked us to wait (retry-after): not tried before then.
      err->set_http_status(429);
      err->set_code("upstream_rate_limited");
      err->set_message("Every upstream deployment of this model asked to wait before it is tried again.");
      err->set_retry_after_seconds(static_cast<int32_t>(
          std::chrono::ceil<std::chrono::seconds>(wait).count()));
    } else {
      // 529 only when the upstream itself said it is overloaded (Anthropic's status).
      err->set_http_status(last_timed_out_ ? 504
                                           : (last_status_ == 429 || last_status_ == 529 ? last_status_ : 502));
      err->set_code(last_timed_out_ ? "upstream_timeout" : "upstream_unavailable");
      err->set_message(absl::StrCat("All upstream deployments failed: ",
                                    errors_.empty() ? "no deployment" : absl::StrJoin(errors_, "; ")));
      if (last_status_ == 429 && wait > std::chrono::seconds(0))
        err->set_retry_after_seconds(static_cast<int32_t>(
            std::chrono::ceil<std::chrono::seconds>(wait).count()));
    }
    err->set_retryable(true);
    Send(std::move(e));
    writer_->Finish(grpc::Status::OK);
  }

  bool OnBody(long status, std::string_view bytes) {
    if (!first_byte_) {
      first_byte_ = true;
      first_byte_after_ = std::chrono::steady_clock::now() - sent_at_;
      HistogramFor(Metrics().ttfb, {{"provider", provider_}, {"deployment", deployment_}})
          .Observe(std::chrono::duration<double>(first_byte_after_).count());
    }
    if (status >= 300) {
      if (body_.size() < kMaxErrorBody) body_.append(bytes.substr(0, kMaxErrorBody - body_.size()));
      return true;
    }
    if (!stream_) {
      if (body_.size() + bytes.size() > kMaxResponseBody) return false;
      body_.append(bytes);
      return true;
    }
    std::vector<SseEvent> frames;
    sse_.Feed(bytes, frames);
    if (sse_.Pending() > kMaxSseEvent) {
      protocol_error_ = absl::StrCat("upstream sent a stream event over ", kMaxSseEvent >> 20, " MiB");
      return false;
    }
    std::vector<ChatEvent> events;
    if (passthrough_ && !relay_event_) {
      // The caller speaks this protocol: the bytes go to it as they are, the decoded
      // events after them only count usage.
      ChatEvent raw;
      raw.set_raw(std::string(bytes));
      events.push_back(std::move(raw));
      relayed_ = true;
    }
    for (const auto& f : frames) {
      if (passthrough_ && relay_event_ && relay_event_(f.event, f.data)) {
        ChatEvent raw;
        raw.set_raw(SerializeSseEvent(f));
        events.push_back(std::move(raw));
        relayed_ = true;
      }
      if (auto s = decoder_->FeedEvent(f.event, f.data, events); !s.ok()) {
        protocol_error_ = std::string(s.message());
        return false;
      }
    }
    for (auto& e : events) MarkStart(e);
    Send(events);
    // Once the answer has started, no other deployment can take over: the prompt, which a
    // retry would send again, is not kept for the rest of the stream.
    if (!prompt_released_ && ((decoder_ && decoder_->started()) || relayed_)) {
      // Swapped out, not cleared: a cleared repeated field keeps its elements for reuse.
      auto* r = call_.mutable_request();
      google::protobuf::RepeatedPtrField<llm::v1::Message>().Swap(r->mutable_messages());
      google::protobuf::RepeatedPtrField<llm::v1::Tool>().Swap(r->mutable_tools());
      r->clear_raw();
      prompt_released_ = true;
    }
    return !writer_->cancelled();
  }

  void OnDone(long status, const std::string& transport_error, bool timed_out, const HttpCall& wire) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      transfer_id_ = 0;
      if (cancelled_) {
        health_.Abandon(deployment_, ticket_);
        writer_->Finish(grpc::Status::CANCELLED);
        return;
      }
    }
    std::string outcome = transport_error.empty() ? std::to_string(status)
                          : timed_out              ? "timeout"
                                                   : "transport_error";
    CounterFor(Metrics().upstream,
               {{"provider", provider_}, {"deployment", deployment_}, {"outcome", outcome}})
        .Increment();
    HistogramFor(Metrics().duration, {{"provider", provider_}, {"deployment", deployment_}})
        .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - sent_at_).count());
    RecordHealth(status, transport_error, timed_out, wire);
    // Once bytes were relayed as they are, another deployment cannot take over.
    bool started = (decoder_ && decoder_->started()) || relayed_;
    if (!transport_error.empty() && protocol_error_.empty()) {
      if (!started) return Retry(absl::StrCat(provider_, ": ", transport_error), 0, timed_out);
      return FailMidStream(timed_out ? 504 : 502, timed_out ? "upstream_timeout" : "upstream_error",
                           absl::StrCat("upstream connection failed: ", transport_error));
    }
    if (status == 429 || status >= 500) {
      if (!started)
        return Retry(absl::StrCat(provider_, ": HTTP ", status, " ", Snippet()), status, false);
    }
    if (status >= 300) {
      // The upstream rejected the request itself: tell the caller, do not retry.
      ChatEvent e;
      auto* err = e.mutable_error();
      bool caller_fault = status == 400 || status == 404 || status == 413 || status == 422;
      err->set_http_status(caller_fault ? (status == 404 ? 400 : static_cast<int>(status)) : 502);
      err->set_code(caller_fault ? "invalid_request" : "upstream_error");
      err->set_message(absl::StrCat("Upstream ", provider_, " answered HTTP ", status, ": ",
                                    UpstreamMessage()));
      Send(std::move(e));
      writer_->Finish(grpc::Status::OK);
      return;
    }
    if (!protocol_error_.empty())
      return FailMidStream(502, "upstream_protocol_error", protocol_error_);
    std::vector<ChatEvent> events;
    if (!stream_ && passthrough_) {
      ChatEvent raw;
      raw.set_raw(body_);
      events.push_back(std::move(raw));
    }
    if (!stream_) {
      if (auto s = decoder_->FeedResponse(body_, events); !s.ok())
        return FailMidStream(502, "upstream_protocol_error", std::string(s.message()));
    }
    bool had_error = false;
    for (const auto& e : events) had_error |= e.has_error();
    if (!had_error) decoder_->Finish(events);
    if (decoder_->usage_estimated())
      Metrics().estimated.Add({{"provider", provider_}}).Increment();
    for (auto& e : events) MarkStart(e);
    Send(events);
    writer_->Finish(grpc::Status::OK);
  }

  void Retry(std::string error, long status, bool timed_out) {
    Metrics().failovers.Add({{"provider", provider_}}).Increment();
    errors_.push_back(std::move(error));
    last_status_ = status;
    last_timed_out_ = timed_out;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++position_;
    }
    Next();
  }

  // What this attempt says of its deployment's health.
  void RecordHealth(long status, const std::string& transport_error, bool timed_out, const HttpCall& wire) {
    CircuitBreaker::Outcome o;
    if (first_byte_) o.first_byte = first_byte_after_;
    if (!protocol_error_.empty()) {
      o.failure = true;
      o.error = "protocol error";
    } else if (transport_error == "cancelled") {
      // Aborted on our side (the consumer went away): no verdict on the deployment.
      return health_.Abandon(deployment_, ticket_);
    } else if (!transport_error.empty()) {
      o.failure = true;
      o.error = timed_out ? "timeout" : absl::StrCat("transport error: ", transport_error);
    } else if (status == 429 || status >= 500 || status == 401 || status == 403) {
      // 401 and 403: the upstream refuses our credential, a fault of the deployment.
      o.failure = true;
      o.error = absl::StrCat("HTTP ", status);
    }
    o.retry_after = ParseRetryAfter(wire.retry_after, wire.retry_after_ms,
                                    std::chrono::duration_cast<std::chrono::seconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
    health_.Record(deployment_, ticket_, o);
  }

  // Whether no candidate could take this request as it is (a 400, not an outage).
  bool AllUnservable() const {
    for (const auto& dep : call_.candidates()) {
      auto prov = config_.providers.find(dep.provider());
      if (prov == config_.providers.end()) return false;
      const UpstreamCodec* codec = CodecForKind(prov->second.kind);
      if (!codec || !UnservableElement(call_.request(), codec->protocol())) return false;
    }
    return true;
  }

  // The answer had started: report the error in-stream, and bill what was produced.
  void FailMidStream(int http_status, const std::string& code, const std::string& message) {
    std::vector<ChatEvent> events;
    ChatEvent e;
    e.mutable_error()->set_http_status(http_status);
    e.mutable_error()->set_code(code);
    e.mutable_error()->set_message(message);
    events.push_back(std::move(e));
    decoder_->Finish(events);
    events.erase(std::remove_if(events.begin(), events.end(),
                                [](const ChatEvent& ev) { return ev.has_finish(); }),
                 events.end());
    Send(events);
    writer_->Finish(grpc::Status::OK);
  }

  // The start event names the deployment that answers.
  void MarkStart(ChatEvent& e) const {
    if (!e.has_start()) return;
    e.mutable_start()->set_deployment_id(deployment_);
    e.mutable_start()->set_provider(provider_);
  }

  std::string Snippet() const { return body_.substr(0, 200); }

  std::string UpstreamMessage() const {
    std::string message = codec_ ? codec_->ErrorMessage(body_) : "";
    return message.empty() ? Snippet() : message;
  }

  const Config::ProviderConnector& config_;
  HttpClient& http_;
  DeploymentHealth& health_;
  pb::ChatCall call_;
  std::shared_ptr<StreamSink<pb::ChatChunk>> writer_;

  // Sends events as one chunk.
  bool Send(std::vector<ChatEvent>& events) {
    if (events.empty()) return !writer_->cancelled();
    pb::ChatChunk chunk;
    for (auto& e : events) *chunk.add_events() = std::move(e);
    events.clear();
    return writer_->Push(std::move(chunk));
  }
  bool Send(ChatEvent event) {
    std::vector<ChatEvent> one;
    one.push_back(std::move(event));
    return Send(one);
  }
  int64_t prompt_estimate_;
  const UpstreamCodec* codec_ = nullptr;      // of the deployment being tried
  std::unique_ptr<UpstreamDecoder> decoder_;  // one per attempt
  SseParser sse_;
  std::mutex mu_;
  bool cancelled_ = false;
  bool paused_ = false;  // the transfer waits for the consumer's drain
  bool passthrough_ = false;  // the answer is relayed as the upstream wrote it
  std::string unservable_;     // what the last skipped deployment could not take
  CandidateOrder order_;       // the candidates in the order to try
  size_t position_ = 0;        // in order_
  int attempts_ = 0;           // upstream calls started
  CircuitBreaker::Clock::time_point started_at_;
  CircuitBreaker::Ticket ticket_;  // the current attempt's pass through its circuit
  std::function<bool(std::string_view, std::string_view)> relay_event_;  // event by event
  bool relayed_ = false;      // some of it was
  bool prompt_released_ = false;  // the request's prompt was dropped once the answer started
  uint64_t transfer_id_ = 0;
  bool stream_ = false;
  bool first_byte_ = false;
  std::chrono::steady_clock::time_point sent_at_;
  std::chrono::steady_clock::duration first_byte_after_{};
  std::string provider_;
  std::string deployment_;
  std::string body_;
  std::string protocol_error_;
  std::vector<std::string> errors_;
  long last_status_ = 0;
  bool last_timed_out_ = false;
};

// Drives one Embed call through its candidates: connect errors, timeouts, 429 and 5xx move
// to the next deployment; any other answer is final. Lives until its last callback.
class EmbedAttempt : public std::enable_shared_from_this<EmbedAttempt> {
 public:
  using Done = std::function<void(const grpc::Status&, llm::v1::EmbedResponse)>;
  EmbedAttempt(const Config::ProviderConnector& config, HttpClient& http, DeploymentHealth& health,
               const pb::EmbedCall& call, Done done)
      : config_(config), http_(http), health_(health), call_(call), done_(std::move(done)) {
    order_ = health_.Order(call_.candidates());
    started_at_ = health_.now();
  }

  void Next() {
    while (position_ < order_.indexes.size()) {
      const auto& dep = call_.candidates(order_.indexes[position_++]);
      auto prov = config_.providers.find(dep.provider());
      if (prov == config_.providers.end()) {
        errors_.push_back(absl::StrCat(dep.provider(), ": not configured"));
        continue;
      }
      if (prov->second.kind != "openai") {
        errors_.push_back(absl::StrCat(dep.provider(), ": a ", prov->second.kind, " provider has no embeddings endpoint"));
        continue;
      }
      if (attempted_ >= config_.max_attempts ||
          (attempted_ > 0 &&
           health_.now() - started_at_ >= std::chrono::milliseconds(config_.retry_deadline_ms))) {
        errors_.push_back("no attempt left");
        break;
      }
      ticket_ = health_.Admit(dep, order_.panic);
      if (!ticket_) {
        errors_.push_back(absl::StrCat(dep.provider(), ": ejected"));
        continue;
      }
      provider_ = dep.provider();
      deployment_ = dep.id();
      auto http_call = std::make_shared<HttpCall>();
      http_call->url = prov->second.base_url + "/embeddings";
      http_call->headers.push_back("Content-Type: application/json");
      if (!prov->second.api_key.empty()) http_call->headers.push_back("Authorization: Bearer " + prov->second.api_key);
      http_call->headers.push_back(absl::StrCat("X-Request-Id: ", call_.request().request_id()));
      http_call->body = BuildOpenAiEmbedBody(call_.request(), dep.upstream_model());
      http_call->connect_timeout_ms = config_.connect_timeout_ms;
      http_call->timeout_ms = config_.request_timeout_ms;
      http_call->first_byte_timeout_ms = config_.first_byte_timeout_ms;
      auto self = shared_from_this();
      http_call->on_body = [self](long, std::string_view bytes) {
        if (self->body_.size() + bytes.size() > kMaxResponseBody) return BodyAction::kAbort;
        self->body_.append(bytes);
        return BodyAction::kContinue;
      };
      http_call->on_done = [self, wire_call = http_call.get()](long status, const std::string& err,
                                                                 bool timed_out) {
        self->OnDone(status, err, timed_out, *wire_call);
      };
      sent_at_ = std::chrono::steady_clock::now();
      body_.clear();
      http_.Start(std::move(http_call));
      return;
    }
    grpc::StatusCode code = timed_out_ ? grpc::DEADLINE_EXCEEDED : grpc::UNAVAILABLE;
    if (last_status_ == 429 ||
        (attempted_ == 0 && health_.RetryAfterLeft(call_.candidates()) > std::chrono::seconds(0)))
      code = grpc::RESOURCE_EXHAUSTED;
    if (!errors_.empty() && last_status_ == 0 && !timed_out_ && attempted_ == 0) code = grpc::FAILED_PRECONDITION;
    Finish(grpc::Status(code, absl::StrCat("All upstream deployments failed: ",
                                           errors_.empty() ? "no deployment" : absl::StrJoin(errors_, "; "))));
  }

 private:
  void OnDone(long status, const std::string& transport_error, bool timed_out, const HttpCall& wire) {
    ++attempted_;
    std::string outcome = transport_error.empty() ? std::to_string(status) : timed_out ? "timeout" : "transport_error";
    CounterFor(Metrics().upstream, {{"provider", provider_}, {"deployment", deployment_}, {"outcome", outcome}})
        .Increment();
    if (transport_error == "cancelled") {
      health_.Abandon(deployment_, ticket_);
    } else {
      CircuitBreaker::Outcome o;
      o.failure = !transport_error.empty() || status == 429 || status >= 500 || status == 401 || status == 403;
      o.error = !transport_error.empty() ? (timed_out ? "timeout" : absl::StrCat("transport error: ", transport_error))
                                         : absl::StrCat("HTTP ", status);
      if (transport_error.empty()) o.first_byte = std::chrono::steady_clock::now() - sent_at_;
      o.retry_after = ParseRetryAfter(wire.retry_after, wire.retry_after_ms,
                                      std::chrono::duration_cast<std::chrono::seconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
      health_.Record(deployment_, ticket_, o);
    }
    if (!transport_error.empty() || status == 429 || status >= 500) {
      timed_out_ = timed_out;
      last_status_ = transport_error.empty() ? status : 0;
      errors_.push_back(transport_error.empty() ? absl::StrCat(provider_, ": HTTP ", status)
                                                : absl::StrCat(provider_, ": ", transport_error));
      Metrics().failovers.Add({{"provider", provider_}}).Increment();
      return Next();
    }
    if (status >= 300) {
      std::string message = OpenAiCodec().ErrorMessage(body_);
      if (message.empty()) message = body_.substr(0, 512);
      bool caller_fault = status == 400 || status == 404 || status == 413 || status == 422;
      return Finish(grpc::Status(caller_fault ? grpc::INVALID_ARGUMENT : grpc::UNAVAILABLE,
                                 absl::StrCat("Upstream ", provider_, " answered HTTP ", status, ": ", message)));
    }
    auto parsed = ParseOpenAiEmbedResponse(body_, call_.request().inputs_size());
    if (!parsed.ok())
      return Finish(grpc::Status(grpc::INTERNAL, absl::StrCat("Upstream ", provider_, ": ", parsed.status().message())));
    parsed->set_deployment_id(deployment_);
    done_(grpc::Status::OK, std::move(*parsed));
  }

  void Finish(const grpc::Status& s) { done_(s, llm::v1::EmbedResponse()); }

  const Config::ProviderConnector& config_;
  HttpClient& http_;
  DeploymentHealth& health_;
  pb::EmbedCall call_;
  Done done_;
  CandidateOrder order_;
  size_t position_ = 0;
  CircuitBreaker::Clock::time_point started_at_;
  std::chrono::steady_clock::time_point sent_at_;
  CircuitBreaker::Ticket ticket_;
  int attempted_ = 0;
  std::string provider_;
  std::string deployment_;
  std::string body_;
  std::vector<std::string> errors_;
  long last_status_ = 0;
  bool timed_out_ = false;
};

}  // namespace

void ProviderConnectorService::StartEmbed(
    const pb::EmbedCall& call, std::function<void(const grpc::Status&, llm::v1::EmbedResponse)> done) {
  if (call.candidates_size() == 0 || call.request().inputs_size() == 0) {
    done(grpc::Status(grpc::INVALID_ARGUMENT, "no candidate deployments or no input"), llm::v1::EmbedResponse());
    return;
  }
  std::make_shared<EmbedAttempt>(config_, http_, health_, call, std::move(done))->Next();
}

grpc::ServerUnaryReactor* ProviderConnectorService::Embed(grpc::CallbackServerContext* ctx,
                                                          const pb::EmbedCall* call,
                                                          llm::v1::EmbedResponse* response) {
  NF_REQUIRE_INTERNAL(ctx);
  auto* reactor = ctx->DefaultReactor();
  StartEmbed(*call, [reactor, response](const grpc::Status& s, llm::v1::EmbedResponse r) {
    if (s.ok()) *response = std::move(r);
    reactor->Finish(s);
  });
  return reactor;
}

int64_t EstimatePromptTokens(const llm::v1::ChatRequest& request) {
  int64_t chars = 0;
  for (const auto& m : request.messages()) {
    chars += 16;  // role and framing
    for (const auto& p : m.parts()) {
      if (p.has_text()) chars += p.text().size();
      if (p.has_image()) chars += 340;  // ~85 tokens for a low-detail image
      if (p.has_tool_call()) chars += p.tool_call().arguments_json().size() + p.tool_call().name().size();
      if (p.has_tool_result()) chars += p.tool_result().content().size();
    }
  }
  for (const auto& t : request.tools()) chars += t.parameters_json().size() + t.description().size();
  return (chars + 3) / 4;
}

ProviderConnectorService::ProviderConnectorService(const Config::ProviderConnector& config,
                                                   EventLoops& loops)
    : config_(config), health_(config.circuit_breaker), http_(loops, config.max_connections_per_host) {
  Metrics();
}

ProviderConnectorService::ProviderConnectorService(const Config::ProviderConnector& config)
    : config_(config),
      own_loops_(std::make_unique<EventLoops>(1)),
      health_(config.circuit_breaker),
      http_(*own_loops_, config.max_connections_per_host) {
  Metrics();
}

ProviderConnectorService::~ProviderConnectorService() = default;

void ProviderConnectorService::StartChat(pb::ChatCall call,
                                         std::shared_ptr<StreamSink<pb::ChatChunk>> sink) {
  if (call.candidates_size() == 0) {
    sink->Finish(grpc::Status(grpc::INVALID_ARGUMENT, "no candidate deployments"));
    return;
  }
  auto attempt = std::make_shared<ChatAttempt>(config_, http_, health_, std::move(call), std::move(sink));
  attempt->Begin();
}

grpc::ServerUnaryReactor* ProviderConnectorService::ListDeploymentHealth(
    grpc::CallbackServerContext* ctx, const pb::ListDeploymentHealthRequest*,
    pb::ListDeploymentHealthResponse* response) {
  NF_REQUIRE_INTERNAL(ctx);
  *response = health_.List();
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<pb::ChatChunk>* ProviderConnectorService::Chat(
    grpc::CallbackServerContext* ctx, const pb::ChatCall* call) {
  NF_REQUIRE_INTERNAL_STREAM(ctx, pb::ChatChunk);
  auto writer = QueuedWriter<pb::ChatChunk>::Create();
  StartChat(*call, writer);
  return writer.get();
}

}  // namespace nexusflow::connector

// The chat request across the services: authenticate, resolve, admit (rate limit and
// billing hold in parallel), stream from the connector, render, settle exactly once.
#include <prometheus/counter.h>
#include <prometheus/gauge.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "gateway/gateway.h"
#include "gateway/protocols/openai.h"
#include "libs/common/ids.h"
#include "libs/metrics/metrics.h"
#include "services/billing-ledger/pricing.h"
#include "services/provider-connector/connector_service.h"

namespace nexusflow::gateway {
namespace {

struct Families {
  prometheus::Family<prometheus::Counter>& tokens;
  prometheus::Family<prometheus::Gauge>& streams;
  prometheus::Family<prometheus::Counter>& settle_retries;
};

Families& Metrics() {
  static Families f{
      prometheus::BuildCounter()
          .Name("nexusflow_gateway_tokens_total")
          .Help("Tokens served, by model and kind (input, cache_read, cache_write, output)")
          .Register(MetricsRegistry()),
      prometheus::BuildGauge()
          .Name("nexusflow_gateway_active_streams")
          .Help("Streamed responses in progress")
          .Register(MetricsRegistry()),
      prometheus::BuildCounter()
          .Name("nexusflow_gateway_settlement_retries_total")
          .Help("Settlements not acknowledged at once and handed to the retrier")
          .Register(MetricsRegistry())};
  return f;
}

std::string GoDuration(const google::protobuf::Duration& d) {
  int64_t ms = d.seconds() * 1000 + d.nanos() / 1'000'000;
  if (ms < 1000) return absl::StrCat(ms, "ms");
  int64_t s = (ms + 999) / 1000;
  if (s < 60) return absl::StrCat(s, "s");
  return absl::StrCat(s / 60, "m", s % 60, "s");
}

HeaderList RateLimitHeaders(const ratelimit::v1::AcquireResponse& a) {
  HeaderList h;
  if (a.requests().limit() > 0) {
    h.emplace_back("x-ratelimit-limit-requests", std::to_string(a.requests().limit()));
    h.emplace_back("x-ratelimit-remaining-requests", std::to_string(a.requests().remaining()));
    h.emplace_back("x-ratelimit-reset-requests", GoDuration(a.requests().reset_after()));
  }
  if (a.tokens().limit() > 0) {
    h.emplace_back("x-ratelimit-limit-tokens", std::to_string(a.tokens().limit()));
    h.emplace_back("x-ratelimit-remaining-tokens", std::to_string(a.tokens().remaining()));
    h.emplace_back("x-ratelimit-reset-tokens", GoDuration(a.tokens().reset_after()));
  }
  return h;
}

// Events out of the connector's stream of chunks, one at a time.
class EventReader {
 public:
  explicit EventReader(ChatChunks* reader) : reader_(reader) {}
  bool Next(llm::v1::ChatEvent* event) {
    while (index_ >= chunk_.events_size()) {
      if (!reader_->Next(&chunk_)) return false;
      index_ = 0;
    }
    *event = std::move(*chunk_.mutable_events(index_++));
    return true;
  }
  // The last event returned ended its chunk (a good moment to flush).
  bool at_chunk_end() const { return index_ >= chunk_.events_size(); }

 private:
  ChatChunks* reader_;
  connector::v1::ChatChunk chunk_;
  int index_ = 0;
};

}  // namespace

struct Gateway::ChatJob {
  llm::v1::ChatRequest request;
  std::unique_ptr<ChatRenderer> renderer;
  auth::v1::Identity identity;
  routing::v1::Model model;
  std::string hold_id;
  std::string lease_id;
  HeaderList headers;
};

void Gateway::HandleOpenAiChat(const HttpRequest& req, ResponseWriter& w, RequestLog& log) {
  auto identity = Authenticate(req, w, ApiProtocol::kOpenAI, log);
  if (!identity) return;
  openai::ParsedChat parsed;
  HttpError error;
  if (!openai::ParseChatRequest(req.body, &parsed, &error)) return SendError(w, ApiProtocol::kOpenAI, error, log);
  ChatJob job;
  job.identity = std::move(*identity);
  job.request = std::move(parsed.request);
  job.request.set_request_id(log.request_id);
  job.renderer = openai::NewChatRenderer(absl::StrCat("chatcmpl-", log.request_id.substr(4)),
                                         job.request.model(), UnixNow(), parsed.include_usage);
  RunChat(job, w, log);
}

void Gateway::RunChat(ChatJob& job, ResponseWriter& w, RequestLog& log) {
  const ApiProtocol protocol = job.renderer->protocol();
  log.model = job.request.model();
  // Routing, from the local catalog.
  auto model = catalog_.Resolve(job.request.model(), job.request.protocol(), "chat");
  if (!model.ok()) {
    HttpError e = HttpErrorFrom(model.status());
    if (model.status().code() == absl::StatusCode::kNotFound) e = {404, std::string(model.status().message()), "model", "model_not_found"};
    if (model.status().code() == absl::StatusCode::kFailedPrecondition) e = {400, std::string(model.status().message()), "model", "model_not_supported"};
    return SendError(w, protocol, e, log);
  }
  job.model = std::move(*model);
  const auto& allowed = job.identity.allowed_models();
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), job.model.id()) == allowed.end())
    return SendError(w, protocol, {403, absl::StrCat("This API key is not allowed to use the model `", job.model.id(), "`."), "model", "model_not_allowed"}, log);

  // Admission: a rate-limit lease and a billing hold, asked in parallel.
  int64_t prompt_estimate = connector::EstimatePromptTokens(job.request);
  int64_t max_output = job.request.sampling().has_max_output_tokens()
                           ? job.request.sampling().max_output_tokens()
                           : (job.model.max_output_tokens() > 0 ? job.model.max_output_tokens()
                                                                : config_.gateway.default_max_output_tokens);
  ratelimit::v1::AcquireRequest areq;
  areq.set_request_id(log.request_id);
  areq.set_key_id(job.identity.key_id());
  areq.set_plan(job.identity.plan());
  areq.set_model(job.model.id());
  areq.set_estimated_tokens(prompt_estimate + (job.request.sampling().has_max_output_tokens() ? max_output : 0));
  billing::v1::ReserveRequest breq;
  breq.set_request_id(log.request_id);
  breq.set_account_id(job.identity.account_id());
  breq.set_amount_nano_usd(billing::MaxCostNanoUsd(prompt_estimate, max_output, job.model.price()));
  ratelimit::v1::AcquireResponse aresp;
  billing::v1::ReserveResponse bresp;
  grpc::Status astatus, bstatus;
  path_.Admit(areq, &aresp, &astatus, breq, &bresp, &bstatus);
  bool admitted = astatus.ok() && aresp.decision() == ratelimit::v1::DECISION_ALLOWED;
  if (admitted) job.lease_id = aresp.lease_id();
  if (bstatus.ok()) job.hold_id = bresp.hold_id();
  job.headers = RateLimitHeaders(aresp);
  auto undo = [&] {
    path_.ReleaseLease(job.lease_id, 0);
    path_.ReleaseHold(job.hold_id);
  };
  if (!astatus.ok()) {
    undo();
    return SendError(w, protocol, {503, absl::StrCat("The rate limiter is unavailable: ", astatus.error_message()), "", ""}, log);
  }
  if (!admitted) {
    undo();
    int64_t retry = aresp.retry_after().seconds() + (aresp.retry_after().nanos() > 0 ? 1 : 0);
    HeaderList headers = job.headers;
    headers.emplace_back("retry-after", std::to_string(std::max<int64_t>(1, retry)));
    const char* what = aresp.denied_by() == ratelimit::v1::LIMIT_KIND_REQUESTS ? "requests per minute"
                       : aresp.denied_by() == ratelimit::v1::LIMIT_KIND_TOKENS ? "tokens per minute"
                                                                                : "concurrent requests";
    return SendError(w, protocol,
                     {429, absl::StrCat("Rate limit reached for ", what, " on plan '", job.identity.plan(), "'. Retry after ", std::max<int64_t>(1, retry), "s."), "", "rate_limit_exceeded"},
                     log, headers);
  }
  if (!bstatus.ok()) {
    undo();
    if (bstatus.error_code() == grpc::FAILED_PRECONDITION)
      return SendError(w, protocol, {402, bstatus.error_message(), "", "insufficient_balance"}, log, job.headers);
    if (bstatus.error_code() == grpc::NOT_FOUND)
      return SendError(w, protocol, {402, "The account of this key does not exist.", "", "insufficient_balance"}, log, job.headers);
    return SendError(w, protocol, {503, absl::StrCat("The billing service is unavailable: ", bstatus.error_message()), "", ""}, log);
  }

  // The provider.
  connector::v1::ChatCall call;
  *call.mutable_request() = job.request;
  *call.mutable_candidates() = job.model.deployments();
  auto reader = path_.Chat(call, std::chrono::system_clock::now() +
                                     std::chrono::milliseconds(config_.provider_connector.request_timeout_ms + 30000));
  EventReader events(reader.get());
  ChatAnswer answer;
  llm::v1::ChatEvent event;
  bool got_first = events.Next(&event);
  if (!got_first || (event.has_error() && !answer.has_usage)) {
    HttpError e;
    if (got_first) {
      e = {event.error().http_status() ? event.error().http_status() : 502, event.error().message(), "", ""};
      while (events.Next(&event)) {
      }
      (void)reader->Finish();
    } else {
      grpc::Status s = reader->Finish();
      e = {502, absl::StrCat("The provider connector failed: ", s.error_message()), "", ""};
    }
    undo();
    HeaderList headers = job.headers;
    if (e.status == 429) headers.emplace_back("retry-after", "1");
    return SendError(w, protocol, e, log, headers);
  }
  HeaderList headers = job.headers;
  headers.emplace_back("x-request-id", log.request_id);
  if (!job.request.stream()) {
    do {
      answer.Apply(event);
    } while (events.Next(&event));
    grpc::Status s = reader->Finish();
    if (!answer.error && !s.ok()) answer.error = llm::v1::StreamError{}, answer.error->set_http_status(502), answer.error->set_message(s.error_message());
    log.deployment = answer.deployment_id;
    if (answer.error) {
      undo();
      return SendError(w, protocol, {answer.error->http_status() ? answer.error->http_status() : 502, answer.error->message(), "", ""}, log, job.headers);
    }
    Settle(job, answer, log);
    w.Send(200, "application/json", job.renderer->SyncBody(answer), headers);
    return;
  }
  // Streaming: frames go out as events arrive; a client that leaves is still charged for
  // what the provider produced, so the stream is read to its end either way.
  auto& active = Metrics().streams.Add({});
  active.Increment();
  bool client_ok = w.Start(200, "text/event-stream", headers);
  std::string frames;  // the frames of one upstream read go out in one write
  do {
    answer.Apply(event);
    if (client_ok && !event.has_error() && !event.has_usage())  // usage: after settlement
      frames += job.renderer->StreamEvent(event);
    if (client_ok && events.at_chunk_end() && !frames.empty()) {
      client_ok = w.Write(frames);
      frames.clear();
    }
  } while (events.Next(&event));
  grpc::Status s = reader->Finish();
  log.deployment = answer.deployment_id;
  if (!answer.error && !s.ok()) {
    answer.error = llm::v1::StreamError{};
    answer.error->set_http_status(502);
    answer.error->set_message(s.error_message());
  }
  if (answer.error) {
    undo();
    if (client_ok) {
      w.Write(job.renderer->StreamError({answer.error->http_status() ? answer.error->http_status() : 502, answer.error->message(), "", ""}));
      w.End();
    }
    log.error = answer.error->message();
  } else {
    Settle(job, answer, log);
    if (client_ok && answer.has_usage) {
      llm::v1::ChatEvent usage;
      *usage.mutable_usage() = answer.usage;
      std::string frames = job.renderer->StreamEvent(usage);
      if (!frames.empty()) client_ok = w.Write(frames);
    }
    if (client_ok) {
      w.Write(job.renderer->StreamEnd());
      w.End();
    }
  }
  active.Decrement();
}

void Gateway::Settle(ChatJob& job, const ChatAnswer& answer, RequestLog& log) {
  const auto& u = answer.usage;
  log.input_tokens = u.input_tokens() + u.cache_read_tokens() + u.cache_write_tokens();
  log.output_tokens = u.output_tokens();
  auto& tokens = Metrics().tokens;
  const std::string& m = job.model.id();
  CounterFor(tokens, {{"model", m}, {"kind", "input"}}).Increment(static_cast<double>(u.input_tokens()));
  CounterFor(tokens, {{"model", m}, {"kind", "cache_read"}}).Increment(static_cast<double>(u.cache_read_tokens()));
  CounterFor(tokens, {{"model", m}, {"kind", "cache_write"}}).Increment(static_cast<double>(u.cache_write_tokens()));
  CounterFor(tokens, {{"model", m}, {"kind", "output"}}).Increment(static_cast<double>(u.output_tokens()));

  billing::v1::SettleRequest req;
  req.set_request_id(log.request_id);
  req.set_hold_id(job.hold_id);
  req.set_account_id(job.identity.account_id());
  req.set_key_id(job.identity.key_id());
  req.set_model(job.model.id());
  req.set_protocol(job.request.protocol());
  *req.mutable_usage() = u;
  *req.mutable_price() = job.model.price();
  req.set_deployment_id(answer.deployment_id);
  bool settled = false;
  for (int attempt = 0; attempt < 3 && !settled; ++attempt) {
    if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(20 * attempt));
    billing::v1::SettleResponse resp;
    if (path_.Settle(req, &resp).ok()) {
      settled = true;
      log.cost_nano_usd = resp.cost_nano_usd();
    }
  }
  if (!settled) {
    Metrics().settle_retries.Add({}).Increment();
    retrier_->Add(req);
  }
  path_.ReleaseLease(job.lease_id, log.input_tokens + log.output_tokens);
}

}  // namespace nexusflow::gateway

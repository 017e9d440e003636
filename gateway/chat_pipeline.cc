// The chat request across the services, as one coroutine on the connection's loop:
// resolve, admit (rate limit and billing hold in parallel), stream from the connector,
// render, settle exactly once.
#include <prometheus/counter.h>
#include <prometheus/gauge.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "gateway/gateway.h"
#include "gateway/hold_estimate.h"
#include "gateway/protocols/anthropic.h"
#include "gateway/protocols/gemini.h"
#include "gateway/protocols/openai.h"
#include "libs/common/ids.h"
#include "libs/metrics/metrics.h"
#include "services/billing-ledger/pricing.h"
#include "services/provider-connector/connector_service.h"

namespace nexusflow::gateway {
namespace net = boost::asio;
namespace {

struct Families {
  prometheus::Family<prometheus::Counter>& tokens;
  prometheus::Family<prometheus::Gauge>& streams;
  prometheus::Family<prometheus::Counter>& settle_retries;
  prometheus::Family<prometheus::Counter>& cost;
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
          .Help("Settlements not acknowledged at once and handed to the outbox's retries")
          .Register(MetricsRegistry()),
      prometheus::BuildCounter()
          .Name("nexusflow_gateway_cost_nano_usd_total")
          .Help("Cost of the chat requests billing acknowledged at once, nano-USD, by model "
                "(the outbox's later settlements are in nexusflow_billing_charged_nano_usd_total)")
          .Register(MetricsRegistry())};
  return f;
}

// The protocol label of the chat metrics.
const char* ProtocolLabel(ApiProtocol p) {
  switch (p) {
    case ApiProtocol::kOpenAI: return "openai";
    case ApiProtocol::kAnthropic: return "anthropic";
    case ApiProtocol::kGemini: return "gemini";
    case ApiProtocol::kNexusFlow: return "nexusflow";
  }
  return "unknown";
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

// A gauge held up for as long as a stream is open.
class ActiveStream {
 public:
  explicit ActiveStream(prometheus::Gauge& g) : g_(g) { g_.Increment(); }
  ~ActiveStream() { g_.Decrement(); }

 private:
  prometheus::Gauge& g_;
};

bool HasOutput(const ChatAnswer& a) {
  for (size_t i = 0; i < a.choice_count(); ++i) {
    const ChoiceContent& c = a.choice(i);
    if (!c.text.empty() || !c.reasoning.empty() || !c.tool_calls.empty()) return true;
  }
  return false;
}

// Usage for an answer the upstream stopped short of reporting (the caller hung up):
// the prompt estimate, and about four characters a token of what arrived.
llm::v1::Usage UsageOfWhatArrived(const ChatAnswer& a, int64_t prompt_estimate) {
  if (a.has_usage) return a.usage;
  size_t chars = 0;
  for (size_t i = 0; i < a.choice_count(); ++i) {
    const ChoiceContent& c = a.choice(i);
    chars += c.text.size() + c.reasoning.size();
    for (const auto& t : c.tool_calls) chars += t.name.size() + t.arguments.size();
  }
  llm::v1::Usage u;
  u.set_input_tokens(prompt_estimate);
  u.set_output_tokens(static_cast<int64_t>((chars + 3) / 4));
  return u;
}

}  // namespace

struct Gateway::ChatJob {
  llm::v1::ChatRequest request;
  std::unique_ptr<ChatRenderer> renderer;
  auth::v1::Identity identity;
  routing::v1::Model model;
  std::string hold_id;
  std::string lease_id;
  int64_t prompt_estimate = 0;
  int64_t max_output = 0;        // the output limit the hold was sized for, tokens
  int64_t output_allowance = 0;  // output text bytes the outbox entry covers; 0 = no entry
  HeaderList headers;
  std::string stream_content_type = "text/event-stream";
};

namespace {

// The connector's call takes the request. The job keeps what settlement and the log read
// (id, model, protocol, stream, sampling), not the prompt: a stream holds no copy of it
// while it lasts (the connector keeps its own until an answer has started).
connector::v1::ChatCall TakeChatCall(llm::v1::ChatRequest& request, const routing::v1::Model& model,
                                     int64_t max_output) {
  llm::v1::ChatRequest kept;
  kept.set_request_id(request.request_id());
  kept.set_model(request.model());
  kept.set_protocol(request.protocol());
  kept.set_stream(request.stream());
  kept.set_include_usage(request.include_usage());
  *kept.mutable_sampling() = request.sampling();
  connector::v1::ChatCall call;
  *call.mutable_request() = std::move(request);
  request = std::move(kept);
  *call.mutable_candidates() = model.deployments();
  call.set_default_max_output_tokens(static_cast<int32_t>(std::min<int64_t>(max_output, INT32_MAX)));
  return call;
}

}  // namespace

net::awaitable<void> Gateway::HandleOpenAiChat(HttpExchange& ex, auth::v1::Identity& identity,
                                               RequestLog& log) {
  openai::ParsedChat parsed;
  HttpError error;
  if (!openai::ParseChatRequest(ex.request().body, &parsed, &error))
    co_return co_await SendError(ex, ApiProtocol::kOpenAI, error, log);
  ChatJob job;
  job.identity = std::move(identity);
  job.request = std::move(parsed.request);
  job.request.set_request_id(log.request_id);
  job.renderer = openai::NewChatRenderer(absl::StrCat("chatcmpl-", log.request_id.substr(4)),
                                         job.request.model(), UnixNow(), parsed.include_usage);
  co_await RunChat(job, ex, log);
}

net::awaitable<void> Gateway::HandleAnthropicMessages(HttpExchange& ex, auth::v1::Identity& identity,
                                                      RequestLog& log) {
  anthropic::ParsedMessages parsed;
  HttpError error;
  if (!anthropic::ParseMessagesRequest(ex.request().body, ex.request().headers,
                                       config_.gateway.default_max_output_tokens, &parsed, &error))
    co_return co_await SendError(ex, ApiProtocol::kAnthropic, error, log);
  ChatJob job;
  job.identity = std::move(identity);
  job.request = std::move(parsed.request);
  job.request.set_request_id(log.request_id);
  job.renderer = anthropic::NewMessagesRenderer(absl::StrCat("msg_", log.request_id.substr(4)),
                                                job.request.model());
  co_await RunChat(job, ex, log);
}

std::optional<HttpError> ModelNotAllowed(const auth::v1::Identity& identity, const std::string& model) {
  const auto& allowed = identity.allowed_models();
  if (allowed.empty() || std::find(allowed.begin(), allowed.end(), model) != allowed.end()) return std::nullopt;
  return HttpError(403, absl::StrCat("This API key is not allowed to use the model `", model, "`."), "model",
                   "model_not_allowed");
}

void Gateway::HandleAnthropicCountTokens(const HttpRequest& req, const auth::v1::Identity& identity,
                                         ResponseWriter& w, RequestLog& log) {
  // The body is a Messages request without max_tokens: counted as one would be sent.
  boost::system::error_code ec;
  boost::json::value body = boost::json::parse(req.body, ec);
  if (!ec && body.is_object() && !body.as_object().contains("max_tokens")) body.as_object()["max_tokens"] = 1;
  anthropic::ParsedMessages parsed;
  HttpError error;
  if (!anthropic::ParseMessagesRequest(ec ? req.body : boost::json::serialize(body), req.headers,
                                       config_.gateway.default_max_output_tokens, &parsed, &error))
    return SendError(w, ApiProtocol::kAnthropic, error, log);
  log.model = parsed.request.model();
  auto model = catalog_.Resolve(parsed.request.model(), llm::v1::PROTOCOL_ANTHROPIC, "chat");
  if (!model.ok()) {
    HttpError e = HttpErrorFrom(model.status());
    if (model.status().code() == absl::StatusCode::kNotFound) e = HttpError(404, std::string(model.status().message()), "model", "model_not_found");
    return SendError(w, ApiProtocol::kAnthropic, e, log);
  }
  if (auto denied = ModelNotAllowed(identity, model->id())) return SendError(w, ApiProtocol::kAnthropic, *denied, log);
  SendJson(w, 200, anthropic::CountTokensJson(connector::EstimatePromptTokens(parsed.request)), log);
}

net::awaitable<void> Gateway::HandleGemini(HttpExchange& ex, auth::v1::Identity& identity, RequestLog& log) {
  const HttpRequest& req = ex.request();
  std::string_view rest = std::string_view(req.path).substr(strlen("/v1beta/models/"));
  auto colon = rest.rfind(':');
  std::string model(rest.substr(0, colon));
  std::string_view method = rest.substr(colon + 1);
  bool stream = method == "streamGenerateContent";
  if (req.method != "POST" || (method != "generateContent" && !stream && method != "countTokens")) {
    HttpError e(404, absl::StrCat("Unknown request URL: ", req.method, " ", req.path, "."), "", "unknown_url");
    co_return co_await SendError(ex, ApiProtocol::kGemini, e, log);
  }
  gemini::ParsedGenerate parsed;
  HttpError error;
  if (method == "countTokens") {
    if (!gemini::ParseCountTokensRequest(req.body, model, &parsed, &error))
      co_return co_await SendError(ex, ApiProtocol::kGemini, error, log);
    log.model = parsed.request.model();
    auto resolved = catalog_.Resolve(parsed.request.model(), llm::v1::PROTOCOL_GEMINI, "chat");
    if (!resolved.ok()) {
      HttpError e = HttpErrorFrom(resolved.status());
      if (resolved.status().code() == absl::StatusCode::kNotFound) e = HttpError(404, std::string(resolved.status().message()), "model", "model_not_found");
      co_return co_await SendError(ex, ApiProtocol::kGemini, e, log);
    }
    if (auto denied = ModelNotAllowed(identity, resolved->id()))
      co_return co_await SendError(ex, ApiProtocol::kGemini, *denied, log);
    HeaderList headers;
    AddRequestId(headers, log.request_id);
    co_return co_await ex.Send(200, "application/json",
                               gemini::CountTokensJson(connector::EstimatePromptTokens(parsed.request)),
                               std::move(headers));
  }
  if (!gemini::ParseGenerateContentRequest(req.body, model, stream, &parsed, &error))
    co_return co_await SendError(ex, ApiProtocol::kGemini, error, log);
  bool sse = stream && req.query.count("alt") && req.query.at("alt") == "sse";
  ChatJob job;
  job.identity = std::move(identity);
  job.request = std::move(parsed.request);
  job.request.set_request_id(log.request_id);
  job.renderer = gemini::NewGenerateRenderer(log.request_id, job.request.model(), sse);
  // Without alt=sse a stream is one JSON array, sent as it grows.
  if (stream && !sse) job.stream_content_type = "application/json";
  co_await RunChat(job, ex, log);
}

net::awaitable<bool> Gateway::Admit(Admission& a, HttpExchange& ex, RequestLog& log) {
  const ApiProtocol protocol = a.protocol;
  ratelimit::v1::AcquireRequest areq;
  areq.set_request_id(log.request_id);
  areq.set_key_id(a.identity->key_id());
  areq.set_plan(a.identity->plan());
  areq.set_model(a.model->id());
  areq.set_estimated_tokens(a.estimated_tokens);
  *areq.mutable_key_limits() = a.identity->limits();
  billing::v1::ReserveRequest breq;
  breq.set_request_id(log.request_id);
  breq.set_account_id(a.identity->account_id());
  breq.set_amount_nano_usd(a.hold_nano_usd);
  ratelimit::v1::AcquireResponse aresp;
  billing::v1::ReserveResponse bresp;
  grpc::Status astatus, bstatus;
  co_await path_.Admit(areq, &aresp, &astatus, breq, &bresp, &bstatus);
  bool admitted = astatus.ok() && aresp.decision() == ratelimit::v1::DECISION_ALLOWED;
  if (admitted) a.lease_id = aresp.lease_id();
  if (bstatus.ok()) a.hold_id = bresp.hold_id();
  a.headers = RateLimitHeaders(aresp);
  auto undo = [&] {
    path_.ReleaseLease(a.lease_id, 0);
    path_.ReleaseHold(a.hold_id);
    a.lease_id.clear();
    a.hold_id.clear();
  };
  std::optional<HttpError> refusal;
  HeaderList headers = a.headers;
  if (!astatus.ok()) {
    // The limiter's store is down and its policy is fail-closed (or the limiter is gone).
    refusal = HttpError(503, absl::StrCat("The rate limiter is unavailable: ", astatus.error_message()));
    headers.emplace_back("retry-after", "1");
  } else if (!admitted && aresp.never_fits()) {
    // Over the plan's limit by itself: no retry helps, so the SDKs are told not to.
    headers.emplace_back("x-should-retry", "false");
    refusal = HttpError(429, absl::StrCat("Request too large for the tokens per minute of plan '", a.identity->plan(),
                                          "': limit ", aresp.tokens().limit(), ", requested ", areq.estimated_tokens(),
                                          ". Lower max_tokens or the prompt."),
                        "", "rate_limit_exceeded");
  } else if (!admitted) {
    int64_t retry = std::max<int64_t>(1, aresp.retry_after().seconds() + (aresp.retry_after().nanos() > 0 ? 1 : 0));
    headers.emplace_back("retry-after", std::to_string(retry));
    const char* what = aresp.denied_by() == ratelimit::v1::LIMIT_KIND_REQUESTS            ? "requests per minute"
                       : aresp.denied_by() == ratelimit::v1::LIMIT_KIND_REQUESTS_PER_DAY ? "requests per day"
                       : aresp.denied_by() == ratelimit::v1::LIMIT_KIND_TOKENS          ? "tokens per minute"
                                                                                         : "concurrent requests";
    refusal = HttpError(429, absl::StrCat("Rate limit reached for ", what, " on plan '", a.identity->plan(),
                                          "'. Retry after ", retry, "s."),
                        "", "rate_limit_exceeded");
  } else if (!bstatus.ok()) {
    if (bstatus.error_code() == grpc::FAILED_PRECONDITION)
      refusal = HttpError(402, bstatus.error_message(), "", "insufficient_balance");
    else if (bstatus.error_code() == grpc::NOT_FOUND)
      refusal = HttpError(402, "The account of this key does not exist.", "", "insufficient_balance");
    else
      refusal = HttpError(503, absl::StrCat("The billing service is unavailable: ", bstatus.error_message()));
  }
  if (!refusal) co_return true;
  undo();
  if (refusal->status == 503 && astatus.ok()) headers.clear();
  co_await SendError(ex, protocol, *refusal, log, headers);
  co_return false;
}

// Routing and admission of a chat: the model from the local catalog, the key's allow-list,
// then the rate-limit lease and the billing hold. False when refused (answered here).
net::awaitable<bool> Gateway::AdmitChat(ChatJob& job, HttpExchange& ex, RequestLog& log) {
  const ApiProtocol protocol = job.renderer->protocol();
  log.model = job.request.model();
  // Routing, from the local catalog.
  auto model = catalog_.Resolve(job.request.model(), job.request.protocol(), "chat");
  if (!model.ok()) {
    HttpError e = HttpErrorFrom(model.status());
    if (model.status().code() == absl::StatusCode::kNotFound) e = {404, std::string(model.status().message()), "model", "model_not_found"};
    if (model.status().code() == absl::StatusCode::kFailedPrecondition) e = {400, std::string(model.status().message()), "model", "model_not_supported"};
    co_await SendError(ex, protocol, e, log);
    co_return false;
  }
  job.model = std::move(*model);
  log.chat_model = job.model.id();
  log.chat_protocol = ProtocolLabel(protocol);
  log.stream = job.request.stream();
  if (auto denied = ModelNotAllowed(job.identity, job.model.id())) {
    co_await SendError(ex, protocol, *denied, log);
    co_return false;
  }

  // Admission: a rate-limit lease and a billing hold, asked in parallel.
  job.prompt_estimate = connector::EstimatePromptTokens(job.request);
  int64_t max_output = job.request.sampling().has_max_output_tokens()
                           ? job.request.sampling().max_output_tokens()
                           : (job.model.max_output_tokens() > 0 ? job.model.max_output_tokens()
                                                                : config_.gateway.default_max_output_tokens);
  job.max_output = max_output;
  Admission admission;
  admission.identity = &job.identity;
  admission.model = &job.model;
  admission.protocol = protocol;
  // The lease and the hold both count an upper bound of the tokens (hold_estimate.h), not
  // the best guess: the hold so that it covers the charge, the lease so that the requests
  // admitted within a minute never use more than its TPM (the release replaces the bound
  // with the actual count). Without max_tokens the output counts at release.
  const int64_t prompt_bound = PromptTokenBound(job.request, job.model.context_window());
  const int64_t output_bound = OutputTokenBound(job.request, max_output);
  admission.estimated_tokens =
      prompt_bound + (job.request.sampling().has_max_output_tokens() ? output_bound : 0);
  admission.hold_nano_usd = billing::MaxCostNanoUsd(prompt_bound, output_bound, job.model.price());
  bool admitted = co_await Admit(admission, ex, log);
  job.lease_id = admission.lease_id;
  job.hold_id = admission.hold_id;
  job.headers = std::move(admission.headers);
  co_return admitted;
}

// An answer cut short (the client left, or the upstream failed after output): what the
// provider produced is charged, on its usage when it reported one, else on what arrived;
// an answer with no output at all is not charged.
net::awaitable<void> Gateway::SettleWhatArrived(ChatJob& job, ChatAnswer& answer, RequestLog& log) {
  if (!HasOutput(answer) && !answer.has_usage) {
    Undo(job);
    co_return;
  }
  answer.usage = UsageOfWhatArrived(answer, job.prompt_estimate);
  answer.has_usage = true;
  co_await Settle(job, answer, log);
}

void Gateway::Undo(const ChatJob& job) {
  path_.ReleaseLease(job.lease_id, 0);
  path_.ReleaseHold(job.hold_id);
}

net::awaitable<void> Gateway::RunChat(ChatJob& job, HttpExchange& ex, RequestLog& log) {
  // The body is parsed into job.request: its text is not kept while the answer lasts.
  std::string().swap(ex.request().body);
  // Each phase is a coroutine of its own: a stream keeps only the frames of the phase it
  // is in (RunChat's and AnswerStream's), not every local of the whole pipeline.
  if (!co_await AdmitChat(job, ex, log)) co_return;

  // The provider. A client that hangs up cancels the upstream transfer; whatever had
  // arrived by then is still read from the stream and billed.
  std::unique_ptr<ChatCall> chat;
  {
    auto call = TakeChatCall(job.request, job.model, job.max_output);
    chat = co_await path_.Chat(std::move(call), std::chrono::system_clock::now() +
                                         std::chrono::milliseconds(config_.provider_connector.request_timeout_ms + 30000));
  }
  ChatStream& stream = chat->stream();
  ex.WatchClient([watched = chat->shared_stream()] { watched->Cancel(); });
  connector::v1::ChatChunk chunk;
  bool got = co_await stream.Next(&chunk);
  while (got && chunk.events_size() == 0) got = co_await stream.Next(&chunk);
  if (!got || chunk.events(0).has_error()) co_return co_await FailBeforeOutput(job, *chat, chunk, got, ex, log);
  if (!job.request.stream()) co_return co_await AnswerWhole(job, *chat, chunk, ex, log);
  co_await AnswerStream(job, *chat, chunk, ex, log);
}

// The answer failed before any output: nothing is charged.
net::awaitable<void> Gateway::FailBeforeOutput(ChatJob& job, ChatCall& chat, connector::v1::ChatChunk& chunk,
                                               bool got, HttpExchange& ex, RequestLog& log) {
  const ApiProtocol protocol = job.renderer->protocol();
  ChatStream& stream = chat.stream();
  HttpError e;
  int retry_after_seconds = 1;
  if (got) {
    const auto& err = chunk.events(0).error();
    e = {err.http_status() ? err.http_status() : 502, err.message(), "", ""};
    retry_after_seconds = std::max(1, err.retry_after_seconds());
    while (co_await stream.Next(&chunk)) {
    }
    (void)chat.Finish();
  } else {
    grpc::Status s = chat.Finish();
    e = {502, absl::StrCat("The provider connector failed: ", s.error_message()), "", ""};
    if (ex.client_gone()) e = {499, "The client closed the connection.", "", ""};
  }
  Undo(job);
  HeaderList headers = job.headers;
  if (e.status == 429) headers.emplace_back("retry-after", std::to_string(retry_after_seconds));
  co_return co_await SendError(ex, protocol, e, log, headers);
}

// A whole (non-streamed) answer: read to its end, settled, then sent.
net::awaitable<void> Gateway::AnswerWhole(ChatJob& job, ChatCall& chat, connector::v1::ChatChunk& chunk,
                                          HttpExchange& ex, RequestLog& log) {
  const ApiProtocol protocol = job.renderer->protocol();
  ChatStream& stream = chat.stream();
  ChatAnswer answer;
  HeaderList headers = job.headers;
  AddRequestId(headers, log.request_id);
  std::string raw_body;  // native pass-through: the upstream's body as it wrote it
  bool passthrough = false;
  do {
    for (const auto& e : chunk.events()) {
      if (e.has_raw()) {
        passthrough = true;
        raw_body += e.raw();
      } else {
        answer.Apply(e);
      }
    }
  } while (co_await stream.Next(&chunk));
  grpc::Status s = chat.Finish();
  log.deployment = answer.deployment_id;
  if (stream.cancelled()) {
    // The caller left before the answer was whole: bill what the provider produced.
    log.error = "client closed the connection";
    co_await SettleWhatArrived(job, answer, log);
    co_return co_await ex.Send(499, "application/json", "", headers);
  }
  if (!answer.error && !s.ok()) answer.error = llm::v1::StreamError{}, answer.error->set_http_status(502), answer.error->set_message(s.error_message());
  if (answer.error) {
    Undo(job);
    co_return co_await SendError(ex, protocol, {answer.error->http_status() ? answer.error->http_status() : 502, answer.error->message(), "", ""}, log, job.headers);
  }
  co_await Settle(job, answer, log);
  std::string body = passthrough ? std::move(raw_body) : job.renderer->SyncBody(answer);
  co_return co_await ex.Send(200, "application/json", std::move(body), std::move(headers));
}

// A streamed answer: each upstream read goes out as it arrives; settled before its end.
net::awaitable<void> Gateway::AnswerStream(ChatJob& job, ChatCall& chat, connector::v1::ChatChunk& chunk,
                                           HttpExchange& ex, RequestLog& log) {
  ChatStream& stream = chat.stream();
  ChatAnswer answer;
  HeaderList headers = job.headers;
  AddRequestId(headers, log.request_id);
  // Streaming: the frames of one upstream read go out in one write, as they arrive. The
  // next chunk is taken only once the client has the last one: a slow reader fills the
  // stream's buffer and pauses the upstream.
  ActiveStream active(Metrics().streams.Add({}));
  bool client_ok = co_await ex.Start(200, job.stream_content_type, headers);
  if (!client_ok) stream.Cancel();
  std::string frames;
  // Native pass-through relays the upstream's bytes; from the read that ends the answer
  // on, they are held until the settlement is committed, like the rendered [DONE].
  bool passthrough = false;
  bool error_relayed = false;  // the upstream's own error event went out with its bytes
  std::string held;
  do {
    bool has_raw = false, terminal = false;
    for (const auto& e : chunk.events()) {
      has_raw |= e.has_raw();
      terminal |= e.has_finish() || e.has_usage();
    }
    passthrough |= has_raw;
    for (const auto& e : chunk.events()) {
      if (e.has_raw()) {
        (terminal || !held.empty() ? held : frames) += e.raw();
        continue;
      }
      answer.Apply(e);
      if (passthrough) {
        error_relayed |= e.has_error() && has_raw;
        continue;
      }
      if (client_ok && !e.has_error() && !e.has_usage())  // usage: after settlement
        frames += job.renderer->StreamEvent(e);
    }
    if (client_ok && !frames.empty()) {
      co_await RecordOutput(job, answer);
      client_ok = co_await ex.Write(std::move(frames));
      if (log.first_output_seconds < 0)
        log.first_output_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - log.start).count();
      frames.clear();
      if (!client_ok) stream.Cancel();
    }
  } while (co_await stream.Next(&chunk));
  grpc::Status s = chat.Finish();
  log.deployment = answer.deployment_id;
  bool left = stream.cancelled();
  if (!left && !answer.error && !s.ok()) {
    answer.error = llm::v1::StreamError{};
    answer.error->set_http_status(502);
    answer.error->set_message(s.error_message());
  }
  if (left || answer.error) {
    // Output reached the client (or the provider made it for a client who left): it is
    // charged, on the provider's usage when it reported one, else on what arrived.
    co_await SettleWhatArrived(job, answer, log);
    if (left) {
      log.error = "client closed the connection";
    } else {
      log.error = answer.error->message();
      if (client_ok && !held.empty()) client_ok = co_await ex.Write(std::move(held));
      if (client_ok && !error_relayed)
        client_ok = co_await ex.Write(job.renderer->StreamError({answer.error->http_status() ? answer.error->http_status() : 502, answer.error->message(), "", ""}));
      if (client_ok) co_await ex.End();
    }
    co_return;
  }
  co_await Settle(job, answer, log);
  if (passthrough) {
    // The upstream's own closing events are in what was held.
    if (client_ok && (held.empty() || co_await ex.Write(std::move(held)))) co_await ex.End();
    co_return;
  }
  if (client_ok && answer.has_usage) {
    llm::v1::ChatEvent usage;
    *usage.mutable_usage() = answer.usage;
    std::string usage_frames = job.renderer->StreamEvent(usage);
    if (!usage_frames.empty()) client_ok = co_await ex.Write(std::move(usage_frames));
  }
  if (client_ok && co_await ex.Write(job.renderer->StreamEnd())) co_await ex.End();
}

// Everything of a request's settlement but its usage.
billing::v1::SettleRequest Gateway::SettleTemplate(const ChatJob& job, const ChatAnswer& answer) {
  billing::v1::SettleRequest req;
  req.set_request_id(job.request.request_id());
  req.set_hold_id(job.hold_id);
  req.set_account_id(job.identity.account_id());
  req.set_key_id(job.identity.key_id());
  req.set_model(job.model.id());
  req.set_protocol(job.request.protocol());
  *req.mutable_price() = job.model.price();
  req.set_deployment_id(answer.deployment_id);
  return req;
}

net::awaitable<void> Gateway::Settle(ChatJob& job, const ChatAnswer& answer, RequestLog& log) {
  const auto& u = answer.usage;
  log.input_tokens = u.input_tokens() + u.cache_read_tokens() + u.cache_write_tokens();
  log.output_tokens = u.output_tokens();
  auto& tokens = Metrics().tokens;
  const std::string& m = job.model.id();
  CounterFor(tokens, {{"model", m}, {"kind", "input"}}).Increment(static_cast<double>(u.input_tokens()));
  CounterFor(tokens, {{"model", m}, {"kind", "cache_read"}}).Increment(static_cast<double>(u.cache_read_tokens()));
  CounterFor(tokens, {{"model", m}, {"kind", "cache_write"}}).Increment(static_cast<double>(u.cache_write_tokens()));
  CounterFor(tokens, {{"model", m}, {"kind", "output"}}).Increment(static_cast<double>(u.output_tokens()));

  billing::v1::SettleRequest req = SettleTemplate(job, answer);
  *req.mutable_usage() = u;
  // A stream's outbox entry (written before its output) takes the real usage; an answer
  // not sent yet has none: it is written only if billing does not acknowledge it.
  bool has_entry = job.output_allowance > 0;
  if (has_entry) outbox_->RecordFinal(req);
  co_await SettleCharge(req, log, has_entry);
  if (log.cost_nano_usd > 0)
    CounterFor(Metrics().cost, {{"model", m}}).Increment(static_cast<double>(log.cost_nano_usd));
  path_.ReleaseLease(job.lease_id, log.input_tokens + log.output_tokens);
}

net::awaitable<void> Gateway::SettleCharge(const billing::v1::SettleRequest& req, RequestLog& log,
                                           bool recorded) {
  bool settled = false;
  grpc::Status status;
  for (int attempt = 0; attempt < 3 && !settled; ++attempt) {
    if (attempt) {
      net::steady_timer pause(co_await net::this_coro::executor, std::chrono::milliseconds(20 * attempt));
      co_await pause.async_wait(net::as_tuple(net::use_awaitable));
    }
    billing::v1::SettleResponse resp;
    status = co_await path_.Settle(req, &resp);
    if (status.ok()) {
      settled = true;
      log.cost_nano_usd = resp.cost_nano_usd();
    }
  }
  if (settled) {
    if (recorded) outbox_->Settled(req.request_id());
  } else {
    Metrics().settle_retries.Add({}).Increment();
    (void)co_await outbox_->Retry(req, status);
  }
}

net::awaitable<void> Gateway::RecordOutput(ChatJob& job, const ChatAnswer& answer) {
  int64_t sent = OutputTextBytes(answer);
  if (sent <= job.output_allowance) co_return;
  int64_t allowance = NextOutputAllowance(sent, kOutputAllowanceStep);
  if (job.output_allowance == 0) {
    billing::v1::SettleRequest tmpl = SettleTemplate(job, answer);
    (void)co_await outbox_->RecordStarted(tmpl, job.prompt_estimate, job.max_output, allowance);
  } else {
    (void)co_await outbox_->RecordProgress(job.request.request_id(), allowance);
  }
  job.output_allowance = allowance;
}

}  // namespace nexusflow::gateway

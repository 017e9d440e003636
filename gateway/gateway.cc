#include "gateway/gateway.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include <boost/json.hpp>
#include <chrono>
#include <unistd.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <cstdint>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gateway/async_call.h"
#include "gateway/protocols/gemini.h"
#include "gateway/protocols/openai.h"
#include "libs/common/ids.h"
#include "libs/common/money.h"
#include "libs/metrics/metrics.h"

namespace nexusflow::gateway {
namespace json = boost::json;
namespace net = boost::asio;

// One endpoint: where it is, who may call it, and which protocol its errors speak.
struct Gateway::Route {
  enum class Auth { kNone, kKey, kAdmin };
  enum class Kind {
    kHealth, kReady, kMetrics, kOpenAiChat, kModels, kBalance, kUsage, kAdmin,
    kAnthropicMessages, kAnthropicCountTokens, kGeminiModels, kGeminiModel, kEmbeddings,
    kImages, kTasks,
  };
  std::string_view path;
  bool prefix;               // `path` is a prefix of the request path
  std::string_view method;   // "" = any (the handler decides)
  const char* name;          // the route label of metrics and the access log
  ApiProtocol protocol;
  Auth auth;
  Kind kind;
};

namespace {

using Route = Gateway::Route;
using Auth = Route::Auth;
using Kind = Route::Kind;

constexpr Route kRoutes[] = {
    {"/healthz", false, "", "ops", ApiProtocol::kOpenAI, Auth::kNone, Kind::kHealth},
    {"/readyz", false, "", "ops", ApiProtocol::kOpenAI, Auth::kNone, Kind::kReady},
    {"/metrics", false, "", "ops", ApiProtocol::kOpenAI, Auth::kNone, Kind::kMetrics},
    {"/v1/chat/completions", false, "POST", "chat_completions", ApiProtocol::kOpenAI, Auth::kKey, Kind::kOpenAiChat},
    {"/v1/embeddings", false, "POST", "embeddings", ApiProtocol::kOpenAI, Auth::kKey, Kind::kEmbeddings},
    {"/v1/images/generations", false, "POST", "images_generations", ApiProtocol::kOpenAI, Auth::kKey, Kind::kImages},
    {"/v1/tasks", false, "", "tasks", ApiProtocol::kNexusFlow, Auth::kKey, Kind::kTasks},
    {"/v1/tasks/", true, "", "tasks", ApiProtocol::kNexusFlow, Auth::kKey, Kind::kTasks},
    {"/v1/models", false, "GET", "models", ApiProtocol::kOpenAI, Auth::kKey, Kind::kModels},
    {"/v1/models/", true, "GET", "models", ApiProtocol::kOpenAI, Auth::kKey, Kind::kModels},
    {"/v1/messages", false, "POST", "messages", ApiProtocol::kAnthropic, Auth::kKey, Kind::kAnthropicMessages},
    {"/v1/messages/count_tokens", false, "POST", "messages_count_tokens", ApiProtocol::kAnthropic, Auth::kKey, Kind::kAnthropicCountTokens},
    // GET /v1beta/models/{model}, POST /v1beta/models/{model}:generateContent, … (the
    // method after the colon is checked by the handler).
    {"/v1beta/models", false, "GET", "gemini_models", ApiProtocol::kGemini, Auth::kKey, Kind::kGeminiModels},
    {"/v1beta/models/", true, "", "gemini", ApiProtocol::kGemini, Auth::kKey, Kind::kGeminiModel},
    {"/v1/balance", false, "GET", "balance", ApiProtocol::kNexusFlow, Auth::kKey, Kind::kBalance},
    {"/v1/usage", false, "GET", "usage", ApiProtocol::kNexusFlow, Auth::kKey, Kind::kUsage},
    {"/admin/v1/", true, "", "admin", ApiProtocol::kNexusFlow, Auth::kAdmin, Kind::kAdmin},
};

// Content types and bodies of the ops endpoints. (Named, not literals: a string literal
// in a co_await expression trips GCC 12's coroutine lowering.)
constexpr std::string_view kTextPlain = "text/plain";
constexpr std::string_view kPrometheusText = "text/plain; version=0.0.4";
constexpr std::string_view kJsonType = "application/json";
constexpr std::string_view kOk = "ok\n", kReady = "ready\n", kDraining = "draining\n",
                           kStarting = "starting\n";

const Route* FindRoute(std::string_view path) {
  for (const auto& r : kRoutes)
    if (r.prefix ? path.substr(0, r.path.size()) == r.path : path == r.path) return &r;
  return nullptr;
}

// The protocol of an unknown path's errors: the one whose URL space it is in.
ApiProtocol ProtocolOfPath(std::string_view path) {
  if (const Route* r = FindRoute(path)) return r->protocol;
  if (path.substr(0, 7) == "/admin/") return ApiProtocol::kNexusFlow;
  if (path.substr(0, 8) == "/v1beta/") return ApiProtocol::kGemini;
  return ApiProtocol::kOpenAI;
}

struct Families {
  prometheus::Family<prometheus::Counter>& requests;
  LatencyHistogramFamily& seconds;
  prometheus::Family<prometheus::Counter>& chat_requests;
  LatencyHistogramFamily& chat_seconds;
  LatencyHistogramFamily& first_output;
};

Families& Metrics() {
  static Families f{
      prometheus::BuildCounter()
          .Name("nexusflow_gateway_http_requests_total")
          .Help("HTTP requests by route and status code")
          .Register(MetricsRegistry()),
      NewLatencyHistogram("nexusflow_gateway_http_request_duration_seconds",
                          "Time from reading a request to its last byte, by route"),
      prometheus::BuildCounter()
          .Name("nexusflow_gateway_chat_requests_total")
          .Help("Chat requests for a catalog model, by protocol, model, streamed or not, "
                "and status code")
          .Register(MetricsRegistry()),
      NewLatencyHistogram("nexusflow_gateway_chat_request_duration_seconds",
                          "Time from reading a chat request to its last byte, by protocol, "
                          "model and streamed or not"),
      NewLatencyHistogram("nexusflow_gateway_time_to_first_token_seconds",
                          "Streamed chat: time from reading the request to writing its first "
                          "output, by protocol and model")};
  return f;
}

void RecordChat(const RequestLog& log, int status, double seconds) {
  auto& m = Metrics();
  const char* stream = log.stream ? "true" : "false";
  CounterFor(m.chat_requests, {{"protocol", log.chat_protocol},
                               {"model", log.chat_model},
                               {"stream", stream},
                               {"code", std::to_string(status)}})
      .Increment();
  HistogramFor(m.chat_seconds,
               {{"protocol", log.chat_protocol}, {"model", log.chat_model}, {"stream", stream}})
      .Observe(seconds);
  if (log.first_output_seconds >= 0)
    HistogramFor(m.first_output, {{"protocol", log.chat_protocol}, {"model", log.chat_model}})
        .Observe(log.first_output_seconds);
}

std::string Iso8601(int64_t unix_seconds) {
  // Every access-log line asks for the current second: the last one formatted is kept
  // per thread, so absl's time-zone formatting runs once a second, not once a request.
  thread_local int64_t cached_seconds = INT64_MIN;
  thread_local std::string cached;
  if (unix_seconds != cached_seconds) {
    cached = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix_seconds),
                              absl::UTCTimeZone());
    cached_seconds = unix_seconds;
  }
  return cached;
}

// Access-log lines are gathered per thread and written to stdout in whole lines, one
// write(2) for many requests: when 32 KiB have gathered, 100 ms after the first line
// of a batch, and when the thread ends. Lines of different loops never interleave.
class AccessLogBuffer {
 public:
  ~AccessLogBuffer() { Flush(); }
  void Append(std::string_view line) {
    text_.append(line);
    text_.push_back('\n');
    if (text_.size() >= kFlushBytes) return Flush();
    if (armed_) return;
    armed_ = true;
    auto timer = std::make_shared<net::steady_timer>(executor_, std::chrono::milliseconds(100));
    timer->async_wait([this, timer](boost::system::error_code) {
      armed_ = false;
      Flush();
    });
  }
  void Flush() {
    size_t done = 0;
    while (done < text_.size()) {
      ssize_t n = ::write(STDOUT_FILENO, text_.data() + done, text_.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    text_.clear();
  }
  void set_executor(const net::any_io_executor& ex) {
    if (!executor_) executor_ = ex;
  }

 private:
  static constexpr size_t kFlushBytes = 32 << 10;
  std::string text_;
  bool armed_ = false;
  net::any_io_executor executor_;
};

void AppendAccessLog(const std::string& line, const net::any_io_executor& executor) {
  thread_local AccessLogBuffer buffer;  // flushed when the loop's thread ends
  buffer.set_executor(executor);
  buffer.Append(line);
}

void WriteAccessLog(const HttpRequest& req, int status, double seconds, int64_t bytes,
                    const RequestLog& log, const net::any_io_executor& executor) {
  json::object line{{"ts", Iso8601(UnixNow())},
                    {"request_id", log.request_id},
                    {"method", req.method},
                    {"path", req.path},
                    {"route", log.route},
                    {"status", status},
                    {"duration_us", static_cast<int64_t>(seconds * 1e6)},
                    {"bytes_out", bytes},
                    {"remote", req.remote}};
  if (*log.chat_protocol) {
    line["protocol"] = log.chat_protocol;
    line["stream"] = log.stream;
  }
  if (log.first_output_seconds >= 0)
    line["ttft_us"] = static_cast<int64_t>(log.first_output_seconds * 1e6);
  if (!log.model.empty()) line["model"] = log.model;
  if (!log.account_id.empty()) line["account_id"] = log.account_id;
  if (!log.key_id.empty()) line["key_id"] = log.key_id;
  if (!log.key_prefix.empty()) line["key_prefix"] = log.key_prefix;
  if (!log.deployment.empty()) line["deployment"] = log.deployment;
  if (log.input_tokens || log.output_tokens) {
    line["input_tokens"] = log.input_tokens;
    line["output_tokens"] = log.output_tokens;
  }
  if (log.cost_nano_usd >= 0) line["cost_usd"] = FormatUsd(log.cost_nano_usd);
  if (!log.error.empty()) line["error"] = log.error;
  AppendAccessLog(json::serialize(line), executor);
}

}  // namespace

void AddRequestId(HeaderList& headers, const std::string& request_id) {
  headers.emplace_back("x-request-id", request_id);
  headers.emplace_back("request-id", request_id);  // the Anthropic SDK reads this one
}

Gateway::Gateway(const Config& config, Backends backends, LocalServices local)
    : config_(config),
      backends_(std::move(backends)),
      path_(backends_, local),
      auth_cache_(backends_.auth.get(), config.gateway.auth_cache_ttl_seconds),
      catalog_(backends_.routing.get()) {
  Metrics();
}

Gateway::~Gateway() {
  Stop();
  blocking_.join();
}

absl::Status Gateway::Start() {
  SettlementOutbox::Options options;
  options.path = config_.gateway.outbox;
  options.max_attempts = config_.gateway.settlement_max_attempts;
  // The outbox's retries go to billing over gRPC (an in-process channel when billing is
  // in this process): they are rare, and off the loops.
  billing::v1::BillingLedgerService::Stub* ledger = backends_.billing.get();
  auto settle = [ledger](const billing::v1::SettleRequest& req,
                       std::function<void(const grpc::Status&)> done) {
    struct Call {
      grpc::ClientContext ctx;
      billing::v1::SettleRequest req;
      billing::v1::SettleResponse resp;
      std::function<void(const grpc::Status&)> done;
    };
    auto* call = new Call;
    call->req = req;
    call->done = std::move(done);
    call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ledger->async()->Settle(&call->ctx, &call->req, &call->resp, [call](grpc::Status s) {
      call->done(s);
      delete call;
    });
  };
  auto outbox = SettlementOutbox::Open(options, settle);
  if (!outbox.ok()) return outbox.status();
  outbox_ = std::move(*outbox);
  auth_cache_.Start();
  catalog_.Start();
  return absl::OkStatus();
}

void Gateway::Stop() {
  auth_cache_.Stop();
  catalog_.Stop();
  // Draining: billing gets the grace period to take what the outbox holds; the rest stays
  // in the file for the next start.
  if (outbox_ && draining_ && !outbox_flushed_.exchange(true))
    outbox_->WaitIdle(std::chrono::seconds(config_.server.drain_grace_seconds));
}

bool Gateway::ready() const {
  if (draining_ || !catalog_.loaded() || !auth_cache_.live()) return false;
  for (const auto& [name, channel] : backends_.remote)
    if (channel->GetState(/*try_to_connect=*/true) != GRPC_CHANNEL_READY) return false;
  return true;
}

AsyncHandler Gateway::handler() {
  return [this](HttpExchange& ex) { return Serve(ex); };
}

ErrorBodyFn Gateway::error_body() {
  return [](std::string_view path, int status, const std::string& message, const std::string& code) {
    return ErrorBody(ProtocolOfPath(path), HttpError{status, message, "", code}, NewTimeOrderedId("req_"));
  };
}

net::awaitable<void> Gateway::Serve(HttpExchange& ex) {
  auto start = std::chrono::steady_clock::now();
  RequestLog log;
  log.request_id = NewTimeOrderedId("req_");
  log.start = start;
  co_await Dispatch(ex, log);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (log.route.empty()) log.route = "other";
  CounterFor(Metrics().requests, {{"route", log.route}, {"code", std::to_string(ex.status())}})
      .Increment();
  HistogramFor(Metrics().seconds, {{"route", log.route}}).Observe(seconds);
  if (!log.chat_model.empty()) RecordChat(log, ex.status(), seconds);
  if (config_.gateway.access_log && log.route != "ops")
    WriteAccessLog(ex.request(), ex.status(), seconds, ex.bytes_written(), log,
                   co_await net::this_coro::executor);
}

// The coroutines of a request nest for as long as it lasts (a stream: minutes), and each
// keeps every local of its body in its frame. So the path a chat takes is kept free of
// the locals of the other routes and of refusals: those run in coroutines of their own
// (DispatchOther, Refuse), whose frames exist only while they run.
net::awaitable<void> Gateway::Dispatch(HttpExchange& ex, RequestLog& log) {
  const Route* route = FindRoute(ex.request().path);
  if (!route || (!route->method.empty() && ex.request().method != route->method))
    co_return co_await Refuse(ex, route, log);
  log.route = route->name;
  switch (route->kind) {
    case Kind::kHealth:
    case Kind::kReady:
    case Kind::kMetrics:
      co_return co_await DispatchOther(ex, *route, std::nullopt, log);
    default:
      break;
  }

  // Who is asking is decided from the headers, before a byte of the body is read.
  std::optional<auth::v1::Identity> identity;
  if (route->auth == Auth::kKey) {
    identity = co_await Authenticate(ex, route->protocol, log);
    if (!identity) co_return;
  } else if (route->auth == Auth::kAdmin && CheckAdminKey(ex.request())) {
    co_return co_await Refuse(ex, route, log);
  }
  if (!co_await ex.ReadBody()) {
    log.error = "request body not received";
    co_return;
  }
  switch (route->kind) {
    case Kind::kOpenAiChat:
      co_return co_await HandleOpenAiChat(ex, *identity, log);
    case Kind::kEmbeddings:
      co_return co_await HandleEmbeddings(ex, *identity, log);
    case Kind::kImages:
      co_return co_await HandleImages(ex, *identity, log);
    case Kind::kTasks:
      co_return co_await HandleTasks(ex, *identity, log);
    case Kind::kAnthropicMessages:
      co_return co_await HandleAnthropicMessages(ex, *identity, log);
    case Kind::kGeminiModel:
      if (ex.request().path.find(':') != std::string::npos)
        co_return co_await HandleGemini(ex, *identity, log);
      break;
    default:
      break;
  }
  co_await DispatchOther(ex, *route, std::move(identity), log);
}

// A request refused before its route is served: an unknown path, a method the route does
// not take, an admin call without the admin key.
net::awaitable<void> Gateway::Refuse(HttpExchange& ex, const Route* route, RequestLog& log) {
  const HttpRequest& req = ex.request();
  if (!route) {
    log.route = "unknown";
    co_return co_await SendError(
        ex, ProtocolOfPath(req.path),
        {404, absl::StrCat("Unknown request URL: ", req.method, " ", req.path, "."), "", "unknown_url"}, log);
  }
  log.route = route->name;
  if (!route->method.empty() && req.method != route->method) {
    HeaderList allow;
    allow.emplace_back("allow", std::string(route->method));
    co_return co_await SendError(
        ex, route->protocol,
        {405, absl::StrCat("Method ", req.method, " is not allowed on ", req.path, "."), "", ""}, log,
        std::move(allow));
  }
  // Else Dispatch found the admin key missing or wrong.
  auto error = CheckAdminKey(req);
  AuditEntry refused;  // a refused admin call is audited too, as unauthenticated
  WriteAudit(req, log, "unauthenticated", refused, error->status);
  co_await SendError(ex, route->protocol, *error, log);
}

// The routes answered in one piece: probes, metrics, the catalog, balance, usage, admin.
net::awaitable<void> Gateway::DispatchOther(HttpExchange& ex, const Route& route,
                                            std::optional<auth::v1::Identity> identity,
                                            RequestLog& log) {
  HttpRequest& req = ex.request();
  HeaderList id;
  AddRequestId(id, log.request_id);
  const std::string_view text = kTextPlain;
  switch (route.kind) {
    case Kind::kHealth:
      co_return co_await ex.Send(200, text, std::string(kOk), id);
    case Kind::kReady:
      if (ready()) co_return co_await ex.Send(200, text, std::string(kReady), id);
      co_return co_await ex.Send(503, text, std::string(draining_ ? kDraining : kStarting), id);
    case Kind::kMetrics:
      co_return co_await ex.Send(200, kPrometheusText, SerializeMetrics(), id);
    default:
      break;
  }
  ResponseWriter w;
  switch (route.kind) {
    case Kind::kAnthropicCountTokens:
      HandleAnthropicCountTokens(req, *identity, w, log);
      break;
    case Kind::kGeminiModel:
    case Kind::kGeminiModels:
      if (req.method != "GET") {
        HttpError e(405, absl::StrCat("Method ", req.method, " is not allowed on ", req.path, "."));
        SendError(w, ApiProtocol::kGemini, e, log);
        break;
      }
      HandleGeminiModels(req, *identity, w, log);
      break;
    case Kind::kModels:
      HandleModels(req, *identity, w, log);  // from the local catalog: no wait
      break;
    case Kind::kBalance: {
      auto fn = [&] { HandleBalance(*identity, w, log); };
      co_await RunBlocking(blocking_, fn);
      break;
    }
    case Kind::kUsage: {
      auto fn = [&] { HandleUsage(req, *identity, w, log); };
      co_await RunBlocking(blocking_, fn);
      break;
    }
    case Kind::kAdmin: {
      auto fn = [&] { HandleAdmin(req, w, log); };
      co_await RunBlocking(blocking_, fn);
      break;
    }
    default:
      break;
  }
  co_await ex.Send(w.status, w.content_type, std::move(w.body), std::move(w.headers));
}

void Gateway::SendJson(ResponseWriter& w, int status, const std::string& body, RequestLog& log) {
  HeaderList headers;
  AddRequestId(headers, log.request_id);
  w.Send(status, "application/json", body, headers);
}

void Gateway::SendError(ResponseWriter& w, ApiProtocol protocol, const HttpError& error,
                        RequestLog& log, HeaderList headers) {
  log.error = error.message;
  AddRequestId(headers, log.request_id);
  w.Send(error.status, "application/json", ErrorBody(protocol, error, log.request_id), headers);
}

net::awaitable<void> Gateway::SendError(HttpExchange& ex, ApiProtocol protocol,
                                        const HttpError& error, RequestLog& log,
                                        HeaderList headers) {
  log.error = error.message;
  AddRequestId(headers, log.request_id);
  co_await ex.Send(error.status, kJsonType, ErrorBody(protocol, error, log.request_id),
                   std::move(headers));
}

net::awaitable<std::optional<auth::v1::Identity>> Gateway::Authenticate(HttpExchange& ex,
                                                                         ApiProtocol protocol,
                                                                         RequestLog& log) {
  const HttpRequest& req = ex.request();
  std::string key;
  std::string authz = req.Header("authorization");
  if (authz.size() > 7 && (authz.rfind("Bearer ", 0) == 0 || authz.rfind("bearer ", 0) == 0)) {
    key = authz.substr(7);
  } else if (!req.Header("x-api-key").empty()) {
    key = req.Header("x-api-key");
  } else if (!req.Header("x-goog-api-key").empty()) {
    key = req.Header("x-goog-api-key");
  } else if (auto it = req.query.find("key"); it != req.query.end()) {
    key = it->second;
  }
  while (!key.empty() && key.back() == ' ') key.pop_back();
  if (key.empty()) {
    co_await SendError(ex, protocol,
                       {401, "You didn't provide an API key. Pass it as 'Authorization: Bearer <key>' (or x-api-key / x-goog-api-key).", "", "invalid_api_key"},
                       log);
    co_return std::nullopt;
  }
  std::string hash = Sha256(key);
  std::optional<auth::v1::Identity> identity = auth_cache_.Cached(hash);
  if (!identity) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    auth::v1::AuthenticateRequest areq;
    areq.set_key_sha256(hash);
    auth::v1::AuthenticateResponse aresp;
    grpc::Status status = co_await AwaitGrpc([&](auto done) {
      auth_cache_.stub()->async()->Authenticate(&ctx, &areq, &aresp, std::move(done));
    });
    if (!status.ok()) {
      absl::Status s = FromGrpcStatus(status);
      HttpError e = HttpErrorFrom(s);
      if (s.code() == absl::StatusCode::kUnauthenticated || s.code() == absl::StatusCode::kInvalidArgument) {
        e = {401, std::string(s.message()), "", "invalid_api_key"};
      } else if (e.status >= 500) {
        e = {503, "The authentication service is unavailable; retry shortly.", "", ""};
      }
      co_await SendError(ex, protocol, e, log);
      co_return std::nullopt;
    }
    auth_cache_.Remember(hash, aresp.identity());
    identity = std::move(*aresp.mutable_identity());
  }
  log.account_id = identity->account_id();
  log.key_id = identity->key_id();
  // The key's public prefix, as the admin API shows it (never more of the secret).
  log.key_prefix = key.substr(0, std::min<size_t>(key.size(), 10));
  co_return identity;
}

void Gateway::HandleModels(const HttpRequest& req, const auth::v1::Identity& identity,
                           ResponseWriter& w, RequestLog& log) {
  auto catalog = catalog_.Get();
  if (!catalog) return SendError(w, ApiProtocol::kOpenAI, {503, "The model catalog is loading; retry shortly.", "", ""}, log);
  std::vector<std::string> allowed(identity.allowed_models().begin(), identity.allowed_models().end());
  if (req.path == "/v1/models" || req.path == "/v1/models/")
    return SendJson(w, 200, openai::ModelListJson(catalog->snapshot(), allowed), log);
  std::string id = req.path.substr(strlen("/v1/models/"));
  const auto* model = catalog->Find(id);
  bool visible = model && (allowed.empty() || std::find(allowed.begin(), allowed.end(), id) != allowed.end());
  if (!visible)
    return SendError(w, ApiProtocol::kOpenAI,
                     {404, absl::StrCat("The model `", id, "` does not exist or you do not have access to it."), "model", "model_not_found"},
                     log);
  SendJson(w, 200, openai::ModelJson(*model), log);
}

void Gateway::HandleGeminiModels(const HttpRequest& req, const auth::v1::Identity& identity,
                                 ResponseWriter& w, RequestLog& log) {
  auto catalog = catalog_.Get();
  if (!catalog) return SendError(w, ApiProtocol::kGemini, HttpError(503, "The model catalog is loading; retry shortly."), log);
  std::vector<std::string> allowed(identity.allowed_models().begin(), identity.allowed_models().end());
  if (req.path == "/v1beta/models" || req.path == "/v1beta/models/") {
    // pageSize: at most 1000 a page, 50 when absent (as Google's); pageToken: from the
    // previous page.
    auto number = [&](const char* name, int fallback, int lo, int hi) -> std::optional<int> {
      auto it = req.query.find(name);
      if (it == req.query.end() || it->second.empty()) return fallback;
      char* end = nullptr;
      long v = std::strtol(it->second.c_str(), &end, 10);
      if (*end || v < lo) return std::nullopt;
      return static_cast<int>(std::min<long>(v, hi));
    };
    auto size = number("pageSize", 50, 0, 1000);
    auto offset = number("pageToken", 0, 0, 1 << 30);
    if (!size || !offset)
      return SendError(w, ApiProtocol::kGemini,
                       HttpError(400, size ? "Invalid pageToken." : "Invalid value at 'page_size' (TYPE_INT32).",
                                 size ? "page_token" : "page_size"),
                       log);
    return SendJson(w, 200, gemini::ModelListJson(catalog->snapshot(), allowed, *size == 0 ? 50 : *size, *offset), log);
  }
  std::string id = req.path.substr(strlen("/v1beta/models/"));
  const auto* model = catalog->Find(id);
  bool visible = model && (allowed.empty() || std::find(allowed.begin(), allowed.end(), id) != allowed.end());
  if (!visible)
    return SendError(w, ApiProtocol::kGemini,
                     HttpError(404, absl::StrCat("models/", id, " is not found for API version v1beta."), "model", "model_not_found"),
                     log);
  SendJson(w, 200, gemini::ModelJson(*model), log);
}

void Gateway::HandleBalance(const auth::v1::Identity& identity, ResponseWriter& w, RequestLog& log) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  billing::v1::GetBalanceRequest breq;
  breq.set_account_id(identity.account_id());
  billing::v1::Balance b;
  auto status = backends_.billing->GetBalance(&ctx, breq, &b);
  if (!status.ok()) return SendError(w, ApiProtocol::kNexusFlow, HttpErrorFrom(FromGrpcStatus(status)), log);
  // Decimal USD written as JSON numbers exactly (a double would print as 9.99E1).
  std::string body = absl::StrCat(
      "{\"balance\":", FormatUsd(b.balance_nano_usd()), ",\"currency\":\"USD\",\"total_spent\":",
      FormatUsd(b.total_spent_nano_usd()), ",\"held\":", FormatUsd(b.held_nano_usd()),
      ",\"last_updated\":\"", Iso8601(b.last_updated().seconds()), "\"}");
  SendJson(w, 200, body, log);
}

}  // namespace nexusflow::gateway

#include "gateway/gateway.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gateway/protocols/openai.h"
#include "libs/common/ids.h"
#include "libs/common/money.h"
#include "libs/metrics/metrics.h"

namespace nexusflow::gateway {
namespace json = boost::json;

namespace {

struct Families {
  prometheus::Family<prometheus::Counter>& requests;
  LatencyHistogramFamily& seconds;
};

Families& Metrics() {
  static Families f{
      prometheus::BuildCounter()
          .Name("nexusflow_gateway_http_requests_total")
          .Help("HTTP requests by route and status code")
          .Register(MetricsRegistry()),
      NewLatencyHistogram("nexusflow_gateway_http_request_duration_seconds",
                          "Time from reading a request to its last byte, by route")};
  return f;
}

std::string Iso8601(int64_t unix_seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix_seconds),
                          absl::UTCTimeZone());
}

void WriteAccessLog(const HttpRequest& req, int status, double seconds, int64_t bytes,
                    const RequestLog& log) {
  json::object line{{"ts", Iso8601(UnixNow())},
                    {"request_id", log.request_id},
                    {"method", req.method},
                    {"path", req.path},
                    {"route", log.route},
                    {"status", status},
                    {"duration_us", static_cast<int64_t>(seconds * 1e6)},
                    {"bytes_out", bytes},
                    {"remote", req.remote}};
  if (!log.model.empty()) line["model"] = log.model;
  if (!log.account_id.empty()) line["account_id"] = log.account_id;
  if (!log.key_id.empty()) line["key_id"] = log.key_id;
  if (!log.deployment.empty()) line["deployment"] = log.deployment;
  if (log.input_tokens || log.output_tokens) {
    line["input_tokens"] = log.input_tokens;
    line["output_tokens"] = log.output_tokens;
  }
  if (log.cost_nano_usd >= 0) line["cost_usd"] = FormatUsd(log.cost_nano_usd);
  if (!log.error.empty()) line["error"] = log.error;
  std::string text = json::serialize(line);
  text.push_back('\n');
  fwrite(text.data(), 1, text.size(), stdout);
  fflush(stdout);
}

}  // namespace

Gateway::Gateway(const Config& config, Backends backends, LocalServices local)
    : config_(config),
      backends_(std::move(backends)),
      path_(backends_, local),
      auth_cache_(backends_.auth.get(), config.gateway.auth_cache_ttl_seconds),
      catalog_(backends_.routing.get()),
      retrier_(std::make_unique<SettlementRetrier>(backends_.billing.get())) {
  Metrics();
}

Gateway::~Gateway() { Stop(); }

void Gateway::Start() {
  auth_cache_.Start();
  catalog_.Start();
}

void Gateway::Stop() {
  auth_cache_.Stop();
  catalog_.Stop();
}

bool Gateway::ready() const {
  if (draining_ || !catalog_.loaded() || !auth_cache_.live()) return false;
  for (const auto& [name, channel] : backends_.remote)
    if (channel->GetState(/*try_to_connect=*/true) != GRPC_CHANNEL_READY) return false;
  return true;
}

Handler Gateway::handler() {
  return [this](const HttpRequest& req, ResponseWriter& w) {
    auto start = std::chrono::steady_clock::now();
    RequestLog log;
    log.request_id = NewId("req_", 12);
    Handle(req, w, log);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (log.route.empty()) log.route = "other";
    CounterFor(Metrics().requests, {{"route", log.route}, {"code", std::to_string(w.status())}})
        .Increment();
    HistogramFor(Metrics().seconds, {{"route", log.route}}).Observe(seconds);
    if (config_.gateway.access_log && log.route != "ops")
      WriteAccessLog(req, w.status(), seconds, w.bytes_written(), log);
  };
}

void Gateway::SendJson(ResponseWriter& w, int status, const std::string& body, RequestLog& log) {
  w.Send(status, "application/json", body, {{"x-request-id", log.request_id}});
}

void Gateway::SendError(ResponseWriter& w, ApiProtocol protocol, const HttpError& error,
                        RequestLog& log, HeaderList headers) {
  log.error = error.message;
  headers.emplace_back("x-request-id", log.request_id);
  w.Send(error.status, "application/json", ErrorBody(protocol, error, log.request_id), headers);
}

void Gateway::Handle(const HttpRequest& req, ResponseWriter& w, RequestLog& log) {
  const std::string& p = req.path;
  if (p == "/healthz" || p == "/readyz" || p == "/metrics") {
    log.route = "ops";
    HeaderList id{{"x-request-id", log.request_id}};
    if (p == "/healthz") return w.Send(200, "text/plain", "ok\n", id);
    if (p == "/readyz")
      return ready() ? w.Send(200, "text/plain", "ready\n", id)
                     : w.Send(503, "text/plain", draining_ ? "draining\n" : "starting\n", id);
    return w.Send(200, "text/plain; version=0.0.4", SerializeMetrics(), id);
  }
  auto method_not_allowed = [&] {
    SendError(w, ApiProtocol::kOpenAI, {405, absl::StrCat("Method ", req.method, " is not allowed on ", p, "."), "", ""}, log);
  };
  if (p == "/v1/chat/completions") {
    log.route = "chat_completions";
    if (req.method != "POST") return method_not_allowed();
    return HandleOpenAiChat(req, w, log);
  }
  if (p == "/v1/models" || p.rfind("/v1/models/", 0) == 0) {
    log.route = "models";
    if (req.method != "GET") return method_not_allowed();
    return HandleModels(req, w, log);
  }
  if (p == "/v1/balance") {
    log.route = "balance";
    if (req.method != "GET") return method_not_allowed();
    return HandleBalance(req, w, log);
  }
  if (p == "/v1/usage") {
    log.route = "usage";
    if (req.method != "GET") return method_not_allowed();
    return HandleUsage(req, w, log);
  }
  if (p.rfind("/admin/v1/", 0) == 0) {
    log.route = "admin";
    return HandleAdmin(req, w, log);
  }
  log.route = "unknown";
  SendError(w, ApiProtocol::kOpenAI,
            {404, absl::StrCat("Unknown request URL: ", req.method, " ", p, "."), "", "unknown_url"}, log);
}

std::optional<auth::v1::Identity> Gateway::Authenticate(const HttpRequest& req, ResponseWriter& w,
                                                        ApiProtocol protocol, RequestLog& log) {
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
    SendError(w, protocol,
              {401, "You didn't provide an API key. Pass it as 'Authorization: Bearer <key>' (or x-api-key / x-goog-api-key).", "", "invalid_api_key"},
              log);
    return std::nullopt;
  }
  auto identity = auth_cache_.Authenticate(key);
  if (!identity.ok()) {
    HttpError e = HttpErrorFrom(identity.status());
    if (identity.status().code() == absl::StatusCode::kUnauthenticated ||
        identity.status().code() == absl::StatusCode::kInvalidArgument) {
      e = {401, std::string(identity.status().message()), "", "invalid_api_key"};
    } else if (e.status >= 500) {
      e = {503, "The authentication service is unavailable; retry shortly.", "", ""};
    }
    SendError(w, protocol, e, log);
    return std::nullopt;
  }
  log.account_id = identity->account_id();
  log.key_id = identity->key_id();
  return *identity;
}

void Gateway::HandleModels(const HttpRequest& req, ResponseWriter& w, RequestLog& log) {
  auto identity = Authenticate(req, w, ApiProtocol::kOpenAI, log);
  if (!identity) return;
  auto catalog = catalog_.Get();
  if (!catalog) return SendError(w, ApiProtocol::kOpenAI, {503, "The model catalog is loading; retry shortly.", "", ""}, log);
  std::vector<std::string> allowed(identity->allowed_models().begin(), identity->allowed_models().end());
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

void Gateway::HandleBalance(const HttpRequest& req, ResponseWriter& w, RequestLog& log) {
  auto identity = Authenticate(req, w, ApiProtocol::kNexusFlow, log);
  if (!identity) return;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  billing::v1::GetBalanceRequest breq;
  breq.set_account_id(identity->account_id());
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

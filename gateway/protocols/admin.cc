// The admin API (/admin/v1/...) and the caller's own usage (/v1/usage). Money crosses
// as decimal USD strings so nothing is rounded through a float.
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gateway/gateway.h"
#include "libs/common/json_util.h"
#include "libs/rpc/internal_auth.h"
#include "libs/common/money.h"
#include "services/routing/catalog.h"

namespace nexusflow::gateway {
namespace json = boost::json;

namespace {

// "admin:" and the first 12 hex digits of the SHA-256 of the key that authenticated: names
// the credential in the audit log without revealing it.
std::string AdminFingerprint(const std::string& key) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest);
  static const char* hex = "0123456789abcdef";
  std::string out = "admin:";
  for (int i = 0; i < 6; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 15]);
  }
  return out;
}

std::string Iso(int64_t s) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(s), absl::UTCTimeZone());
}

json::object AccountJson(const billing::v1::Account& a) {
  return json::object{{"id", a.id()},
                      {"object", "account"},
                      {"name", a.name()},
                      {"balance", FormatUsd(a.balance_nano_usd())},
                      {"currency", "USD"},
                      {"total_spent", FormatUsd(a.total_spent_nano_usd())},
                      {"created_at", Iso(a.created_at().seconds())}};
}

json::object KeyJson(const auth::v1::ApiKey& k) {
  json::array models;
  for (const auto& m : k.allowed_models()) models.push_back(json::string(m));
  // The key's own limits (a plan value where absent).
  json::object limits;
  const auto& l = k.limits();
  if (l.rpm()) limits["rpm"] = l.rpm();
  if (l.rpd()) limits["rpd"] = l.rpd();
  if (l.tpm()) limits["tpm"] = l.tpm();
  if (l.concurrency()) limits["concurrency"] = l.concurrency();
  return json::object{
      {"id", k.id()},
      {"object", "api_key"},
      {"account_id", k.account_id()},
      {"name", k.name()},
      {"prefix", k.prefix()},
      {"plan", k.plan()},
      {"models", std::move(models)},
      {"limits", std::move(limits)},
      {"status", k.status() == auth::v1::KEY_STATUS_REVOKED ? "revoked" : "active"},
      {"created_at", Iso(k.created_at().seconds())},
      {"expires_at", k.has_expires_at() ? json::value(Iso(k.expires_at().seconds())) : json::value(nullptr)}};
}

std::string UsageListJson(const billing::v1::ListUsageResponse& resp) {
  json::array data;
  for (const auto& r : resp.records()) {
    const auto& u = r.usage();
    json::object& rec = data.emplace_back(json::object{
        {"request_id", r.request_id()},
        {"model", r.model()},
        {"protocol", routing::ProtocolName(r.protocol())},
        {"input_tokens", u.input_tokens()},
        {"cache_read_tokens", u.cache_read_tokens()},
        {"cache_write_tokens", u.cache_write_tokens()},
        {"output_tokens", u.output_tokens()},
        {"reasoning_tokens", u.reasoning_tokens()},
        {"cost", FormatUsd(r.cost_nano_usd())},
        {"cursor", r.sequence()},
        {"created_at", Iso(r.created_at().seconds())}}).as_object();
    // Media tasks and images: what was produced.
    if (u.images() > 0) rec["images"] = u.images();
    if (u.video_seconds() > 0) rec["video_seconds"] = u.video_seconds();
  }
  json::object body{{"object", "list"}, {"data", std::move(data)}, {"has_more", resp.has_more()}};
  if (resp.has_more()) body["next_after"] = resp.records(resp.records_size() - 1).request_id();
  return json::serialize(body);
}

// GET /admin/v1/deployments: every deployment of the catalog with its circuit as the
// connector replica that answered sees it (a deployment it never called is closed).
std::string DeploymentListJson(const routing::Catalog* catalog,
                               const connector::v1::ListDeploymentHealthResponse& health) {
  std::map<std::string, const connector::v1::DeploymentHealth*> by_id;
  for (const auto& h : health.deployments()) by_id[h.deployment_id()] = &h;
  auto time_or_null = [](bool has, const google::protobuf::Timestamp& t) {
    if (!has) return json::value(nullptr);
    return json::value(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ",
                                        absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos()),
                                        absl::UTCTimeZone()));
  };
  auto state_name = [](connector::v1::CircuitState s) {
    switch (s) {
      case connector::v1::CIRCUIT_STATE_HALF_OPEN: return "half_open";
      case connector::v1::CIRCUIT_STATE_OPEN: return "open";
      default: return "closed";
    }
  };
  auto entry = [&](const std::string& id, const std::string& provider, json::object out) {
    out["id"] = id;
    out["object"] = "deployment";
    out["provider"] = provider;
    const connector::v1::DeploymentHealth* h = by_id.count(id) ? by_id[id] : nullptr;
    connector::v1::DeploymentHealth none;
    if (!h) h = &none;
    out["state"] = state_name(h->state());
    out["ejections"] = h->ejections();
    out["consecutive_failures"] = h->consecutive_failures();
    out["window"] = json::object{{"requests", h->window_requests()}, {"failures", h->window_failures()}};
    out["next_probe_at"] = time_or_null(h->has_next_probe_at(), h->next_probe_at());
    out["retry_after_until"] = time_or_null(h->has_retry_after_until(), h->retry_after_until());
    out["first_byte_seconds"] = h->first_byte_seconds();
    out["last_error"] = h->last_error().empty() ? json::value(nullptr) : json::value(h->last_error());
    out["changed_at"] = time_or_null(h->has_changed_at(), h->changed_at());
    by_id.erase(id);
    return out;
  };
  json::array data;
  if (catalog) {
    for (const auto& m : catalog->snapshot().models())
      for (const auto& d : m.deployments())
        data.push_back(entry(d.id(), d.provider(),
                             json::object{{"model", m.id()},
                                          {"upstream_model", d.upstream_model()},
                                          {"priority", d.priority()},
                                          {"weight", d.weight()}}));
  }
  // Called before but no longer in the catalog.
  std::vector<std::pair<std::string, std::string>> rest;
  for (const auto& [id, h] : by_id) rest.emplace_back(id, h->provider());
  for (const auto& [id, provider] : rest) data.push_back(entry(id, provider, json::object{{"model", nullptr}}));
  return json::serialize(json::object{{"object", "list"}, {"replica", health.replica()}, {"data", std::move(data)}});
}

template <class Fn>
grpc::Status Call(Fn fn) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  // The gateway's identity: the admin RPCs answer to nothing else.
  if (!AdminRpcToken().empty()) ctx.AddMetadata(kAdminTokenHeader, AdminRpcToken());
  return fn(ctx);
}

bool ParsePaging(const HttpRequest& req, billing::v1::ListUsageRequest* out, HttpError* error) {
  auto parse = [&](const char* name, int64_t lo, int64_t hi, int64_t* v) {
    auto it = req.query.find(name);
    if (it == req.query.end() || it->second.empty()) return true;
    char* end = nullptr;
    long long n = std::strtoll(it->second.c_str(), &end, 10);
    if (*end || n < lo || n > hi) {
      *error = {400, absl::StrCat("Invalid '", name, "': expected an integer between ", lo, " and ", hi, "."), name, ""};
      return false;
    }
    *v = n;
    return true;
  };
  int64_t limit = 100, after = 0;
  if (!parse("limit", 1, 1000, &limit)) return false;
  out->set_limit(static_cast<int32_t>(limit));
  // `after` is the request id of the last record seen (or its numeric cursor).
  if (auto it = req.query.find("after"); it != req.query.end() && !it->second.empty()) {
    if (it->second.find_first_not_of("0123456789") == std::string::npos) {
      if (!parse("after", 1, INT64_MAX, &after)) return false;
      out->set_after(after);
    } else {
      out->set_after_request_id(it->second);
    }
  }
  return true;
}

}  // namespace

void Gateway::HandleUsage(const HttpRequest& req, const auth::v1::Identity& identity,
                          ResponseWriter& w, RequestLog& log) {
  billing::v1::ListUsageRequest lreq;
  HttpError error;
  if (!ParsePaging(req, &lreq, &error)) return SendError(w, ApiProtocol::kNexusFlow, error, log);
  lreq.set_account_id(identity.account_id());
  billing::v1::ListUsageResponse resp;
  auto s = Call([&](grpc::ClientContext& c) { return backends_.billing->ListUsage(&c, lreq, &resp); });
  if (!s.ok()) return SendError(w, ApiProtocol::kNexusFlow, HttpErrorFrom(FromGrpcStatus(s)), log);
  SendJson(w, 200, UsageListJson(resp), log);
}

std::optional<HttpError> Gateway::CheckAdminKey(const HttpRequest& req) const {
  const std::string& admin_key = config_.gateway.admin_key;
  std::string authz = req.Header("authorization");
  std::string given = authz.rfind("Bearer ", 0) == 0 ? authz.substr(7) : "";
  if (admin_key.empty())
    return HttpError{403, "The admin API is disabled: no admin key is configured.", "", ""};
  if (given.size() != admin_key.size() || CRYPTO_memcmp(given.data(), admin_key.data(), given.size()) != 0)
    return HttpError{401, "A valid admin key is required: Authorization: Bearer <admin key>.", "", "invalid_api_key"};
  return std::nullopt;
}

void Gateway::WriteAudit(const HttpRequest& req, const RequestLog& log, std::string_view who,
                         const AuditEntry& entry, int status) const {
  json::object line{{"log", "audit"},
                    {"ts", Iso(absl::ToUnixSeconds(absl::Now()))},
                    {"request_id", log.request_id},
                    {"who", who},
                    {"remote", req.remote},
                    {"action", entry.action.empty() ? absl::StrCat(req.method, " ", req.path) : entry.action},
                    {"status", status}};
  if (!entry.target.empty()) line["target"] = entry.target;
  if (!entry.details.empty()) line["details"] = entry.details;
  std::string text = json::serialize(line);
  text.push_back('\n');
  // Written at once, not batched with the access log: an admin action is rare and its
  // record must not wait in a buffer.
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(STDOUT_FILENO, text.data() + done, text.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
}

// Called once CheckAdminKey has passed. Every call leaves one audit line.
void Gateway::HandleAdmin(const HttpRequest& req, ResponseWriter& w, RequestLog& log) {
  AuditEntry audit;
  HandleAdminRoute(req, w, log, audit);
  WriteAudit(req, log, AdminFingerprint(config_.gateway.admin_key), audit, w.status);
}

void Gateway::HandleAdminRoute(const HttpRequest& req, ResponseWriter& w, RequestLog& log,
                               AuditEntry& audit) {
  const ApiProtocol P = ApiProtocol::kNexusFlow;

  std::vector<std::string> parts = absl::StrSplit(req.path.substr(strlen("/admin/v1/")), '/', absl::SkipEmpty());
  json::value body;
  if (req.method == "POST") {
    boost::system::error_code ec;
    body = json::parse(req.body.empty() ? std::string_view("{}") : std::string_view(req.body), ec);
    if (ec || !body.is_object()) return SendError(w, P, {400, "The body must be a JSON object.", "", ""}, log);
  }
  auto fail = [&](const grpc::Status& s) {
    HttpError e = HttpErrorFrom(FromGrpcStatus(s));
    SendError(w, P, e, log);
  };
  auto not_found = [&] {
    SendError(w, P, {404, absl::StrCat("Unknown admin route: ", req.method, " ", req.path), "", "unknown_url"}, log);
  };

  // /admin/v1/accounts
  if (parts.size() == 1 && parts[0] == "accounts" && req.method == "POST") {
    audit.action = "account.create";
    auto name = JsonString(body, "name");
    if (name) audit.details["name"] = *name;
    if (!name || name->empty()) return SendError(w, P, {400, "Missing required parameter: 'name'.", "name", ""}, log);
    billing::v1::CreateAccountRequest r;
    r.set_name(*name);
    billing::v1::Account a;
    auto s = Call([&](grpc::ClientContext& c) { return backends_.billing->CreateAccount(&c, r, &a); });
    if (!s.ok()) return fail(s);
    audit.target = a.id();
    return SendJson(w, 201, json::serialize(AccountJson(a)), log);
  }
  if (parts.size() == 2 && parts[0] == "accounts" && req.method == "GET") {
    audit.action = "account.get";
    audit.target = parts[1];
    billing::v1::GetAccountRequest r;
    r.set_account_id(parts[1]);
    billing::v1::Account a;
    auto s = Call([&](grpc::ClientContext& c) { return backends_.billing->GetAccount(&c, r, &a); });
    if (!s.ok()) return fail(s);
    return SendJson(w, 200, json::serialize(AccountJson(a)), log);
  }
  if (parts.size() == 3 && parts[0] == "accounts" && parts[2] == "credits" && req.method == "POST") {
    audit.action = "account.credit";
    audit.target = parts[1];
    for (const char* field : {"amount", "idempotency_key", "note"})
      if (auto v = JsonString(body, field)) audit.details[field] = *v;
    auto amount_text = JsonString(body, "amount");
    if (!amount_text)
      return SendError(w, P, {400, "Missing required parameter: 'amount' (a decimal string in USD, e.g. \"25.00\").", "amount", ""}, log);
    auto amount = ParseUsd(*amount_text);
    if (!amount.ok() || *amount <= 0)
      return SendError(w, P, {400, "Invalid 'amount': a positive decimal string in USD with at most 9 decimals.", "amount", ""}, log);
    auto key = JsonString(body, "idempotency_key");
    if (!key || key->empty())
      return SendError(w, P, {400, "Missing required parameter: 'idempotency_key'.", "idempotency_key", ""}, log);
    billing::v1::CreditRequest r;
    r.set_account_id(parts[1]);
    r.set_amount_nano_usd(*amount);
    r.set_idempotency_key(*key);
    r.set_note(JsonString(body, "note").value_or(""));
    billing::v1::CreditResponse resp;
    auto s = Call([&](grpc::ClientContext& c) { return backends_.billing->Credit(&c, r, &resp); });
    if (!s.ok()) {
      if (s.error_code() == grpc::ALREADY_EXISTS)
        return SendError(w, P, {409, s.error_message(), "idempotency_key", ""}, log);
      return fail(s);
    }
    return SendJson(w, 200, json::serialize(json::object{{"account_id", parts[1]}, {"balance", FormatUsd(resp.balance_nano_usd())}, {"currency", "USD"}}), log);
  }
  if (parts.size() == 3 && parts[0] == "accounts" && parts[2] == "usage" && req.method == "GET") {
    audit.action = "account.usage";
    audit.target = parts[1];
    billing::v1::ListUsageRequest r;
    HttpError error;
    if (!ParsePaging(req, &r, &error)) return SendError(w, P, error, log);
    r.set_account_id(parts[1]);
    billing::v1::ListUsageResponse resp;
    auto s = Call([&](grpc::ClientContext& c) { return backends_.billing->ListUsage(&c, r, &resp); });
    if (!s.ok()) return fail(s);
    return SendJson(w, 200, UsageListJson(resp), log);
  }
  // /admin/v1/deployments
  if (parts.size() == 1 && parts[0] == "deployments" && req.method == "GET") {
    audit.action = "deployment.list";
    connector::v1::ListDeploymentHealthResponse resp;
    auto s = Call([&](grpc::ClientContext& c) {
      return backends_.connector->ListDeploymentHealth(&c, connector::v1::ListDeploymentHealthRequest(), &resp);
    });
    if (!s.ok()) return fail(s);
    auto catalog = catalog_.Get();
    return SendJson(w, 200, DeploymentListJson(catalog.get(), resp), log);
  }
  // /admin/v1/keys
  if (parts.size() == 1 && parts[0] == "keys" && req.method == "POST") {
    audit.action = "key.create";
    for (const char* field : {"account_id", "name", "plan", "expires_at"})
      if (auto v = JsonString(body, field)) audit.details[field] = *v;
    if (const auto* models = JsonField(body, "models"); models && models->is_array()) audit.details["models"] = *models;
    audit.details["secret_given"] = JsonString(body, "key").has_value();  // never the secret itself
    auto account = JsonString(body, "account_id");
    if (!account || account->empty())
      return SendError(w, P, {400, "Missing required parameter: 'account_id'.", "account_id", ""}, log);
    billing::v1::GetAccountRequest gr;
    gr.set_account_id(*account);
    billing::v1::Account a;
    auto s = Call([&](grpc::ClientContext& c) { return backends_.billing->GetAccount(&c, gr, &a); });
    if (!s.ok()) return fail(s);
    auth::v1::CreateKeyRequest r;
    r.set_account_id(*account);
    r.set_name(JsonString(body, "name").value_or(""));
    std::string plan = JsonString(body, "plan").value_or("default");
    if (!config_.rate_limiter.plans.count(plan))
      return SendError(w, P, {400, absl::StrCat("Unknown plan '", plan, "'."), "plan", ""}, log);
    r.set_plan(plan);
    if (const auto* models = JsonField(body, "models"); models && !models->is_null()) {
      if (!models->is_array()) return SendError(w, P, {400, "Invalid 'models': expected an array of model ids.", "models", ""}, log);
      auto catalog = catalog_.Get();
      for (const auto& m : models->get_array()) {
        if (!m.is_string()) return SendError(w, P, {400, "Invalid 'models': expected an array of model ids.", "models", ""}, log);
        std::string id(m.get_string());
        if (catalog && !catalog->Find(id))
          return SendError(w, P, {400, absl::StrCat("Invalid 'models': unknown model '", id, "'."), "models", ""}, log);
        r.add_allowed_models(id);
      }
    }
    if (auto expires = JsonString(body, "expires_at")) {
      absl::Time t;
      std::string err;
      if (!absl::ParseTime(absl::RFC3339_full, *expires, &t, &err))
        return SendError(w, P, {400, "Invalid 'expires_at': expected an RFC 3339 time.", "expires_at", ""}, log);
      r.mutable_expires_at()->set_seconds(absl::ToUnixSeconds(t));
    }
    if (auto secret = JsonString(body, "key")) r.set_secret(*secret);
    // {"rpm", "rpd", "tpm", "concurrency"}: the key's own limits over its plan's.
    if (const auto* limits = JsonField(body, "limits"); limits && !limits->is_null()) {
      const char* bad = "Invalid 'limits': an object of rpm, rpd, tpm and concurrency, each a whole number from 1.";
      if (!limits->is_object()) return SendError(w, P, {400, bad, "limits", ""}, log);
      for (const auto& [name, value] : limits->get_object()) {
        if (!value.is_int64() || value.get_int64() < 1) return SendError(w, P, {400, bad, "limits", ""}, log);
        int64_t n = value.get_int64();
        auto* l = r.mutable_limits();
        if (name == "rpm") l->set_rpm(n);
        else if (name == "rpd") l->set_rpd(n);
        else if (name == "tpm") l->set_tpm(n);
        else if (name == "concurrency") l->set_concurrency(n);
        else return SendError(w, P, {400, bad, "limits", ""}, log);
      }
      audit.details["limits"] = *limits;
    }
    auth::v1::CreateKeyResponse resp;
    s = Call([&](grpc::ClientContext& c) { return backends_.auth->CreateKey(&c, r, &resp); });
    if (!s.ok()) {
      if (s.error_code() == grpc::ALREADY_EXISTS) return SendError(w, P, {409, s.error_message(), "key", ""}, log);
      return fail(s);
    }
    audit.target = resp.key().id();
    json::object out = KeyJson(resp.key());
    out["key"] = resp.secret();
    return SendJson(w, 201, json::serialize(out), log);
  }
  if (parts.size() == 1 && parts[0] == "keys" && req.method == "GET") {
    audit.action = "key.list";
    auth::v1::ListKeysRequest r;
    if (auto it = req.query.find("account_id"); it != req.query.end()) r.set_account_id(it->second);
    auth::v1::ListKeysResponse resp;
    auto s = Call([&](grpc::ClientContext& c) { return backends_.auth->ListKeys(&c, r, &resp); });
    if (!s.ok()) return fail(s);
    json::array data;
    for (const auto& k : resp.keys()) data.push_back(KeyJson(k));
    return SendJson(w, 200, json::serialize(json::object{{"object", "list"}, {"data", std::move(data)}}), log);
  }
  if (parts.size() == 2 && parts[0] == "keys" && req.method == "DELETE") {
    audit.action = "key.revoke";
    audit.target = parts[1];
    auth::v1::RevokeKeyRequest r;
    r.set_key_id(parts[1]);
    auth::v1::RevokeKeyResponse resp;
    auto s = Call([&](grpc::ClientContext& c) { return backends_.auth->RevokeKey(&c, r, &resp); });
    if (!s.ok()) return fail(s);
    return SendJson(w, 200, json::serialize(KeyJson(resp.key())), log);
  }
  not_found();
}

}  // namespace nexusflow::gateway

#include "libs/config/config.h"

#include <algorithm>

#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <functional>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_join.h"
#include "libs/common/money.h"
#include "libs/config/config_reference.h"

namespace nexusflow {
namespace {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void Fail(const std::string& path, const std::string& what) {
  throw ConfigError(absl::StrCat(path, ": ", what));
}

std::function<void(const std::string&, const std::set<std::string>&)>& MappingObserver() {
  static std::function<void(const std::string&, const std::set<std::string>&)> observer;
  return observer;
}

// A mapping whose keys must all be among `allowed`.
void ExpectMap(const YAML::Node& node, const std::string& path,
               const std::set<std::string>& allowed) {
  if (MappingObserver()) MappingObserver()(path, allowed);
  if (!node.IsMap()) Fail(path, "expected a mapping");
  for (const auto& kv : node) {
    std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) {
      Fail(path.empty() ? key : absl::StrCat(path, ".", key),
           absl::StrCat("unknown key (expected one of: ", absl::StrJoin(allowed, ", "), ")"));
    }
  }
}

std::string Sub(const std::string& path, const std::string& key) {
  return path.empty() ? key : absl::StrCat(path, ".", key);
}

std::string ReadString(const YAML::Node& node, const std::string& path) {
  if (!node.IsScalar()) Fail(path, "expected a string");
  return node.as<std::string>();
}

int64_t ReadInt(const YAML::Node& node, const std::string& path, int64_t min, int64_t max) {
  if (!node.IsScalar()) Fail(path, "expected an integer");
  int64_t v;
  try {
    v = node.as<int64_t>();
  } catch (const YAML::Exception&) {
    Fail(path, absl::StrCat("'", node.as<std::string>(), "' is not an integer"));
  }
  if (v < min || v > max) Fail(path, absl::StrCat(v, " is out of range [", min, ", ", max, "]"));
  return v;
}

bool ReadBool(const YAML::Node& node, const std::string& path) {
  if (!node.IsScalar()) Fail(path, "expected true or false");
  try {
    return node.as<bool>();
  } catch (const YAML::Exception&) {
    Fail(path, absl::StrCat("'", node.as<std::string>(), "' is not true or false"));
  }
}

std::vector<std::string> ReadStrings(const YAML::Node& node, const std::string& path,
                                     const std::set<std::string>& allowed = {}) {
  if (!node.IsSequence()) Fail(path, "expected a list");
  std::vector<std::string> out;
  for (size_t i = 0; i < node.size(); ++i) {
    std::string item_path = absl::StrCat(path, "[", i, "]");
    std::string v = ReadString(node[i], item_path);
    if (!allowed.empty() && !allowed.count(v))
      Fail(item_path, absl::StrCat("'", v, "' is not one of: ", absl::StrJoin(allowed, ", ")));
    out.push_back(v);
  }
  return out;
}

// host:port with a numeric port.
std::string ReadAddress(const YAML::Node& node, const std::string& path, bool allow_empty) {
  std::string v = ReadString(node, path);
  if (v.empty() && allow_empty) return v;
  auto colon = v.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == v.size())
    Fail(path, absl::StrCat("'", v, "' is not host:port"));
  for (size_t i = colon + 1; i < v.size(); ++i)
    if (v[i] < '0' || v[i] > '9') Fail(path, absl::StrCat("'", v, "' has a bad port"));
  if (std::stol(v.substr(colon + 1)) > 65535) Fail(path, absl::StrCat("'", v, "' has a bad port"));
  return v;
}

int64_t ReadUsdPerMtok(const YAML::Node& node, const std::string& path) {
  std::string text = ReadString(node, path);
  auto nano = ParseUsd(text);
  if (!nano.ok()) Fail(path, std::string(nano.status().message()));
  if (*nano < 0) Fail(path, "a price cannot be negative");
  return *nano;
}

void ParseServer(const YAML::Node& n, const std::string& p, Config::Server& s) {
  ExpectMap(n, p, {"http_listen", "grpc_listen", "metrics_listen", "drain_grace_seconds",
                   "io_threads", "idle_timeout_seconds", "header_timeout_ms", "body_timeout_ms",
                   "send_timeout_seconds", "max_header_bytes", "max_header_count",
                   "max_connections", "max_connections_per_ip", "reuse_port", "internal_token",
                   "admin_rpc_token", "grpc_reflection"});
  if (n["http_listen"]) s.http_listen = ReadAddress(n["http_listen"], Sub(p, "http_listen"), false);
  if (n["grpc_listen"]) s.grpc_listen = ReadAddress(n["grpc_listen"], Sub(p, "grpc_listen"), false);
  if (n["metrics_listen"])
    s.metrics_listen = ReadAddress(n["metrics_listen"], Sub(p, "metrics_listen"), true);
  if (n["drain_grace_seconds"])
    s.drain_grace_seconds = ReadInt(n["drain_grace_seconds"], Sub(p, "drain_grace_seconds"), 0, 3600);
  auto read = [&](const char* key, int& out, int64_t lo, int64_t hi) {
    if (n[key]) out = static_cast<int>(ReadInt(n[key], Sub(p, key), lo, hi));
  };
  read("io_threads", s.io_threads, 0, 256);
  read("idle_timeout_seconds", s.idle_timeout_seconds, 1, 86400);
  read("header_timeout_ms", s.header_timeout_ms, 100, 600000);
  read("body_timeout_ms", s.body_timeout_ms, 100, 3600000);
  read("send_timeout_seconds", s.send_timeout_seconds, 1, 86400);
  read("max_header_bytes", s.max_header_bytes, 1024, 1 << 20);
  read("max_header_count", s.max_header_count, 8, 10000);
  read("max_connections", s.max_connections, 1, 10000000);
  read("max_connections_per_ip", s.max_connections_per_ip, 0, 10000000);
  if (n["reuse_port"]) s.reuse_port = ReadBool(n["reuse_port"], Sub(p, "reuse_port"));
  if (n["internal_token"]) {
    s.internal_token = ReadString(n["internal_token"], Sub(p, "internal_token"));
    if (!s.internal_token.empty() && s.internal_token.size() < 16)
      Fail(Sub(p, "internal_token"), "at least 16 characters");
    for (char c : s.internal_token)
      if (c <= ' ' || c > '~') Fail(Sub(p, "internal_token"), "printable ASCII without spaces");
  }
  if (n["admin_rpc_token"]) {
    s.admin_rpc_token = ReadString(n["admin_rpc_token"], Sub(p, "admin_rpc_token"));
    if (!s.admin_rpc_token.empty() && s.admin_rpc_token.size() < 16)
      Fail(Sub(p, "admin_rpc_token"), "at least 16 characters");
    for (char c : s.admin_rpc_token)
      if (c <= ' ' || c > '~') Fail(Sub(p, "admin_rpc_token"), "printable ASCII without spaces");
  }
  if (n["grpc_reflection"]) s.grpc_reflection = ReadBool(n["grpc_reflection"], Sub(p, "grpc_reflection"));
}

void ParseModel(const YAML::Node& n, const std::string& p, ModelConfig& m) {
  ExpectMap(n, p, {"id", "owned_by", "protocols", "capabilities", "context_window",
                   "max_output_tokens", "pricing", "deployments"});
  if (!n["id"]) Fail(p, "missing 'id'");
  m.id = ReadString(n["id"], Sub(p, "id"));
  if (m.id.empty()) Fail(Sub(p, "id"), "must not be empty");
  if (n["owned_by"]) m.owned_by = ReadString(n["owned_by"], Sub(p, "owned_by"));
  m.protocols = n["protocols"] ? ReadStrings(n["protocols"], Sub(p, "protocols"),
                                             {"openai", "anthropic", "gemini"})
                               : std::vector<std::string>{"openai", "anthropic", "gemini"};
  m.capabilities = n["capabilities"]
                       ? ReadStrings(n["capabilities"], Sub(p, "capabilities"),
                                     {"chat", "tools", "vision", "reasoning", "embedding",
                                      "image", "video"})
                       : std::vector<std::string>{"chat"};
  if (n["context_window"])
    m.context_window = ReadInt(n["context_window"], Sub(p, "context_window"), 1, INT32_MAX);
  if (n["max_output_tokens"])
    m.max_output_tokens = ReadInt(n["max_output_tokens"], Sub(p, "max_output_tokens"), 1, INT32_MAX);
  std::string pp = Sub(p, "pricing");
  if (!n["pricing"]) Fail(p, "missing 'pricing'");
  const YAML::Node& pr = n["pricing"];
  ExpectMap(pr, pp, {"input", "output", "cache_read", "cache_write", "cache_write_1h", "image", "video_second"});
  // Media models are priced per image or per second of video (USD), token models per
  // million tokens.
  if (pr["image"]) m.price.image = ReadUsdPerMtok(pr["image"], Sub(pp, "image"));
  if (pr["video_second"]) m.price.video_second = ReadUsdPerMtok(pr["video_second"], Sub(pp, "video_second"));
  if (!pr["input"] && !pr["image"] && !pr["video_second"])
    Fail(pp, "missing 'input' (USD per million input tokens), or 'image' / 'video_second' for a media model");
  m.price.input = pr["input"] ? ReadUsdPerMtok(pr["input"], Sub(pp, "input")) : 0;
  m.price.output = pr["output"] ? ReadUsdPerMtok(pr["output"], Sub(pp, "output")) : 0;
  m.price.cache_read = pr["cache_read"] ? ReadUsdPerMtok(pr["cache_read"], Sub(pp, "cache_read"))
                                        : m.price.input / 10;
  m.price.cache_write = pr["cache_write"]
                            ? ReadUsdPerMtok(pr["cache_write"], Sub(pp, "cache_write"))
                            : m.price.input * 5 / 4;
  // 0: 1-hour writes cost what 5-minute writes cost (providers without 1-hour caching).
  m.price.cache_write_1h =
      pr["cache_write_1h"] ? ReadUsdPerMtok(pr["cache_write_1h"], Sub(pp, "cache_write_1h")) : 0;
  std::string dp = Sub(p, "deployments");
  if (!n["deployments"] || !n["deployments"].IsSequence() || n["deployments"].size() == 0)
    Fail(dp, "expected a non-empty list of deployments");
  for (size_t i = 0; i < n["deployments"].size(); ++i) {
    const YAML::Node& d = n["deployments"][i];
    std::string ip = absl::StrCat(dp, "[", i, "]");
    ExpectMap(d, ip, {"provider", "model", "weight", "priority"});
    DeploymentConfig dc;
    if (!d["provider"]) Fail(ip, "missing 'provider'");
    dc.provider = ReadString(d["provider"], Sub(ip, "provider"));
    dc.upstream_model = d["model"] ? ReadString(d["model"], Sub(ip, "model")) : m.id;
    if (d["weight"]) dc.weight = ReadInt(d["weight"], Sub(ip, "weight"), 0, 1000000);
    if (d["priority"]) dc.priority = ReadInt(d["priority"], Sub(ip, "priority"), 0, 1000);
    m.deployments.push_back(dc);
  }
}

Config ParseRoot(const YAML::Node& root) {
  Config c;
  if (!root || root.IsNull()) return c;
  ExpectMap(root, "", {"server", "services", "gateway", "auth", "routing", "rate_limiter",
                       "billing_ledger", "provider_connector"});
  if (root["server"]) ParseServer(root["server"], "server", c.server);
  if (const YAML::Node& s = root["services"]) {
    std::set<std::string> targets(AllTargets().begin(), AllTargets().end());
    targets.erase("gateway");
    ExpectMap(s, "services", targets);
    for (const auto& kv : s) {
      std::string key = kv.first.as<std::string>();
      // One address, or the replicas' addresses separated by commas.
      std::string list = ReadString(kv.second, Sub("services", key));
      for (absl::string_view one : absl::StrSplit(list, ',')) {
        YAML::Node item(std::string{one});
        ReadAddress(item, Sub("services", key), false);
      }
      c.services[key] = list;
    }
  }
  if (const YAML::Node& g = root["gateway"]) {
    ExpectMap(g, "gateway", {"admin_key", "auth_cache_ttl_seconds", "max_body_bytes",
                             "access_log", "default_max_output_tokens", "outbox",
                             "settlement_max_attempts", "image_wait_seconds"});
    if (g["admin_key"]) c.gateway.admin_key = ReadString(g["admin_key"], "gateway.admin_key");
    if (g["auth_cache_ttl_seconds"])
      c.gateway.auth_cache_ttl_seconds =
          ReadInt(g["auth_cache_ttl_seconds"], "gateway.auth_cache_ttl_seconds", 0, 86400);
    if (g["max_body_bytes"])
      c.gateway.max_body_bytes = ReadInt(g["max_body_bytes"], "gateway.max_body_bytes", 1024,
                                         int64_t{1} << 30);
    if (g["access_log"]) c.gateway.access_log = ReadBool(g["access_log"], "gateway.access_log");
    if (g["default_max_output_tokens"])
      c.gateway.default_max_output_tokens = ReadInt(
          g["default_max_output_tokens"], "gateway.default_max_output_tokens", 1, INT32_MAX);
    if (g["outbox"]) {
      c.gateway.outbox = ReadString(g["outbox"], "gateway.outbox");
      if (c.gateway.outbox.empty()) Fail("gateway.outbox", "must not be empty");
    }
    if (g["settlement_max_attempts"])
      c.gateway.settlement_max_attempts = static_cast<int>(
          ReadInt(g["settlement_max_attempts"], "gateway.settlement_max_attempts", 1, 1000000));
    if (g["image_wait_seconds"])
      c.gateway.image_wait_seconds =
          static_cast<int>(ReadInt(g["image_wait_seconds"], "gateway.image_wait_seconds", 1, 3600));
  }
  if (const YAML::Node& a = root["auth"]) {
    ExpectMap(a, "auth", {"database"});
    if (a["database"]) c.auth.database = ReadString(a["database"], "auth.database");
  }
  if (const YAML::Node& r = root["routing"]) {
    ExpectMap(r, "routing", {"models"});
    if (r["models"]) {
      if (!r["models"].IsSequence()) Fail("routing.models", "expected a list");
      std::set<std::string> seen;
      for (size_t i = 0; i < r["models"].size(); ++i) {
        ModelConfig m;
        std::string p = absl::StrCat("routing.models[", i, "]");
        ParseModel(r["models"][i], p, m);
        if (!seen.insert(m.id).second) Fail(p, absl::StrCat("duplicate model id '", m.id, "'"));
        c.routing.models.push_back(std::move(m));
      }
    }
  }
  if (const YAML::Node& rl = root["rate_limiter"]) {
    ExpectMap(rl, "rate_limiter", {"plans", "store", "redis_failure", "redis_timeout_ms"});
    auto& out = c.rate_limiter;
    if (rl["store"]) {
      out.store = ReadString(rl["store"], "rate_limiter.store");
      if (out.store != "memory" && out.store.rfind("redis://", 0) != 0)
        Fail("rate_limiter.store",
             absl::StrCat("'", out.store, "' is neither memory nor a redis:// URL"));
    }
    if (rl["redis_failure"]) {
      out.redis_failure = ReadString(rl["redis_failure"], "rate_limiter.redis_failure");
      if (out.redis_failure != "open" && out.redis_failure != "closed")
        Fail("rate_limiter.redis_failure",
             absl::StrCat("'", out.redis_failure, "' is neither open nor closed"));
    }
    if (rl["redis_timeout_ms"])
      out.redis_timeout_ms =
          ReadInt(rl["redis_timeout_ms"], "rate_limiter.redis_timeout_ms", 1, 60000);
    if (const YAML::Node& plans = rl["plans"]) {
      if (!plans.IsMap()) Fail("rate_limiter.plans", "expected a mapping of plan names");
      for (const auto& kv : plans) {
        std::string name = kv.first.as<std::string>();
        std::string p = Sub("rate_limiter.plans", name);
        ExpectMap(kv.second, p, {"rpm", "rpd", "tpm", "concurrency"});
        PlanLimits l;
        if (kv.second["rpm"]) l.rpm = ReadInt(kv.second["rpm"], Sub(p, "rpm"), 0, INT64_MAX / 4);
        if (kv.second["rpd"]) l.rpd = ReadInt(kv.second["rpd"], Sub(p, "rpd"), 0, INT64_MAX / 4);
        if (kv.second["tpm"]) l.tpm = ReadInt(kv.second["tpm"], Sub(p, "tpm"), 0, INT64_MAX / 4);
        if (kv.second["concurrency"])
          l.concurrency = ReadInt(kv.second["concurrency"], Sub(p, "concurrency"), 0, 1 << 30);
        c.rate_limiter.plans[name] = l;
      }
    }
  }
  if (const YAML::Node& b = root["billing_ledger"]) {
    ExpectMap(b, "billing_ledger", {"database", "overdraft_usd"});
    if (b["database"]) c.billing_ledger.database = ReadString(b["database"], "billing_ledger.database");
    if (b["overdraft_usd"]) {
      auto nano = ParseUsd(ReadString(b["overdraft_usd"], "billing_ledger.overdraft_usd"));
      if (!nano.ok()) Fail("billing_ledger.overdraft_usd", std::string(nano.status().message()));
      // Up to a million USD: far from where balance − held − amount could overflow.
      if (*nano < 0 || *nano > 1'000'000 * kNanoPerUsd)
        Fail("billing_ledger.overdraft_usd", "must be between 0 and 1000000 USD");
      c.billing_ledger.overdraft = *nano;
    }
  }
  if (const YAML::Node& pc = root["provider_connector"]) {
    std::string p = "provider_connector";
    ExpectMap(pc, p, {"connect_timeout_ms", "request_timeout_ms", "max_connections_per_host",
                      "max_attempts", "retry_deadline_ms", "first_byte_timeout_ms", "circuit_breaker",
                      "providers", "media"});
    auto& out = c.provider_connector;
    if (pc["connect_timeout_ms"])
      out.connect_timeout_ms = ReadInt(pc["connect_timeout_ms"], Sub(p, "connect_timeout_ms"), 1, 600000);
    if (pc["request_timeout_ms"])
      out.request_timeout_ms = ReadInt(pc["request_timeout_ms"], Sub(p, "request_timeout_ms"), 1, 86400000);
    if (pc["max_connections_per_host"])
      out.max_connections_per_host =
          ReadInt(pc["max_connections_per_host"], Sub(p, "max_connections_per_host"), 1, 65536);
    if (const YAML::Node& media = pc["media"]) {
      std::string mp = Sub(p, "media");
      ExpectMap(media, mp, {"task_store", "workers", "max_in_flight", "max_per_key",
                            "max_per_deployment", "lease_seconds", "poll_min_ms", "poll_max_ms",
                            "task_timeout_seconds", "result_ttl_hours"});
      auto& m = out.media;
      if (media["task_store"]) m.task_store = ReadString(media["task_store"], Sub(mp, "task_store"));
      auto read = [&](const char* key, int& v, int64_t lo, int64_t hi) {
        if (media[key]) v = static_cast<int>(ReadInt(media[key], Sub(mp, key), lo, hi));
      };
      read("workers", m.workers, 1, 64);
      read("max_in_flight", m.max_in_flight, 1, 100000);
      read("max_per_key", m.max_per_key, 0, 100000);
      read("max_per_deployment", m.max_per_deployment, 1, 100000);
      read("lease_seconds", m.lease_seconds, 5, 3600);
      read("poll_min_ms", m.poll_min_ms, 10, 600000);
      read("poll_max_ms", m.poll_max_ms, 10, 600000);
      read("task_timeout_seconds", m.task_timeout_seconds, 10, 7 * 86400);
      read("result_ttl_hours", m.result_ttl_hours, 1, 24 * 30);
      if (m.poll_max_ms < m.poll_min_ms) Fail(Sub(mp, "poll_max_ms"), "must not be below poll_min_ms");
    }
    auto read = [](const YAML::Node& n, const std::string& path, const char* key, int& v, int64_t lo, int64_t hi) {
      if (n[key]) v = static_cast<int>(ReadInt(n[key], Sub(path, key), lo, hi));
    };
    read(pc, p, "max_attempts", out.max_attempts, 1, 100);
    read(pc, p, "retry_deadline_ms", out.retry_deadline_ms, 0, 86400000);
    read(pc, p, "first_byte_timeout_ms", out.first_byte_timeout_ms, 0, 86400000);
    if (const YAML::Node& cb = pc["circuit_breaker"]) {
      std::string cp = Sub(p, "circuit_breaker");
      ExpectMap(cb, cp, {"consecutive_failures", "error_percent", "window_seconds", "min_requests",
                         "open_ms", "max_open_ms", "max_retry_after_ms", "half_open_probes",
                         "slow_first_byte_ms"});
      auto& b = out.circuit_breaker;
      read(cb, cp, "consecutive_failures", b.consecutive_failures, 0, 1000000);
      read(cb, cp, "error_percent", b.error_percent, 0, 100);
      read(cb, cp, "window_seconds", b.window_seconds, 1, 3600);
      read(cb, cp, "min_requests", b.min_requests, 1, 1000000);
      read(cb, cp, "open_ms", b.open_ms, 1, 86400000);
      read(cb, cp, "max_open_ms", b.max_open_ms, 1, 86400000);
      read(cb, cp, "max_retry_after_ms", b.max_retry_after_ms, 0, 86400000);
      read(cb, cp, "half_open_probes", b.half_open_probes, 1, 1000);
      read(cb, cp, "slow_first_byte_ms", b.slow_first_byte_ms, 0, 86400000);
      if (b.max_open_ms < b.open_ms) Fail(Sub(cp, "max_open_ms"), "must be at least open_ms");
    }
    if (const YAML::Node& provs = pc["providers"]) {
      if (!provs.IsMap()) Fail(Sub(p, "providers"), "expected a mapping of provider names");
      for (const auto& kv : provs) {
        std::string name = kv.first.as<std::string>();
        std::string pp = absl::StrCat(p, ".providers.", name);
        ExpectMap(kv.second, pp, {"kind", "base_url", "api_key"});
        ProviderConfig prov;
        if (!kv.second["kind"]) Fail(pp, "missing 'kind'");
        // The wire protocols provider-connector has a codec for.
        static const std::vector<std::string> kinds = {"openai", "anthropic", "gemini", "dashscope"};
        prov.kind = ReadString(kv.second["kind"], Sub(pp, "kind"));
        if (std::find(kinds.begin(), kinds.end(), prov.kind) == kinds.end())
          Fail(Sub(pp, "kind"), absl::StrCat("'", prov.kind, "' is not a supported provider kind (",
                                             absl::StrJoin(kinds, ", "), ")"));
        if (!kv.second["base_url"]) Fail(pp, "missing 'base_url'");
        prov.base_url = ReadString(kv.second["base_url"], Sub(pp, "base_url"));
        if (prov.base_url.rfind("http://", 0) != 0 && prov.base_url.rfind("https://", 0) != 0)
          Fail(Sub(pp, "base_url"), "must start with http:// or https://");
        while (!prov.base_url.empty() && prov.base_url.back() == '/') prov.base_url.pop_back();
        if (kv.second["api_key"]) prov.api_key = ReadString(kv.second["api_key"], Sub(pp, "api_key"));
        out.providers[name] = prov;
      }
    }
  }
  // Cross-section references.
  for (size_t i = 0; i < c.routing.models.size(); ++i) {
    for (size_t j = 0; j < c.routing.models[i].deployments.size(); ++j) {
      const auto& d = c.routing.models[i].deployments[j];
      if (!c.provider_connector.providers.count(d.provider))
        Fail(absl::StrCat("routing.models[", i, "].deployments[", j, "].provider"),
             absl::StrCat("'", d.provider, "' is not in provider_connector.providers"));
    }
  }
  if (!c.rate_limiter.plans.count("default")) c.rate_limiter.plans["default"] = PlanLimits{};
  return c;
}

}  // namespace

void SetMappingObserver(std::function<void(const std::string&, const std::set<std::string>&)> observer) {
  MappingObserver() = std::move(observer);
}

const std::vector<std::string>& AllTargets() {
  static const std::vector<std::string> kTargets = {
      "auth", "routing", "rate-limiter", "billing-ledger", "provider-connector", "gateway"};
  return kTargets;
}

absl::StatusOr<std::string> ExpandEnv(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  int line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n') ++line;
    if (text[i] == '$' && i + 1 < text.size() && text[i + 1] == '{') {
      // The matching brace: a default may itself hold ${…}, e.g. a database setting
      // ${NEXUSFLOW_LEDGER_DATABASE:-${NEXUSFLOW_DATA_DIR:-./var}/ledger.db}.
      size_t end = i + 2;
      for (int depth = 1; end < text.size(); ++end) {
        if (text[end] == '{' && text[end - 1] == '$') ++depth;
        if (text[end] == '}' && --depth == 0) break;
      }
      if (end >= text.size())
        return absl::InvalidArgumentError(absl::StrCat("line ", line, ": unterminated ${"));
      std::string expr = text.substr(i + 2, end - i - 2);
      std::string name = expr, fallback;
      bool has_default = false;
      if (auto d = expr.find(":-"); d != std::string::npos) {
        name = expr.substr(0, d);
        fallback = expr.substr(d + 2);
        has_default = true;
      }
      const char* v = std::getenv(name.c_str());
      if (v && *v) {
        out.append(v);
      } else if (has_default) {
        auto expanded = ExpandEnv(fallback);
        if (!expanded.ok())
          return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", expanded.status().message()));
        out.append(*expanded);
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "line ", line, ": environment variable ", name, " is not set (use ${", name,
            ":-default} for an optional one)"));
      }
      i = end;
      continue;
    }
    out.push_back(text[i]);
  }
  return out;
}

absl::StatusOr<Config> ParseConfig(const std::string& yaml_text) {
  auto expanded = ExpandEnv(yaml_text);
  if (!expanded.ok()) return expanded.status();
  try {
    return ParseRoot(YAML::Load(*expanded));
  } catch (const ConfigError& e) {
    return absl::InvalidArgumentError(e.what());
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("YAML: ", e.what()));
  }
}

absl::StatusOr<Config> LoadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = ParseConfig(ss.str());
  if (!c.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", c.status().message()));
  return c;
}

}  // namespace nexusflow

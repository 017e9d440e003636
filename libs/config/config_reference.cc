#include "libs/config/config_reference.h"

#include <map>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace nexusflow {

const std::vector<ConfigKey>& ConfigReference() {
  static const std::vector<ConfigKey> kKeys = {
      // server
      {"server", "section", "", "", "This process's listeners, timeouts and internal credential."},
      {"server.http_listen", "host:port", "127.0.0.1:8080", "127.0.0.1:8080", "The gateway's HTTP listener."},
      {"server.grpc_listen", "host:port", "127.0.0.1:9090", "127.0.0.1:9090",
       "This process's gRPC server (the services, and health). Loopback unless `internal_token` is set."},
      {"server.metrics_listen", "host:port or empty", "", "127.0.0.1:9300",
       "An extra listener serving only `/metrics` (processes without the gateway); empty: none."},
      {"server.drain_grace_seconds", "integer 0–3600", "10", "10",
       "On SIGTERM: `/readyz` answers 503 and requests in flight get this long to finish."},
      {"server.io_threads", "integer 0–256", "0", "2", "Event-loop threads; 0 = one per hardware thread."},
      {"server.idle_timeout_seconds", "integer 1–86400", "120", "120", "A keep-alive connection without a request is closed after this."},
      {"server.header_timeout_ms", "integer 100–600000", "10000", "10000",
       "The request line and headers must arrive within this, from their first byte."},
      {"server.body_timeout_ms", "integer 100–3600000", "60000", "60000", "The whole request body must arrive within this."},
      {"server.send_timeout_seconds", "integer 1–86400", "120", "120", "One write to a client that does not read."},
      {"server.max_header_bytes", "integer 1024–1048576", "65536", "65536", "Request line and headers together (431 beyond)."},
      {"server.max_header_count", "integer 8–10000", "100", "100", "Headers per request (431 beyond)."},
      {"server.max_connections", "integer ≥ 1", "20000", "20000", "Open connections; beyond, 503 with `retry-after`. Lowered at start to what the open-files limit serves (less 256, halved when the connector runs in the same process)."},
      {"server.max_connections_per_ip", "integer ≥ 0", "0", "0",
       "Open connections from one client address; beyond, 429 with `retry-after`; 0 = no cap."},
      {"server.reuse_port", "bool", "false", "false", "SO_REUSEPORT on `http_listen`: several gateways share one port."},
      {"server.internal_token", "string, ≥ 16 printable characters", "", "change-me-internal-token",
       "Internal gRPC calls must present it; required when `grpc_listen` is not loopback."},
      {"server.admin_rpc_token", "string, ≥ 16 printable characters", "", "change-me-admin-rpc-token",
       "The gateway's identity for the admin RPCs (accounts, credits, keys). Give it to the gateway, auth and "
       "billing-ledger only; empty: the internal token suffices."},
      {"server.grpc_reflection", "bool", "false", "false", "Serve gRPC server reflection."},
      // services
      {"services", "section", "", "",
       "Where each target is reached when it runs in another process: `host:port`, or replicas' "
       "addresses separated by commas (calls are spread round robin)."},
      {"services.auth", "host:port[,host:port…]", "", "127.0.0.1:9091", "The auth service."},
      {"services.routing", "host:port[,host:port…]", "", "127.0.0.1:9092", "The routing service."},
      {"services.rate-limiter", "host:port[,host:port…]", "", "127.0.0.1:9093", "The rate limiter."},
      {"services.billing-ledger", "host:port[,host:port…]", "", "127.0.0.1:9094",
       "The billing ledger (called by the gateway, and by provider-connector to settle media tasks)."},
      {"services.provider-connector", "host:port[,host:port…]", "", "127.0.0.1:9095", "The provider connector."},
      // gateway
      {"gateway", "section", "", "", "The HTTP edge."},
      {"gateway.admin_key", "string", "", "change-me-admin-key", "The admin API's bearer key; empty disables the admin API."},
      {"gateway.auth_cache_ttl_seconds", "integer 0–86400", "30", "30",
       "How long an API key's identity is cached while the revocation watch is live."},
      {"gateway.max_body_bytes", "integer 1024–1073741824", "16777216", "16777216", "Request body limit (413 beyond)."},
      {"gateway.access_log", "bool", "true", "true", "One JSON line per request on stdout."},
      {"gateway.default_max_output_tokens", "integer ≥ 1", "4096", "4096",
       "Output tokens a hold assumes when neither the request nor the model says."},
      {"gateway.outbox", "file path", "./var/outbox.db", "./var/outbox.db",
       "The settlement outbox (SQLite), one per gateway process, on storage that outlives it."},
      {"gateway.settlement_max_attempts", "integer 1–1000000", "50", "50",
       "Errors billing may answer one settlement before it is set aside as a dead letter."},
      {"gateway.image_wait_seconds", "integer 1–3600", "120", "120",
       "`POST /v1/images/generations` waits this long for its task, then answers 504 naming the task."},
      // auth
      {"auth", "section", "", "", "API keys and accounts' plans."},
      {"auth.database", "file path or postgresql:// URL", "./var/auth.db", "./var/auth.db",
       "The key store: SQLite, or PostgreSQL shared by auth replicas."},
      // routing
      {"routing", "section", "", "", "The model catalog (reloaded when the file changes)."},
      {"routing.models", "list", "", "", "The models, in listing order."},
      {"routing.models[].id", "string", "", "example-model", "The public model id (unique)."},
      {"routing.models[].owned_by", "string", "nexusflow", "example-vendor", "Shown in `/v1/models`."},
      {"routing.models[].protocols", "list of openai, anthropic, gemini", "[openai, anthropic, gemini]", "[openai]",
       "The public protocols that may call it."},
      {"routing.models[].capabilities", "list of chat, tools, vision, reasoning, embedding, image, video", "[chat]",
       "[chat, tools]", "What it does; `embedding`, `image`, `video` select the media and embeddings routes."},
      {"routing.models[].context_window", "integer ≥ 1", "", "131072", "Context window in tokens (shown in `/v1/models`)."},
      {"routing.models[].max_output_tokens", "integer ≥ 1", "", "8192", "Largest output in tokens; the hold's default output."},
      {"routing.models[].pricing", "section", "", "",
       "Prices as decimal USD strings. Token models: per million tokens (`input` required); media "
       "models: per image or per second of video."},
      {"routing.models[].pricing.input", "USD per million tokens", "", "\"0.40\"", "Uncached input."},
      {"routing.models[].pricing.output", "USD per million tokens", "0", "\"1.20\"", "Output, reasoning included."},
      {"routing.models[].pricing.cache_read", "USD per million tokens", "0.1 × input", "\"0.04\"", "Cached input read."},
      {"routing.models[].pricing.cache_write", "USD per million tokens", "1.25 × input", "\"0.50\"", "Cache write."},
      {"routing.models[].pricing.cache_write_1h", "USD per million tokens", "cache_write", "\"0.80\"",
       "Cache write with a 1-hour lifetime (Anthropic `ttl: \"1h\"`; Anthropic bills 2 × input)."},
      {"routing.models[].pricing.image", "USD per image", "0", "\"0.03\"", "Per image produced (image models)."},
      {"routing.models[].pricing.video_second", "USD per second", "0", "\"0.10\"", "Per second of video produced (video models)."},
      {"routing.models[].deployments", "list", "", "", "Where it runs, tried in priority order, weighted within a priority."},
      {"routing.models[].deployments[].provider", "provider name", "", "\"<provider>\"",
       "A key of `provider_connector.providers`."},
      {"routing.models[].deployments[].model", "string", "the model's id", "upstream-model", "The model's name at the provider."},
      {"routing.models[].deployments[].weight", "integer 0–1000000", "1", "1", "Share of traffic within its priority."},
      {"routing.models[].deployments[].priority", "integer 0–1000", "0", "0", "Lower is tried first."},
      // rate_limiter
      {"rate_limiter", "section", "", "", "Plans and where the live counters are."},
      {"rate_limiter.plans", "section", "", "",
       "Plans by name (`default` always exists); a key's own limits override its plan's. 0 or absent = unlimited."},
      {"rate_limiter.plans.<plan>", "section", "", "", "One plan."},
      {"rate_limiter.plans.<plan>.rpm", "integer ≥ 0", "0", "60", "Requests per minute."},
      {"rate_limiter.plans.<plan>.rpd", "integer ≥ 0", "0", "1000", "Requests per UTC day."},
      {"rate_limiter.plans.<plan>.tpm", "integer ≥ 0", "0", "100000", "Tokens (input + output) per minute."},
      {"rate_limiter.plans.<plan>.concurrency", "integer ≥ 0", "0", "4", "Requests in flight."},
      {"rate_limiter.store", "memory or redis:// URL", "memory", "memory",
       "`memory` (one process), or `redis://[:password@]host:port[/db]` shared by limiters and gateways."},
      {"rate_limiter.redis_failure", "open or closed", "open", "open",
       "When Redis is unreachable: `open` admits (counted, logged), `closed` answers 503."},
      {"rate_limiter.redis_timeout_ms", "integer 1–60000", "100", "100", "Redis connect and per-command timeout."},
      // billing_ledger
      {"billing_ledger", "section", "", "", "Balances, holds and usage records."},
      {"billing_ledger.database", "file path or postgresql:// URL", "./var/ledger.db", "./var/ledger.db",
       "The ledger: SQLite (one billing-ledger replica), or PostgreSQL shared by replicas."},
      {"billing_ledger.overdraft_usd", "USD 0–1000000", "0", "\"0\"",
       "How far below zero admitted requests may hold an account."},
      // provider_connector
      {"provider_connector", "section", "", "", "Upstream providers and the media task workers."},
      {"provider_connector.connect_timeout_ms", "integer 1–600000", "5000", "5000", "Upstream connect timeout."},
      {"provider_connector.request_timeout_ms", "integer 1–86400000", "600000", "600000", "A whole upstream transfer."},
      {"provider_connector.max_connections_per_host", "integer 1–65536", "20000", "20000",
       "Upstream HTTP/1.1 connections per host (= concurrent calls)."},
      {"provider_connector.max_attempts", "integer 1–100", "3", "3",
       "Deployments a request may try before its first byte reaches the caller."},
      {"provider_connector.retry_deadline_ms", "integer 0–86400000", "20000", "20000",
       "No further deployment is tried later than this after the request came."},
      {"provider_connector.first_byte_timeout_ms", "integer 0–86400000", "0", "0",
       "An upstream that has not begun its answer within this is a timeout (the next deployment is tried); 0 = off."},
      {"provider_connector.circuit_breaker", "section", "", "",
       "Each connector replica's view of every deployment's health, from its own calls."},
      {"provider_connector.circuit_breaker.consecutive_failures", "integer ≥ 0", "5", "5",
       "Failures in a row that eject a deployment; 0 = never by count."},
      {"provider_connector.circuit_breaker.error_percent", "integer 0–100", "50", "50",
       "Share of failures in the window that ejects; 0 = never by share."},
      {"provider_connector.circuit_breaker.window_seconds", "integer 1–3600", "10", "10", "The error-share window."},
      {"provider_connector.circuit_breaker.min_requests", "integer ≥ 1", "20", "20",
       "Outcomes the window needs before its share counts."},
      {"provider_connector.circuit_breaker.open_ms", "integer ≥ 1", "5000", "5000",
       "Length of a first ejection; each one in a row doubles it (±25 % jitter)."},
      {"provider_connector.circuit_breaker.max_open_ms", "integer ≥ open_ms", "60000", "60000", "Longest ejection."},
      {"provider_connector.circuit_breaker.max_retry_after_ms", "integer ≥ 0", "300000", "300000",
       "Longest upstream `retry-after` honoured."},
      {"provider_connector.circuit_breaker.half_open_probes", "integer 1–1000", "1", "1",
       "Requests let through at once to probe an ejected deployment."},
      {"provider_connector.circuit_breaker.slow_first_byte_ms", "integer ≥ 0", "0", "0",
       "A first byte later than this counts as a failure; 0 = off."},
      {"provider_connector.providers", "section", "", "", "Providers by name."},
      {"provider_connector.providers.<provider>", "section", "", "", "One provider."},
      {"provider_connector.providers.<provider>.kind", "openai, anthropic, gemini or dashscope", "", "openai",
       "Its wire format; `dashscope` is DashScope's async media protocol (images, video)."},
      {"provider_connector.providers.<provider>.base_url", "http(s) URL", "", "https://api.example.com/v1",
       "Its base URL (`…/v1` for OpenAI-compatible; the host for anthropic, gemini, dashscope)."},
      {"provider_connector.providers.<provider>.api_key", "string", "", "sk-example", "Its credential (use ${VAR})."},
      {"provider_connector.media", "section", "", "", "Async media tasks: their own store, workers and limits."},
      {"provider_connector.media.task_store", "file path or postgresql:// URL", "./var/tasks.db", "./var/tasks.db",
       "The task store: SQLite, or PostgreSQL shared by connector replicas."},
      {"provider_connector.media.workers", "integer 1–64", "1", "1", "Worker threads (each drives many tasks at once)."},
      {"provider_connector.media.max_in_flight", "integer 1–100000", "512", "512", "Tasks one process drives at once."},
      {"provider_connector.media.max_per_key", "integer 0–100000", "16", "16",
       "Tasks of one API key running at once, across replicas; 0 = no cap."},
      {"provider_connector.media.max_per_deployment", "integer 1–100000", "256", "256",
       "Tasks one process has submitted to one deployment at once."},
      {"provider_connector.media.lease_seconds", "integer 5–3600", "30", "30",
       "A worker's claim on a task; a dead worker's tasks are taken over after it."},
      {"provider_connector.media.poll_min_ms", "integer 10–600000", "1000", "1000",
       "First poll of an upstream job; doubles up to `poll_max_ms`."},
      {"provider_connector.media.poll_max_ms", "integer 10–600000, ≥ poll_min_ms", "5000", "5000", "Longest wait between polls."},
      {"provider_connector.media.task_timeout_seconds", "integer 10–604800", "3600", "3600",
       "A task not final by then fails (`upstream_timeout`) and is not charged."},
      {"provider_connector.media.result_ttl_hours", "integer 1–720", "24", "24", "Result URLs' expiry after the task ends."},
  };
  return kKeys;
}

namespace {

// "a.b[].c" → segments with list markers: {"a", "b[]", "c"}.
std::vector<std::string> Segments(const std::string& path) { return absl::StrSplit(path, '.'); }

bool IsSection(const ConfigKey& k) { return std::string(k.type) == "section" || std::string(k.type) == "list"; }

// Emits `key` and its children (in table order) at `indent` into `out`.
void EmitYaml(const std::string& prefix, int indent, std::ostringstream& out) {
  const std::string pad(indent, ' ');
  for (const ConfigKey& k : ConfigReference()) {
    std::string path = k.path;
    if (path.rfind(prefix, 0) != 0) continue;
    std::string rest = path.substr(prefix.size());
    if (rest.empty() || rest.find('.') != std::string::npos) continue;  // only direct children
    std::string name = rest;
    const bool list = name.size() > 2 && name.substr(name.size() - 2) == "[]";
    if (list) name.resize(name.size() - 2);
    if (std::string(k.type) == "list" || list) {
      // A list of mappings: one item holding every child key.
      out << pad << name << ":\n";
      std::ostringstream item;
      EmitYaml(path + "[].", indent + 4, item);
      std::string text = item.str();
      if (!text.empty()) text.replace(indent + 2, 2, "- ");
      out << text;
    } else if (IsSection(k)) {
      out << pad << name << ":\n";
      EmitYaml(path + ".", indent + 2, out);
    } else {
      out << pad << name << ": " << k.example << "\n";
    }
  }
}

std::string Cell(const std::string& s) { return absl::StrReplaceAll(s, {{"|", "\\|"}, {"\n", " "}}); }

// ${VAR} and ${VAR:-default} in a scalar, outermost first, with their defaults.
void FindVariables(const std::string& text, std::vector<std::pair<std::string, std::string>>& out) {
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] != '$' || text[i + 1] != '{') continue;
    size_t end = i + 2;
    for (int depth = 1; end < text.size(); ++end) {
      if (text[end] == '{' && text[end - 1] == '$') ++depth;
      if (text[end] == '}' && --depth == 0) break;
    }
    if (end >= text.size()) return;
    std::string expr = text.substr(i + 2, end - i - 2);
    std::string name = expr, fallback;
    if (auto d = expr.find(":-"); d != std::string::npos) {
      name = expr.substr(0, d);
      fallback = expr.substr(d + 2);
    }
    out.emplace_back(name, fallback);
    FindVariables(fallback, out);
    i = end;
  }
}

void WalkVariables(const YAML::Node& node, const std::string& path,
                   std::map<std::string, std::pair<std::string, std::string>>& vars) {
  if (node.IsMap()) {
    for (const auto& kv : node) {
      std::string key = kv.first.as<std::string>();
      WalkVariables(kv.second, path.empty() ? key : absl::StrCat(path, ".", key), vars);
    }
  } else if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) WalkVariables(node[i], absl::StrCat(path, "[", i, "]"), vars);
  } else if (node.IsScalar()) {
    std::vector<std::pair<std::string, std::string>> found;
    FindVariables(node.as<std::string>(), found);
    for (auto& [name, fallback] : found) {
      auto& entry = vars[name];
      if (!entry.first.empty()) entry.first += ", ";
      entry.first += "`" + path + "`";
      if (entry.second.empty()) entry.second = fallback;
    }
  }
}

}  // namespace

std::string ExampleConfigYaml() {
  std::ostringstream out;
  out << "# Every key of the configuration reference, set to its example value.\n";
  EmitYaml("", 0, out);
  return out.str();
}

std::string ConfigReferenceMarkdown(const std::string& config_text, const std::string& config_name) {
  std::ostringstream out;
  out << "# Configuration reference\n\n"
         "<!-- Generated by `nexusflow config-reference --config=" << config_name << "`; do not edit. -->\n\n"
         "NexusFlow reads one YAML file (`nexusflow --config=FILE`), with one section per service; every process\n"
         "reads the whole file and uses its targets' sections. `${VAR}` and `${VAR:-default}` are replaced from\n"
         "the environment before parsing, so secrets stay out of the file. Unknown keys and bad values are\n"
         "refused at start with the key's path in the message; `nexusflow --check-config=FILE` checks a file\n"
         "without starting. Only `routing` reloads when the file changes; other sections need a restart.\n\n"
         "In the paths below, `<plan>` and `<provider>` are names you choose and `[]` is an item of a list.\n";
  std::string section;
  for (const ConfigKey& k : ConfigReference()) {
    const std::string path = k.path;
    const std::string top = Segments(path)[0];
    if (top != section) {
      section = top;
      out << "\n## `" << top << "`\n\n";
      for (const ConfigKey& s : ConfigReference())
        if (std::string(s.path) == top) out << s.description << "\n\n";
      out << "| key | type | default | meaning |\n|---|---|---|---|\n";
    }
    if (path == top) continue;
    std::string def = k.default_value;
    out << "| `" << path << "` | " << Cell(k.type) << " | " << (def.empty() ? "" : "`" + Cell(def) + "`") << " | "
        << Cell(k.description) << " |\n";
  }
  if (!config_text.empty()) {
    std::map<std::string, std::pair<std::string, std::string>> vars;
    WalkVariables(YAML::Load(config_text), "", vars);
    out << "\n## Environment variables of `" << config_name << "`\n\n"
        << "The configuration `tools/run` and the tests use sets these keys from the environment:\n\n"
        << "| variable | sets | default |\n|---|---|---|\n";
    for (const auto& [name, entry] : vars)
      out << "| `" << name << "` | " << entry.first << " | "
          << (entry.second.empty() ? "" : "`" + Cell(entry.second) + "`") << " |\n";
  }
  return out.str();
}

}  // namespace nexusflow

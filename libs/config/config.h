#pragma once
// nexusflow.yaml: one file, one section per service. ${VAR} and ${VAR:-default} are
// replaced from the environment before parsing (secrets never live in the file).
// Unknown keys and bad values are rejected with the YAML path in the message.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace nexusflow {

// Limits of a rate-limit plan; 0 means unlimited.
struct PlanLimits {
  int64_t rpm = 0;          // requests per minute
  int64_t tpm = 0;          // tokens per minute
  int64_t concurrency = 0;  // requests in flight
  int64_t rpd = 0;          // requests per UTC day (a fixed window, midnight to midnight)
};

struct DeploymentConfig {
  std::string provider;        // key of provider_connector.providers
  std::string upstream_model;  // model name at the provider
  int weight = 1;    // share of traffic among the healthy deployments of its priority tier
  int priority = 0;  // lower is preferred: a tier is used while none better is healthy
};

// When a deployment is ejected and how it comes back (provider-connector, per replica).
struct CircuitBreakerConfig {
  int consecutive_failures = 5;  // failures in a row that eject; 0 = never by count
  int error_percent = 50;        // failure share in the window that ejects; 0 = never by share
  int window_seconds = 10;       // the error-share window
  int min_requests = 20;         // outcomes the window needs before its share counts
  int open_ms = 5000;            // first ejection; each one in a row doubles it
  int max_open_ms = 60000;       // cap of an ejection's length
  int max_retry_after_ms = 300000;  // cap of an honoured upstream retry-after
  int half_open_probes = 1;      // requests let through at once to probe an ejected one
  int slow_first_byte_ms = 0;    // a first byte later than this counts as a failure; 0 = off
};

// Prices in nano-USD per million tokens.
struct PriceConfig {
  int64_t input = 0;
  int64_t output = 0;
  int64_t cache_read = 0;   // default 0.1x input
  int64_t cache_write = 0;  // default 1.25x input
  int64_t cache_write_1h = 0;  // 1-hour cache write; 0 = priced like cache_write
  int64_t image = 0;         // nano-USD per image produced (image models)
  int64_t video_second = 0;  // nano-USD per second of video produced (video models)
};

struct ModelConfig {
  std::string id;
  std::string owned_by;
  std::vector<std::string> protocols;     // openai, anthropic, gemini
  std::vector<std::string> capabilities;  // chat, tools, vision, embedding, image, video
  int64_t context_window = 0;
  int64_t max_output_tokens = 0;
  PriceConfig price;
  std::vector<DeploymentConfig> deployments;
};

struct ProviderConfig {
  // Wire format: "openai", "anthropic", "gemini"; "dashscope" for DashScope's async media
  // protocol (base_url is the host, e.g. https://dashscope-intl.aliyuncs.com).
  std::string kind;
  std::string base_url;  // e.g. https://dashscope.aliyuncs.com/compatible-mode/v1
  std::string api_key;
};

struct Config {
  struct Server {
    std::string http_listen = "127.0.0.1:8080";  // gateway HTTP
    std::string grpc_listen = "127.0.0.1:9090";  // this process's gRPC server
    std::string metrics_listen;                  // extra /metrics listener; "" = none
    int drain_grace_seconds = 10;
    int io_threads = 0;               // event-loop threads; 0 = one per hardware thread
    int idle_timeout_seconds = 120;   // keep-alive connection without a request
    int header_timeout_ms = 10000;    // request line and headers, from their first byte
    int body_timeout_ms = 60000;      // the whole request body
    int send_timeout_seconds = 120;   // one write to a client that does not read
    int max_header_bytes = 65536;     // request line and headers together
    int max_header_count = 100;
    int max_connections = 20000;      // beyond: 503 with retry-after
    int max_connections_per_ip = 0;   // beyond: 429 with retry-after; 0 = no cap
    bool reuse_port = false;          // SO_REUSEPORT on http_listen: gateways share one port
    // Internal gRPC: callers present this token; required when grpc_listen is not loopback.
    std::string internal_token;
    // The gateway's identity for the admin RPCs (accounts, credits, keys): given to the
    // gateway, auth and billing-ledger only. Empty: the internal token suffices.
    std::string admin_rpc_token;
    bool grpc_reflection = false;     // serve gRPC server reflection
  } server;
  // Where each target is reached when it runs in another process.
  std::map<std::string, std::string> services;
  struct Gateway {
    std::string admin_key;
    int auth_cache_ttl_seconds = 30;
    int64_t max_body_bytes = 16 << 20;
    bool access_log = true;
    int64_t default_max_output_tokens = 4096;  // for holds when neither model nor request says
    // The settlement outbox: one SQLite file per gateway instance (two gateways never
    // share one), on storage that outlives the process.
    std::string outbox = "./var/outbox.db";
    // Errors billing answers to one settlement before the outbox sets it aside as a dead
    // letter (an unreachable billing never counts).
    int settlement_max_attempts = 50;
    // POST /v1/images/generations waits this long for its task, then answers 504 with the
    // task id (the task goes on; the caller polls /v1/tasks/{id}).
    int image_wait_seconds = 120;
  } gateway;
  struct Auth {
    // An SQLite file, or a postgresql:// (postgres://) URL for keys replicas share.
    std::string database = "./var/auth.db";
  } auth;
  struct Routing {
    std::vector<ModelConfig> models;
  } routing;
  struct RateLimiter {
    std::map<std::string, PlanLimits> plans;
    // Where the live counters are: "memory" (this process), or
    // "redis://[:password@]host:port[/db]" shared by every replica.
    std::string store = "memory";
    // When Redis cannot be reached: "open" admits (counted, logged), "closed" refuses (503).
    std::string redis_failure = "open";
    int redis_timeout_ms = 100;  // connect and per-command timeout
  } rate_limiter;
  struct BillingLedger {
    // An SQLite file, or a postgresql:// (postgres://) URL for a ledger replicas share.
    std::string database = "./var/ledger.db";
    // nano-USD an account may be held below zero by admitted requests (overdraft_usd).
    int64_t overdraft = 0;
  } billing_ledger;
  struct ProviderConnector {
    int connect_timeout_ms = 5000;
    int request_timeout_ms = 600000;
    int max_connections_per_host = 20000;  // upstream HTTP/1.1 connections = concurrent calls
    // Retries before the first byte: deployments tried per request at most, and no new
    // attempt starts later than retry_deadline_ms after the request came.
    int max_attempts = 3;
    int retry_deadline_ms = 20000;
    // An upstream that has not begun its response (status line) within this is a timeout
    // (failover, and a failure for its breaker); 0 = only request_timeout_ms.
    int first_byte_timeout_ms = 0;
    CircuitBreakerConfig circuit_breaker;
    std::map<std::string, ProviderConfig> providers;
    // Async media tasks (images, video): their own store, workers, HTTP connections and
    // concurrency, never chat's.
    struct Media {
      // An SQLite file, or a postgresql:// URL for a task store connector replicas share.
      std::string task_store = "./var/tasks.db";
      int workers = 1;            // threads driving tasks (each drives many at once)
      int max_in_flight = 512;    // tasks this process drives at once
      int max_per_key = 16;       // tasks of one API key running at once, across replicas
      int max_per_deployment = 256;  // tasks submitted to one deployment at once, per process
      int lease_seconds = 30;     // a dead worker's tasks are picked up after this
      int poll_min_ms = 1000;     // first poll of an upstream job; backs off to poll_max_ms
      int poll_max_ms = 5000;
      int task_timeout_seconds = 3600;  // a task not final by then fails (upstream_timeout)
      int result_ttl_hours = 24;  // result URLs' expiry after the task ends (DashScope: 24 h)
    } media;
  } provider_connector;
};

// Replaces ${VAR} / ${VAR:-default}; an unset ${VAR} without a default is an error.
absl::StatusOr<std::string> ExpandEnv(const std::string& text);

absl::StatusOr<Config> ParseConfig(const std::string& yaml_text);
absl::StatusOr<Config> LoadConfig(const std::string& path);

// The target names, in start order.
const std::vector<std::string>& AllTargets();

}  // namespace nexusflow

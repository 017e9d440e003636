#include "cmd/nexusflow/modules.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gateway/gateway.h"
#include "gateway/http_server.h"
#include "libs/config/config_watcher.h"
#include "libs/loop/event_loops.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/server_host.h"
#include "services/auth/auth_service.h"
#include "services/billing-ledger/billing_service.h"
#include "services/provider-connector/connector_service.h"
#include "services/rate-limiter/rate_limiter_service.h"
#include "services/routing/routing_service.h"

namespace nexusflow {

absl::StatusOr<std::set<std::string>> ParseTargets(const std::string& spec) {
  const auto& all = AllTargets();
  std::set<std::string> out;
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    std::string name(part);
    if (name == "all") {
      out.insert(all.begin(), all.end());
    } else if (std::find(all.begin(), all.end(), name) != all.end()) {
      out.insert(name);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown target '", name, "' (all, ",
                                                     absl::StrJoin(all, ", "), ")"));
    }
  }
  if (out.empty()) return absl::InvalidArgumentError("no target given");
  return out;
}

namespace {

class RunningProcess : public Process {
 public:
  absl::Status Start(const Config& config, const std::set<std::string>& targets,
                     const std::string& config_path) {
    // The event loops: the gateway's connections and the connector's upstream calls.
    if (targets.count("gateway") || targets.count("provider-connector"))
      loops_ = std::make_unique<EventLoops>(config.server.io_threads);
    if (targets.count("auth")) {
      auto store = auth::OpenKeyStore(config.auth.database);  // SQLite path or postgresql:// URL
      if (!store.ok()) return store.status();
      auth_ = std::make_unique<auth::AuthService>(std::move(*store));
      host_.AddService(auth_.get());
    }
    if (targets.count("routing")) {
      routing_ = std::make_unique<routing::RoutingService>(config.routing);
      host_.AddService(routing_.get());
      if (!config_path.empty()) {
        // The catalog is hot: a changed file reaches every gateway through WatchCatalog.
        watcher_ = std::make_unique<ConfigWatcher>(
            config_path, std::chrono::seconds(1),
            [this](const Config& next) { routing_->Update(next.routing); });
      }
    }
    if (targets.count("rate-limiter")) {
      auto counters = ratelimit::OpenCounterStore(config.rate_limiter);
      if (!counters.ok()) return counters.status();
      ratelimit_ = std::make_unique<ratelimit::RateLimiterService>(config.rate_limiter,
                                                                   std::move(*counters));
      host_.AddService(ratelimit_.get());
    }
    if (targets.count("billing-ledger")) {
      auto store = billing::OpenLedgerStore(config.billing_ledger.database);  // SQLite or postgresql://
      if (!store.ok()) return store.status();
      billing_ = std::make_unique<billing::BillingLedgerService>(std::move(*store), nullptr,
                                                                 config.billing_ledger.overdraft);
      host_.AddService(billing_.get());
    }
    if (targets.count("provider-connector")) {
      connector_ = std::make_unique<connector::ProviderConnectorService>(config.provider_connector, *loops_);
      host_.AddService(connector_.get());
    }
    ServerHost::Options grpc_options;
    grpc_options.internal_token = config.server.internal_token;
    grpc_options.admin_rpc_token = config.server.admin_rpc_token;
    grpc_options.reflection = config.server.grpc_reflection;
    if (auto s = host_.Start(config.server.grpc_listen, grpc_options); !s.ok()) return s;
    host_.SetServing(true);
    if (connector_) {
      // Media tasks settle with billing themselves when they end.
      std::shared_ptr<grpc::Channel> billing_channel = host_.InProcessChannel();
      if (!targets.count("billing-ledger")) {
        auto it = config.services.find("billing-ledger");
        if (it == config.services.end())
          return absl::InvalidArgumentError(
              "provider-connector settles media tasks: services.billing-ledger is not configured");
        billing_channel = DialTarget(it->second, config.server.internal_token);
      }
      auto tasks = connector::OpenTaskStore(config.provider_connector.media.task_store);
      if (!tasks.ok()) return tasks.status();
      connector_->EnableTasks(std::make_unique<connector::TaskService>(
          config.provider_connector, std::move(*tasks), billing::v1::BillingLedgerService::NewStub(billing_channel)));
    }
    if (!config.server.metrics_listen.empty()) StartMetricsListener(config.server.metrics_listen);
    if (!targets.count("gateway")) return absl::OkStatus();

    gateway::Backends b;
    std::string missing;
    auto channel = [&](const std::string& name) -> std::shared_ptr<grpc::Channel> {
      if (targets.count(name)) return host_.InProcessChannel();
      auto it = config.services.find(name);
      if (it == config.services.end()) {
        missing = name;
        return host_.InProcessChannel();
      }
      auto remote = DialTarget(it->second, config.server.internal_token);
      b.remote.emplace_back(name, remote);
      return remote;
    };
    b.auth = auth::v1::AuthService::NewStub(channel("auth"));
    b.routing = routing::v1::RoutingService::NewStub(channel("routing"));
    b.ratelimit = ratelimit::v1::RateLimiterService::NewStub(channel("rate-limiter"));
    b.billing = billing::v1::BillingLedgerService::NewStub(channel("billing-ledger"));
    b.connector = connector::v1::ProviderConnectorService::NewStub(channel("provider-connector"));
    if (!missing.empty())
      return absl::InvalidArgumentError(absl::StrCat(
          "target '", missing, "' is not in this process and services.", missing, " is not configured"));
    // Targets in this process are called directly on the request path.
    gateway::LocalServices local{ratelimit_.get(), billing_.get(), connector_.get()};
    gateway_ = std::make_unique<gateway::Gateway>(config, std::move(b), local);
    if (auto s = gateway_->Start(); !s.ok()) return s;
    gateway::HttpServer::Options http;
    const auto& sv = config.server;
    http.listen = sv.http_listen;
    http.max_body_bytes = config.gateway.max_body_bytes;
    http.idle_timeout_seconds = sv.idle_timeout_seconds;
    http.header_timeout_ms = sv.header_timeout_ms;
    http.body_timeout_ms = sv.body_timeout_ms;
    http.send_timeout_seconds = sv.send_timeout_seconds;
    http.max_header_bytes = sv.max_header_bytes;
    http.max_header_count = sv.max_header_count;
    http.max_connections = sv.max_connections;
    http.max_connections_per_ip = sv.max_connections_per_ip;
    http.reuse_port = sv.reuse_port;
    // An in-process connector opens each stream's upstream connection here too.
    http.fds_per_connection = connector_ ? 2 : 1;
    http_ = std::make_unique<gateway::HttpServer>(http, *loops_, gateway_->handler(),
                                                  gateway_->error_body());
    return http_->Start();
  }

  bool ready() const override { return !gateway_ || gateway_->ready(); }

  void Drain(int grace_seconds) override {
    watcher_.reset();
    host_.SetServing(false);
    if (gateway_) {
      gateway_->SetDraining();
      http_->Drain(grace_seconds);
      gateway_->Stop();
    }
    host_.Shutdown(grace_seconds);
  }

 private:
  std::unique_ptr<EventLoops> loops_;  // first made, last gone: everything below runs on it
  ServerHost host_;
  std::unique_ptr<auth::AuthService> auth_;
  std::unique_ptr<routing::RoutingService> routing_;
  std::unique_ptr<ratelimit::RateLimiterService> ratelimit_;
  std::unique_ptr<billing::BillingLedgerService> billing_;
  std::unique_ptr<connector::ProviderConnectorService> connector_;
  std::unique_ptr<gateway::Gateway> gateway_;
  std::unique_ptr<gateway::HttpServer> http_;
  std::unique_ptr<ConfigWatcher> watcher_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Process>> StartProcess(const Config& config,
                                                      const std::set<std::string>& targets,
                                                      const std::string& config_path) {
  auto p = std::make_unique<RunningProcess>();
  if (auto s = p->Start(config, targets, config_path); !s.ok()) return s;
  return std::unique_ptr<Process>(std::move(p));
}

}  // namespace nexusflow

#pragma once
// The gateway's clients of the five services (in-process or remote channels alike), and
// its local caches of what the common request needs: identities and the catalog.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include "absl/status/statusor.h"
#include "nexusflow/auth/v1/auth.grpc.pb.h"
#include "nexusflow/billing/v1/billing.grpc.pb.h"
#include "nexusflow/connector/v1/connector.grpc.pb.h"
#include "nexusflow/ratelimit/v1/ratelimit.grpc.pb.h"
#include "nexusflow/routing/v1/routing.grpc.pb.h"
#include "services/routing/catalog.h"

namespace nexusflow::gateway {

struct Backends {
  std::unique_ptr<auth::v1::AuthService::Stub> auth;
  std::unique_ptr<routing::v1::RoutingService::Stub> routing;
  std::unique_ptr<ratelimit::v1::RateLimiterService::Stub> ratelimit;
  std::unique_ptr<billing::v1::BillingLedgerService::Stub> billing;
  std::unique_ptr<connector::v1::ProviderConnectorService::Stub> connector;
  // Channels to targets in other processes (for readiness), by target name.
  std::vector<std::pair<std::string, std::shared_ptr<grpc::Channel>>> remote;
};

// Runs `body(ctx)` over and over on a thread (a watch stream), reconnecting after a pause,
// until Stop cancels the current context.
class WatchLoop {
 public:
  ~WatchLoop() { Stop(); }
  void Start(std::function<void(grpc::ClientContext&)> body);
  void Stop();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  grpc::ClientContext* current_ = nullptr;
  std::thread thread_;
};

// Key → identity, cached for a short TTL while the revocation watch is live; a revoked
// key is dropped as soon as the watch reports it. Without a live watch every lookup asks
// auth, so a revocation is never missed.
class AuthCache {
 public:
  AuthCache(auth::v1::AuthService::Stub* stub, int ttl_seconds) : stub_(stub), ttl_(ttl_seconds) {}
  void Start();
  void Stop() { watch_.Stop(); }
  bool live() const { return live_; }
  // The identity cached for a key's SHA-256, while the watch vouches for the cache.
  std::optional<auth::v1::Identity> Cached(const std::string& key_sha256);
  // Keeps auth's answer for the TTL (or the key's expiry, if sooner).
  void Remember(const std::string& key_sha256, const auth::v1::Identity& identity);
  auth::v1::AuthService::Stub* stub() const { return stub_; }

 private:
  struct Entry {
    auth::v1::Identity identity;
    std::chrono::steady_clock::time_point expires;
  };
  auth::v1::AuthService::Stub* stub_;
  int ttl_;
  std::atomic<bool> live_{false};
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;  // by SHA-256 of the secret
  WatchLoop watch_;
};

// A local copy of the catalog, kept current by the routing watch.
class CatalogCache {
 public:
  explicit CatalogCache(routing::v1::RoutingService::Stub* stub) : stub_(stub) {}
  void Start();
  void Stop() { watch_.Stop(); }
  bool loaded() const;
  std::shared_ptr<const routing::Catalog> Get() const;
  // From the local copy; UNAVAILABLE until it has arrived (the gateway is not ready then).
  absl::StatusOr<routing::v1::Model> Resolve(const std::string& model, llm::v1::Protocol protocol,
                                             const std::string& capability);

 private:
  routing::v1::RoutingService::Stub* stub_;
  mutable std::mutex mu_;
  std::shared_ptr<const routing::Catalog> catalog_;
  WatchLoop watch_;
};

}  // namespace nexusflow::gateway

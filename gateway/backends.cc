#include "gateway/backends.h"

#include "libs/common/ids.h"
#include "libs/common/status_map.h"

namespace nexusflow::gateway {

void WatchLoop::Start(std::function<void(grpc::ClientContext&)> body) {
  thread_ = std::thread([this, body = std::move(body)] {
    while (true) {
      grpc::ClientContext ctx;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
        current_ = &ctx;
      }
      body(ctx);
      std::unique_lock<std::mutex> lock(mu_);
      current_ = nullptr;
      if (cv_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stopping_; })) return;
    }
  });
}

void WatchLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (current_) current_->TryCancel();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void AuthCache::Start() {
  watch_.Start([this](grpc::ClientContext& ctx) {
    auto reader = stub_->WatchRevocations(&ctx, auth::v1::WatchRevocationsRequest{});
    auth::v1::RevocationEvent event;
    while (reader->Read(&event)) {
      std::lock_guard<std::mutex> lock(mu_);
      if (event.key_sha256().empty()) {
        // (Re)connected: anything cached before may have missed a revocation.
        entries_.clear();
        live_ = true;
      } else {
        entries_.erase(event.key_sha256());
      }
    }
    live_ = false;
    std::lock_guard<std::mutex> lock(mu_);
    entries_.clear();
    (void)reader->Finish();
  });
}

std::optional<auth::v1::Identity> AuthCache::Cached(const std::string& key_sha256) {
  if (!live_) return std::nullopt;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key_sha256);
  if (it == entries_.end() || it->second.expires <= std::chrono::steady_clock::now()) return std::nullopt;
  return it->second.identity;
}

void AuthCache::Remember(const std::string& key_sha256, const auth::v1::Identity& identity) {
  if (!live_ || ttl_ <= 0) return;
  auto now = std::chrono::steady_clock::now();
  auto expires = now + std::chrono::seconds(ttl_);
  if (identity.has_expires_at()) {
    auto left = std::chrono::seconds(identity.expires_at().seconds() - UnixNow());
    expires = std::min(expires, now + left);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.size() > 100000) entries_.clear();
  entries_[key_sha256] = Entry{identity, expires};
}

void CatalogCache::Start() {
  watch_.Start([this](grpc::ClientContext& ctx) {
    auto reader = stub_->WatchCatalog(&ctx, routing::v1::WatchCatalogRequest{});
    routing::v1::CatalogSnapshot snap;
    while (reader->Read(&snap)) {
      auto catalog = std::make_shared<const routing::Catalog>(snap);
      std::lock_guard<std::mutex> lock(mu_);
      catalog_ = std::move(catalog);
    }
    (void)reader->Finish();
  });
}

bool CatalogCache::loaded() const {
  std::lock_guard<std::mutex> lock(mu_);
  return catalog_ != nullptr;
}

std::shared_ptr<const routing::Catalog> CatalogCache::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return catalog_;
}

absl::StatusOr<routing::v1::Model> CatalogCache::Resolve(const std::string& model,
                                                         llm::v1::Protocol protocol,
                                                         const std::string& capability) {
  if (auto catalog = Get()) return catalog->Resolve(model, protocol, capability);
  return absl::UnavailableError("The model catalog is loading; retry shortly.");
}

}  // namespace nexusflow::gateway

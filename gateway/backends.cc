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

absl::StatusOr<auth::v1::Identity> AuthCache::Authenticate(const std::string& secret) {
  std::string hash = Sha256(secret);
  auto now = std::chrono::steady_clock::now();
  if (live_) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(hash);
    if (it != entries_.end() && it->second.expires > now) return it->second.identity;
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  auth::v1::AuthenticateRequest req;
  req.set_key_sha256(hash);
  auth::v1::AuthenticateResponse resp;
  grpc::Status status = stub_->Authenticate(&ctx, req, &resp);
  if (!status.ok()) return FromGrpcStatus(status);
  if (live_ && ttl_ > 0) {
    auto expires = now + std::chrono::seconds(ttl_);
    if (resp.identity().has_expires_at()) {
      auto left = std::chrono::seconds(resp.identity().expires_at().seconds() - UnixNow());
      expires = std::min(expires, now + left);
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (entries_.size() > 100000) entries_.clear();
    entries_[hash] = Entry{resp.identity(), expires};
  }
  return resp.identity();
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
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  routing::v1::ResolveRequest req;
  req.set_model(model);
  req.set_protocol(protocol);
  req.set_capability(capability);
  routing::v1::ResolveResponse resp;
  grpc::Status status = stub_->Resolve(&ctx, req, &resp);
  if (!status.ok()) return FromGrpcStatus(status);
  return resp.model();
}

}  // namespace nexusflow::gateway

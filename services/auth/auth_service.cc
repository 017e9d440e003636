#include "services/auth/auth_service.h"

#include <prometheus/counter.h>

#include "absl/strings/str_cat.h"
#include "libs/rpc/internal_auth.h"
#include "libs/common/ids.h"
#include "libs/common/status_map.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/unary.h"

namespace nexusflow::auth {
namespace {

prometheus::Family<prometheus::Counter>& AuthResults() {
  static auto& family = prometheus::BuildCounter()
                            .Name("nexusflow_auth_authentications_total")
                            .Help("Key lookups by result")
                            .Register(MetricsRegistry());
  return family;
}

void CountResult(const char* result) { CounterFor(AuthResults(), {{"result", result}}).Increment(); }

void LimitsToProto(const KeyLimits& l, ratelimit::v1::KeyLimits* out) {
  out->set_rpm(l.rpm);
  out->set_rpd(l.rpd);
  out->set_tpm(l.tpm);
  out->set_concurrency(l.concurrency);
}

void ToProto(const KeyRecord& k, pb::ApiKey* out) {
  out->set_id(k.id);
  out->set_account_id(k.account_id);
  out->set_name(k.name);
  out->set_prefix(k.prefix);
  out->set_plan(k.plan);
  for (const auto& m : k.allowed_models) out->add_allowed_models(m);
  out->set_status(k.revoked ? pb::KEY_STATUS_REVOKED : pb::KEY_STATUS_ACTIVE);
  out->mutable_created_at()->set_seconds(k.created_at);
  if (k.expires_at) out->mutable_expires_at()->set_seconds(k.expires_at);
  LimitsToProto(k.limits, out->mutable_limits());
}


}  // namespace

AuthService::AuthService(std::unique_ptr<KeyStore> store, std::function<int64_t()> now)
    : store_(std::move(store)), now_(now ? std::move(now) : [] { return UnixNow(); }) {
  for (const char* r : {"ok", "unknown", "revoked", "expired"}) AuthResults().Add({{"result", r}});
  if (store_->shared()) follower_ = std::thread([this] { FollowRevocations(); });
}

AuthService::~AuthService() {
  {
    std::lock_guard<std::mutex> lock(follow_mu_);
    stopping_ = true;
  }
  follow_cv_.notify_all();
  if (follower_.joinable()) follower_.join();
}

void AuthService::FollowRevocations() {
  int64_t cursor = -1;
  std::unordered_set<std::string> told;  // revocations already broadcast (they repeat)
  std::unique_lock<std::mutex> lock(follow_mu_);
  while (!follow_cv_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stopping_; })) {
    lock.unlock();
    auto revoked = store_->RevokedSince(&cursor);
    if (revoked.ok()) {
      if (told.size() > 100000) told.clear();
      for (const auto& k : *revoked) {
        if (!told.insert(k.id).second) continue;
        pb::RevocationEvent event;
        event.set_key_sha256(k.key_sha256);
        event.set_key_id(k.id);
        Broadcast(event);
      }
    }
    lock.lock();
  }
}

grpc::ServerUnaryReactor* AuthService::Authenticate(grpc::CallbackServerContext* ctx,
                                                    const pb::AuthenticateRequest* req,
                                                    pb::AuthenticateResponse* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  if (req->key_sha256().size() != 32)
    return FinishUnary(ctx, absl::InvalidArgumentError("key_sha256 must be 32 bytes"));
  auto key = store_->FindByHash(req->key_sha256());
  if (!key.ok()) {
    if (key.status().code() != absl::StatusCode::kNotFound) return FinishUnary(ctx, key.status());
    CountResult("unknown");
    return FinishUnary(ctx, absl::UnauthenticatedError("Incorrect API key provided."));
  }
  if (key->revoked) {
    CountResult("revoked");
    return FinishUnary(ctx, absl::UnauthenticatedError("This API key has been revoked."));
  }
  if (key->expires_at && key->expires_at <= now_()) {
    CountResult("expired");
    return FinishUnary(ctx, absl::UnauthenticatedError("This API key has expired."));
  }
  CountResult("ok");
  auto* id = resp->mutable_identity();
  id->set_key_id(key->id);
  id->set_account_id(key->account_id);
  id->set_plan(key->plan);
  for (const auto& m : key->allowed_models) id->add_allowed_models(m);
  if (key->expires_at) id->mutable_expires_at()->set_seconds(key->expires_at);
  LimitsToProto(key->limits, id->mutable_limits());
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerWriteReactor<pb::RevocationEvent>* AuthService::WatchRevocations(
    grpc::CallbackServerContext* ctx, const pb::WatchRevocationsRequest*) {
  NF_REQUIRE_INTERNAL_STREAM(ctx, pb::RevocationEvent);
  auto writer = QueuedWriter<pb::RevocationEvent>::Create();
  writer->Push(pb::RevocationEvent{});  // keep-alive: the watch is live
  std::lock_guard<std::mutex> lock(watchers_mu_);
  watchers_.push_back(writer);
  return writer.get();
}

void AuthService::Broadcast(const pb::RevocationEvent& event) {
  std::lock_guard<std::mutex> lock(watchers_mu_);
  std::vector<std::shared_ptr<QueuedWriter<pb::RevocationEvent>>> live;
  for (auto& w : watchers_)
    if (w->Push(event)) live.push_back(w);
  watchers_.swap(live);
}

grpc::ServerUnaryReactor* AuthService::CreateKey(grpc::CallbackServerContext* ctx,
                                                 const pb::CreateKeyRequest* req,
                                                 pb::CreateKeyResponse* resp) {
  NF_REQUIRE_ADMIN(ctx);
  if (req->account_id().empty())
    return FinishUnary(ctx, absl::InvalidArgumentError("account_id is required"));
  std::string secret = req->secret().empty() ? NewApiKeySecret() : req->secret();
  if (secret.size() < 16 || secret.size() > 256)
    return FinishUnary(ctx, absl::InvalidArgumentError("an imported key must be 16 to 256 characters"));
  for (char c : secret)
    if (c <= ' ' || c > '~')
      return FinishUnary(ctx, absl::InvalidArgumentError("an imported key must be printable ASCII"));
  KeyRecord k;
  k.id = NewId("key_");
  k.key_sha256 = Sha256(secret);
  k.account_id = req->account_id();
  k.name = req->name();
  k.prefix = secret.substr(0, std::min<size_t>(secret.size(), 10));
  k.plan = req->plan().empty() ? "default" : req->plan();
  k.allowed_models.assign(req->allowed_models().begin(), req->allowed_models().end());
  k.created_at = now_();
  k.expires_at = req->has_expires_at() ? req->expires_at().seconds() : 0;
  const auto& l = req->limits();
  if (l.rpm() < 0 || l.rpd() < 0 || l.tpm() < 0 || l.concurrency() < 0)
    return FinishUnary(ctx, absl::InvalidArgumentError("a key's limits are counts: 0 or more"));
  k.limits = KeyLimits{l.rpm(), l.rpd(), l.tpm(), l.concurrency()};
  if (auto s = store_->Insert(k); !s.ok()) {
    if (s.code() == absl::StatusCode::kAlreadyExists)
      return FinishUnary(ctx, absl::AlreadyExistsError("a key with this secret already exists"));
    return FinishUnary(ctx, s);
  }
  ToProto(k, resp->mutable_key());
  resp->set_secret(secret);
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuthService::ListKeys(grpc::CallbackServerContext* ctx,
                                                const pb::ListKeysRequest* req,
                                                pb::ListKeysResponse* resp) {
  NF_REQUIRE_ADMIN(ctx);
  auto keys = store_->List(req->account_id());
  if (!keys.ok()) return FinishUnary(ctx, keys.status());
  for (const auto& k : *keys) ToProto(k, resp->add_keys());
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuthService::RevokeKey(grpc::CallbackServerContext* ctx,
                                                 const pb::RevokeKeyRequest* req,
                                                 pb::RevokeKeyResponse* resp) {
  NF_REQUIRE_ADMIN(ctx);
  auto key = store_->Revoke(req->key_id());
  if (!key.ok()) return FinishUnary(ctx, key.status());
  ToProto(*key, resp->mutable_key());
  pb::RevocationEvent event;
  event.set_key_sha256(key->key_sha256);
  event.set_key_id(key->id);
  Broadcast(event);
  return FinishUnary(ctx, absl::OkStatus());
}

}  // namespace nexusflow::auth

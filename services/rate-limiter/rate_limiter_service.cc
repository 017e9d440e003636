#include "services/rate-limiter/rate_limiter_service.h"

#include <prometheus/counter.h>

#include "absl/strings/str_cat.h"
#include "libs/rpc/internal_auth.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/unary.h"

namespace nexusflow::ratelimit {
namespace {

prometheus::Family<prometheus::Counter>& Decisions() {
  static auto& family = prometheus::BuildCounter()
                            .Name("nexusflow_ratelimit_decisions_total")
                            .Help("Admission decisions by plan and outcome")
                            .Register(MetricsRegistry());
  return family;
}

void SetDuration(Clock::duration d, google::protobuf::Duration* out) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  if (ns < 0) ns = 0;
  out->set_seconds(ns / 1'000'000'000);
  out->set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
}

void SetState(const WindowState& s, pb::LimitState* out) {
  out->set_limit(s.limit);
  out->set_remaining(s.remaining);
  SetDuration(s.reset_after, out->mutable_reset_after());
}

}  // namespace

RateLimiterService::RateLimiterService(const Config::RateLimiter& config,
                                       std::unique_ptr<CounterStore> store,
                                       std::function<Clock::time_point()> now)
    : config_(config),
      store_(std::move(store)),
      now_(now ? std::move(now) : [] { return Clock::now(); }) {}

grpc::ServerUnaryReactor* RateLimiterService::Acquire(grpc::CallbackServerContext* ctx,
                                                      const pb::AcquireRequest* req,
                                                      pb::AcquireResponse* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  return FinishUnary(ctx, AcquireLease(*req, resp));
}

grpc::ServerUnaryReactor* RateLimiterService::Release(grpc::CallbackServerContext* ctx,
                                                      const pb::ReleaseRequest* req,
                                                      pb::ReleaseResponse*) {
  NF_REQUIRE_INTERNAL(ctx);
  return FinishUnary(ctx, ReleaseLease(*req));
}

absl::Status RateLimiterService::AcquireLease(const pb::AcquireRequest& request,
                                              pb::AcquireResponse* resp) {
  const pb::AcquireRequest* req = &request;
  std::string plan = req->plan().empty() ? "default" : req->plan();
  auto it = config_.plans.find(plan);
  if (it == config_.plans.end())
    return absl::FailedPreconditionError(absl::StrCat("unknown rate-limit plan '", plan, "'"));
  if (req->key_id().empty()) return absl::InvalidArgumentError("key_id is required");
  // The key's own limits replace its plan's where set.
  PlanLimits limits = it->second;
  const auto& own = req->key_limits();
  if (own.rpm() > 0) limits.rpm = own.rpm();
  if (own.rpd() > 0) limits.rpd = own.rpd();
  if (own.tpm() > 0) limits.tpm = own.tpm();
  if (own.concurrency() > 0) limits.concurrency = own.concurrency();
  Admission a = store_->Acquire(req->key_id(), limits,
                                std::max<int64_t>(0, req->estimated_tokens()), now_());
  const char* outcome = "allowed";
  switch (a.denied_by) {
    case Denial::kNone:
      resp->set_decision(pb::DECISION_ALLOWED);
      resp->set_lease_id(a.lease_id);
      break;
    case Denial::kUnavailable:
      // Fail-closed: not a limit the caller hit, so no 429 — the caller answers 503.
      CounterFor(Decisions(), {{"plan", plan}, {"outcome", "unavailable"}}).Increment();
      return absl::UnavailableError(
          "the rate-limit store (Redis) is unreachable and rate_limiter.redis_failure is closed");
    case Denial::kRequests:
      resp->set_denied_by(pb::LIMIT_KIND_REQUESTS);
      outcome = "denied_rpm";
      break;
    case Denial::kRequestsPerDay:
      resp->set_denied_by(pb::LIMIT_KIND_REQUESTS_PER_DAY);
      outcome = "denied_rpd";
      break;
    case Denial::kTokens:
      resp->set_denied_by(pb::LIMIT_KIND_TOKENS);
      outcome = "denied_tpm";
      break;
    case Denial::kConcurrency:
      resp->set_denied_by(pb::LIMIT_KIND_CONCURRENCY);
      outcome = "denied_concurrency";
      break;
  }
  if (a.denied_by != Denial::kNone) {
    resp->set_decision(pb::DECISION_DENIED);
    if (a.never_fits)
      resp->set_never_fits(true);
    else
      SetDuration(a.retry_after, resp->mutable_retry_after());
  }
  SetState(a.requests, resp->mutable_requests());
  SetState(a.tokens, resp->mutable_tokens());
  SetState(a.requests_per_day, resp->mutable_requests_per_day());
  CounterFor(Decisions(), {{"plan", plan}, {"outcome", outcome}}).Increment();
  return absl::OkStatus();
}

absl::Status RateLimiterService::ReleaseLease(const pb::ReleaseRequest& req) {
  return store_->Release(req.lease_id(), req.actual_tokens(), now_());
}

}  // namespace nexusflow::ratelimit

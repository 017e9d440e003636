#include "services/billing-ledger/billing_service.h"

#include <prometheus/counter.h>

#include "absl/strings/str_cat.h"
#include "libs/common/ids.h"
#include "libs/common/money.h"
#include "libs/common/status_map.h"
#include "libs/metrics/metrics.h"
#include "services/billing-ledger/pricing.h"

namespace nexusflow::billing {
namespace {

struct Families {
  prometheus::Family<prometheus::Counter>& charged;
  prometheus::Family<prometheus::Counter>& settlements;
  prometheus::Family<prometheus::Counter>& reservations;
};

Families& Metrics() {
  static Families f{
      prometheus::BuildCounter()
          .Name("nexusflow_billing_charged_nano_usd_total")
          .Help("Money charged by settlements, nano-USD")
          .Register(MetricsRegistry()),
      prometheus::BuildCounter()
          .Name("nexusflow_billing_settlements_total")
          .Help("Settlements by outcome (charged, duplicate)")
          .Register(MetricsRegistry()),
      prometheus::BuildCounter()
          .Name("nexusflow_billing_reservations_total")
          .Help("Hold requests by outcome (held, insufficient)")
          .Register(MetricsRegistry())};
  return f;
}

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

void ToProto(const AccountRow& a, pb::Account* out) {
  out->set_id(a.id);
  out->set_name(a.name);
  out->set_balance_nano_usd(a.balance);
  out->set_total_spent_nano_usd(a.total_spent);
  out->mutable_created_at()->set_seconds(a.created_at);
  out->mutable_updated_at()->set_seconds(a.updated_at);
}

}  // namespace

BillingLedgerService::BillingLedgerService(std::unique_ptr<LedgerStore> store,
                                           std::function<int64_t()> now)
    : store_(std::move(store)), now_(now ? std::move(now) : [] { return UnixNow(); }) {
  Metrics();
}

grpc::ServerUnaryReactor* BillingLedgerService::Reserve(grpc::CallbackServerContext* ctx,
                                                        const pb::ReserveRequest* req,
                                                        pb::ReserveResponse* resp) {
  if (req->request_id().empty() || req->account_id().empty())
    return Done(ctx, absl::InvalidArgumentError("request_id and account_id are required"));
  if (req->amount_nano_usd() < 0)
    return Done(ctx, absl::InvalidArgumentError("amount must not be negative"));
  auto account = store_->GetAccount(req->account_id());
  if (!account.ok()) return Done(ctx, account.status());
  std::lock_guard<std::mutex> lock(mu_);
  int64_t& held = held_by_account_[req->account_id()];
  if (auto it = hold_by_request_.find(req->request_id()); it != hold_by_request_.end()) {
    resp->set_hold_id(it->second);
    resp->set_available_nano_usd(account->balance - held);
    return Done(ctx, absl::OkStatus());
  }
  int64_t available = account->balance - held;
  // An account must hold a positive balance to start a request, and enough for its
  // estimated maximum cost.
  if (account->balance <= 0 || available < req->amount_nano_usd()) {
    Metrics().reservations.Add({{"outcome", "insufficient"}}).Increment();
    return Done(ctx, absl::FailedPreconditionError(absl::StrCat(
                         "Insufficient balance: available ", FormatUsd(available),
                         " USD, this request may cost up to ", FormatUsd(req->amount_nano_usd()),
                         " USD. Add credit to continue.")));
  }
  std::string hold_id = NewId("hold_", 10);
  holds_[hold_id] = Hold{req->account_id(), req->request_id(), req->amount_nano_usd()};
  hold_by_request_[req->request_id()] = hold_id;
  held += req->amount_nano_usd();
  Metrics().reservations.Add({{"outcome", "held"}}).Increment();
  resp->set_hold_id(hold_id);
  resp->set_available_nano_usd(available - req->amount_nano_usd());
  return Done(ctx, absl::OkStatus());
}

void BillingLedgerService::CloseHold(const std::string& hold_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = holds_.find(hold_id);
  if (it == holds_.end()) return;
  auto held = held_by_account_.find(it->second.account_id);
  if (held != held_by_account_.end()) {
    held->second -= it->second.amount;
    if (held->second <= 0) held_by_account_.erase(held);
  }
  hold_by_request_.erase(it->second.request_id);
  holds_.erase(it);
}

grpc::ServerUnaryReactor* BillingLedgerService::Settle(grpc::CallbackServerContext* ctx,
                                                       const pb::SettleRequest* req,
                                                       pb::SettleResponse* resp) {
  if (req->request_id().empty() || req->account_id().empty())
    return Done(ctx, absl::InvalidArgumentError("request_id and account_id are required"));
  const auto& u = req->usage();
  if (u.input_tokens() < 0 || u.output_tokens() < 0 || u.cache_read_tokens() < 0 ||
      u.cache_write_tokens() < 0)
    return Done(ctx, absl::InvalidArgumentError("token counts must not be negative"));
  UsageRow row;
  row.request_id = req->request_id();
  row.account_id = req->account_id();
  row.key_id = req->key_id();
  row.model = req->model();
  row.protocol = req->protocol();
  row.deployment_id = req->deployment_id();
  row.usage = u;
  row.price = req->price();
  row.cost = CostNanoUsd(u, req->price());
  row.created_at = now_();
  auto result = store_->Settle(row);
  if (!result.ok()) return Done(ctx, result.status());
  if (!req->hold_id().empty()) CloseHold(req->hold_id());
  if (result->duplicate) {
    Metrics().settlements.Add({{"outcome", "duplicate"}}).Increment();
  } else {
    Metrics().settlements.Add({{"outcome", "charged"}}).Increment();
    Metrics().charged.Add({{"model", req->model()}}).Increment(static_cast<double>(result->cost));
  }
  resp->set_cost_nano_usd(result->cost);
  resp->set_balance_nano_usd(result->balance);
  resp->set_duplicate(result->duplicate);
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BillingLedgerService::ReleaseHold(grpc::CallbackServerContext* ctx,
                                                            const pb::ReleaseHoldRequest* req,
                                                            pb::ReleaseHoldResponse*) {
  CloseHold(req->hold_id());
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BillingLedgerService::GetBalance(grpc::CallbackServerContext* ctx,
                                                           const pb::GetBalanceRequest* req,
                                                           pb::Balance* resp) {
  auto account = store_->GetAccount(req->account_id());
  if (!account.ok()) return Done(ctx, account.status());
  resp->set_account_id(account->id);
  resp->set_balance_nano_usd(account->balance);
  resp->set_total_spent_nano_usd(account->total_spent);
  resp->mutable_last_updated()->set_seconds(account->updated_at);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = held_by_account_.find(req->account_id());
    resp->set_held_nano_usd(it == held_by_account_.end() ? 0 : it->second);
  }
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BillingLedgerService::ListUsage(grpc::CallbackServerContext* ctx,
                                                          const pb::ListUsageRequest* req,
                                                          pb::ListUsageResponse* resp) {
  int limit = req->limit() == 0 ? 100 : req->limit();
  if (limit < 1 || limit > 1000)
    return Done(ctx, absl::InvalidArgumentError("limit must be between 1 and 1000"));
  int64_t after = req->after();
  if (!req->after_request_id().empty()) {
    auto seq = store_->UsageSequence(req->account_id(), req->after_request_id());
    if (!seq.ok()) return Done(ctx, absl::InvalidArgumentError(absl::StrCat(
                                   "Invalid 'after': no usage record for request ", req->after_request_id(), ".")));
    after = *seq;
  }
  auto rows = store_->ListUsage(req->account_id(), limit + 1, after);
  if (!rows.ok()) return Done(ctx, rows.status());
  resp->set_has_more(static_cast<int>(rows->size()) > limit);
  if (resp->has_more()) rows->pop_back();
  for (const auto& r : *rows) {
    auto* out = resp->add_records();
    out->set_request_id(r.request_id);
    out->set_account_id(r.account_id);
    out->set_key_id(r.key_id);
    out->set_model(r.model);
    out->set_protocol(static_cast<llm::v1::Protocol>(r.protocol));
    *out->mutable_usage() = r.usage;
    out->set_cost_nano_usd(r.cost);
    *out->mutable_price() = r.price;
    out->mutable_created_at()->set_seconds(r.created_at);
    out->set_sequence(r.sequence);
  }
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BillingLedgerService::CreateAccount(grpc::CallbackServerContext* ctx,
                                                              const pb::CreateAccountRequest* req,
                                                              pb::Account* resp) {
  if (req->name().empty() || req->name().size() > 200)
    return Done(ctx, absl::InvalidArgumentError("name must be 1 to 200 characters"));
  auto a = store_->CreateAccount(req->name(), now_());
  if (!a.ok()) return Done(ctx, a.status());
  ToProto(*a, resp);
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BillingLedgerService::GetAccount(grpc::CallbackServerContext* ctx,
                                                           const pb::GetAccountRequest* req,
                                                           pb::Account* resp) {
  auto a = store_->GetAccount(req->account_id());
  if (!a.ok()) return Done(ctx, a.status());
  ToProto(*a, resp);
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BillingLedgerService::Credit(grpc::CallbackServerContext* ctx,
                                                       const pb::CreditRequest* req,
                                                       pb::CreditResponse* resp) {
  if (req->amount_nano_usd() <= 0)
    return Done(ctx, absl::InvalidArgumentError("amount must be positive"));
  if (req->idempotency_key().empty())
    return Done(ctx, absl::InvalidArgumentError("idempotency_key is required"));
  auto r = store_->Credit(req->account_id(), req->amount_nano_usd(), req->idempotency_key(),
                          req->note(), now_());
  if (!r.ok()) return Done(ctx, r.status());
  resp->set_balance_nano_usd(r->balance);
  resp->set_duplicate(r->duplicate);
  return Done(ctx, absl::OkStatus());
}

}  // namespace nexusflow::billing

#include "services/billing-ledger/billing_service.h"

#include <prometheus/counter.h>
#include <prometheus/histogram.h>

#include "absl/strings/str_cat.h"
#include "libs/rpc/internal_auth.h"
#include "libs/common/ids.h"
#include "libs/common/money.h"
#include "libs/common/status_map.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/unary.h"
#include "services/billing-ledger/pricing.h"

namespace nexusflow::billing {
namespace {

// Longer than any request may run (the connector's timeout is minutes): a hold still open
// then belongs to a gateway that went away before settling or releasing it.
constexpr int64_t kHoldLifetimeSeconds = 3600;

struct Families {
  prometheus::Family<prometheus::Counter>& charged;
  prometheus::Family<prometheus::Counter>& settlements;
  prometheus::Family<prometheus::Counter>& reservations;
  prometheus::Histogram& batch;
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
          .Register(MetricsRegistry()),
      prometheus::BuildHistogram()
          .Name("nexusflow_billing_settle_batch_size")
          .Help("Settlements committed per ledger transaction (group commit)")
          .Register(MetricsRegistry())
          .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256})};
  return f;
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
  writer_ = std::thread([this] { WriterLoop(); });
}

BillingLedgerService::~BillingLedgerService() {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  writer_.join();
}

absl::StatusOr<BillingLedgerService::AccountState*> BillingLedgerService::AccountLocked(
    const std::string& account_id) {
  auto it = accounts_.find(account_id);
  if (it != accounts_.end()) return &it->second;
  auto row = store_->GetAccount(account_id);
  if (!row.ok()) return row.status();
  AccountState& a = accounts_[account_id];
  a.balance = row->balance;
  a.total_spent = row->total_spent;
  a.updated_at = row->updated_at;
  return &a;
}

grpc::ServerUnaryReactor* BillingLedgerService::Reserve(grpc::CallbackServerContext* ctx,
                                                        const pb::ReserveRequest* req,
                                                        pb::ReserveResponse* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  return FinishUnary(ctx, ReserveHold(*req, resp));
}

absl::Status BillingLedgerService::ReserveHold(const pb::ReserveRequest& request,
                                               pb::ReserveResponse* resp) {
  const pb::ReserveRequest* req = &request;
  if (req->request_id().empty() || req->account_id().empty())
    return absl::InvalidArgumentError("request_id and account_id are required");
  if (req->amount_nano_usd() < 0) return absl::InvalidArgumentError("amount must not be negative");
  std::lock_guard<std::mutex> lock(mu_);
  ExpireHoldsLocked(now_());
  auto account = AccountLocked(req->account_id());
  if (!account.ok()) return account.status();
  AccountState& a = **account;
  if (auto it = hold_by_request_.find(req->request_id()); it != hold_by_request_.end()) {
    resp->set_hold_id(it->second);
    resp->set_available_nano_usd(a.balance - a.held);
    return absl::OkStatus();
  }
  int64_t available = a.balance - a.held;
  // An account must hold a positive balance to start a request, and enough for its
  // estimated maximum cost.
  if (a.balance <= 0 || available < req->amount_nano_usd()) {
    Metrics().reservations.Add({{"outcome", "insufficient"}}).Increment();
    return absl::FailedPreconditionError(absl::StrCat(
                         "Insufficient balance: available ", FormatUsd(available),
                         " USD, this request may cost up to ", FormatUsd(req->amount_nano_usd()),
                         " USD. Add credit to continue."));
  }
  std::string hold_id = NewId("hold_", 10);
  holds_[hold_id] = Hold{req->account_id(), req->request_id(), req->amount_nano_usd(),
                         now_() + kHoldLifetimeSeconds};
  hold_by_request_[req->request_id()] = hold_id;
  a.held += req->amount_nano_usd();
  CounterFor(Metrics().reservations, {{"outcome", "held"}}).Increment();
  resp->set_hold_id(hold_id);
  resp->set_available_nano_usd(available - req->amount_nano_usd());
  return absl::OkStatus();
}

void BillingLedgerService::ExpireHoldsLocked(int64_t now) {
  if (now < next_expiry_sweep_) return;
  next_expiry_sweep_ = now + 10;
  std::vector<std::string> expired;
  for (const auto& [id, hold] : holds_)
    if (hold.expires <= now) expired.push_back(id);
  for (const auto& id : expired) CloseHoldLocked(id);
}

void BillingLedgerService::CloseHoldLocked(const std::string& hold_id) {
  auto it = holds_.find(hold_id);
  if (it == holds_.end()) return;
  if (auto a = accounts_.find(it->second.account_id); a != accounts_.end())
    a->second.held -= it->second.amount;
  hold_by_request_.erase(it->second.request_id);
  holds_.erase(it);
}

grpc::ServerUnaryReactor* BillingLedgerService::Settle(grpc::CallbackServerContext* ctx,
                                                       const pb::SettleRequest* req,
                                                       pb::SettleResponse* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  auto* reactor = ctx->DefaultReactor();
  // gRPC threads must not block on the store: the writer thread commits for them.
  SettleUsage(*req, resp, [reactor](const absl::Status& s) { reactor->Finish(ToGrpcStatus(s)); },
              /*may_commit_here=*/false);
  return reactor;
}

void BillingLedgerService::SettleUsage(const pb::SettleRequest& request, pb::SettleResponse* resp,
                                       std::function<void(const absl::Status&)> done,
                                       bool may_commit_here) {
  const pb::SettleRequest* req = &request;
  if (req->request_id().empty() || req->account_id().empty())
    return done(absl::InvalidArgumentError("request_id and account_id are required"));
  const auto& u = req->usage();
  if (u.input_tokens() < 0 || u.output_tokens() < 0 || u.cache_read_tokens() < 0 ||
      u.cache_write_tokens() < 0)
    return done(absl::InvalidArgumentError("token counts must not be negative"));
  PendingSettle p;
  p.row.request_id = req->request_id();
  p.row.account_id = req->account_id();
  p.row.key_id = req->key_id();
  p.row.model = req->model();
  p.row.protocol = req->protocol();
  p.row.deployment_id = req->deployment_id();
  p.row.usage = u;
  p.row.price = req->price();
  p.row.cost = CostNanoUsd(u, req->price());
  p.row.created_at = now_();
  p.hold_id = req->hold_id();
  p.done = std::move(done);
  p.response = resp;
  std::deque<PendingSettle> mine;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (!may_commit_here || committing_ || !queue_.empty()) {
      // A commit is running (or this thread may not block): join the next batch, which
      // the writer thread commits.
      queue_.push_back(std::move(p));
      queue_cv_.notify_one();
      return;
    }
    committing_ = true;  // idle: commit on this thread, no hand-off
  }
  mine.push_back(std::move(p));
  Commit(mine);
  std::lock_guard<std::mutex> lock(queue_mu_);
  committing_ = false;
  if (!queue_.empty()) queue_cv_.notify_one();
}

void BillingLedgerService::WriterLoop() {
  std::unique_lock<std::mutex> lock(queue_mu_);
  while (true) {
    queue_cv_.wait(lock, [this] { return (stopping_ || !queue_.empty()) && !committing_; });
    if (queue_.empty()) return;  // stopping, and everything was written
    std::deque<PendingSettle> batch;
    batch.swap(queue_);
    committing_ = true;
    lock.unlock();
    Commit(batch);
    lock.lock();
    committing_ = false;
  }
}

void BillingLedgerService::Commit(std::deque<PendingSettle>& batch) {
  std::vector<UsageRow> rows;
  rows.reserve(batch.size());
  for (const auto& p : batch) rows.push_back(p.row);
  auto results = store_->SettleBatch(rows);
  {
    std::lock_guard<std::mutex> state_lock(mu_);
    for (size_t i = 0; i < batch.size(); ++i) {
      auto& p = batch[i];
      absl::Status status = results.ok() ? (*results)[i].status() : results.status();
      if (!status.ok()) {
        p.done(status);
        continue;
      }
      const ChangeResult& r = *(*results)[i];
      if (!p.hold_id.empty()) CloseHoldLocked(p.hold_id);
      if (r.duplicate) {
        Metrics().settlements.Add({{"outcome", "duplicate"}}).Increment();
      } else {
        CounterFor(Metrics().settlements, {{"outcome", "charged"}}).Increment();
        CounterFor(Metrics().charged, {{"model", p.row.model}}).Increment(static_cast<double>(r.cost));
        if (auto a = accounts_.find(p.row.account_id); a != accounts_.end()) {
          a->second.balance = r.balance;
          a->second.total_spent += r.cost;
          a->second.updated_at = p.row.created_at;
        }
      }
      p.response->set_cost_nano_usd(r.cost);
      p.response->set_balance_nano_usd(r.balance);
      p.response->set_duplicate(r.duplicate);
      p.done(absl::OkStatus());
    }
  }
  Metrics().batch.Observe(static_cast<double>(batch.size()));
}

grpc::ServerUnaryReactor* BillingLedgerService::ReleaseHold(grpc::CallbackServerContext* ctx,
                                                            const pb::ReleaseHoldRequest* req,
                                                            pb::ReleaseHoldResponse*) {
  NF_REQUIRE_INTERNAL(ctx);
  CloseHold(req->hold_id());
  return FinishUnary(ctx, absl::OkStatus());
}

void BillingLedgerService::CloseHold(const std::string& hold_id) {
  std::lock_guard<std::mutex> lock(mu_);
  CloseHoldLocked(hold_id);
}

grpc::ServerUnaryReactor* BillingLedgerService::GetBalance(grpc::CallbackServerContext* ctx,
                                                           const pb::GetBalanceRequest* req,
                                                           pb::Balance* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  std::lock_guard<std::mutex> lock(mu_);
  auto account = AccountLocked(req->account_id());
  if (!account.ok()) return FinishUnary(ctx, account.status());
  resp->set_account_id(req->account_id());
  resp->set_balance_nano_usd((*account)->balance);
  resp->set_total_spent_nano_usd((*account)->total_spent);
  resp->set_held_nano_usd((*account)->held);
  resp->mutable_last_updated()->set_seconds((*account)->updated_at);
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BillingLedgerService::ListUsage(grpc::CallbackServerContext* ctx,
                                                          const pb::ListUsageRequest* req,
                                                          pb::ListUsageResponse* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  int limit = req->limit() == 0 ? 100 : req->limit();
  if (limit < 1 || limit > 1000)
    return FinishUnary(ctx, absl::InvalidArgumentError("limit must be between 1 and 1000"));
  int64_t after = req->after();
  if (!req->after_request_id().empty()) {
    auto seq = store_->UsageSequence(req->account_id(), req->after_request_id());
    if (!seq.ok()) return FinishUnary(ctx, absl::InvalidArgumentError(absl::StrCat(
                                   "Invalid 'after': no usage record for request ", req->after_request_id(), ".")));
    after = *seq;
  }
  auto rows = store_->ListUsage(req->account_id(), limit + 1, after);
  if (!rows.ok()) return FinishUnary(ctx, rows.status());
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
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BillingLedgerService::CreateAccount(grpc::CallbackServerContext* ctx,
                                                              const pb::CreateAccountRequest* req,
                                                              pb::Account* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  if (req->name().empty() || req->name().size() > 200)
    return FinishUnary(ctx, absl::InvalidArgumentError("name must be 1 to 200 characters"));
  auto a = store_->CreateAccount(req->name(), now_());
  if (!a.ok()) return FinishUnary(ctx, a.status());
  ToProto(*a, resp);
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BillingLedgerService::GetAccount(grpc::CallbackServerContext* ctx,
                                                           const pb::GetAccountRequest* req,
                                                           pb::Account* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  auto a = store_->GetAccount(req->account_id());
  if (!a.ok()) return FinishUnary(ctx, a.status());
  ToProto(*a, resp);
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BillingLedgerService::Credit(grpc::CallbackServerContext* ctx,
                                                       const pb::CreditRequest* req,
                                                       pb::CreditResponse* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  if (req->amount_nano_usd() <= 0)
    return FinishUnary(ctx, absl::InvalidArgumentError("amount must be positive"));
  if (req->idempotency_key().empty())
    return FinishUnary(ctx, absl::InvalidArgumentError("idempotency_key is required"));
  auto r = store_->Credit(req->account_id(), req->amount_nano_usd(), req->idempotency_key(),
                          req->note(), now_());
  if (!r.ok()) return FinishUnary(ctx, r.status());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto a = accounts_.find(req->account_id()); a != accounts_.end() && !r->duplicate) {
      a->second.balance += req->amount_nano_usd();
      a->second.updated_at = now_();
    }
  }
  resp->set_balance_nano_usd(r->balance);
  resp->set_duplicate(r->duplicate);
  return FinishUnary(ctx, absl::OkStatus());
}

}  // namespace nexusflow::billing

#include "services/billing-ledger/billing_service.h"

#include <prometheus/counter.h>
#include <prometheus/histogram.h>

#include "absl/strings/str_cat.h"
#include "libs/rpc/internal_auth.h"
#include "libs/common/ids.h"
#include "libs/common/status_map.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/unary.h"
#include "services/billing-ledger/pricing.h"

namespace nexusflow::billing {
namespace {

struct Families {
  prometheus::Family<prometheus::Counter>& charged;
  prometheus::Family<prometheus::Counter>& settlements;
  prometheus::Family<prometheus::Counter>& reservations;
  prometheus::Histogram& batch;
  prometheus::Family<prometheus::Counter>& releases;
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
          .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256}),
      prometheus::BuildCounter()
          .Name("nexusflow_billing_hold_releases_total")
          .Help("Holds closed without a charge, by reason (released, expired)")
          .Register(MetricsRegistry())};
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
                                           std::function<int64_t()> now, int64_t overdraft)
    : store_(std::move(store)), now_(now ? std::move(now) : [] { return UnixNow(); }) {
  holds_ = store_->shared() ? NewStoreHoldBook(store_.get(), overdraft)
                            : NewMemoryHoldBook(store_.get(), overdraft);
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

grpc::ServerUnaryReactor* BillingLedgerService::Reserve(grpc::CallbackServerContext* ctx,
                                                        const pb::ReserveRequest* req,
                                                        pb::ReserveResponse* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  return FinishUnary(ctx, ReserveHold(*req, resp));
}

absl::Status BillingLedgerService::ReserveHold(const pb::ReserveRequest& req,
                                               pb::ReserveResponse* resp) {
  if (req.request_id().empty() || req.account_id().empty())
    return absl::InvalidArgumentError("request_id and account_id are required");
  if (req.amount_nano_usd() < 0) return absl::InvalidArgumentError("amount must not be negative");
  int64_t now = now_();
  ExpireHolds(now);
  auto r = holds_->Reserve(req.account_id(), req.request_id(), req.amount_nano_usd(), now);
  if (!r.ok()) {
    if (absl::IsFailedPrecondition(r.status()))
      Metrics().reservations.Add({{"outcome", "insufficient"}}).Increment();
    return r.status();
  }
  if (!r->existing) CounterFor(Metrics().reservations, {{"outcome", "held"}}).Increment();
  resp->set_hold_id(r->hold.id);
  resp->set_available_nano_usd(r->available);
  return absl::OkStatus();
}

void BillingLedgerService::ExpireHolds(int64_t now) {
  int64_t due = next_expiry_sweep_.load(std::memory_order_relaxed);
  if (now < due || !next_expiry_sweep_.compare_exchange_strong(due, now + 10)) return;
  auto expired = holds_->Expire(now);
  if (!expired.ok()) {
    next_expiry_sweep_.store(now);  // try again with the next request
    return;
  }
  RecordReleases(std::move(*expired));
}

void BillingLedgerService::RecordReleases(std::vector<HoldRelease> releases) {
  if (releases.empty()) return;
  for (const auto& r : releases)
    CounterFor(Metrics().releases, {{"reason", r.expired ? "expired" : "released"}}).Increment();
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    for (auto& r : releases) releases_.push_back(std::move(r));
  }
  queue_cv_.notify_one();
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
  p.row.hold_id = req->hold_id();
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
  std::vector<HoldRelease> releases;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    releases.swap(releases_);
  }
  bool recorded = Commit(mine, releases);
  std::lock_guard<std::mutex> lock(queue_mu_);
  if (!recorded)
    for (auto& r : releases) releases_.push_back(std::move(r));
  committing_ = false;
  if (!queue_.empty() || !releases_.empty()) queue_cv_.notify_one();
}

void BillingLedgerService::WriterLoop() {
  std::unique_lock<std::mutex> lock(queue_mu_);
  while (true) {
    queue_cv_.wait(lock, [this] {
      return (stopping_ || !queue_.empty() || !releases_.empty()) && !committing_;
    });
    if (queue_.empty() && releases_.empty()) return;  // stopping, and everything was written
    std::deque<PendingSettle> batch;
    batch.swap(queue_);
    std::vector<HoldRelease> releases;
    releases.swap(releases_);
    committing_ = true;
    lock.unlock();
    bool recorded = Commit(batch, releases);
    lock.lock();
    committing_ = false;
    if (!recorded) {
      // Kept for the next transaction; a store that stays down loses them only when
      // the process stops (they are a record for Verify, no money moves with them).
      for (auto& r : releases) releases_.push_back(std::move(r));
      if (stopping_) return;
      queue_cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
  }
}

bool BillingLedgerService::Commit(std::deque<PendingSettle>& batch,
                                  std::vector<HoldRelease>& releases) {
  std::vector<UsageRow> rows;
  rows.reserve(batch.size());
  for (const auto& p : batch) rows.push_back(p.row);
  auto results = store_->CommitBatch(rows, releases);
  for (size_t i = 0; i < batch.size(); ++i) {
    auto& p = batch[i];
    absl::Status status = results.ok() ? (*results)[i].status() : results.status();
    if (!status.ok()) {
      p.done(status);
      continue;
    }
    const ChangeResult& r = *(*results)[i];
    holds_->Settled(p.row, r);
    if (r.duplicate) {
      Metrics().settlements.Add({{"outcome", "duplicate"}}).Increment();
    } else {
      CounterFor(Metrics().settlements, {{"outcome", "charged"}}).Increment();
      CounterFor(Metrics().charged, {{"model", p.row.model}}).Increment(static_cast<double>(r.cost));
    }
    p.response->set_cost_nano_usd(r.cost);
    p.response->set_balance_nano_usd(r.balance);
    p.response->set_duplicate(r.duplicate);
    p.done(absl::OkStatus());
  }
  if (!batch.empty()) Metrics().batch.Observe(static_cast<double>(batch.size()));
  return results.ok();
}

grpc::ServerUnaryReactor* BillingLedgerService::ReleaseHold(grpc::CallbackServerContext* ctx,
                                                            const pb::ReleaseHoldRequest* req,
                                                            pb::ReleaseHoldResponse*) {
  NF_REQUIRE_INTERNAL(ctx);
  CloseHold(req->hold_id());
  return FinishUnary(ctx, absl::OkStatus());
}

void BillingLedgerService::CloseHold(const std::string& hold_id) {
  if (hold_id.empty()) return;
  auto release = holds_->Release(hold_id, now_());
  // A hold that cannot be released now (store unreachable) expires in the end.
  if (release.ok() && release->has_value()) RecordReleases({std::move(**release)});
}

grpc::ServerUnaryReactor* BillingLedgerService::GetBalance(grpc::CallbackServerContext* ctx,
                                                           const pb::GetBalanceRequest* req,
                                                           pb::Balance* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  auto account = holds_->Balance(req->account_id());
  if (!account.ok()) return FinishUnary(ctx, account.status());
  resp->set_account_id(req->account_id());
  resp->set_balance_nano_usd(account->balance);
  resp->set_total_spent_nano_usd(account->total_spent);
  resp->set_held_nano_usd(account->held);
  resp->mutable_last_updated()->set_seconds(account->updated_at);
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
  NF_REQUIRE_ADMIN(ctx);
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
  NF_REQUIRE_ADMIN(ctx);
  auto a = store_->GetAccount(req->account_id());
  if (!a.ok()) return FinishUnary(ctx, a.status());
  ToProto(*a, resp);
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BillingLedgerService::Credit(grpc::CallbackServerContext* ctx,
                                                       const pb::CreditRequest* req,
                                                       pb::CreditResponse* resp) {
  NF_REQUIRE_ADMIN(ctx);
  if (req->amount_nano_usd() <= 0)
    return FinishUnary(ctx, absl::InvalidArgumentError("amount must be positive"));
  if (req->idempotency_key().empty())
    return FinishUnary(ctx, absl::InvalidArgumentError("idempotency_key is required"));
  int64_t now = now_();
  auto r = store_->Credit(req->account_id(), req->amount_nano_usd(), req->idempotency_key(),
                          req->note(), now);
  if (!r.ok()) return FinishUnary(ctx, r.status());
  holds_->Credited(req->account_id(), *r, now);
  resp->set_balance_nano_usd(r->balance);
  resp->set_duplicate(r->duplicate);
  return FinishUnary(ctx, absl::OkStatus());
}

}  // namespace nexusflow::billing

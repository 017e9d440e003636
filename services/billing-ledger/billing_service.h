#pragma once
// BillingLedgerService: holds through a HoldBook (in memory for a store this process owns,
// in the store when replicas share it), durable changes through a LedgerStore.
// Settlements are group-committed: an idle ledger commits a settlement on the caller's
// thread; whatever arrives while a transaction runs queues for the writer thread, which
// commits it all in the next one, so a settlement costs one transaction when idle and a
// share of one under load. Holds closed without a settlement are recorded by the same
// transactions (memory book) or by the store at once (store book).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nexusflow/billing/v1/billing.grpc.pb.h"
#include "services/billing-ledger/hold_book.h"
#include "services/billing-ledger/ledger_store.h"

namespace nexusflow::billing {

namespace pb = ::nexusflow::billing::v1;

class BillingLedgerService : public pb::BillingLedgerService::CallbackService {
 public:
  // `now`: unix seconds (injected by tests). `overdraft`: nano-USD an account's balance
  // may be held below zero by admitted requests (config billing_ledger.overdraft_usd).
  explicit BillingLedgerService(std::unique_ptr<LedgerStore> store,
                                std::function<int64_t()> now = nullptr, int64_t overdraft = 0);
  ~BillingLedgerService() override;

  grpc::ServerUnaryReactor* Reserve(grpc::CallbackServerContext*, const pb::ReserveRequest*,
                                    pb::ReserveResponse*) override;
  grpc::ServerUnaryReactor* Settle(grpc::CallbackServerContext*, const pb::SettleRequest*,
                                   pb::SettleResponse*) override;
  grpc::ServerUnaryReactor* ReleaseHold(grpc::CallbackServerContext*,
                                        const pb::ReleaseHoldRequest*,
                                        pb::ReleaseHoldResponse*) override;
  grpc::ServerUnaryReactor* GetBalance(grpc::CallbackServerContext*,
                                       const pb::GetBalanceRequest*, pb::Balance*) override;
  grpc::ServerUnaryReactor* ListUsage(grpc::CallbackServerContext*,
                                      const pb::ListUsageRequest*,
                                      pb::ListUsageResponse*) override;
  grpc::ServerUnaryReactor* CreateAccount(grpc::CallbackServerContext*,
                                          const pb::CreateAccountRequest*,
                                          pb::Account*) override;
  grpc::ServerUnaryReactor* GetAccount(grpc::CallbackServerContext*,
                                       const pb::GetAccountRequest*, pb::Account*) override;
  grpc::ServerUnaryReactor* Credit(grpc::CallbackServerContext*, const pb::CreditRequest*,
                                   pb::CreditResponse*) override;

  // The logic behind the request-path RPCs, for a caller in the same process.
  absl::Status ReserveHold(const pb::ReserveRequest& req, pb::ReserveResponse* resp);
  void CloseHold(const std::string& hold_id);
  // `done` runs once the settlement is committed. With `may_commit_here` an idle ledger
  // commits on the calling thread; otherwise the writer thread does.
  void SettleUsage(const pb::SettleRequest& req, pb::SettleResponse* resp,
                   std::function<void(const absl::Status&)> done, bool may_commit_here = true);

 private:
  struct PendingSettle {
    UsageRow row;
    std::function<void(const absl::Status&)> done;
    pb::SettleResponse* response;
  };

  // Closes expired holds (every 10 s at most); what the store must record is queued.
  void ExpireHolds(int64_t now);
  // Queues hold closings for the writer's next transaction.
  void RecordReleases(std::vector<HoldRelease> releases);
  void WriterLoop();
  // Writes a batch (and the queued releases) in one transaction and completes each
  // settlement.
  // False when nothing could be committed (the releases are still to record).
  bool Commit(std::deque<PendingSettle>& batch, std::vector<HoldRelease>& releases);

  std::unique_ptr<LedgerStore> store_;
  std::function<int64_t()> now_;
  std::unique_ptr<HoldBook> holds_;
  std::atomic<int64_t> next_expiry_sweep_{0};  // unix seconds

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<PendingSettle> queue_;
  std::vector<HoldRelease> releases_;  // closed holds the store has yet to record
  bool stopping_ = false;
  bool committing_ = false;  // a batch is being written (by any thread)
  std::thread writer_;
};

}  // namespace nexusflow::billing

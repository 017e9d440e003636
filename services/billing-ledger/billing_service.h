#pragma once
// BillingLedgerService: holds and balances answered from memory, durable changes through
// a LedgerStore. Settlements are group-committed: an idle ledger commits a settlement on
// the caller's thread; whatever arrives while a transaction runs queues for the writer
// thread, which commits it all in the next one, so a settlement costs one transaction
// when idle and a share of one under load. One billing-ledger replica owns
// the accounts it serves (its memory mirrors the store).
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "nexusflow/billing/v1/billing.grpc.pb.h"
#include "services/billing-ledger/ledger_store.h"

namespace nexusflow::billing {

namespace pb = ::nexusflow::billing::v1;

class BillingLedgerService : public pb::BillingLedgerService::CallbackService {
 public:
  explicit BillingLedgerService(std::unique_ptr<LedgerStore> store,
                                std::function<int64_t()> now = nullptr);
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
  struct Hold {
    std::string account_id;
    std::string request_id;
    int64_t amount;
    int64_t expires;  // unix seconds; a caller that vanished frees it then
  };
  struct AccountState {
    int64_t balance = 0;      // nano-USD, as committed
    int64_t total_spent = 0;  // nano-USD
    int64_t held = 0;         // open holds
    int64_t updated_at = 0;
  };
  struct PendingSettle {
    UsageRow row;
    std::string hold_id;
    std::function<void(const absl::Status&)> done;
    pb::SettleResponse* response;
  };

  // The account's state, loaded from the store on first use; mu_ held.
  absl::StatusOr<AccountState*> AccountLocked(const std::string& account_id);
  void CloseHoldLocked(const std::string& hold_id);
  // Drops holds past their expiry (their request can no longer settle through them).
  void ExpireHoldsLocked(int64_t now);
  void WriterLoop();
  // Writes a batch in one transaction and completes each settlement.
  void Commit(std::deque<PendingSettle>& batch);

  std::unique_ptr<LedgerStore> store_;
  std::function<int64_t()> now_;
  std::mutex mu_;  // holds and account states
  std::unordered_map<std::string, AccountState> accounts_;
  std::unordered_map<std::string, Hold> holds_;
  std::unordered_map<std::string, std::string> hold_by_request_;
  int64_t next_expiry_sweep_ = 0;  // unix seconds

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<PendingSettle> queue_;
  bool stopping_ = false;
  bool committing_ = false;  // a batch is being written (by any thread)
  std::thread writer_;
};

}  // namespace nexusflow::billing

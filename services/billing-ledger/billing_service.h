#pragma once
// BillingLedgerService: holds (in memory: a hold only has to outlive its request) on top
// of a durable LedgerStore (balances, journal, usage records).
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "nexusflow/billing/v1/billing.grpc.pb.h"
#include "services/billing-ledger/ledger_store.h"

namespace nexusflow::billing {

namespace pb = ::nexusflow::billing::v1;

class BillingLedgerService : public pb::BillingLedgerService::CallbackService {
 public:
  explicit BillingLedgerService(std::unique_ptr<LedgerStore> store,
                                std::function<int64_t()> now = nullptr);

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

 private:
  struct Hold {
    std::string account_id;
    std::string request_id;
    int64_t amount;
  };
  void CloseHold(const std::string& hold_id);

  std::unique_ptr<LedgerStore> store_;
  std::function<int64_t()> now_;
  std::mutex mu_;  // holds
  std::unordered_map<std::string, Hold> holds_;
  std::unordered_map<std::string, std::string> hold_by_request_;
  std::unordered_map<std::string, int64_t> held_by_account_;
};

}  // namespace nexusflow::billing

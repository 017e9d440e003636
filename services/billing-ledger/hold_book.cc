#include "services/billing-ledger/hold_book.h"

#include <mutex>
#include <unordered_map>

#include "libs/common/ids.h"
#include "services/billing-ledger/ledger_rules.h"

namespace nexusflow::billing {
namespace {

// Longer than any request may run (the connector's timeout is minutes): a hold still open
// then belongs to a gateway that went away before settling or releasing it.
constexpr int64_t kHoldLifetimeSeconds = 3600;

class MemoryHoldBook : public HoldBook {
 public:
  MemoryHoldBook(LedgerStore* store, int64_t overdraft) : store_(store), overdraft_(overdraft) {}

  absl::StatusOr<Reservation> Reserve(const std::string& account_id,
                                      const std::string& request_id, int64_t amount,
                                      int64_t now) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto account = AccountLocked(account_id);
    if (!account.ok()) return account.status();
    Mirror& a = **account;
    Reservation out;
    if (auto it = hold_by_request_.find(request_id); it != hold_by_request_.end()) {
      out.hold = holds_[it->second];
      out.available = a.balance - a.held;
      out.existing = true;
      return out;
    }
    if (!AdmitsHold(a.balance, a.held, amount, overdraft_))
      return InsufficientBalance(a.balance - a.held, amount);
    out.hold = HoldRow{NewId("hold_", 10), account_id, request_id, amount,
                       now + kHoldLifetimeSeconds};
    holds_[out.hold.id] = out.hold;
    hold_by_request_[request_id] = out.hold.id;
    a.held += amount;
    out.available = a.balance - a.held;
    return out;
  }

  absl::StatusOr<std::optional<HoldRelease>> Release(const std::string& hold_id,
                                                     int64_t now) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = holds_.find(hold_id);
    if (it == holds_.end()) return std::nullopt;
    HoldRelease r{it->second.id, it->second.account_id, it->second.request_id,
                  it->second.amount, false, now};
    CloseLocked(it);
    return r;
  }

  absl::StatusOr<std::vector<HoldRelease>> Expire(int64_t now) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<HoldRelease> out;
    for (auto it = holds_.begin(); it != holds_.end();) {
      auto next = std::next(it);
      if (it->second.expires_at <= now) {
        out.push_back(HoldRelease{it->second.id, it->second.account_id, it->second.request_id,
                                  it->second.amount, true, now});
        CloseLocked(it);
      }
      it = next;
    }
    return out;
  }

  absl::StatusOr<AccountRow> Balance(const std::string& account_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto account = AccountLocked(account_id);
    if (!account.ok()) return account.status();
    AccountRow row;
    row.id = account_id;
    row.balance = (*account)->balance;
    row.total_spent = (*account)->total_spent;
    row.held = (*account)->held;
    row.updated_at = (*account)->updated_at;
    row.version = (*account)->version;
    return row;
  }

  void Settled(const UsageRow& row, const ChangeResult& r) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!row.hold_id.empty())
      if (auto it = holds_.find(row.hold_id); it != holds_.end()) CloseLocked(it);
    if (!r.duplicate) ApplyLocked(row.account_id, r, row.created_at);
  }

  void Credited(const std::string& account_id, const ChangeResult& r, int64_t now) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!r.duplicate) ApplyLocked(account_id, r, now);
  }

 private:
  struct Mirror {
    int64_t balance = 0;      // nano-USD, as committed
    int64_t total_spent = 0;  // nano-USD
    int64_t held = 0;         // open holds
    int64_t updated_at = 0;
    int64_t version = 0;  // of the committed state mirrored
  };

  // The account's mirror, loaded from the store on first use; mu_ held.
  absl::StatusOr<Mirror*> AccountLocked(const std::string& account_id) {
    auto it = accounts_.find(account_id);
    if (it != accounts_.end()) return &it->second;
    auto row = store_->GetAccount(account_id);
    if (!row.ok()) return row.status();
    Mirror& a = accounts_[account_id];
    a.balance = row->balance;
    a.total_spent = row->total_spent;
    a.updated_at = row->updated_at;
    a.version = row->version;
    return &a;
  }

  // Commits reach the book in any order (a credit's thread may be overtaken by the
  // settlement writer's, and the other way round): only a newer state replaces the
  // mirror's, so it ends at the last committed one.
  void ApplyLocked(const std::string& account_id, const ChangeResult& r, int64_t now) {
    auto it = accounts_.find(account_id);
    if (it == accounts_.end()) return;  // loaded from the store, fresh, when first needed
    Mirror& a = it->second;
    if (r.version <= a.version) return;
    a.balance = r.balance;
    a.total_spent = r.total_spent;
    a.version = r.version;
    a.updated_at = now;
  }

  void CloseLocked(std::unordered_map<std::string, HoldRow>::iterator it) {
    if (auto a = accounts_.find(it->second.account_id); a != accounts_.end())
      a->second.held -= it->second.amount;
    hold_by_request_.erase(it->second.request_id);
    holds_.erase(it);
  }

  LedgerStore* store_;
  const int64_t overdraft_;
  std::mutex mu_;
  std::unordered_map<std::string, Mirror> accounts_;
  std::unordered_map<std::string, HoldRow> holds_;
  std::unordered_map<std::string, std::string> hold_by_request_;
};

class StoreHoldBook : public HoldBook {
 public:
  StoreHoldBook(LedgerStore* store, int64_t overdraft) : store_(store), overdraft_(overdraft) {}

  absl::StatusOr<Reservation> Reserve(const std::string& account_id,
                                      const std::string& request_id, int64_t amount,
                                      int64_t now) override {
    HoldRow hold{NewId("hold_", 10), account_id, request_id, amount, now + kHoldLifetimeSeconds};
    return store_->Reserve(hold, overdraft_, now);
  }

  absl::StatusOr<std::optional<HoldRelease>> Release(const std::string& hold_id,
                                                     int64_t now) override {
    auto closed = store_->ReleaseHold(hold_id, now);
    if (!closed.ok()) return closed.status();
    return std::nullopt;  // recorded by the store with the release
  }

  absl::StatusOr<std::vector<HoldRelease>> Expire(int64_t now) override {
    auto n = store_->ExpireHolds(now);
    if (!n.ok()) return n.status();
    return std::vector<HoldRelease>{};
  }

  absl::StatusOr<AccountRow> Balance(const std::string& account_id) override {
    return store_->GetAccount(account_id);
  }

  // The store closed the hold and changed the balance in the settlement's transaction.
  void Settled(const UsageRow&, const ChangeResult&) override {}
  void Credited(const std::string&, const ChangeResult&, int64_t) override {}

 private:
  LedgerStore* store_;
  const int64_t overdraft_;
};

}  // namespace

std::unique_ptr<HoldBook> NewMemoryHoldBook(LedgerStore* store, int64_t overdraft) {
  return std::make_unique<MemoryHoldBook>(store, overdraft);
}

std::unique_ptr<HoldBook> NewStoreHoldBook(LedgerStore* store, int64_t overdraft) {
  return std::make_unique<StoreHoldBook>(store, overdraft);
}

}  // namespace nexusflow::billing

#pragma once
// HoldBook: where holds live and the balances they are checked against. Two books:
//  - memory (a store one process owns, SQLite): holds and a mirror of each balance in
//    this process; Reserve never touches the disk. The store records how each hold
//    closed (settled with its usage record; released or expired through the service's
//    writer), so Verify can check them.
//  - store (a store replicas share, PostgreSQL): every Reserve, release and expiry is a
//    statement on the store, so admission holds across replicas.
// The service tells the book what the store committed; the memory book applies those
// changes to its mirror in the store's commit order (by the account's version), so a
// credit and a settlement that finish in either order leave the mirror right.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/billing-ledger/ledger_store.h"

namespace nexusflow::billing {

class HoldBook {
 public:
  virtual ~HoldBook() = default;
  // A hold of `amount` for `request_id` (the same request gets its hold back), admitted
  // while balance − held − amount ≥ −overdraft on a positive balance;
  // FAILED_PRECONDITION otherwise.
  virtual absl::StatusOr<Reservation> Reserve(const std::string& account_id,
                                              const std::string& request_id, int64_t amount,
                                              int64_t now) = 0;
  // Closes an open hold without a charge. Returns what the store still has to record
  // (memory book), or nothing (closed unknown hold, or the store recorded it).
  virtual absl::StatusOr<std::optional<HoldRelease>> Release(const std::string& hold_id,
                                                             int64_t now) = 0;
  // Closes holds past their expiry (a caller that vanished); returns what the store
  // still has to record.
  virtual absl::StatusOr<std::vector<HoldRelease>> Expire(int64_t now) = 0;
  // Balance, total spent and open holds of an account.
  virtual absl::StatusOr<AccountRow> Balance(const std::string& account_id) = 0;
  // The store committed a settlement of `row` (and closed `row.hold_id` when it holds it).
  virtual void Settled(const UsageRow& row, const ChangeResult& result) = 0;
  // The store committed a credit.
  virtual void Credited(const std::string& account_id, const ChangeResult& result,
                        int64_t now) = 0;
};

// `store` outlives the book.
std::unique_ptr<HoldBook> NewMemoryHoldBook(LedgerStore* store, int64_t overdraft);
std::unique_ptr<HoldBook> NewStoreHoldBook(LedgerStore* store, int64_t overdraft);

}  // namespace nexusflow::billing

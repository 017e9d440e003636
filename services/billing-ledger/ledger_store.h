#pragma once
// LedgerStore: accounts, double-entry journal, credits, usage records and holds. Every
// balance change is one transaction that writes the journal entry and the balance
// together. Settlement is exactly-once per request id. Embedded: SQLite (WAL,
// synchronous=FULL); scale-out: PostgreSQL (synchronous commit), shared by replicas.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nexusflow/llm/v1/chat.pb.h"

namespace nexusflow::billing {

struct AccountRow {
  std::string id;
  std::string name;
  int64_t balance = 0;      // nano-USD
  int64_t total_spent = 0;  // nano-USD
  int64_t created_at = 0;   // unix seconds
  int64_t updated_at = 0;
  int64_t held = 0;     // nano-USD in the store's open holds
  int64_t version = 0;  // increases with every change of balance or total_spent
};

struct UsageRow {
  int64_t sequence = 0;
  std::string request_id;
  std::string account_id;
  std::string key_id;
  std::string model;
  int protocol = 0;  // llm::v1::Protocol
  std::string deployment_id;
  llm::v1::Usage usage;
  llm::v1::Price price;
  int64_t cost = 0;  // nano-USD
  int64_t created_at = 0;
  std::string hold_id;  // the hold this settlement closes ("" = none); recorded
};

struct ChangeResult {
  int64_t balance = 0;
  int64_t cost = 0;        // for settlements: the cost charged (the first time)
  bool duplicate = false;  // already applied; nothing changed
  // The account's state after this change, for a mirror to apply changes in commit
  // order (a change with a lower version is older); 0 for a duplicate.
  int64_t total_spent = 0;
  int64_t version = 0;
};

struct HoldRow {
  std::string id;  // "hold_…"
  std::string account_id;
  std::string request_id;  // one hold per request id
  int64_t amount = 0;      // nano-USD
  int64_t expires_at = 0;  // unix seconds
};

// A hold closed without a settlement: released by its caller, or swept after expiry.
struct HoldRelease {
  std::string hold_id;
  std::string account_id;
  std::string request_id;
  int64_t amount = 0;
  bool expired = false;
  int64_t at = 0;  // unix seconds
};

struct Reservation {
  HoldRow hold;
  int64_t available = 0;  // balance − held after this hold, nano-USD
  bool existing = false;  // the request already had this hold
};

class LedgerStore {
 public:
  virtual ~LedgerStore() = default;

  // True when several services may share this store (PostgreSQL): holds then live in
  // the store and every admission is decided there. False for a store one process owns
  // (SQLite): its service answers holds from memory and never writes on Reserve.
  virtual bool shared() const = 0;

  virtual absl::StatusOr<AccountRow> CreateAccount(const std::string& name, int64_t now) = 0;
  virtual absl::StatusOr<AccountRow> GetAccount(const std::string& id) = 0;
  // Idempotent on `idempotency_key`; the key reused for another account or amount is
  // ALREADY_EXISTS.
  virtual absl::StatusOr<ChangeResult> Credit(const std::string& account_id, int64_t amount,
                                              const std::string& idempotency_key,
                                              const std::string& note, int64_t now) = 0;
  // In one transaction (group commit): charges each row's cost and records it unless its
  // request_id was settled before, closing the row's hold when the store holds it; and
  // records `releases` (holds closed elsewhere without a settlement). Results are in
  // the order of `rows`; a row that fails (unknown account) fails alone. The outer
  // status fails when nothing could be committed.
  virtual absl::StatusOr<std::vector<absl::StatusOr<ChangeResult>>> CommitBatch(
      const std::vector<UsageRow>& rows, const std::vector<HoldRelease>& releases) = 0;
  absl::StatusOr<std::vector<absl::StatusOr<ChangeResult>>> SettleBatch(
      const std::vector<UsageRow>& rows) {
    return CommitBatch(rows, {});
  }
  absl::StatusOr<ChangeResult> Settle(const UsageRow& row) {
    auto r = CommitBatch({row}, {});
    if (!r.ok()) return r.status();
    return r->front();
  }
  // The sequence of `request_id`'s record in the account; NOT_FOUND when none.
  virtual absl::StatusOr<int64_t> UsageSequence(const std::string& account_id,
                                                const std::string& request_id) = 0;
  // Newest first; `before` = 0 starts at the newest.
  virtual absl::StatusOr<std::vector<UsageRow>> ListUsage(const std::string& account_id,
                                                          int limit, int64_t before) = 0;

  // Holds kept in the store. One atomic conditional step: admitted only while the
  // account's balance is positive and balance − held − amount ≥ −overdraft; otherwise
  // FAILED_PRECONDITION (NOT_FOUND for an unknown account). A request id that already
  // has a hold gets that hold back (`existing`).
  virtual absl::StatusOr<Reservation> Reserve(const HoldRow& hold, int64_t overdraft,
                                              int64_t now) = 0;
  // Closes an open hold without a charge and records it; false when it was not open
  // (settled, released or expired before).
  virtual absl::StatusOr<bool> ReleaseHold(const std::string& hold_id, int64_t now) = 0;
  // Closes the holds whose expiry is at or before `now`; returns how many.
  virtual absl::StatusOr<int64_t> ExpireHolds(int64_t now) = 0;

  // Checks the ledger's invariants: the journal's transfers sum to zero, each account's
  // balance (and total spent) equals the sum of its transfers, each credit and usage
  // record has its one journal entry, no request is charged twice, no hold is both
  // settled and released, and each account's held amount equals its open holds. Returns
  // one line per violation (empty: consistent).
  virtual absl::StatusOr<std::vector<std::string>> Verify() = 0;
};

absl::StatusOr<std::unique_ptr<LedgerStore>> OpenSqliteLedgerStore(const std::string& path);
// How an SQLite ledger keeps its WAL bounded: a checkpoint every `checkpoint_interval`,
// and the WAL started over once it holds more than `restart_frames` pages.
struct SqliteLedgerOptions {
  std::chrono::milliseconds checkpoint_interval{500};
  int64_t restart_frames = 16384;  // 64 MiB of 4 KiB pages
};
absl::StatusOr<std::unique_ptr<LedgerStore>> OpenSqliteLedgerStore(const std::string& path,
                                                                   SqliteLedgerOptions options);
// `conninfo`: postgresql://user@host:port/db (or libpq keywords). Creates the schema when
// missing; several stores (processes) may share one database.
absl::StatusOr<std::unique_ptr<LedgerStore>> OpenPostgresLedgerStore(const std::string& conninfo);
// Either, by the setting's form: a postgresql:// or postgres:// URL, else an SQLite path.
absl::StatusOr<std::unique_ptr<LedgerStore>> OpenLedgerStore(const std::string& setting);

}  // namespace nexusflow::billing

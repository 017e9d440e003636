#pragma once
// LedgerStore: accounts, double-entry journal, credits and usage records. Every balance
// change is one transaction that writes the journal entry and the balance together.
// Settlement is exactly-once per request id. Embedded: SQLite (WAL); scale-out: PostgreSQL.
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
};

struct ChangeResult {
  int64_t balance = 0;
  int64_t cost = 0;        // for settlements: the cost charged (the first time)
  bool duplicate = false;  // already applied; nothing changed
};

class LedgerStore {
 public:
  virtual ~LedgerStore() = default;
  virtual absl::StatusOr<AccountRow> CreateAccount(const std::string& name, int64_t now) = 0;
  virtual absl::StatusOr<AccountRow> GetAccount(const std::string& id) = 0;
  virtual absl::StatusOr<ChangeResult> Credit(const std::string& account_id, int64_t amount,
                                              const std::string& idempotency_key,
                                              const std::string& note, int64_t now) = 0;
  // Charges each row's cost and records it, unless its request_id was settled before,
  // all in one transaction (group commit). Results are in the order of `rows`; a row
  // that fails (unknown account) fails alone. The outer status fails when nothing
  // could be committed.
  virtual absl::StatusOr<std::vector<absl::StatusOr<ChangeResult>>> SettleBatch(
      const std::vector<UsageRow>& rows) = 0;
  absl::StatusOr<ChangeResult> Settle(const UsageRow& row) {
    auto r = SettleBatch({row});
    if (!r.ok()) return r.status();
    return r->front();
  }
  // Newest first; `before` = 0 starts at the newest.
  // The sequence of `request_id`'s record in the account; NOT_FOUND when none.
  virtual absl::StatusOr<int64_t> UsageSequence(const std::string& account_id,
                                                const std::string& request_id) = 0;
  virtual absl::StatusOr<std::vector<UsageRow>> ListUsage(const std::string& account_id,
                                                          int limit, int64_t before) = 0;
};

absl::StatusOr<std::unique_ptr<LedgerStore>> OpenSqliteLedgerStore(const std::string& path);

}  // namespace nexusflow::billing

#pragma once
// What every LedgerStore and hold book applies the same way: the admission rule of a
// hold, the error a refused hold answers with, and the invariants Verify checks (as SQL
// both SQLite and PostgreSQL run unchanged over the same tables).
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace nexusflow::billing {

// House accounts of the double-entry journal: money paid in, money spent.
inline constexpr char kCreditsAccount[] = "@credits";
inline constexpr char kRevenueAccount[] = "@revenue";

// A hold of `amount` is admitted while the account's balance is positive and
// balance − held − amount ≥ −overdraft (all nano-USD); no overflow for any int64 inputs.
bool AdmitsHold(int64_t balance, int64_t held, int64_t amount, int64_t overdraft);

// FAILED_PRECONDITION naming what is available and what the request may cost.
absl::Status InsufficientBalance(int64_t available, int64_t amount);

// One invariant: a query returning one text column, a line per violation.
struct VerifyCheck {
  const char* name;
  const char* sql;
};
const std::vector<VerifyCheck>& VerifyChecks();

}  // namespace nexusflow::billing

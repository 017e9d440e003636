#include "services/billing-ledger/ledger_rules.h"

#include "absl/strings/str_cat.h"
#include "libs/common/money.h"

namespace nexusflow::billing {

bool AdmitsHold(int64_t balance, int64_t held, int64_t amount, int64_t overdraft) {
  if (balance <= 0) return false;
  return static_cast<__int128>(balance) - held - amount >= -static_cast<__int128>(overdraft);
}

absl::Status InsufficientBalance(int64_t available, int64_t amount) {
  return absl::FailedPreconditionError(absl::StrCat(
      "Insufficient balance: available ", FormatUsd(available),
      " USD, this request may cost up to ", FormatUsd(amount), " USD. Add credit to continue."));
}

// Each query returns one text column, one row per violation. Plain SQL that SQLite and
// PostgreSQL both run (|| concatenates a number to text in both). A check that looks a
// row up in another table is a join or an uncorrelated IN, never a correlated subquery:
// the journal has no index on its reference, and SQLite runs a correlated subquery once
// per outer row (a scan of the journal per usage record), but gives a join an automatic
// index, so a ledger of millions of records verifies in seconds.
const std::vector<VerifyCheck>& VerifyChecks() {
  static const std::vector<VerifyCheck> kChecks = {
      {"malformed transfer",
       "SELECT 'journal entry ' || seq || ' moves ' || amount || ' from ' || debit_account || "
       "' to ' || credit_account || ': not a positive amount between two accounts' "
       "FROM journal WHERE amount <= 0 OR debit_account = credit_account ORDER BY seq"},
      {"transfers do not sum to zero",
       "SELECT 'the journal''s transfers sum to ' || s || ', not 0' FROM ("
       "SELECT COALESCE(SUM(d), 0) AS s FROM ("
       "SELECT amount AS d FROM journal UNION ALL SELECT -amount FROM journal) t) x "
       "WHERE s <> 0"},
      {"unknown account in the journal",
       "SELECT 'the journal moves money for ' || n || ', which is not an account' FROM ("
       "SELECT debit_account AS n FROM journal UNION SELECT credit_account FROM journal) t "
       "WHERE n NOT IN ('@credits', '@revenue') AND n NOT IN (SELECT id FROM accounts) "
       "ORDER BY n"},
      {"balance differs from its transfers",
       "SELECT 'account ' || a.id || ': balance ' || a.balance || ', total spent ' || "
       "a.total_spent || '; its transfers sum to ' || COALESCE(t.net, 0) || ', charges to ' || "
       "COALESCE(t.spent, 0) FROM accounts a LEFT JOIN ("
       "SELECT n, SUM(d) AS net, SUM(s) AS spent FROM ("
       "SELECT credit_account AS n, amount AS d, 0 AS s FROM journal UNION ALL "
       "SELECT debit_account, -amount, CASE WHEN kind = 'charge' THEN amount ELSE 0 END "
       "FROM journal) j GROUP BY n) t ON t.n = a.id "
       "WHERE a.balance <> COALESCE(t.net, 0) OR a.total_spent <> COALESCE(t.spent, 0) "
       "ORDER BY a.id"},
      {"house account differs from its records",
       "SELECT 'house account ' || h.n || ': transfers sum to ' || h.net || ', its records to ' "
       "|| h.expected FROM (SELECT '@credits' AS n, "
       "(SELECT COALESCE(SUM(amount), 0) FROM journal WHERE credit_account = '@credits') - "
       "(SELECT COALESCE(SUM(amount), 0) FROM journal WHERE debit_account = '@credits') AS net, "
       "-(SELECT COALESCE(SUM(amount), 0) FROM credits) AS expected UNION ALL "
       "SELECT '@revenue', "
       "(SELECT COALESCE(SUM(amount), 0) FROM journal WHERE credit_account = '@revenue') - "
       "(SELECT COALESCE(SUM(amount), 0) FROM journal WHERE debit_account = '@revenue'), "
       "(SELECT COALESCE(SUM(cost), 0) FROM usage_records)) h WHERE h.net <> h.expected"},
      {"request charged twice",
       "SELECT 'request ' || reference || ' is charged ' || COUNT(*) || ' times' FROM journal "
       "WHERE kind = 'charge' GROUP BY reference HAVING COUNT(*) > 1 ORDER BY reference"},
      {"usage record without its charge",
       "SELECT 'request ' || u.request_id || ': usage record of ' || u.cost || "
       "' without a matching charge' FROM usage_records u LEFT JOIN journal j ON "
       "j.kind = 'charge' AND j.reference = u.request_id AND j.amount = u.cost AND "
       "j.debit_account = u.account_id AND j.credit_account = '@revenue' "
       "WHERE u.cost > 0 AND j.seq IS NULL ORDER BY u.request_id"},
      {"charge without a usage record",
       "SELECT 'journal entry ' || j.seq || ' charges request ' || j.reference || "
       "', which has no usage record' FROM journal j WHERE j.kind = 'charge' AND NOT EXISTS ("
       "SELECT 1 FROM usage_records u WHERE u.request_id = j.reference) ORDER BY j.seq"},
      {"credit without its transfer",
       "SELECT 'credit ' || c.idempotency_key || ' of ' || c.amount || "
       "' has no matching transfer' FROM credits c LEFT JOIN journal j ON j.kind = 'credit' "
       "AND j.reference = c.idempotency_key AND j.amount = c.amount AND "
       "j.credit_account = c.account_id AND j.debit_account = '@credits' "
       "WHERE j.seq IS NULL ORDER BY c.idempotency_key"},
      {"transfer without its credit",
       "SELECT 'journal entry ' || j.seq || ' credits key ' || j.reference || "
       "', which has no credit record' FROM journal j WHERE j.kind = 'credit' AND NOT EXISTS ("
       "SELECT 1 FROM credits c WHERE c.idempotency_key = j.reference) ORDER BY j.seq"},
      {"hold both settled and released",
       "SELECT 'hold ' || u.hold_id || ' is settled (request ' || u.request_id || "
       "') and released' FROM usage_records u JOIN hold_releases r ON r.hold_id = u.hold_id "
       "WHERE u.hold_id <> '' AND r.reason = 'released' ORDER BY u.hold_id"},
      {"hold settled twice",
       "SELECT 'hold ' || hold_id || ' is settled by ' || COUNT(*) || ' requests' "
       "FROM usage_records WHERE hold_id <> '' GROUP BY hold_id HAVING COUNT(*) > 1 "
       "ORDER BY hold_id"},
      {"hold closed twice",
       "SELECT 'hold ' || hold_id || ' is released or expired ' || COUNT(*) || ' times' "
       "FROM hold_releases GROUP BY hold_id HAVING COUNT(*) > 1 ORDER BY hold_id"},
      {"open hold already closed",
       "SELECT 'hold ' || h.id || ' is open but was settled or released' FROM holds h "
       "WHERE h.id IN (SELECT hold_id FROM usage_records) OR "
       "h.id IN (SELECT hold_id FROM hold_releases) ORDER BY h.id"},
      {"held differs from open holds",
       "SELECT 'account ' || a.id || ': held ' || a.held || ', its open holds sum to ' || "
       "COALESCE(h.total, 0) FROM accounts a LEFT JOIN (SELECT account_id, SUM(amount) AS total "
       "FROM holds GROUP BY account_id) h ON h.account_id = a.id "
       "WHERE a.held <> COALESCE(h.total, 0) ORDER BY a.id"},
  };
  return kChecks;
}

}  // namespace nexusflow::billing

// The ledger on PostgreSQL, shared by any number of billing-ledger replicas. Exactly-once
// rests on unique constraints (a usage record per request id, a credit per idempotency
// key, a hold per request id), admission on one conditional UPDATE of the account row
// (row lock: concurrent holds on one account queue there). Money (credits, settlements)
// commits synchronously; a settlement batch is one transaction whose statements are
// pipelined.
#include "absl/strings/str_cat.h"
#include "libs/common/ids.h"
#include "libs/store/postgres.h"
#include "services/billing-ledger/ledger_rules.h"
#include "services/billing-ledger/ledger_store.h"

namespace nexusflow::billing {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS accounts (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  balance BIGINT NOT NULL DEFAULT 0,        -- nano-USD
  total_spent BIGINT NOT NULL DEFAULT 0,    -- nano-USD
  created_at BIGINT NOT NULL,               -- unix seconds
  updated_at BIGINT NOT NULL,
  held BIGINT NOT NULL DEFAULT 0,           -- nano-USD in open rows of holds
  version BIGINT NOT NULL DEFAULT 0         -- +1 per change of balance or total_spent
);
-- Double-entry journal: every movement debits one account and credits another; the
-- house accounts "@credits" (money paid in) and "@revenue" (money spent) balance it.
CREATE TABLE IF NOT EXISTS journal (
  seq BIGSERIAL PRIMARY KEY,
  debit_account TEXT NOT NULL,
  credit_account TEXT NOT NULL,
  amount BIGINT NOT NULL,                   -- nano-USD, > 0
  kind TEXT NOT NULL,                       -- 'credit' | 'charge'
  reference TEXT NOT NULL,                  -- idempotency key or request id
  created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS credits (
  idempotency_key TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  amount BIGINT NOT NULL,
  balance_after BIGINT NOT NULL,
  note TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage_records (
  seq BIGSERIAL PRIMARY KEY,
  request_id TEXT NOT NULL UNIQUE,
  account_id TEXT NOT NULL,
  key_id TEXT NOT NULL,
  model TEXT NOT NULL,
  protocol INTEGER NOT NULL,
  deployment_id TEXT NOT NULL,
  input_tokens BIGINT NOT NULL,
  cache_read_tokens BIGINT NOT NULL,
  cache_write_tokens BIGINT NOT NULL,
  output_tokens BIGINT NOT NULL,
  reasoning_tokens BIGINT NOT NULL,
  price_input BIGINT NOT NULL,              -- nano-USD per million tokens, snapshot
  price_output BIGINT NOT NULL,
  price_cache_read BIGINT NOT NULL,
  price_cache_write BIGINT NOT NULL,
  cost BIGINT NOT NULL,                     -- nano-USD
  balance_after BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  hold_id TEXT NOT NULL DEFAULT ''          -- the hold this settlement closed
);
-- Media units and their prices (added later: ledgers created before get them here).
ALTER TABLE usage_records ADD COLUMN IF NOT EXISTS images BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN IF NOT EXISTS video_seconds BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN IF NOT EXISTS price_image BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN IF NOT EXISTS price_video_second BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS usage_by_account ON usage_records(account_id, seq);
CREATE TABLE IF NOT EXISTS holds (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  request_id TEXT NOT NULL UNIQUE,
  amount BIGINT NOT NULL,                   -- nano-USD
  expires_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS holds_by_expiry ON holds(expires_at);
-- Holds closed without a settlement (a settlement records its hold in usage_records).
CREATE TABLE IF NOT EXISTS hold_releases (
  seq BIGSERIAL PRIMARY KEY,
  hold_id TEXT NOT NULL,
  account_id TEXT NOT NULL,
  request_id TEXT NOT NULL,
  amount BIGINT NOT NULL,
  reason TEXT NOT NULL,                     -- 'released' | 'expired'
  created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS hold_releases_by_hold ON hold_releases(hold_id);
)sql";

// Serialises schema creation between replicas starting together (CREATE … IF NOT EXISTS
// is not safe against a concurrent twin).
constexpr char kSchemaLock[] = "SELECT pg_advisory_xact_lock(7420150001)";

// Connections per store: the settlement writer and admin calls (synchronous commit), and
// holds (Reserve, release, expiry) at once.
constexpr int kPoolSize = 4;
constexpr int kHoldPoolSize = 8;

// One settlement in one statement: lock the account, insert the usage record (its unique
// request_id makes a concurrent twin from another replica wait, then do nothing), and
// only when the record is new close the hold, charge and journal. A row back: charged;
// none: settled before, or no such account.
constexpr char kSettle[] =
    "WITH lk AS (SELECT balance FROM accounts WHERE id = $2::text FOR UPDATE), "
    "ins AS (INSERT INTO usage_records (request_id, account_id, key_id, model, protocol, "
    "deployment_id, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, "
    "reasoning_tokens, price_input, price_output, price_cache_read, price_cache_write, "
    "cost, balance_after, created_at, hold_id, images, video_seconds, price_image, "
    "price_video_second) "
    "SELECT $1::text, $2::text, $3::text, $4::text, $5::integer, $6::text, $7::bigint, "
    "$8::bigint, $9::bigint, $10::bigint, $11::bigint, $12::bigint, $13::bigint, "
    "$14::bigint, $15::bigint, $16::bigint, lk.balance - $16::bigint, $17::bigint, "
    "$18::text, $19::bigint, $20::bigint, $21::bigint, $22::bigint "
    "FROM lk ON CONFLICT (request_id) DO NOTHING RETURNING seq), "
    "h AS (DELETE FROM holds WHERE id = $18::text AND account_id = $2::text "
    "AND EXISTS (SELECT 1 FROM ins) RETURNING amount), "
    "a AS (UPDATE accounts SET balance = balance - $16::bigint, "
    "total_spent = total_spent + $16::bigint, "
    "held = held - COALESCE((SELECT SUM(amount) FROM h), 0)::bigint, "
    "updated_at = $17::bigint, version = version + 1 "
    "WHERE id = $2::text AND EXISTS (SELECT 1 FROM ins) "
    "RETURNING balance, total_spent, version), "
    "j AS (INSERT INTO journal (debit_account, credit_account, amount, kind, reference, "
    "created_at) SELECT $2::text, '@revenue', $16::bigint, 'charge', $1::text, $17::bigint "
    "FROM a WHERE $16::bigint > 0) "
    "SELECT balance, total_spent, version FROM a";

constexpr char kPriorSettlement[] =
    "SELECT cost, balance_after FROM usage_records WHERE request_id = $1";

constexpr char kRecordRelease[] =
    "INSERT INTO hold_releases (hold_id, account_id, request_id, amount, reason, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6)";

std::vector<PgParam> SettleParams(const UsageRow& r) {
  return {r.request_id, r.account_id, r.key_id, r.model, int64_t{r.protocol}, r.deployment_id,
          r.usage.input_tokens(), r.usage.cache_read_tokens(), r.usage.cache_write_tokens(),
          r.usage.output_tokens(), r.usage.reasoning_tokens(), r.price.input_nano_usd_per_mtok(),
          r.price.output_nano_usd_per_mtok(), r.price.cache_read_nano_usd_per_mtok(),
          r.price.cache_write_nano_usd_per_mtok(), r.cost, r.created_at, r.hold_id,
          r.usage.images(), r.usage.video_seconds(), r.price.image_nano_usd(),
          r.price.video_second_nano_usd()};
}

constexpr char kAccountColumns[] =
    "id, name, balance, total_spent, created_at, updated_at, held, version";

AccountRow ReadAccount(const PgResult& r, int row) {
  AccountRow a;
  a.id = r.Text(row, 0);
  a.name = r.Text(row, 1);
  a.balance = r.Int(row, 2);
  a.total_spent = r.Int(row, 3);
  a.created_at = r.Int(row, 4);
  a.updated_at = r.Int(row, 5);
  a.held = r.Int(row, 6);
  a.version = r.Int(row, 7);
  return a;
}

class PostgresLedgerStore : public LedgerStore {
 public:
  // Money (credits, settlements) commits synchronously. Holds do not wait for the disk:
  // a hold only reserves headroom for a request in flight, its commit is atomic and seen
  // by every replica at once, and a server crash can only lose the last moments of holds
  // (never a charge; a settlement's synchronous commit flushes every hold before it).
  explicit PostgresLedgerStore(const std::string& conninfo)
      : pool_(conninfo, kPoolSize), hold_pool_(conninfo, kHoldPoolSize, /*synchronous_commit=*/false) {}

  bool shared() const override { return true; }

  absl::StatusOr<AccountRow> CreateAccount(const std::string& name, int64_t now) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    AccountRow a;
    a.id = NewId("acct_");
    a.name = name;
    a.created_at = a.updated_at = now;
    auto r = (*c)->Query(
        "INSERT INTO accounts (id, name, balance, total_spent, created_at, updated_at) "
        "VALUES ($1, $2, 0, 0, $3, $3)",
        {a.id, a.name, now});
    if (!r.ok()) return r.status();
    return a;
  }

  absl::StatusOr<AccountRow> GetAccount(const std::string& id) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(absl::StrCat("SELECT ", kAccountColumns, " FROM accounts WHERE id = $1"),
                         {id});
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return absl::NotFoundError(absl::StrCat("no account ", id));
    return ReadAccount(*r, 0);
  }

  absl::StatusOr<ChangeResult> Credit(const std::string& account_id, int64_t amount,
                                      const std::string& key, const std::string& note,
                                      int64_t now) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    PgConnection& conn = **c;
    ChangeResult out;
    auto s = PgTransaction(conn, [&]() -> absl::Status {
      // The credit's row first: a concurrent twin with this key waits here, then sees it.
      auto ins = conn.Query(
          "INSERT INTO credits (idempotency_key, account_id, amount, balance_after, note, "
          "created_at) VALUES ($1, $2, $3, 0, $4, $5) "
          "ON CONFLICT (idempotency_key) DO NOTHING RETURNING amount",
          {key, account_id, amount, note, now});
      if (!ins.ok()) return ins.status();
      if (ins->rows() == 0) {
        auto prior = conn.Query(
            "SELECT account_id, balance_after, amount FROM credits WHERE idempotency_key = $1",
            {key});
        if (!prior.ok()) return prior.status();
        if (prior->rows() == 0) return absl::AbortedError("credit vanished; retry");
        // A retry of the same credit answers as the first did; anything else under the
        // key is a different credit, refused rather than taken for the old one.
        if (prior->Text(0, 0) != account_id)
          return absl::AlreadyExistsError("idempotency_key was used for another account");
        if (prior->Int(0, 2) != amount)
          return absl::AlreadyExistsError("idempotency_key was used for a different amount");
        out = ChangeResult{};
        out.balance = prior->Int(0, 1);
        out.duplicate = true;
        return absl::OkStatus();
      }
      auto changed = conn.Query(
          "WITH a AS (UPDATE accounts SET balance = balance + $2::bigint, updated_at = $4::bigint, "
          "version = version + 1 WHERE id = $1 RETURNING balance, total_spent, version), "
          "j AS (INSERT INTO journal (debit_account, credit_account, amount, kind, reference, "
          "created_at) SELECT '@credits', $1::text, $2::bigint, 'credit', $3::text, $4::bigint "
          "FROM a), "
          "c AS (UPDATE credits SET balance_after = a.balance FROM a "
          "WHERE credits.idempotency_key = $3) "
          "SELECT balance, total_spent, version FROM a",
          {account_id, amount, key, now});
      if (!changed.ok()) return changed.status();
      if (changed->rows() == 0) return absl::NotFoundError(absl::StrCat("no account ", account_id));
      out = ChangeResult{};
      out.balance = changed->Int(0, 0);
      out.total_spent = changed->Int(0, 1);
      out.version = changed->Int(0, 2);
      return absl::OkStatus();
    });
    if (!s.ok()) return s;
    return out;
  }

  absl::StatusOr<std::vector<absl::StatusOr<ChangeResult>>> CommitBatch(
      const std::vector<UsageRow>& rows, const std::vector<HoldRelease>& releases) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    PgConnection& conn = **c;
    std::vector<absl::StatusOr<ChangeResult>> out;
    auto s = PgTransaction(conn, [&]() -> absl::Status {
      out.clear();  // a rerun after a serialization failure starts over
      // Every settlement in one pipeline (a round trip per 64, not per row).
      std::vector<std::vector<PgParam>> params;
      params.reserve(rows.size());
      for (const auto& r : rows) params.push_back(SettleParams(r));
      auto settled = conn.QueryEach(kSettle, params);
      if (!settled.ok()) return settled.status();
      std::vector<size_t> unsettled;  // duplicates, or unknown accounts
      std::vector<std::vector<PgParam>> lookups;
      for (size_t i = 0; i < rows.size(); ++i) {
        const PgResult& res = (*settled)[i];
        if (res.rows() == 1) {
          ChangeResult one;
          one.balance = res.Int(0, 0);
          one.total_spent = res.Int(0, 1);
          one.version = res.Int(0, 2);
          one.cost = rows[i].cost;
          out.push_back(one);
        } else {
          out.push_back(absl::UnknownError("pending"));
          unsettled.push_back(i);
          lookups.push_back({rows[i].request_id});
        }
      }
      auto prior = conn.QueryEach(kPriorSettlement, lookups);
      if (!prior.ok()) return prior.status();
      for (size_t k = 0; k < unsettled.size(); ++k) {
        const PgResult& res = (*prior)[k];
        const UsageRow& r = rows[unsettled[k]];
        if (res.rows() == 0) {
          out[unsettled[k]] = absl::NotFoundError(absl::StrCat("no account ", r.account_id));
          continue;
        }
        ChangeResult dup;  // the first settlement's answer
        dup.cost = res.Int(0, 0);
        dup.balance = res.Int(0, 1);
        dup.duplicate = true;
        out[unsettled[k]] = dup;
      }
      std::vector<std::vector<PgParam>> recorded;
      for (const auto& h : releases)
        recorded.push_back({h.hold_id, h.account_id, h.request_id, h.amount,
                            h.expired ? "expired" : "released", h.at});
      return conn.QueryEach(kRecordRelease, recorded).status();
    });
    if (!s.ok()) return s;
    return out;
  }

  absl::StatusOr<int64_t> UsageSequence(const std::string& account_id,
                                        const std::string& request_id) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query("SELECT seq FROM usage_records WHERE request_id = $1 AND account_id = $2",
                         {request_id, account_id});
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return absl::NotFoundError("no such usage record");
    return r->Int(0, 0);
  }

  absl::StatusOr<std::vector<UsageRow>> ListUsage(const std::string& account_id, int limit,
                                                  int64_t before) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto res = (*c)->Query(
        "SELECT seq, request_id, account_id, key_id, model, protocol, deployment_id, "
        "input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, "
        "price_input, price_output, price_cache_read, price_cache_write, cost, created_at, "
        "hold_id, images, video_seconds, price_image, price_video_second "
        "FROM usage_records WHERE account_id = $1 AND ($2::bigint = 0 OR seq < $2) "
        "ORDER BY seq DESC LIMIT $3",
        {account_id, before, int64_t{limit}});
    if (!res.ok()) return res.status();
    std::vector<UsageRow> out;
    out.reserve(res->rows());
    for (int i = 0; i < res->rows(); ++i) {
      UsageRow r;
      r.sequence = res->Int(i, 0);
      r.request_id = res->Text(i, 1);
      r.account_id = res->Text(i, 2);
      r.key_id = res->Text(i, 3);
      r.model = res->Text(i, 4);
      r.protocol = static_cast<int>(res->Int(i, 5));
      r.deployment_id = res->Text(i, 6);
      r.usage.set_input_tokens(res->Int(i, 7));
      r.usage.set_cache_read_tokens(res->Int(i, 8));
      r.usage.set_cache_write_tokens(res->Int(i, 9));
      r.usage.set_output_tokens(res->Int(i, 10));
      r.usage.set_reasoning_tokens(res->Int(i, 11));
      r.price.set_input_nano_usd_per_mtok(res->Int(i, 12));
      r.price.set_output_nano_usd_per_mtok(res->Int(i, 13));
      r.price.set_cache_read_nano_usd_per_mtok(res->Int(i, 14));
      r.price.set_cache_write_nano_usd_per_mtok(res->Int(i, 15));
      r.cost = res->Int(i, 16);
      r.created_at = res->Int(i, 17);
      r.hold_id = res->Text(i, 18);
      r.usage.set_images(res->Int(i, 19));
      r.usage.set_video_seconds(res->Int(i, 20));
      r.price.set_image_nano_usd(res->Int(i, 21));
      r.price.set_video_second_nano_usd(res->Int(i, 22));
      out.push_back(std::move(r));
    }
    return out;
  }

  absl::StatusOr<Reservation> Reserve(const HoldRow& hold, int64_t overdraft,
                                      int64_t now) override {
    auto c = hold_pool_.Acquire();
    if (!c.ok()) return c.status();
    PgConnection& conn = **c;
    Reservation out;
    out.hold = hold;
    // The admission: one statement, atomic under the account's row lock. A twin for the
    // same request id fails on holds' unique request_id, undoing its `held` increment.
    auto admitted = conn.Query(
        "WITH a AS (UPDATE accounts SET held = held + $4::bigint WHERE id = $2 AND balance > 0 "
        "AND balance - held + $6::bigint >= $4::bigint RETURNING balance - held AS available), "
        "h AS (INSERT INTO holds (id, account_id, request_id, amount, expires_at, created_at) "
        "SELECT $1::text, $2::text, $3::text, $4::bigint, $5::bigint, $7::bigint FROM a "
        "RETURNING id) "
        "SELECT available FROM a, h",
        {hold.id, hold.account_id, hold.request_id, hold.amount, hold.expires_at, overdraft, now});
    if (!admitted.ok() && conn.sqlstate() != "23505") return admitted.status();
    if (admitted.ok() && admitted->rows() == 1) {
      out.available = admitted->Int(0, 0);
      return out;
    }
    // Refused, or the request already holds: say which.
    auto prior = conn.Query(
        "SELECT h.id, h.account_id, h.request_id, h.amount, h.expires_at, a.balance - a.held "
        "FROM holds h JOIN accounts a ON a.id = h.account_id WHERE h.request_id = $1",
        {hold.request_id});
    if (!prior.ok()) return prior.status();
    if (prior->rows() == 1) {
      out.hold = HoldRow{prior->Text(0, 0), prior->Text(0, 1), prior->Text(0, 2),
                         prior->Int(0, 3), prior->Int(0, 4)};
      out.available = prior->Int(0, 5);
      out.existing = true;
      return out;
    }
    auto account = conn.Query("SELECT balance - held FROM accounts WHERE id = $1", {hold.account_id});
    if (!account.ok()) return account.status();
    if (account->rows() == 0) return absl::NotFoundError(absl::StrCat("no account ", hold.account_id));
    return InsufficientBalance(account->Int(0, 0), hold.amount);
  }

  absl::StatusOr<bool> ReleaseHold(const std::string& hold_id, int64_t now) override {
    auto closed = CloseHolds(
        "WITH h AS (DELETE FROM holds WHERE id = $1 RETURNING id, account_id, request_id, amount), "
        "a AS (UPDATE accounts SET held = accounts.held - h.amount FROM h "
        "WHERE accounts.id = h.account_id), "
        "r AS (INSERT INTO hold_releases (hold_id, account_id, request_id, amount, reason, "
        "created_at) SELECT id, account_id, request_id, amount, 'released', $2::bigint FROM h) "
        "SELECT count(*) FROM h",
        hold_id, now);
    if (!closed.ok()) return closed.status();
    return *closed > 0;
  }

  absl::StatusOr<int64_t> ExpireHolds(int64_t now) override {
    return CloseHolds(
        "WITH h AS (DELETE FROM holds WHERE $1::text = '' AND expires_at <= $2::bigint "
        "RETURNING id, account_id, request_id, amount), "
        "a AS (UPDATE accounts SET held = accounts.held - s.total FROM ("
        "SELECT account_id, SUM(amount)::bigint AS total FROM h GROUP BY account_id) s "
        "WHERE accounts.id = s.account_id), "
        "r AS (INSERT INTO hold_releases (hold_id, account_id, request_id, amount, reason, "
        "created_at) SELECT id, account_id, request_id, amount, 'expired', $2::bigint FROM h) "
        "SELECT count(*) FROM h",
        "", now);
  }

  absl::StatusOr<std::vector<std::string>> Verify() override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    PgConnection& conn = **c;
    // One snapshot for every check.
    if (auto s = conn.Exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !s.ok()) return s;
    std::vector<std::string> out;
    for (const auto& check : VerifyChecks()) {
      auto r = conn.Query(check.sql);
      if (!r.ok()) {
        (void)conn.Exec("ROLLBACK");
        return r.status();
      }
      for (int i = 0; i < r->rows(); ++i) out.push_back(absl::StrCat(check.name, ": ", r->Text(i, 0)));
    }
    if (auto s = conn.Exec("COMMIT"); !s.ok()) return s;
    return out;
  }

  absl::Status CreateSchema() {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    return PgTransaction(**c, [&]() -> absl::Status {
      if (auto s = (*c)->Exec(kSchemaLock); !s.ok()) return s;
      return (*c)->Exec(kSchema);
    });
  }

 private:
  // Runs a hold-closing statement (bound to `id`, `now`) in a transaction that is rerun
  // on deadlock; returns how many holds it closed.
  absl::StatusOr<int64_t> CloseHolds(const char* sql, const std::string& id, int64_t now) {
    auto c = hold_pool_.Acquire();
    if (!c.ok()) return c.status();
    PgConnection& conn = **c;
    int64_t closed = 0;
    auto s = PgTransaction(conn, [&]() -> absl::Status {
      auto r = conn.Query(sql, {id, now});
      if (!r.ok()) return r.status();
      closed = r->Int(0, 0);
      return absl::OkStatus();
    });
    if (!s.ok()) return s;
    return closed;
  }

  PgPool pool_;
  PgPool hold_pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LedgerStore>> OpenPostgresLedgerStore(const std::string& conninfo) {
  auto store = std::make_unique<PostgresLedgerStore>(conninfo);
  if (auto s = store->CreateSchema(); !s.ok()) return s;
  return std::unique_ptr<LedgerStore>(std::move(store));
}

absl::StatusOr<std::unique_ptr<LedgerStore>> OpenLedgerStore(const std::string& setting) {
  if (IsPostgresUrl(setting)) return OpenPostgresLedgerStore(setting);
  return OpenSqliteLedgerStore(setting);
}

}  // namespace nexusflow::billing

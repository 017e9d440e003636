#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "libs/common/ids.h"
#include "libs/store/sqlite.h"
#include "services/billing-ledger/ledger_rules.h"
#include "services/billing-ledger/ledger_store.h"

namespace nexusflow::billing {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS accounts (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  balance INTEGER NOT NULL DEFAULT 0,       -- nano-USD
  total_spent INTEGER NOT NULL DEFAULT 0,   -- nano-USD
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  held INTEGER NOT NULL DEFAULT 0,          -- nano-USD in open rows of holds
  version INTEGER NOT NULL DEFAULT 0        -- +1 per change of balance or total_spent
);
-- Double-entry journal: every movement debits one account and credits another; the
-- house accounts "@credits" (money paid in) and "@revenue" (money spent) balance it.
CREATE TABLE IF NOT EXISTS journal (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  debit_account TEXT NOT NULL,
  credit_account TEXT NOT NULL,
  amount INTEGER NOT NULL,                  -- nano-USD, > 0
  kind TEXT NOT NULL,                       -- 'credit' | 'charge'
  reference TEXT NOT NULL,                  -- idempotency key or request id
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS credits (
  idempotency_key TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  amount INTEGER NOT NULL,
  balance_after INTEGER NOT NULL,
  note TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS usage_records (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  request_id TEXT NOT NULL UNIQUE,
  account_id TEXT NOT NULL,
  key_id TEXT NOT NULL,
  model TEXT NOT NULL,
  protocol INTEGER NOT NULL,
  deployment_id TEXT NOT NULL,
  input_tokens INTEGER NOT NULL,
  cache_read_tokens INTEGER NOT NULL,
  cache_write_tokens INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL,
  price_input INTEGER NOT NULL,             -- nano-USD per million tokens, snapshot
  price_output INTEGER NOT NULL,
  price_cache_read INTEGER NOT NULL,
  price_cache_write INTEGER NOT NULL,
  cost INTEGER NOT NULL,                    -- nano-USD
  balance_after INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  hold_id TEXT NOT NULL DEFAULT '',         -- the hold this settlement closed
  images INTEGER NOT NULL DEFAULT 0,        -- media produced
  video_seconds INTEGER NOT NULL DEFAULT 0,
  price_image INTEGER NOT NULL DEFAULT 0,   -- nano-USD per image, snapshot
  price_video_second INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_by_account ON usage_records(account_id, seq);
-- Holds kept in the store (Reserve on the store); the service of an embedded ledger
-- keeps its holds in memory and only records how they closed.
CREATE TABLE IF NOT EXISTS holds (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  request_id TEXT NOT NULL UNIQUE,
  amount INTEGER NOT NULL,                  -- nano-USD
  expires_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS holds_by_expiry ON holds(expires_at);
-- Holds closed without a settlement (a settlement records its hold in usage_records).
CREATE TABLE IF NOT EXISTS hold_releases (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  hold_id TEXT NOT NULL,
  account_id TEXT NOT NULL,
  request_id TEXT NOT NULL,
  amount INTEGER NOT NULL,
  reason TEXT NOT NULL,                     -- 'released' | 'expired'
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hold_releases_by_hold ON hold_releases(hold_id);
)sql";

// Columns added since the first schema, for ledgers created before them.
struct AddedColumn {
  const char* table;
  const char* column;
  const char* definition;
};
constexpr AddedColumn kAddedColumns[] = {
    {"accounts", "held", "INTEGER NOT NULL DEFAULT 0"},
    {"accounts", "version", "INTEGER NOT NULL DEFAULT 0"},
    {"usage_records", "hold_id", "TEXT NOT NULL DEFAULT ''"},
    {"usage_records", "images", "INTEGER NOT NULL DEFAULT 0"},
    {"usage_records", "video_seconds", "INTEGER NOT NULL DEFAULT 0"},
    {"usage_records", "price_image", "INTEGER NOT NULL DEFAULT 0"},
    {"usage_records", "price_video_second", "INTEGER NOT NULL DEFAULT 0"},
};

class Transaction {
 public:
  explicit Transaction(SqliteDb& db) : db_(db) { status_ = db_.Run("BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (status_.ok() && !done_) (void)db_.Run("ROLLBACK");
  }
  const absl::Status& status() const { return status_; }
  absl::Status Commit() {
    done_ = true;
    return db_.Run("COMMIT");
  }

 private:
  SqliteDb& db_;
  absl::Status status_;
  bool done_ = false;
};

class SqliteLedgerStore : public LedgerStore {
 public:
  // `checkpointer`: a second connection to the same file that moves the WAL into the
  // database in the background, so the fsync of a checkpoint never stalls a settlement.
  //
  // A PASSIVE checkpoint never waits for the writer, but under a steady load the writer
  // appends while it copies, so the WAL is never wholly copied, never starts over and
  // grows without bound (gigabytes in a minute at a few thousand settlements a second).
  // So once the WAL holds more than `options.restart_frames`, a second PASSIVE pass copies
  // what arrived during the first and asks the writer for a RESTART: after its next
  // commit, with no transaction open, the writer copies the little that is left and the
  // commit after that writes the WAL from its start (journal_size_limit trims a file that
  // grew past the limit). The writer does it itself because a thread waiting for the
  // store's lock would seldom get it from a writer that commits back to back.
  SqliteLedgerStore(std::unique_ptr<SqliteDb> db, std::unique_ptr<SqliteDb> checkpointer,
                    SqliteLedgerOptions options)
      : db_(std::move(db)), checkpointer_(std::move(checkpointer)) {
    if (auto any = db_->Prepare("SELECT 1 FROM holds LIMIT 1"); any.ok()) {
      auto row = any->Step();
      store_holds_ = !row.ok() || *row;
    }
    if (checkpointer_) {
      checkpoint_thread_ = std::thread([this, options] {
        std::unique_lock<std::mutex> lock(stop_mu_);
        while (!stop_cv_.wait_for(lock, options.checkpoint_interval, [this] { return stop_; }))
          KeepWalBounded(options.restart_frames);
      });
    }
  }
  ~SqliteLedgerStore() override {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      stop_ = true;
    }
    stop_cv_.notify_all();
    if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
  }

  void KeepWalBounded(int64_t restart_frames) {
    using Mode = SqliteDb::CheckpointMode;
    auto passive = checkpointer_->Checkpoint(Mode::kPassive);
    if (!passive.ok() || *passive <= restart_frames) return;
    (void)checkpointer_->Checkpoint(Mode::kPassive);
    restart_wanted_ = true;
  }

  // Under the store's lock, after a commit. It never waits for a reader in another process
  // (`ledger verify`, a backup) that holds an older snapshot: busy, it copies what it can,
  // and the checkpointer asks again on its next pass.
  void RestartWalIfWanted() {
    if (!restart_wanted_.exchange(false)) return;
    db_->SetBusyTimeout(0);
    (void)db_->Checkpoint(SqliteDb::CheckpointMode::kRestart);
    db_->SetBusyTimeout(kBusyTimeoutMs);
  }

  // One process owns an SQLite ledger: its service keeps holds in memory.
  bool shared() const override { return false; }

  absl::StatusOr<AccountRow> CreateAccount(const std::string& name, int64_t now) override {
    std::lock_guard<std::mutex> lock(mu_);
    AccountRow a;
    a.id = NewId("acct_");
    a.name = name;
    a.created_at = a.updated_at = now;
    auto st = db_->Prepare(
        "INSERT INTO accounts (id, name, balance, total_spent, created_at, updated_at) "
        "VALUES (?, ?, 0, 0, ?, ?)");
    if (!st.ok()) return st.status();
    st->Bind(1, a.id).Bind(2, a.name).Bind(3, now).Bind(4, now);
    if (auto s = st->Run(); !s.ok()) return s;
    return a;
  }

  absl::StatusOr<AccountRow> GetAccount(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    return GetLocked(id);
  }

  absl::StatusOr<ChangeResult> Credit(const std::string& account_id, int64_t amount,
                                      const std::string& key, const std::string& note,
                                      int64_t now) override {
    std::lock_guard<std::mutex> lock(mu_);
    Transaction tx(*db_);
    if (!tx.status().ok()) return tx.status();
    {
      auto prior = db_->Prepare(
          "SELECT account_id, balance_after, amount FROM credits WHERE idempotency_key = ?");
      if (!prior.ok()) return prior.status();
      prior->Bind(1, key);
      auto row = prior->Step();
      if (!row.ok()) return row.status();
      if (*row) {
        // A retry of the same credit answers as the first did; anything else under the
        // key is a different credit, refused rather than silently taken for the old one.
        if (prior->Text(0) != account_id)
          return absl::AlreadyExistsError("idempotency_key was used for another account");
        if (prior->Int(2) != amount)
          return absl::AlreadyExistsError("idempotency_key was used for a different amount");
        ChangeResult r;
        r.balance = prior->Int(1);
        r.duplicate = true;
        return r;
      }
    }
    auto changed = Apply(account_id, amount, 0, now);
    if (!changed.ok()) return changed.status();
    if (auto s = Journal(kCreditsAccount, account_id, amount, "credit", key, now); !s.ok()) return s;
    auto ins = db_->Prepare(
        "INSERT INTO credits (idempotency_key, account_id, amount, balance_after, note, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?)");
    if (!ins.ok()) return ins.status();
    ins->Bind(1, key).Bind(2, account_id).Bind(3, amount).Bind(4, changed->balance);
    ins->Bind(5, note).Bind(6, now);
    if (auto s = ins->Run(); !s.ok()) return s;
    if (auto s = tx.Commit(); !s.ok()) return s;
    return *changed;
  }

  absl::StatusOr<std::vector<absl::StatusOr<ChangeResult>>> CommitBatch(
      const std::vector<UsageRow>& rows, const std::vector<HoldRelease>& releases) override {
    std::lock_guard<std::mutex> lock(mu_);
    Transaction tx(*db_);
    if (!tx.status().ok()) return tx.status();
    std::vector<absl::StatusOr<ChangeResult>> out;
    out.reserve(rows.size());
    for (const auto& r : rows) {
      // A savepoint per row: a row that fails leaves no half-applied change.
      if (auto s = db_->Run("SAVEPOINT settle_row"); !s.ok()) return s;
      auto one = SettleLocked(r);
      if (!one.ok()) (void)db_->Run("ROLLBACK TO settle_row");
      if (auto s = db_->Run("RELEASE settle_row"); !s.ok()) return s;
      out.push_back(std::move(one));
    }
    for (const auto& h : releases)
      if (auto s = RecordRelease(h); !s.ok()) return s;
    if (auto s = tx.Commit(); !s.ok()) return s;
    RestartWalIfWanted();
    return out;
  }

  absl::StatusOr<int64_t> UsageSequence(const std::string& account_id,
                                        const std::string& request_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto st = db_->Prepare("SELECT seq FROM usage_records WHERE request_id = ? AND account_id = ?");
    if (!st.ok()) return st.status();
    st->Bind(1, request_id).Bind(2, account_id);
    auto row = st->Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError("no such usage record");
    return st->Int(0);
  }

  absl::StatusOr<std::vector<UsageRow>> ListUsage(const std::string& account_id, int limit,
                                                  int64_t before) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto st = db_->Prepare(
        "SELECT seq, request_id, account_id, key_id, model, protocol, deployment_id, "
        "input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, "
        "price_input, price_output, price_cache_read, price_cache_write, cost, created_at, "
        "hold_id, images, video_seconds, price_image, price_video_second "
        "FROM usage_records WHERE account_id = ? AND (? = 0 OR seq < ?) "
        "ORDER BY seq DESC LIMIT ?");
    if (!st.ok()) return st.status();
    st->Bind(1, account_id).Bind(2, before).Bind(3, before).Bind(4, int64_t{limit});
    std::vector<UsageRow> out;
    while (true) {
      auto row = st->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      UsageRow r;
      r.sequence = st->Int(0);
      r.request_id = st->Text(1);
      r.account_id = st->Text(2);
      r.key_id = st->Text(3);
      r.model = st->Text(4);
      r.protocol = static_cast<int>(st->Int(5));
      r.deployment_id = st->Text(6);
      r.usage.set_input_tokens(st->Int(7));
      r.usage.set_cache_read_tokens(st->Int(8));
      r.usage.set_cache_write_tokens(st->Int(9));
      r.usage.set_output_tokens(st->Int(10));
      r.usage.set_reasoning_tokens(st->Int(11));
      r.price.set_input_nano_usd_per_mtok(st->Int(12));
      r.price.set_output_nano_usd_per_mtok(st->Int(13));
      r.price.set_cache_read_nano_usd_per_mtok(st->Int(14));
      r.price.set_cache_write_nano_usd_per_mtok(st->Int(15));
      r.cost = st->Int(16);
      r.created_at = st->Int(17);
      r.usage.set_images(st->Int(19));
      r.usage.set_video_seconds(st->Int(20));
      r.price.set_image_nano_usd(st->Int(21));
      r.price.set_video_second_nano_usd(st->Int(22));
      r.hold_id = st->Text(18);
      out.push_back(std::move(r));
    }
    return out;
  }

  absl::StatusOr<Reservation> Reserve(const HoldRow& hold, int64_t overdraft,
                                      int64_t now) override {
    std::lock_guard<std::mutex> lock(mu_);
    Transaction tx(*db_);
    if (!tx.status().ok()) return tx.status();
    auto account = GetLocked(hold.account_id);
    if (!account.ok()) return account.status();
    Reservation out;
    {
      auto prior = db_->Prepare(
          "SELECT id, account_id, request_id, amount, expires_at FROM holds WHERE request_id = ?");
      if (!prior.ok()) return prior.status();
      prior->Bind(1, hold.request_id);
      auto row = prior->Step();
      if (!row.ok()) return row.status();
      if (*row) {
        out.hold = HoldRow{prior->Text(0), prior->Text(1), prior->Text(2), prior->Int(3),
                           prior->Int(4)};
        out.available = account->balance - account->held;
        out.existing = true;
        return out;
      }
    }
    // The same condition as PostgreSQL's single statement; BEGIN IMMEDIATE already
    // serialises writers on the file.
    store_holds_ = true;
    auto up = db_->Prepare(
        "UPDATE accounts SET held = held + ?1 WHERE id = ?2 AND balance > 0 AND "
        "balance - held + ?3 >= ?1");
    if (!up.ok()) return up.status();
    up->Bind(1, hold.amount).Bind(2, hold.account_id).Bind(3, overdraft);
    if (auto s = up->Run(); !s.ok()) return s;
    if (db_->Changes() == 0) return InsufficientBalance(account->balance - account->held, hold.amount);
    auto ins = db_->Prepare(
        "INSERT INTO holds (id, account_id, request_id, amount, expires_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)");
    if (!ins.ok()) return ins.status();
    ins->Bind(1, hold.id).Bind(2, hold.account_id).Bind(3, hold.request_id).Bind(4, hold.amount);
    ins->Bind(5, hold.expires_at).Bind(6, now);
    if (auto s = ins->Run(); !s.ok()) return s;
    if (auto s = tx.Commit(); !s.ok()) return s;
    out.hold = hold;
    out.available = account->balance - account->held - hold.amount;
    return out;
  }

  absl::StatusOr<bool> ReleaseHold(const std::string& hold_id, int64_t now) override {
    std::lock_guard<std::mutex> lock(mu_);
    Transaction tx(*db_);
    if (!tx.status().ok()) return tx.status();
    auto closed = CloseStoredHolds("SELECT id, account_id, request_id, amount FROM holds WHERE id = ?",
                                   hold_id, 0, false, now);
    if (!closed.ok()) return closed.status();
    if (auto s = tx.Commit(); !s.ok()) return s;
    return *closed > 0;
  }

  absl::StatusOr<int64_t> ExpireHolds(int64_t now) override {
    std::lock_guard<std::mutex> lock(mu_);
    Transaction tx(*db_);
    if (!tx.status().ok()) return tx.status();
    auto closed = CloseStoredHolds(
        "SELECT id, account_id, request_id, amount FROM holds WHERE ? = '' AND expires_at <= ?",
        "", now, true, now);
    if (!closed.ok()) return closed.status();
    if (auto s = tx.Commit(); !s.ok()) return s;
    return *closed;
  }

  absl::StatusOr<std::vector<std::string>> Verify() override {
    std::lock_guard<std::mutex> lock(mu_);
    // One read transaction: every check sees the same ledger.
    if (auto s = db_->Exec("BEGIN"); !s.ok()) return s;
    std::vector<std::string> out;
    absl::Status status;
    for (const auto& check : VerifyChecks()) {
      auto st = db_->Prepare(check.sql);
      if (!st.ok()) {
        status = st.status();
        break;
      }
      while (true) {
        auto row = st->Step();
        if (!row.ok()) {
          status = row.status();
          break;
        }
        if (!*row) break;
        out.push_back(absl::StrCat(check.name, ": ", st->Text(0)));
      }
      if (!status.ok()) break;
    }
    (void)db_->Exec("COMMIT");
    if (!status.ok()) return status;
    return out;
  }

 private:
  absl::StatusOr<ChangeResult> SettleLocked(const UsageRow& r) {
    {
      auto prior = db_->Prepare("SELECT cost, balance_after FROM usage_records WHERE request_id = ?");
      if (!prior.ok()) return prior.status();
      prior->Bind(1, r.request_id);
      auto row = prior->Step();
      if (!row.ok()) return row.status();
      if (*row) {
        ChangeResult dup;
        dup.balance = prior->Int(1);
        dup.cost = prior->Int(0);
        dup.duplicate = true;
        return dup;
      }
    }
    // The settlement closes its hold when the store holds it (no-op otherwise).
    int64_t held = 0;
    if (!r.hold_id.empty() && store_holds_) {
      auto h = db_->Prepare("DELETE FROM holds WHERE id = ? AND account_id = ? RETURNING amount");
      if (!h.ok()) return h.status();
      h->Bind(1, r.hold_id).Bind(2, r.account_id);
      auto row = h->Step();
      if (!row.ok()) return row.status();
      if (*row) held = h->Int(0);
      if (auto s = h->Run(); !s.ok()) return s;
    }
    auto changed = Apply(r.account_id, -r.cost, r.cost, r.created_at, held);
    if (!changed.ok()) return changed.status();
    if (r.cost > 0) {
      if (auto s = Journal(r.account_id, kRevenueAccount, r.cost, "charge", r.request_id,
                           r.created_at);
          !s.ok())
        return s;
    }
    auto ins = db_->Prepare(
        "INSERT INTO usage_records (request_id, account_id, key_id, model, protocol, "
        "deployment_id, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, "
        "reasoning_tokens, price_input, price_output, price_cache_read, price_cache_write, "
        "cost, balance_after, created_at, hold_id, images, video_seconds, price_image, "
        "price_video_second) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    if (!ins.ok()) return ins.status();
    ins->Bind(1, r.request_id).Bind(2, r.account_id).Bind(3, r.key_id).Bind(4, r.model);
    ins->Bind(5, int64_t{r.protocol}).Bind(6, r.deployment_id);
    ins->Bind(7, r.usage.input_tokens()).Bind(8, r.usage.cache_read_tokens());
    ins->Bind(9, r.usage.cache_write_tokens()).Bind(10, r.usage.output_tokens());
    ins->Bind(11, r.usage.reasoning_tokens()).Bind(12, r.price.input_nano_usd_per_mtok());
    ins->Bind(13, r.price.output_nano_usd_per_mtok()).Bind(14, r.price.cache_read_nano_usd_per_mtok());
    ins->Bind(15, r.price.cache_write_nano_usd_per_mtok()).Bind(16, r.cost);
    ins->Bind(17, changed->balance).Bind(18, r.created_at).Bind(19, r.hold_id);
    ins->Bind(20, r.usage.images()).Bind(21, r.usage.video_seconds());
    ins->Bind(22, r.price.image_nano_usd()).Bind(23, r.price.video_second_nano_usd());
    if (auto s = ins->Run(); !s.ok()) return s;
    changed->cost = r.cost;
    return *changed;
  }

  absl::StatusOr<AccountRow> GetLocked(const std::string& id) {
    auto st = db_->Prepare(
        "SELECT id, name, balance, total_spent, created_at, updated_at, held, version "
        "FROM accounts WHERE id = ?");
    if (!st.ok()) return st.status();
    st->Bind(1, id);
    auto row = st->Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError(absl::StrCat("no account ", id));
    AccountRow a;
    a.id = st->Text(0);
    a.name = st->Text(1);
    a.balance = st->Int(2);
    a.total_spent = st->Int(3);
    a.created_at = st->Int(4);
    a.updated_at = st->Int(5);
    a.held = st->Int(6);
    a.version = st->Int(7);
    return a;
  }

  // Changes the balance (and frees `unheld` of open holds); the account's state after.
  absl::StatusOr<ChangeResult> Apply(const std::string& account_id, int64_t delta,
                                     int64_t spent, int64_t now, int64_t unheld = 0) {
    auto st = db_->Prepare(
        "UPDATE accounts SET balance = balance + ?, total_spent = total_spent + ?, "
        "held = held - ?, updated_at = ?, version = version + 1 WHERE id = ? "
        "RETURNING balance, total_spent, version");
    if (!st.ok()) return st.status();
    st->Bind(1, delta).Bind(2, spent).Bind(3, unheld).Bind(4, now).Bind(5, account_id);
    auto row = st->Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError(absl::StrCat("no account ", account_id));
    ChangeResult r;
    r.balance = st->Int(0);
    r.total_spent = st->Int(1);
    r.version = st->Int(2);
    if (auto s = st->Run(); !s.ok()) return s;
    return r;
  }

  absl::Status Journal(const std::string& debit, const std::string& credit, int64_t amount,
                       const char* kind, const std::string& ref, int64_t now) {
    auto st = db_->Prepare(
        "INSERT INTO journal (debit_account, credit_account, amount, kind, reference, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?)");
    if (!st.ok()) return st.status();
    st->Bind(1, debit).Bind(2, credit).Bind(3, amount).Bind(4, kind).Bind(5, ref).Bind(6, now);
    return st->Run();
  }

  absl::Status RecordRelease(const HoldRelease& h) {
    auto st = db_->Prepare(
        "INSERT INTO hold_releases (hold_id, account_id, request_id, amount, reason, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)");
    if (!st.ok()) return st.status();
    st->Bind(1, h.hold_id).Bind(2, h.account_id).Bind(3, h.request_id).Bind(4, h.amount);
    st->Bind(5, h.expired ? "expired" : "released").Bind(6, h.at);
    return st->Run();
  }

  // Deletes the stored holds `select` finds (bound to `id`, `before`), frees their
  // amounts and records each release; returns how many. Inside a transaction.
  absl::StatusOr<int64_t> CloseStoredHolds(const char* select, const std::string& id,
                                           int64_t before, bool expired, int64_t now) {
    std::vector<HoldRelease> closing;
    {
      auto st = db_->Prepare(select);
      if (!st.ok()) return st.status();
      st->Bind(1, id);
      if (expired) st->Bind(2, before);
      while (true) {
        auto row = st->Step();
        if (!row.ok()) return row.status();
        if (!*row) break;
        closing.push_back(HoldRelease{st->Text(0), st->Text(1), st->Text(2), st->Int(3), expired, now});
      }
    }
    for (const auto& h : closing) {
      auto del = db_->Prepare("DELETE FROM holds WHERE id = ?");
      if (!del.ok()) return del.status();
      del->Bind(1, h.hold_id);
      if (auto s = del->Run(); !s.ok()) return s;
      auto up = db_->Prepare("UPDATE accounts SET held = held - ? WHERE id = ?");
      if (!up.ok()) return up.status();
      up->Bind(1, h.amount).Bind(2, h.account_id);
      if (auto s = up->Run(); !s.ok()) return s;
      if (auto s = RecordRelease(h); !s.ok()) return s;
    }
    return static_cast<int64_t>(closing.size());
  }

  std::mutex mu_;
  // Whether the holds table may hold a row: the embedded service keeps its holds in
  // memory, so a settlement skips the lookup of its hold there unless this store ever
  // reserved one (or opened with some).
  bool store_holds_ = true;
  std::atomic<bool> restart_wanted_{false};  // set by the checkpointer, done by the writer
  std::unique_ptr<SqliteDb> db_;
  std::unique_ptr<SqliteDb> checkpointer_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread checkpoint_thread_;
};

// Adds the columns of kAddedColumns that a ledger created before them lacks.
absl::Status Migrate(SqliteDb& db) {
  for (const auto& c : kAddedColumns) {
    auto st = db.Prepare("SELECT 1 FROM pragma_table_info(?) WHERE name = ?");
    if (!st.ok()) return st.status();
    st->Bind(1, c.table).Bind(2, c.column);
    auto row = st->Step();
    if (!row.ok()) return row.status();
    bool present = *row;
    if (auto s = st->Run(); !s.ok()) return s;
    if (present) continue;
    if (auto s = db.Exec(absl::StrCat("ALTER TABLE ", c.table, " ADD COLUMN ", c.column, " ",
                                      c.definition));
        !s.ok())
      return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LedgerStore>> OpenSqliteLedgerStore(const std::string& path) {
  return OpenSqliteLedgerStore(path, SqliteLedgerOptions{});
}

absl::StatusOr<std::unique_ptr<LedgerStore>> OpenSqliteLedgerStore(const std::string& path,
                                                                   SqliteLedgerOptions options) {
  // synchronous=FULL: an acknowledged charge or credit survives a power loss; the
  // service's group commit pays one WAL sync per batch, not per settlement.
  // Every use of either connection is under the store's lock (or on the checkpoint thread
  // alone), so SQLite's own mutex is left out.
  auto db = SqliteDb::Open(path, SqliteSync::kFull, /*caller_serializes=*/true);
  if (!db.ok()) return db.status();
  if (auto s = (*db)->Exec(kSchema); !s.ok()) return s;
  if (auto s = Migrate(**db); !s.ok()) return s;
  std::unique_ptr<SqliteDb> checkpointer;
  if (path != ":memory:") {
    if (auto s = (*db)->Exec("PRAGMA wal_autocheckpoint=0"); !s.ok()) return s;
    if (auto s = (*db)->Exec(absl::StrCat("PRAGMA journal_size_limit=",
                                          options.restart_frames * 4096));
        !s.ok())
      return s;
    auto c = SqliteDb::Open(path, SqliteSync::kFull, /*caller_serializes=*/true);
    if (!c.ok()) return c.status();
    checkpointer = std::move(*c);
  }
  return std::unique_ptr<LedgerStore>(
      new SqliteLedgerStore(std::move(*db), std::move(checkpointer), options));
}

}  // namespace nexusflow::billing

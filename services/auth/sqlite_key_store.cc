#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "libs/store/sqlite.h"
#include "services/auth/key_store.h"

namespace nexusflow::auth {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  key_sha256 BLOB NOT NULL UNIQUE,
  account_id TEXT NOT NULL,
  name TEXT NOT NULL,
  prefix TEXT NOT NULL,
  plan TEXT NOT NULL,
  allowed_models TEXT NOT NULL,   -- comma-separated, empty = all
  revoked INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL DEFAULT 0,
  limits TEXT NOT NULL DEFAULT ''  -- "rpm,rpd,tpm,concurrency", '' = the plan's
);
CREATE INDEX IF NOT EXISTS api_keys_account ON api_keys(account_id);
)sql";

constexpr char kColumns[] =
    "id, key_sha256, account_id, name, prefix, plan, allowed_models, revoked, created_at, "
    "expires_at, limits";

KeyRecord ReadRow(const SqliteStatement& s) {
  KeyRecord k;
  k.id = s.Text(0);
  k.key_sha256 = s.Text(1);
  k.account_id = s.Text(2);
  k.name = s.Text(3);
  k.prefix = s.Text(4);
  k.plan = s.Text(5);
  std::string models = s.Text(6);
  if (!models.empty()) k.allowed_models = absl::StrSplit(models, ',');
  k.revoked = s.Int(7) != 0;
  k.created_at = s.Int(8);
  k.expires_at = s.Int(9);
  k.limits = DecodeKeyLimits(s.Text(10));
  return k;
}

class SqliteKeyStore : public KeyStore {
 public:
  explicit SqliteKeyStore(std::unique_ptr<SqliteDb> db) : db_(std::move(db)) {}

  absl::Status Insert(const KeyRecord& k) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto st = db_->Prepare(std::string("INSERT INTO api_keys (") + kColumns +
                           ") VALUES (?,?,?,?,?,?,?,?,?,?,?)");
    if (!st.ok()) return st.status();
    st->Bind(1, k.id).BindBlob(2, k.key_sha256).Bind(3, k.account_id).Bind(4, k.name);
    st->Bind(5, k.prefix).Bind(6, k.plan).Bind(7, absl::StrJoin(k.allowed_models, ","));
    st->Bind(8, int64_t{k.revoked}).Bind(9, k.created_at).Bind(10, k.expires_at);
    st->Bind(11, EncodeKeyLimits(k.limits));
    return st->Run();
  }

  absl::StatusOr<KeyRecord> FindByHash(const std::string& hash) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto st = db_->Prepare(std::string("SELECT ") + kColumns +
                           " FROM api_keys WHERE key_sha256 = ?");
    if (!st.ok()) return st.status();
    st->BindBlob(1, hash);
    auto row = st->Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError("no such key");
    return ReadRow(*st);
  }

  absl::StatusOr<std::vector<KeyRecord>> List(const std::string& account_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto st = db_->Prepare(std::string("SELECT ") + kColumns +
                           " FROM api_keys WHERE ?1 = '' OR account_id = ?1 ORDER BY rowid");
    if (!st.ok()) return st.status();
    st->Bind(1, account_id);
    std::vector<KeyRecord> out;
    while (true) {
      auto row = st->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      out.push_back(ReadRow(*st));
    }
    return out;
  }

  absl::StatusOr<KeyRecord> Revoke(const std::string& key_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto up = db_->Prepare("UPDATE api_keys SET revoked = 1 WHERE id = ?");
    if (!up.ok()) return up.status();
    up->Bind(1, key_id);
    if (auto s = up->Run(); !s.ok()) return s;
    auto st = db_->Prepare(std::string("SELECT ") + kColumns + " FROM api_keys WHERE id = ?");
    if (!st.ok()) return st.status();
    st->Bind(1, key_id);
    auto row = st->Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError("no such key: " + key_id);
    return ReadRow(*st);
  }

 private:
  std::mutex mu_;
  std::unique_ptr<SqliteDb> db_;
};

}  // namespace

std::string EncodeKeyLimits(const KeyLimits& l) {
  if (l.rpm == 0 && l.rpd == 0 && l.tpm == 0 && l.concurrency == 0) return "";
  return absl::StrJoin({l.rpm, l.rpd, l.tpm, l.concurrency}, ",");
}

KeyLimits DecodeKeyLimits(const std::string& text) {
  KeyLimits l;
  std::vector<std::string> parts = absl::StrSplit(text, ',');
  int64_t* fields[] = {&l.rpm, &l.rpd, &l.tpm, &l.concurrency};
  for (size_t i = 0; i < parts.size() && i < 4; ++i)
    if (!absl::SimpleAtoi(parts[i], fields[i]) || *fields[i] < 0) *fields[i] = 0;
  return l;
}

absl::StatusOr<std::unique_ptr<KeyStore>> OpenSqliteKeyStore(const std::string& path) {
  // FULL: a created or revoked key survives a power loss once acknowledged.
  auto db = SqliteDb::Open(path, SqliteSync::kFull);
  if (!db.ok()) return db.status();
  if (auto s = (*db)->Exec(kSchema); !s.ok()) return s;
  // A file made before keys had limits of their own gains the column.
  auto has = (*db)->Prepare("SELECT 1 FROM pragma_table_info('api_keys') WHERE name = 'limits'");
  if (!has.ok()) return has.status();
  auto row = has->Step();
  if (!row.ok()) return row.status();
  if (!*row) {
    if (auto s = (*db)->Exec("ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT ''"); !s.ok()) return s;
  }
  return std::unique_ptr<KeyStore>(new SqliteKeyStore(std::move(*db)));
}

}  // namespace nexusflow::auth

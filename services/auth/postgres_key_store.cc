// API keys on PostgreSQL, shared by auth replicas. The secret's hash is unique, so two
// replicas importing one secret at once leave one key.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "libs/store/postgres.h"
#include "services/auth/key_store.h"

namespace nexusflow::auth {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS api_keys (
  seq BIGSERIAL,                  -- creation order
  id TEXT PRIMARY KEY,
  key_sha256 BYTEA NOT NULL UNIQUE,
  account_id TEXT NOT NULL,
  name TEXT NOT NULL,
  prefix TEXT NOT NULL,
  plan TEXT NOT NULL,
  allowed_models TEXT NOT NULL,   -- comma-separated, empty = all
  revoked BOOLEAN NOT NULL DEFAULT false,
  created_at BIGINT NOT NULL,     -- unix seconds
  expires_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS api_keys_account ON api_keys(account_id, seq);
-- Revocation order, so every replica learns of the others' revocations.
CREATE SEQUENCE IF NOT EXISTS api_key_revocations;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS revoked_seq BIGINT;
-- The key's own limits, "rpm,rpd,tpm,concurrency" ('' = its plan's).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS limits TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS api_keys_revoked ON api_keys(revoked_seq) WHERE revoked_seq IS NOT NULL;
)sql";

// Serialises schema creation between replicas starting together.
constexpr char kSchemaLock[] = "SELECT pg_advisory_xact_lock(7420150002)";

constexpr int kPoolSize = 4;

constexpr char kColumns[] =
    "id, key_sha256, account_id, name, prefix, plan, allowed_models, revoked, created_at, "
    "expires_at, limits";

KeyRecord ReadRow(const PgResult& r, int row) {
  KeyRecord k;
  k.id = r.Text(row, 0);
  k.key_sha256 = r.Bytes(row, 1);
  k.account_id = r.Text(row, 2);
  k.name = r.Text(row, 3);
  k.prefix = r.Text(row, 4);
  k.plan = r.Text(row, 5);
  std::string models = r.Text(row, 6);
  if (!models.empty()) k.allowed_models = absl::StrSplit(models, ',');
  k.revoked = r.Text(row, 7) == "t";
  k.created_at = r.Int(row, 8);
  k.expires_at = r.Int(row, 9);
  k.limits = DecodeKeyLimits(r.Text(row, 10));
  return k;
}

class PostgresKeyStore : public KeyStore {
 public:
  explicit PostgresKeyStore(const std::string& conninfo) : pool_(conninfo, kPoolSize) {}

  absl::Status CreateSchema() {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    return PgTransaction(**c, [&]() -> absl::Status {
      if (auto s = (*c)->Exec(kSchemaLock); !s.ok()) return s;
      return (*c)->Exec(kSchema);
    });
  }

  absl::Status Insert(const KeyRecord& k) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(absl::StrCat("INSERT INTO api_keys (", kColumns,
                                      ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
                         {k.id, PgParam::Bytes(k.key_sha256), k.account_id, k.name, k.prefix,
                          k.plan, absl::StrJoin(k.allowed_models, ","),
                          k.revoked ? "true" : "false", k.created_at, k.expires_at,
                          EncodeKeyLimits(k.limits)});
    return r.status();  // a taken hash (or id) is ALREADY_EXISTS
  }

  absl::StatusOr<KeyRecord> FindByHash(const std::string& hash) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(absl::StrCat("SELECT ", kColumns, " FROM api_keys WHERE key_sha256 = $1"),
                         {PgParam::Bytes(hash)});
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return absl::NotFoundError("no such key");
    return ReadRow(*r, 0);
  }

  absl::StatusOr<std::vector<KeyRecord>> List(const std::string& account_id) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(absl::StrCat("SELECT ", kColumns,
                                      " FROM api_keys WHERE $1::text = '' OR account_id = $1 "
                                      "ORDER BY seq"),
                         {account_id});
    if (!r.ok()) return r.status();
    std::vector<KeyRecord> out;
    out.reserve(r->rows());
    for (int i = 0; i < r->rows(); ++i) out.push_back(ReadRow(*r, i));
    return out;
  }

  absl::StatusOr<KeyRecord> Revoke(const std::string& key_id) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    auto r = (*c)->Query(absl::StrCat("UPDATE api_keys SET revoked = true, revoked_seq = "
                                      "COALESCE(revoked_seq, nextval('api_key_revocations')) WHERE id = $1 RETURNING ",
                                      kColumns),
                         {key_id});
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return absl::NotFoundError("no such key: " + key_id);
    return ReadRow(*r, 0);
  }

  bool shared() const override { return true; }

  absl::StatusOr<std::vector<KeyRecord>> RevokedSince(int64_t* cursor) override {
    auto c = pool_.Acquire();
    if (!c.ok()) return c.status();
    std::vector<KeyRecord> out;
    if (*cursor < 0) {
      auto r = (*c)->Query("SELECT COALESCE(MAX(revoked_seq), 0) FROM api_keys");
      if (!r.ok()) return r.status();
      *cursor = r->Int(0, 0);
      return out;
    }
    // Sequence numbers are taken before their transactions commit, so one can become
    // visible after a higher one: a window of earlier numbers is read again.
    constexpr int64_t kLookBack = 256;
    auto r = (*c)->Query(absl::StrCat("SELECT ", kColumns, ", revoked_seq FROM api_keys WHERE revoked_seq > $1 "
                                      "ORDER BY revoked_seq"),
                         {*cursor - kLookBack});
    if (!r.ok()) return r.status();
    for (int i = 0; i < r->rows(); ++i) {
      out.push_back(ReadRow(*r, i));
      *cursor = std::max(*cursor, r->Int(i, 11));
    }
    return out;
  }

 private:
  PgPool pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KeyStore>> OpenPostgresKeyStore(const std::string& conninfo) {
  auto store = std::make_unique<PostgresKeyStore>(conninfo);
  if (auto s = store->CreateSchema(); !s.ok()) return s;
  return std::unique_ptr<KeyStore>(std::move(store));
}

absl::StatusOr<std::unique_ptr<KeyStore>> OpenKeyStore(const std::string& setting) {
  if (IsPostgresUrl(setting)) return OpenPostgresKeyStore(setting);
  return OpenSqliteKeyStore(setting);
}

}  // namespace nexusflow::auth

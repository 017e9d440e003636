#pragma once
// KeyStore: where API keys live. Only the SHA-256 of a secret is stored. Embedded:
// SQLite (synchronous=FULL); scale-out: PostgreSQL, shared by auth replicas.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nexusflow::auth {

// A key's own limits: a positive value replaces its plan's, 0 keeps the plan's.
struct KeyLimits {
  int64_t rpm = 0;
  int64_t rpd = 0;
  int64_t tpm = 0;
  int64_t concurrency = 0;
};
// Stored as "rpm,rpd,tpm,concurrency" ("" = none set).
std::string EncodeKeyLimits(const KeyLimits& limits);
KeyLimits DecodeKeyLimits(const std::string& text);

struct KeyRecord {
  std::string id;          // "key_…"
  std::string key_sha256;  // 32 raw bytes
  std::string account_id;
  std::string name;
  std::string prefix;  // first characters of the secret
  std::string plan;
  std::vector<std::string> allowed_models;  // empty = all
  bool revoked = false;
  int64_t created_at = 0;  // unix seconds
  int64_t expires_at = 0;  // unix seconds; 0 = never
  KeyLimits limits;
};

class KeyStore {
 public:
  virtual ~KeyStore() = default;
  // ALREADY_EXISTS when the secret (hash) is taken.
  virtual absl::Status Insert(const KeyRecord& key) = 0;
  // NOT_FOUND when no key has this hash.
  virtual absl::StatusOr<KeyRecord> FindByHash(const std::string& key_sha256) = 0;
  // All keys of `account_id` ("" = every account), oldest first.
  virtual absl::StatusOr<std::vector<KeyRecord>> List(const std::string& account_id) = 0;
  // Marks the key revoked and returns it; NOT_FOUND for an unknown id.
  virtual absl::StatusOr<KeyRecord> Revoke(const std::string& key_id) = 0;
  // Several auth replicas share this store: each must learn of the others' revocations.
  virtual bool shared() const { return false; }
  // Keys revoked since `*cursor` (any replica), advancing it; `*cursor` < 0 starts at the
  // newest revocation (nothing returned). A revocation may come back more than once.
  virtual absl::StatusOr<std::vector<KeyRecord>> RevokedSince(int64_t* cursor) {
    *cursor = 0;
    return std::vector<KeyRecord>{};
  }
};

absl::StatusOr<std::unique_ptr<KeyStore>> OpenSqliteKeyStore(const std::string& path);
// `conninfo`: postgresql://user@host:port/db (or libpq keywords). Creates the schema when
// missing; several auth replicas may share one database.
absl::StatusOr<std::unique_ptr<KeyStore>> OpenPostgresKeyStore(const std::string& conninfo);
// Either, by the setting's form: a postgresql:// or postgres:// URL, else an SQLite path.
absl::StatusOr<std::unique_ptr<KeyStore>> OpenKeyStore(const std::string& setting);

}  // namespace nexusflow::auth

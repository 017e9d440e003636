// KeyStore conformance: the same cases against SQLite (Sqlite/…) and PostgreSQL
// (Postgres/…, through tools/lib/with-postgres.sh).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "libs/store/postgres.h"
#include "libs/store/testing/pg_test_database.h"
#include "services/auth/key_store.h"

namespace nexusflow::auth {
namespace {

// One key database, opened as often as a case needs (each store is one replica's).
class KeyBackend {
 public:
  virtual ~KeyBackend() = default;
  virtual absl::StatusOr<std::unique_ptr<KeyStore>> Open() = 0;
};

class SqliteBackend : public KeyBackend {
 public:
  SqliteBackend() {
    char dir[] = "/tmp/nf-keys-conformance-XXXXXX";
    if (mkdtemp(dir)) dir_ = dir;
  }
  ~SqliteBackend() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }
  absl::StatusOr<std::unique_ptr<KeyStore>> Open() override {
    return OpenSqliteKeyStore(dir_ + "/auth.db");
  }

 private:
  std::string dir_;
};

class PostgresBackend : public KeyBackend {
 public:
  absl::Status Init() {
    auto db = PgTestDatabase::Create();
    if (!db.ok()) return db.status();
    db_ = std::move(*db);
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<KeyStore>> Open() override {
    return OpenPostgresKeyStore(db_->conninfo());
  }
  // Ends every other session on the test database and waits until they are gone.
  absl::Status DropSessions() {
    auto c = PgConnection::Open(db_->conninfo());
    if (!c.ok()) return c.status();
    constexpr char kOthers[] =
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    if (auto s = (*c)->Exec(absl::StrCat("SELECT pg_terminate_backend(pid) ", kOthers)); !s.ok())
      return s;
    while (true) {
      auto left = (*c)->Query(absl::StrCat("SELECT count(*) ", kOthers));
      if (!left.ok()) return left.status();
      if (left->Int(0, 0) == 0) return absl::OkStatus();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

 private:
  std::unique_ptr<PgTestDatabase> db_;
};

struct BackendParam {
  std::string name;
  std::function<absl::StatusOr<std::unique_ptr<KeyBackend>>()> make;
};
void PrintTo(const BackendParam& p, std::ostream* os) { *os << p.name; }


// 32 bytes that are not text: zero bytes and high bits must round-trip.
std::string Hash(int n) {
  std::string h(32, '\0');
  for (int i = 0; i < 32; ++i) h[i] = static_cast<char>((n * 37 + i * 101) & 0xff);
  h[5] = '\0';
  h[6] = static_cast<char>(0xff);
  return h;
}

KeyRecord Key(int n, const std::string& account = "acct_1") {
  KeyRecord k;
  k.id = absl::StrCat("key_", n);
  k.key_sha256 = Hash(n);
  k.account_id = account;
  k.name = absl::StrCat("key number ", n);
  k.prefix = "sk-nf-ab";
  k.plan = "tiny";
  k.allowed_models = {"m1", "m2"};
  k.created_at = 1'700'000'000 + n;
  k.expires_at = n % 2 ? 1'800'000'000 : 0;
  return k;
}

class KeyStoreTest : public ::testing::TestWithParam<BackendParam> {
 protected:
  void SetUp() override {
    auto backend = GetParam().make();
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    auto store = backend_->Open();
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  std::unique_ptr<KeyBackend> backend_;
  std::unique_ptr<KeyStore> store_;
};

TEST_P(KeyStoreTest, AKeyIsFoundByItsHashWithEveryField) {
  ASSERT_TRUE(store_->Insert(Key(1)).ok());
  auto k = store_->FindByHash(Hash(1));
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->id, "key_1");
  EXPECT_EQ(k->key_sha256, Hash(1));
  EXPECT_EQ(k->account_id, "acct_1");
  EXPECT_EQ(k->name, "key number 1");
  EXPECT_EQ(k->prefix, "sk-nf-ab");
  EXPECT_EQ(k->plan, "tiny");
  EXPECT_EQ(k->allowed_models, (std::vector<std::string>{"m1", "m2"}));
  EXPECT_FALSE(k->revoked);
  EXPECT_EQ(k->created_at, 1'700'000'001);
  EXPECT_EQ(k->expires_at, 1'800'000'000);
  EXPECT_TRUE(absl::IsNotFound(store_->FindByHash(Hash(2)).status()));
}

TEST_P(KeyStoreTest, AKeysOwnLimitsRoundTrip) {
  KeyRecord k = Key(7);
  k.limits = KeyLimits{60, 1000, 50000, 5};
  ASSERT_TRUE(store_->Insert(k).ok());
  ASSERT_TRUE(store_->Insert(Key(8)).ok());
  auto got = store_->FindByHash(Hash(7));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->limits.rpm, 60);
  EXPECT_EQ(got->limits.rpd, 1000);
  EXPECT_EQ(got->limits.tpm, 50000);
  EXPECT_EQ(got->limits.concurrency, 5);
  auto plain = store_->FindByHash(Hash(8));
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->limits.rpm, 0);
  EXPECT_EQ(EncodeKeyLimits(KeyLimits{}), "");
  EXPECT_EQ(DecodeKeyLimits("1,2,x,-4").rpm, 1);
  EXPECT_EQ(DecodeKeyLimits("1,2,x,-4").tpm, 0);
  EXPECT_EQ(DecodeKeyLimits("1,2,x,-4").concurrency, 0);
}

TEST_P(KeyStoreTest, AnEmptyAllowListMeansAllModels) {
  KeyRecord k = Key(2);
  k.allowed_models.clear();
  ASSERT_TRUE(store_->Insert(k).ok());
  auto found = store_->FindByHash(Hash(2));
  ASSERT_TRUE(found.ok());
  EXPECT_TRUE(found->allowed_models.empty());
}

TEST_P(KeyStoreTest, ATakenSecretIsAlreadyExists) {
  ASSERT_TRUE(store_->Insert(Key(1)).ok());
  KeyRecord twin = Key(1);
  twin.id = "key_other";
  EXPECT_TRUE(absl::IsAlreadyExists(store_->Insert(twin)));
}

TEST_P(KeyStoreTest, ListingIsPerAccountInCreationOrder) {
  ASSERT_TRUE(store_->Insert(Key(3, "acct_a")).ok());
  ASSERT_TRUE(store_->Insert(Key(1, "acct_b")).ok());
  ASSERT_TRUE(store_->Insert(Key(2, "acct_a")).ok());
  auto a = store_->List("acct_a");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->size(), 2u);
  EXPECT_EQ((*a)[0].id, "key_3");
  EXPECT_EQ((*a)[1].id, "key_2");
  auto all = store_->List("");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[1].id, "key_1");
  auto none = store_->List("acct_none");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_P(KeyStoreTest, RevokingMarksTheKeyAndReturnsIt) {
  ASSERT_TRUE(store_->Insert(Key(1)).ok());
  auto r = store_->Revoke("key_1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->revoked);
  EXPECT_EQ(r->key_sha256, Hash(1));
  auto k = store_->FindByHash(Hash(1));
  ASSERT_TRUE(k.ok());
  EXPECT_TRUE(k->revoked);
  EXPECT_TRUE(absl::IsNotFound(store_->Revoke("key_missing").status()));
}

TEST_P(KeyStoreTest, KeysSurviveReopeningAndAreSharedByStores) {
  ASSERT_TRUE(store_->Insert(Key(1)).ok());
  auto other = backend_->Open();
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE((*other)->Revoke("key_1").ok());
  store_.reset();
  auto reopened = backend_->Open();
  ASSERT_TRUE(reopened.ok());
  auto k = (*reopened)->FindByHash(Hash(1));
  ASSERT_TRUE(k.ok());
  EXPECT_TRUE(k->revoked);
}

TEST_P(KeyStoreTest, TwoStoresImportingOneSecretAtOnceKeepOne) {
  auto other = backend_->Open();
  ASSERT_TRUE(other.ok());
  std::atomic<int> inserted{0}, taken{0}, errors{0};
  auto insert = [&](KeyStore* store, const std::string& tag) {
    for (int i = 0; i < 20; ++i) {
      KeyRecord k = Key(i);
      k.id = absl::StrCat("key_", tag, "_", i);
      absl::Status s = store->Insert(k);
      if (s.ok()) ++inserted;
      else if (absl::IsAlreadyExists(s)) ++taken;
      else ++errors;
    }
  };
  std::thread t1(insert, store_.get(), "a"), t2(insert, other->get(), "b");
  t1.join();
  t2.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(inserted.load(), 20);
  EXPECT_EQ(taken.load(), 20);
  auto all = store_->List("");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 20u);
}

// A server that drops its sessions (restart, failover) costs the store nothing: a pooled
// connection found dead is replaced before it is used.
class PostgresKeySessionTest : public KeyStoreTest {};

TEST_P(PostgresKeySessionTest, SessionsTheServerDroppedAreReopened) {
  ASSERT_TRUE(store_->Insert(Key(1)).ok());
  auto* pg = dynamic_cast<PostgresBackend*>(backend_.get());
  ASSERT_NE(pg, nullptr);
  ASSERT_TRUE(pg->DropSessions().ok());
  auto k = store_->FindByHash(Hash(1));
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->id, "key_1");
}

// Auth replicas on one database learn each other's revocations (they tell their gateways).
TEST_P(PostgresKeySessionTest, ARevocationByOneStoreReachesTheOthers) {
  ASSERT_TRUE(store_->Insert(Key(1)).ok());
  ASSERT_TRUE(store_->Insert(Key(2)).ok());
  auto other = backend_->Open();
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE((*other)->shared());
  int64_t cursor = -1;
  ASSERT_TRUE((*other)->RevokedSince(&cursor).ok());  // starts at the newest
  ASSERT_TRUE(store_->Revoke("key_2").ok());
  auto seen = (*other)->RevokedSince(&cursor);
  ASSERT_TRUE(seen.ok()) << seen.status();
  ASSERT_EQ(seen->size(), 1u);
  EXPECT_EQ(seen->front().id, "key_2");
  EXPECT_EQ(seen->front().key_sha256, Hash(2));
  ASSERT_TRUE(store_->Revoke("key_1").ok());
  seen = (*other)->RevokedSince(&cursor);
  ASSERT_TRUE(seen.ok());
  bool got_1 = false;
  for (const auto& k : *seen) got_1 |= k.id == "key_1";
  EXPECT_TRUE(got_1);
}

INSTANTIATE_TEST_SUITE_P(
    Postgres, PostgresKeySessionTest,
    ::testing::Values(BackendParam{"postgres", []() -> absl::StatusOr<std::unique_ptr<KeyBackend>> {
      auto b = std::make_unique<PostgresBackend>();
      if (auto s = b->Init(); !s.ok()) return s;
      return std::unique_ptr<KeyBackend>(std::move(b));
    }}),
    [](const ::testing::TestParamInfo<BackendParam>& info) { return info.param.name; });

std::string ParamName(const ::testing::TestParamInfo<BackendParam>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(
    Sqlite, KeyStoreTest,
    ::testing::Values(BackendParam{"sqlite", []() -> absl::StatusOr<std::unique_ptr<KeyBackend>> {
      return std::unique_ptr<KeyBackend>(new SqliteBackend());
    }}),
    ParamName);

INSTANTIATE_TEST_SUITE_P(
    Postgres, KeyStoreTest,
    ::testing::Values(BackendParam{"postgres", []() -> absl::StatusOr<std::unique_ptr<KeyBackend>> {
      auto b = std::make_unique<PostgresBackend>();
      if (auto s = b->Init(); !s.ok()) return s;
      return std::unique_ptr<KeyBackend>(std::move(b));
    }}),
    ParamName);

}  // namespace
}  // namespace nexusflow::auth

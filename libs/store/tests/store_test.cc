// The storage helpers: SqliteDb (SqliteDbTest.*) and the libpq layer (Pg*Test.*, on the
// throwaway server tools/lib/with-postgres.sh starts).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "libs/store/postgres.h"
#include "libs/store/sqlite.h"
#include "libs/store/testing/pg_test_database.h"

namespace nexusflow {
namespace {

int64_t SynchronousSetting(SqliteDb& db) {
  auto st = db.Prepare("PRAGMA synchronous");
  EXPECT_TRUE(st.ok());
  auto row = st->Step();
  EXPECT_TRUE(row.ok() && *row);
  return st->Int(0);
}

TEST(SqliteDbTest, CommitsAreSyncedToDiskUnlessAskedOtherwise) {
  char dir[] = "/tmp/nf-store-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/db.sqlite";
  auto full = SqliteDb::Open(path);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(SynchronousSetting(**full), 2);  // FULL: an acknowledged commit survives power loss
  auto normal = SqliteDb::Open(path, SqliteSync::kNormal);
  ASSERT_TRUE(normal.ok());
  EXPECT_EQ(SynchronousSetting(**normal), 1);
  std::system(("rm -rf '" + std::string(dir) + "'").c_str());
}

TEST(PostgresUrlTest, OnlyPostgresSchemesNameAServer) {
  EXPECT_TRUE(IsPostgresUrl("postgresql://nf@db:5432/ledger"));
  EXPECT_TRUE(IsPostgresUrl("postgres://nf@db/ledger"));
  EXPECT_FALSE(IsPostgresUrl("./var/ledger.db"));
  EXPECT_FALSE(IsPostgresUrl("/data/postgresql/ledger.db"));
  EXPECT_FALSE(IsPostgresUrl(":memory:"));
}

class PgConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = PgTestDatabase::Create();
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    auto conn = PgConnection::Open(db_->conninfo());
    ASSERT_TRUE(conn.ok()) << conn.status();
    conn_ = std::move(*conn);
  }
  std::unique_ptr<PgTestDatabase> db_;
  std::unique_ptr<PgConnection> conn_;
};

TEST_F(PgConnectionTest, ParametersAndBytesRoundTrip) {
  std::string bytes("\0\x01\xff z", 5);
  auto r = conn_->Query("SELECT $1::bigint + 1, $2::text, $3::bytea, NULL::bigint",
                        {int64_t{41}, "naïve", PgParam::Bytes(bytes)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->rows(), 1);
  EXPECT_EQ(r->Int(0, 0), 42);
  EXPECT_EQ(r->Text(0, 1), "naïve");
  EXPECT_EQ(r->Bytes(0, 2), bytes);
  EXPECT_TRUE(r->IsNull(0, 3));
  EXPECT_EQ(r->Int(0, 3), 0);
}

TEST_F(PgConnectionTest, AUniqueViolationIsAlreadyExistsWithItsState) {
  ASSERT_TRUE(conn_->Exec("CREATE TABLE t (k INTEGER PRIMARY KEY)").ok());
  ASSERT_TRUE(conn_->Query("INSERT INTO t VALUES ($1)", {1}).ok());
  auto again = conn_->Query("INSERT INTO t VALUES ($1)", {1});
  EXPECT_TRUE(absl::IsAlreadyExists(again.status())) << again.status();
  EXPECT_EQ(conn_->sqlstate(), "23505");
  auto after = conn_->Query("SELECT count(*) FROM t");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(conn_->sqlstate(), "");
  EXPECT_EQ(after->Int(0, 0), 1);
}

TEST_F(PgConnectionTest, PipelinedStatementsAnswerInOrderAcrossChunks) {
  std::vector<std::vector<PgParam>> lists;
  for (int i = 0; i < 200; ++i) lists.push_back({int64_t{i}});
  auto r = conn_->QueryEach("SELECT $1::bigint * 2", lists);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ((*r)[i].Int(0, 0), 2 * i);
  auto none = conn_->QueryEach("SELECT $1::bigint", {});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_F(PgConnectionTest, APipelinedFailureFailsTheTransactionAndTheConnectionGoesOn) {
  ASSERT_TRUE(conn_->Exec("CREATE TABLE t (k INTEGER PRIMARY KEY)").ok());
  auto s = PgTransaction(*conn_, [&]() -> absl::Status {
    return conn_->QueryEach("INSERT INTO t VALUES ($1)", {{1}, {2}, {1}, {3}}).status();
  });
  EXPECT_TRUE(absl::IsAlreadyExists(s)) << s;
  auto count = conn_->Query("SELECT count(*) FROM t");
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(count->Int(0, 0), 0);  // rolled back whole
  ASSERT_TRUE(PgTransaction(*conn_, [&]() -> absl::Status {
                return conn_->QueryEach("INSERT INTO t VALUES ($1)", {{1}, {2}}).status();
              }).ok());
  count = conn_->Query("SELECT count(*) FROM t");
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(count->Int(0, 0), 2);
}

TEST_F(PgConnectionTest, ConnectionsCommitSynchronouslyUnlessAskedOtherwise) {
  auto on = conn_->Query("SHOW synchronous_commit");
  ASSERT_TRUE(on.ok());
  EXPECT_EQ(on->Text(0, 0), "on");
  auto relaxed = PgConnection::Open(db_->conninfo(), /*synchronous_commit=*/false);
  ASSERT_TRUE(relaxed.ok());
  auto off = (*relaxed)->Query("SHOW synchronous_commit");
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->Text(0, 0), "off");
}

TEST_F(PgConnectionTest, AnUnreachableServerIsUnavailable) {
  auto c = PgConnection::Open("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2");
  EXPECT_TRUE(absl::IsUnavailable(c.status())) << c.status();
}

}  // namespace
}  // namespace nexusflow

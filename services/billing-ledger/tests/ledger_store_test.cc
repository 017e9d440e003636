// LedgerStore conformance: the same cases against SQLite (Sqlite/…) and PostgreSQL
// (Postgres/…, through tools/lib/with-postgres.sh). Every case ends with Verify() on
// the ledger it left, except those that break the ledger on purpose to see Verify say so.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "libs/store/postgres.h"
#include "libs/store/sqlite.h"
#include "libs/store/testing/pg_test_database.h"
#include "services/billing-ledger/billing_service.h"
#include "services/billing-ledger/ledger_store.h"

namespace nexusflow::billing {
namespace {

// One ledger, opened as often as a case needs (each store is what one replica has).
class LedgerBackend {
 public:
  virtual ~LedgerBackend() = default;
  virtual absl::StatusOr<std::unique_ptr<LedgerStore>> Open() = 0;
  // Runs SQL on the ledger behind the stores' back (to break it for Verify).
  virtual absl::Status Tamper(const std::string& sql) = 0;
};

class SqliteBackend : public LedgerBackend {
 public:
  SqliteBackend() {
    char dir[] = "/tmp/nf-ledger-conformance-XXXXXX";
    if (mkdtemp(dir)) dir_ = dir;
    path_ = dir_ + "/ledger.db";
  }
  ~SqliteBackend() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }
  absl::StatusOr<std::unique_ptr<LedgerStore>> Open() override { return OpenSqliteLedgerStore(path_); }
  absl::Status Tamper(const std::string& sql) override {
    auto db = SqliteDb::Open(path_);
    if (!db.ok()) return db.status();
    return (*db)->Exec(sql);
  }

 private:
  std::string dir_, path_;
};

class PostgresBackend : public LedgerBackend {
 public:
  absl::Status Init() {
    auto db = PgTestDatabase::Create();
    if (!db.ok()) return db.status();
    db_ = std::move(*db);
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<LedgerStore>> Open() override {
    return OpenPostgresLedgerStore(db_->conninfo());
  }
  absl::Status Tamper(const std::string& sql) override {
    auto c = PgConnection::Open(db_->conninfo());
    if (!c.ok()) return c.status();
    return (*c)->Exec(sql);
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
  std::function<absl::StatusOr<std::unique_ptr<LedgerBackend>>()> make;
};
void PrintTo(const BackendParam& p, std::ostream* os) { *os << p.name; }


llm::v1::Price Sonnet() {
  llm::v1::Price p;
  p.set_input_nano_usd_per_mtok(3'000'000'000);
  p.set_output_nano_usd_per_mtok(15'000'000'000);
  return p;
}

class LedgerStoreTest : public ::testing::TestWithParam<BackendParam> {
 protected:
  void SetUp() override {
    auto backend = GetParam().make();
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    auto store = backend_->Open();
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto a = store_->CreateAccount("acme", 1);
    ASSERT_TRUE(a.ok()) << a.status();
    account_ = a->id;
  }

  void TearDown() override {
    if (!store_ || !verify_at_end_) return;
    auto violations = store_->Verify();
    ASSERT_TRUE(violations.ok()) << violations.status();
    EXPECT_TRUE(violations->empty()) << absl::StrJoin(*violations, "\n");
  }

  std::unique_ptr<LedgerStore> Another() {
    auto s = backend_->Open();
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  void Fund(int64_t amount, const std::string& key = "fund") {
    auto r = store_->Credit(account_, amount, key, "", 1);
    ASSERT_TRUE(r.ok()) << r.status();
  }

  UsageRow Row(const std::string& request_id, int64_t cost, const std::string& hold_id = "") {
    UsageRow r;
    r.request_id = request_id;
    r.account_id = account_;
    r.key_id = "key_1";
    r.model = "sonnet";
    r.usage.set_input_tokens(1000);
    r.usage.set_output_tokens(500);
    r.price = Sonnet();
    r.cost = cost;
    r.created_at = 2;
    r.hold_id = hold_id;
    return r;
  }

  HoldRow Hold(const std::string& request_id, int64_t amount, int64_t expires_at = 1000) {
    return HoldRow{"hold_" + request_id, account_, request_id, amount, expires_at};
  }

  AccountRow Account() {
    auto a = store_->GetAccount(account_);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *a : AccountRow{};
  }

  std::unique_ptr<LedgerBackend> backend_;
  std::unique_ptr<LedgerStore> store_;
  std::string account_;
  bool verify_at_end_ = true;
};

TEST_P(LedgerStoreTest, AccountsStartEmptyAndUnknownOnesAreNotFound) {
  AccountRow a = Account();
  EXPECT_EQ(a.name, "acme");
  EXPECT_EQ(a.balance, 0);
  EXPECT_EQ(a.held, 0);
  EXPECT_EQ(a.created_at, 1);
  EXPECT_TRUE(absl::IsNotFound(store_->GetAccount("acct_missing").status()));
}

TEST_P(LedgerStoreTest, CreditIsIdempotentOnItsKeyAndRefusesAnotherAmount) {
  auto first = store_->Credit(account_, 5'000, "k1", "top-up", 3);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->balance, 5'000);
  EXPECT_FALSE(first->duplicate);
  auto again = store_->Credit(account_, 5'000, "k1", "top-up", 4);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->balance, 5'000);
  EXPECT_TRUE(absl::IsAlreadyExists(store_->Credit(account_, 7'000, "k1", "", 5).status()));
  auto other = store_->CreateAccount("other", 1);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(absl::IsAlreadyExists(store_->Credit(other->id, 5'000, "k1", "", 5).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->Credit("acct_missing", 1, "k9", "", 5).status()));
  EXPECT_EQ(Account().balance, 5'000);
}

TEST_P(LedgerStoreTest, SettlementChargesOncePerRequestAndAnUnknownAccountFailsAlone) {
  Fund(1'000'000);
  std::vector<UsageRow> rows = {Row("req_0", 1000), Row("req_1", 1000), Row("req_0", 1000)};
  UsageRow unknown = Row("req_x", 1000);
  unknown.account_id = "acct_missing";
  rows.push_back(unknown);
  auto results = store_->SettleBatch(rows);
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 4u);
  ASSERT_TRUE((*results)[0].ok()) << (*results)[0].status();
  EXPECT_FALSE((*results)[0]->duplicate);
  EXPECT_FALSE((*results)[1]->duplicate);
  EXPECT_EQ((*results)[1]->balance, 1'000'000 - 2000);
  EXPECT_TRUE((*results)[2]->duplicate);
  EXPECT_EQ((*results)[2]->cost, 1000);
  EXPECT_EQ((*results)[2]->balance, 1'000'000 - 1000);  // the first settlement's answer
  EXPECT_TRUE(absl::IsNotFound((*results)[3].status()));
  auto later = store_->Settle(Row("req_1", 5000));
  ASSERT_TRUE(later.ok());
  EXPECT_TRUE(later->duplicate);
  EXPECT_EQ(later->cost, 1000);
  AccountRow a = Account();
  EXPECT_EQ(a.balance, 1'000'000 - 2000);
  EXPECT_EQ(a.total_spent, 2000);
}

TEST_P(LedgerStoreTest, ALargeBatchAnswersEveryRowInOrder) {
  Fund(1'000'000);
  ASSERT_TRUE(store_->Settle(Row("req_7", 10)).ok());  // settled before the batch
  std::vector<UsageRow> rows;
  for (int i = 0; i < 150; ++i) rows.push_back(Row(absl::StrCat("req_", i % 140), 10));
  UsageRow unknown = Row("req_unknown", 10);
  unknown.account_id = "acct_missing";
  rows.insert(rows.begin() + 70, unknown);
  auto results = store_->SettleBatch(rows);
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), rows.size());
  int charged = 0, duplicates = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i == 70) {
      EXPECT_TRUE(absl::IsNotFound((*results)[i].status())) << (*results)[i].status();
      continue;
    }
    ASSERT_TRUE((*results)[i].ok()) << i << ": " << (*results)[i].status();
    if ((*results)[i]->duplicate) ++duplicates;
    else ++charged;
  }
  EXPECT_EQ(charged, 139);    // req_0 … req_139 but req_7
  EXPECT_EQ(duplicates, 11);  // req_7, and req_0 … req_9 a second time
  EXPECT_EQ(Account().balance, 1'000'000 - 140 * 10);
}

TEST_P(LedgerStoreTest, UsageIsListedNewestFirstWithItsPriceSnapshot) {
  Fund(1'000'000);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store_->Settle(Row(absl::StrCat("req_", i), 10 + i)).ok());
  auto page = store_->ListUsage(account_, 3, 0);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->size(), 3u);
  EXPECT_EQ((*page)[0].request_id, "req_4");
  EXPECT_EQ((*page)[0].cost, 14);
  EXPECT_EQ((*page)[0].usage.output_tokens(), 500);
  EXPECT_EQ((*page)[0].price.output_nano_usd_per_mtok(), 15'000'000'000);
  auto seq = store_->UsageSequence(account_, "req_2");
  ASSERT_TRUE(seq.ok());
  auto rest = store_->ListUsage(account_, 10, *seq);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->size(), 2u);
  EXPECT_EQ((*rest)[0].request_id, "req_1");
  EXPECT_TRUE(absl::IsNotFound(store_->UsageSequence(account_, "req_none").status()));
}

TEST_P(LedgerStoreTest, EveryChangeAdvancesTheAccountVersion) {
  auto c = store_->Credit(account_, 1'000, "k", "", 2);
  ASSERT_TRUE(c.ok());
  auto s = store_->Settle(Row("req", 100));
  ASSERT_TRUE(s.ok());
  EXPECT_GT(c->version, 0);
  EXPECT_GT(s->version, c->version);
  EXPECT_EQ(s->total_spent, 100);
  EXPECT_EQ(Account().version, s->version);
}

TEST_P(LedgerStoreTest, ReserveAdmitsDownToMinusTheOverdraft) {
  const int64_t overdraft = 500;
  auto unfunded = store_->Reserve(Hold("r0", 1), overdraft, 1);
  EXPECT_TRUE(absl::IsFailedPrecondition(unfunded.status())) << unfunded.status();
  Fund(1'000);
  auto first = store_->Reserve(Hold("r1", 1'200), overdraft, 1);  // 1000 − 1200 = −200
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->available, -200);
  EXPECT_FALSE(first->existing);
  auto over = store_->Reserve(Hold("r2", 301), overdraft, 1);  // would be −501
  EXPECT_TRUE(absl::IsFailedPrecondition(over.status())) << over.status();
  auto exact = store_->Reserve(Hold("r3", 300), overdraft, 1);  // −500
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_EQ(exact->available, -500);
  auto same = store_->Reserve(Hold("r1", 1'200), overdraft, 1);
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(same->existing);
  EXPECT_EQ(same->hold.id, "hold_r1");
  EXPECT_EQ(Account().held, 1'500);
  HoldRow stranger = Hold("r4", 1);
  stranger.account_id = "acct_missing";
  EXPECT_TRUE(absl::IsNotFound(store_->Reserve(stranger, overdraft, 1).status()));
}

TEST_P(LedgerStoreTest, WithoutOverdraftAHoldMustFitTheBalance) {
  Fund(1'000);
  ASSERT_TRUE(store_->Reserve(Hold("a", 600), 0, 1).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->Reserve(Hold("b", 401), 0, 1).status()));
  ASSERT_TRUE(store_->Reserve(Hold("c", 400), 0, 1).ok());
}

TEST_P(LedgerStoreTest, SettlementClosesItsHoldInTheSameTransaction) {
  Fund(1'000);
  auto h = store_->Reserve(Hold("req", 800), 0, 1);
  ASSERT_TRUE(h.ok()) << h.status();
  auto s = store_->Settle(Row("req", 300, h->hold.id));
  ASSERT_TRUE(s.ok()) << s.status();
  AccountRow a = Account();
  EXPECT_EQ(a.held, 0);
  EXPECT_EQ(a.balance, 700);
  auto again = store_->ReleaseHold(h->hold.id, 2);  // settled: nothing left to release
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  EXPECT_TRUE(store_->Reserve(Hold("next", 700), 0, 1).ok());
}

TEST_P(LedgerStoreTest, ReleaseFreesTheHoldOnce) {
  Fund(1'000);
  auto h = store_->Reserve(Hold("req", 800), 0, 1);
  ASSERT_TRUE(h.ok());
  auto released = store_->ReleaseHold(h->hold.id, 2);
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_TRUE(*released);
  auto twice = store_->ReleaseHold(h->hold.id, 3);
  ASSERT_TRUE(twice.ok());
  EXPECT_FALSE(*twice);
  EXPECT_EQ(Account().held, 0);
  EXPECT_EQ(Account().balance, 1'000);
}

TEST_P(LedgerStoreTest, ExpiredHoldsAreSweptAndMaySettleLate) {
  Fund(1'000);
  auto h = store_->Reserve(Hold("lost", 1'000, /*expires_at=*/100), 0, 1);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->Reserve(Hold("next", 1), 0, 1).status()));
  auto none = store_->ExpireHolds(99);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0);
  auto swept = store_->ExpireHolds(100);
  ASSERT_TRUE(swept.ok());
  EXPECT_EQ(*swept, 1);
  EXPECT_EQ(Account().held, 0);
  // The request was only slow: its settlement still charges (expired is not released).
  ASSERT_TRUE(store_->Settle(Row("lost", 250, h->hold.id)).ok());
  EXPECT_EQ(Account().balance, 750);
}

TEST_P(LedgerStoreTest, HoldsReleasedElsewhereAreRecordedWithTheBatch) {
  Fund(1'000);
  HoldRelease released{"hold_mem_1", account_, "req_failed", 400, false, 5};
  HoldRelease expired{"hold_mem_2", account_, "req_gone", 100, true, 6};
  auto r = store_->CommitBatch({Row("req_ok", 10, "hold_mem_3")}, {released, expired});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)[0].ok());
  auto only = store_->CommitBatch({}, {HoldRelease{"hold_mem_4", account_, "req_4", 1, false, 7}});
  ASSERT_TRUE(only.ok()) << only.status();
  EXPECT_TRUE(only->empty());
}

TEST_P(LedgerStoreTest, VerifyFindsAHoldBothSettledAndReleased) {
  Fund(1'000);
  ASSERT_TRUE(store_->CommitBatch({}, {HoldRelease{"hold_x", account_, "req", 10, false, 2}}).ok());
  ASSERT_TRUE(store_->Settle(Row("req", 10, "hold_x")).ok());
  auto v = store_->Verify();
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), 1u) << absl::StrJoin(*v, "\n");
  EXPECT_NE((*v)[0].find("hold_x"), std::string::npos) << (*v)[0];
  verify_at_end_ = false;
}

TEST_P(LedgerStoreTest, VerifyFindsABalanceThatDiffersFromItsTransfers) {
  Fund(1'000);
  ASSERT_TRUE(store_->Settle(Row("req", 100)).ok());
  ASSERT_TRUE(backend_->Tamper(absl::StrCat("UPDATE accounts SET balance = balance + 5 WHERE id = '",
                                            account_, "'")).ok());
  auto v = store_->Verify();
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), 1u) << absl::StrJoin(*v, "\n");
  EXPECT_NE((*v)[0].find(account_), std::string::npos) << (*v)[0];
  verify_at_end_ = false;
}

TEST_P(LedgerStoreTest, VerifyFindsARequestChargedTwice) {
  Fund(1'000);
  ASSERT_TRUE(store_->Settle(Row("req_twice", 100)).ok());
  // A second charge for the request, balanced (so only the double charge is wrong).
  ASSERT_TRUE(backend_->Tamper(absl::StrCat(
      "INSERT INTO journal (debit_account, credit_account, amount, kind, reference, created_at) "
      "VALUES ('", account_, "', '@revenue', 100, 'charge', 'req_twice', 3); "
      "UPDATE accounts SET balance = balance - 100, total_spent = total_spent + 100 "
      "WHERE id = '", account_, "'")).ok());
  auto v = store_->Verify();
  ASSERT_TRUE(v.ok()) << v.status();
  std::string all = absl::StrJoin(*v, "\n");
  EXPECT_NE(all.find("request req_twice is charged 2 times"), std::string::npos) << all;
  verify_at_end_ = false;
}

TEST_P(LedgerStoreTest, TwoStoresSettlingTheSameRequestsChargeEachOnce) {
  Fund(10'000'000);
  auto other = Another();
  ASSERT_NE(other, nullptr);
  constexpr int kRequests = 40;
  std::atomic<int> charged{0}, failed{0};
  auto settle_all = [&](LedgerStore* store, int offset) {
    for (int i = 0; i < kRequests; ++i) {
      // Batches of two, in a different order on each store.
      int a = (i + offset) % kRequests, b = (i + offset + 7) % kRequests;
      auto r = store->SettleBatch({Row(absl::StrCat("req_", a), 1000), Row(absl::StrCat("req_", b), 1000)});
      if (!r.ok()) {
        ++failed;
        continue;
      }
      for (const auto& one : *r) {
        if (!one.ok()) ++failed;
        else if (!one->duplicate) ++charged;
      }
    }
  };
  std::thread t1(settle_all, store_.get(), 0), t2(settle_all, other.get(), 13),
      t3(settle_all, store_.get(), 21), t4(settle_all, other.get(), 29);
  t1.join();
  t2.join();
  t3.join();
  t4.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(charged.load(), kRequests);
  AccountRow a = Account();
  EXPECT_EQ(a.balance, 10'000'000 - kRequests * 1000);
  EXPECT_EQ(a.total_spent, kRequests * 1000);
}

TEST_P(LedgerStoreTest, TwoStoresReservingAtOnceNeverAdmitBeyondBalanceAndOverdraft) {
  Fund(10'000);
  const int64_t overdraft = 2'500;
  auto other = Another();
  ASSERT_NE(other, nullptr);
  std::atomic<int64_t> admitted{0};
  std::atomic<int> errors{0};
  auto reserve_many = [&](LedgerStore* store, int thread) {
    for (int i = 0; i < 30; ++i) {
      auto r = store->Reserve(Hold(absl::StrCat("t", thread, "_", i), 300), overdraft, 1);
      if (r.ok()) admitted += r->hold.amount;
      else if (!absl::IsFailedPrecondition(r.status())) ++errors;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(reserve_many, t % 2 ? other.get() : store_.get(), t);
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  // 12,500 of room in holds of 300: exactly 41 fit, whatever the interleaving.
  EXPECT_EQ(admitted.load(), 41 * 300);
  EXPECT_EQ(Account().held, admitted.load());
}

TEST_P(LedgerStoreTest, TwoStoresCreditingOneKeyAtOnceCreditOnce) {
  auto other = Another();
  ASSERT_NE(other, nullptr);
  std::atomic<int> fresh{0}, errors{0};
  auto credit = [&](LedgerStore* store) {
    for (int i = 0; i < 20; ++i) {
      auto r = store->Credit(account_, 100, absl::StrCat("key_", i), "", 2);
      if (!r.ok()) ++errors;
      else if (!r->duplicate) ++fresh;
    }
  };
  std::thread t1(credit, store_.get()), t2(credit, other.get());
  t1.join();
  t2.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(fresh.load(), 20);
  EXPECT_EQ(Account().balance, 2'000);
}

TEST_P(LedgerStoreTest, EverythingSurvivesReopening) {
  Fund(1'000);
  ASSERT_TRUE(store_->Settle(Row("req", 100)).ok());
  ASSERT_TRUE(store_->Reserve(Hold("open", 200), 0, 1).ok());
  store_.reset();
  auto reopened = backend_->Open();
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  store_ = std::move(*reopened);
  AccountRow a = Account();
  EXPECT_EQ(a.balance, 900);
  EXPECT_EQ(a.held, 200);
  auto dup = store_->Settle(Row("req", 100));
  ASSERT_TRUE(dup.ok());
  EXPECT_TRUE(dup->duplicate);
}

// Replicas of the service on one shared ledger: holds live in the store, so neither
// replica admits what the other already holds, and a request settled through both is
// charged once. Only for stores replicas may share (an SQLite ledger has one owner).
class SharedLedgerServiceTest : public LedgerStoreTest {};

TEST_P(SharedLedgerServiceTest, TwoReplicasNeitherOverAdmitNorChargeTwice) {
  ASSERT_TRUE(store_->shared());
  Fund(10'000);
  const int64_t overdraft = 1'000;
  auto second = Another();
  ASSERT_NE(second, nullptr);
  auto now = [] { return int64_t{1000}; };
  BillingLedgerService a(Another(), now, overdraft), b(std::move(second), now, overdraft);
  BillingLedgerService* replicas[] = {&a, &b};

  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> admitted;  // request id, hold id
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        pb::ReserveRequest req;
        req.set_request_id(absl::StrCat("req_", t, "_", i));
        req.set_account_id(account_);
        req.set_amount_nano_usd(300);
        pb::ReserveResponse resp;
        absl::Status s = replicas[(t + i) % 2]->ReserveHold(req, &resp);
        if (s.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          admitted.emplace_back(req.request_id(), resp.hold_id());
        } else if (!absl::IsFailedPrecondition(s)) {
          ++errors;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  threads.clear();
  EXPECT_EQ(errors.load(), 0);
  ASSERT_EQ(admitted.size(), 36u);  // 11,000 of room in holds of 300
  EXPECT_EQ(Account().held, 36 * 300);

  // Every request settled through both replicas at once (a retry that reached the
  // other one), except the last, which is released instead.
  auto settle = [&](BillingLedgerService* replica, const std::string& request,
                    const std::string& hold) {
    pb::SettleRequest req;
    req.set_request_id(request);
    req.set_hold_id(hold);
    req.set_account_id(account_);
    req.mutable_usage()->set_input_tokens(1000);
    req.mutable_price()->set_input_nano_usd_per_mtok(100'000);  // 1,000 tokens: 100 nano-USD
    pb::SettleResponse resp;
    std::promise<absl::Status> done;
    replica->SettleUsage(req, &resp, [&](const absl::Status& st) { done.set_value(st); });
    absl::Status st = done.get_future().get();
    EXPECT_TRUE(st.ok()) << st;
  };
  for (size_t i = 0; i + 1 < admitted.size(); ++i) {
    threads.emplace_back(settle, &a, admitted[i].first, admitted[i].second);
    threads.emplace_back(settle, &b, admitted[i].first, admitted[i].second);
  }
  for (auto& t : threads) t.join();
  b.CloseHold(admitted.back().second);
  AccountRow after = Account();
  EXPECT_EQ(after.balance, 10'000 - 35 * 100);
  EXPECT_EQ(after.total_spent, 35 * 100);
  EXPECT_EQ(after.held, 0);
}

// A server that drops its sessions (a restart, a failover, an administrator) costs the
// stores nothing: a pooled connection found dead is replaced before it is used.
class PostgresSessionTest : public LedgerStoreTest {};

TEST_P(PostgresSessionTest, SessionsTheServerDroppedAreReopened) {
  Fund(1'000);
  ASSERT_TRUE(store_->Settle(Row("before", 10)).ok());
  ASSERT_TRUE(store_->Reserve(Hold("h1", 10), 0, 1).ok());
  auto* pg = dynamic_cast<PostgresBackend*>(backend_.get());
  ASSERT_NE(pg, nullptr);
  ASSERT_TRUE(pg->DropSessions().ok());
  auto settled = store_->Settle(Row("after", 10));
  ASSERT_TRUE(settled.ok()) << settled.status();
  EXPECT_FALSE(settled->duplicate);
  auto held = store_->Reserve(Hold("h2", 10), 0, 1);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(Account().balance, 980);
}

INSTANTIATE_TEST_SUITE_P(
    Postgres, PostgresSessionTest,
    ::testing::Values(BackendParam{"postgres", []() -> absl::StatusOr<std::unique_ptr<LedgerBackend>> {
      auto b = std::make_unique<PostgresBackend>();
      if (auto s = b->Init(); !s.ok()) return s;
      return std::unique_ptr<LedgerBackend>(std::move(b));
    }}),
    [](const ::testing::TestParamInfo<BackendParam>& info) { return info.param.name; });

INSTANTIATE_TEST_SUITE_P(
    Postgres, SharedLedgerServiceTest,
    ::testing::Values(BackendParam{"postgres", []() -> absl::StatusOr<std::unique_ptr<LedgerBackend>> {
      auto b = std::make_unique<PostgresBackend>();
      if (auto s = b->Init(); !s.ok()) return s;
      return std::unique_ptr<LedgerBackend>(std::move(b));
    }}),
    [](const ::testing::TestParamInfo<BackendParam>& info) { return info.param.name; });

std::string ParamName(const ::testing::TestParamInfo<BackendParam>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(
    Sqlite, LedgerStoreTest,
    ::testing::Values(BackendParam{"sqlite", []() -> absl::StatusOr<std::unique_ptr<LedgerBackend>> {
      return std::unique_ptr<LedgerBackend>(new SqliteBackend());
    }}),
    ParamName);

INSTANTIATE_TEST_SUITE_P(
    Postgres, LedgerStoreTest,
    ::testing::Values(BackendParam{"postgres", []() -> absl::StatusOr<std::unique_ptr<LedgerBackend>> {
      auto b = std::make_unique<PostgresBackend>();
      if (auto s = b->Init(); !s.ok()) return s;
      return std::unique_ptr<LedgerBackend>(std::move(b));
    }}),
    ParamName);

}  // namespace
}  // namespace nexusflow::billing

#include <gtest/gtest.h>

#include <grpcpp/client_context.h>

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "libs/rpc/server_host.h"
#include "libs/store/sqlite.h"
#include "services/billing-ledger/billing_service.h"
#include "services/billing-ledger/ledger_rules.h"
#include "services/billing-ledger/pricing.h"

namespace nexusflow::billing {
namespace {

llm::v1::Price Sonnet() {
  llm::v1::Price p;
  p.set_input_nano_usd_per_mtok(3'000'000'000);
  p.set_output_nano_usd_per_mtok(15'000'000'000);
  p.set_cache_read_nano_usd_per_mtok(300'000'000);
  p.set_cache_write_nano_usd_per_mtok(3'750'000'000);
  return p;
}

TEST(PricingTest, CostSumsFourKindsAndRoundsUpOnce) {
  llm::v1::Usage u;
  u.set_input_tokens(1000);
  u.set_output_tokens(500);
  EXPECT_EQ(CostNanoUsd(u, Sonnet()), 3'000'000 + 7'500'000);
  u.set_cache_read_tokens(10'000);   // 0.1x input
  u.set_cache_write_tokens(2'000);   // 1.25x input
  EXPECT_EQ(CostNanoUsd(u, Sonnet()), 10'500'000 + 3'000'000 + 7'500'000);
  llm::v1::Price cheap;
  cheap.set_input_nano_usd_per_mtok(1);  // 1e-9 USD per million tokens
  llm::v1::Usage one;
  one.set_input_tokens(1);
  EXPECT_EQ(CostNanoUsd(one, cheap), 1);  // a fraction of a nano-USD rounds up
  EXPECT_EQ(CostNanoUsd(llm::v1::Usage{}, Sonnet()), 0);
}

TEST(PricingTest, MediaIsPricedPerImageAndPerSecondWithTheSameSingleRoundUp) {
  llm::v1::Price wan;
  wan.set_image_nano_usd(30'000'000);  // $0.03 an image
  llm::v1::Usage images;
  images.set_images(3);
  EXPECT_EQ(CostNanoUsd(images, wan), 90'000'000);
  EXPECT_EQ(MaxMediaCostNanoUsd(4, 0, wan), 120'000'000);
  llm::v1::Price video;
  video.set_video_second_nano_usd(100'000'000);  // $0.10 a second
  llm::v1::Usage clip;
  clip.set_video_seconds(10);
  EXPECT_EQ(CostNanoUsd(clip, video), 1'000'000'000);
  EXPECT_EQ(MaxMediaCostNanoUsd(0, 15, video), 1'500'000'000);
  // Media and tokens in one request: one exact sum, one round-up.
  llm::v1::Price mixed = wan;
  mixed.set_input_nano_usd_per_mtok(1);  // a millionth of a nano-USD a token
  images.set_input_tokens(1);
  EXPECT_EQ(CostNanoUsd(images, mixed), 90'000'001);
  // Nothing produced costs nothing; a negative count never pays back.
  EXPECT_EQ(CostNanoUsd(llm::v1::Usage{}, wan), 0);
  llm::v1::Usage negative;
  negative.set_images(-2);
  EXPECT_EQ(CostNanoUsd(negative, wan), 0);
}

TEST(PricingTest, OneHourCacheWritesHaveTheirOwnPrice) {
  llm::v1::Usage u;
  u.set_cache_write_tokens(3'000);     // 1,000 of them for an hour
  u.set_cache_write_1h_tokens(1'000);
  // Without a 1-hour price every write is priced as a 5-minute one (3.75 USD/Mtok).
  EXPECT_EQ(CostNanoUsd(u, Sonnet()), 11'250'000);
  llm::v1::Price p = Sonnet();
  p.set_cache_write_1h_nano_usd_per_mtok(6'000'000'000);  // 2x input
  EXPECT_EQ(CostNanoUsd(u, p), 2'000 * 3'750 + 1'000 * 6'000);
  // A 1-hour count above the writes cannot charge more than the writes.
  u.set_cache_write_1h_tokens(10'000);
  EXPECT_EQ(CostNanoUsd(u, p), 3'000 * 6'000);
}

class BillingServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = OpenSqliteLedgerStore(":memory:");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = store->get();
    service_ = std::make_unique<BillingLedgerService>(std::move(*store), [this] { return now_; });
    host_.AddService(service_.get());
    ASSERT_TRUE(host_.Start("127.0.0.1:0").ok());
    stub_ = pb::BillingLedgerService::NewStub(host_.InProcessChannel());
    grpc::ClientContext ctx;
    pb::CreateAccountRequest req;
    req.set_name("acme");
    ASSERT_TRUE(stub_->CreateAccount(&ctx, req, &account_).ok());
  }

  grpc::Status Credit(int64_t amount, const std::string& key, pb::CreditResponse* resp) {
    grpc::ClientContext ctx;
    pb::CreditRequest req;
    req.set_account_id(account_.id());
    req.set_amount_nano_usd(amount);
    req.set_idempotency_key(key);
    return stub_->Credit(&ctx, req, resp);
  }

  grpc::Status Reserve(const std::string& request_id, int64_t amount, pb::ReserveResponse* resp) {
    grpc::ClientContext ctx;
    pb::ReserveRequest req;
    req.set_request_id(request_id);
    req.set_account_id(account_.id());
    req.set_amount_nano_usd(amount);
    return stub_->Reserve(&ctx, req, resp);
  }

  grpc::Status Settle(const std::string& request_id, const std::string& hold,
                      pb::SettleResponse* resp) {
    grpc::ClientContext ctx;
    pb::SettleRequest req;
    req.set_request_id(request_id);
    req.set_hold_id(hold);
    req.set_account_id(account_.id());
    req.set_model("sonnet");
    req.mutable_usage()->set_input_tokens(1000);
    req.mutable_usage()->set_output_tokens(500);
    *req.mutable_price() = Sonnet();
    return stub_->Settle(&ctx, req, resp);
  }

  int64_t Balance() {
    grpc::ClientContext ctx;
    pb::GetBalanceRequest req;
    req.set_account_id(account_.id());
    pb::Balance b;
    EXPECT_TRUE(stub_->GetBalance(&ctx, req, &b).ok());
    return b.balance_nano_usd();
  }

  // Whatever a case did, the ledger it leaves is consistent.
  void TearDown() override {
    if (!store_) return;
    auto violations = store_->Verify();
    ASSERT_TRUE(violations.ok()) << violations.status();
    EXPECT_TRUE(violations->empty()) << absl::StrJoin(*violations, "\n");
  }

  int64_t now_ = 1000;  // unix seconds
  LedgerStore* store_ = nullptr;  // owned by service_
  std::unique_ptr<BillingLedgerService> service_;
  ServerHost host_;
  std::unique_ptr<pb::BillingLedgerService::Stub> stub_;
  pb::Account account_;
};

TEST_F(BillingServiceTest, CreditIsIdempotentOnItsKey) {
  pb::CreditResponse r;
  ASSERT_TRUE(Credit(5'000'000'000, "k1", &r).ok());
  EXPECT_EQ(r.balance_nano_usd(), 5'000'000'000);
  ASSERT_TRUE(Credit(5'000'000'000, "k1", &r).ok());
  EXPECT_TRUE(r.duplicate());
  EXPECT_EQ(Balance(), 5'000'000'000);
}

TEST_F(BillingServiceTest, ReusingACreditKeyForAnotherAmountIsRefused) {
  pb::CreditResponse r;
  ASSERT_TRUE(Credit(5'000'000'000, "k2", &r).ok());
  EXPECT_EQ(Credit(7'000'000'000, "k2", &r).error_code(), grpc::ALREADY_EXISTS);
  EXPECT_EQ(Balance(), 5'000'000'000);  // neither credited again nor taken for the first
}

TEST_F(BillingServiceTest, ReserveFailsWithoutBalanceAndCountsOpenHolds) {
  pb::ReserveResponse hold;
  EXPECT_EQ(Reserve("r0", 1, &hold).error_code(), grpc::FAILED_PRECONDITION);
  pb::CreditResponse c;
  ASSERT_TRUE(Credit(1'000'000, "k", &c).ok());
  ASSERT_TRUE(Reserve("r1", 600'000, &hold).ok());
  EXPECT_EQ(hold.available_nano_usd(), 400'000);
  EXPECT_EQ(Reserve("r2", 600'000, &hold).error_code(), grpc::FAILED_PRECONDITION);
  ASSERT_TRUE(Reserve("r1", 600'000, &hold).ok());  // same request: same hold
}

TEST_F(BillingServiceTest, SettleTwiceChargesOnce) {
  pb::CreditResponse c;
  ASSERT_TRUE(Credit(1'000'000'000, "k", &c).ok());
  pb::ReserveResponse hold;
  ASSERT_TRUE(Reserve("req_1", 50'000'000, &hold).ok());
  pb::SettleResponse s;
  ASSERT_TRUE(Settle("req_1", hold.hold_id(), &s).ok());
  EXPECT_EQ(s.cost_nano_usd(), 10'500'000);
  EXPECT_FALSE(s.duplicate());
  ASSERT_TRUE(Settle("req_1", hold.hold_id(), &s).ok());
  EXPECT_TRUE(s.duplicate());
  EXPECT_EQ(s.cost_nano_usd(), 10'500'000);
  EXPECT_EQ(Balance(), 1'000'000'000 - 10'500'000);

  grpc::ClientContext ctx;
  pb::ListUsageRequest req;
  req.set_account_id(account_.id());
  pb::ListUsageResponse usage;
  ASSERT_TRUE(stub_->ListUsage(&ctx, req, &usage).ok());
  ASSERT_EQ(usage.records_size(), 1);
  EXPECT_EQ(usage.records(0).cost_nano_usd(), 10'500'000);
  EXPECT_EQ(usage.records(0).price().output_nano_usd_per_mtok(), 15'000'000'000);
}

TEST_F(BillingServiceTest, SettledHoldFreesAvailableBalance) {
  pb::CreditResponse c;
  ASSERT_TRUE(Credit(20'000'000, "k", &c).ok());
  pb::ReserveResponse hold;
  ASSERT_TRUE(Reserve("a", 15'000'000, &hold).ok());
  pb::SettleResponse s;
  ASSERT_TRUE(Settle("a", hold.hold_id(), &s).ok());
  // 9.5M left and no open hold: a 9M hold fits.
  EXPECT_TRUE(Reserve("b", 9'000'000, &hold).ok());
}

TEST_F(BillingServiceTest, AbandonedHoldsExpireAfterAnHour) {
  pb::CreditResponse c;
  ASSERT_TRUE(Credit(1'000'000, "k", &c).ok());
  pb::ReserveResponse hold;
  ASSERT_TRUE(Reserve("lost", 1'000'000, &hold).ok());  // never settled nor released
  EXPECT_EQ(Reserve("next", 1, &hold).error_code(), grpc::FAILED_PRECONDITION);
  now_ += 3599;
  EXPECT_EQ(Reserve("next", 1, &hold).error_code(), grpc::FAILED_PRECONDITION);
  now_ += 20;
  EXPECT_TRUE(Reserve("next", 1, &hold).ok());
}

// The embedded ledger's holds (in memory) follow the same admission rule as the store's:
// a positive balance, and balance − held − amount ≥ −overdraft.
TEST(BillingOverdraftTest, HoldsAreAdmittedDownToMinusTheOverdraft) {
  auto store = OpenSqliteLedgerStore(":memory:");
  ASSERT_TRUE(store.ok());
  LedgerStore* ledger = store->get();
  auto empty = ledger->CreateAccount("empty", 1);
  auto account = ledger->CreateAccount("acme", 1);
  ASSERT_TRUE(empty.ok() && account.ok());
  // Funded before the service starts: the service owns the ledger from then on.
  ASSERT_TRUE(ledger->Credit(account->id, 1'000, "k", "", 1).ok());
  BillingLedgerService service(std::move(*store), [] { return int64_t{1000}; },
                               /*overdraft=*/500);
  auto reserve = [&](const std::string& request, int64_t amount, pb::ReserveResponse* resp,
                     const std::string& who = "") {
    pb::ReserveRequest req;
    req.set_request_id(request);
    req.set_account_id(who.empty() ? account->id : who);
    req.set_amount_nano_usd(amount);
    return service.ReserveHold(req, resp);
  };
  pb::ReserveResponse resp;
  // No balance, no hold, whatever the overdraft.
  EXPECT_TRUE(absl::IsFailedPrecondition(reserve("r0", 1, &resp, empty->id)));
  ASSERT_TRUE(reserve("r1", 1'200, &resp).ok());  // 1000 − 1200 = −200
  EXPECT_EQ(resp.available_nano_usd(), -200);
  EXPECT_TRUE(absl::IsFailedPrecondition(reserve("r2", 301, &resp)));  // would be −501
  ASSERT_TRUE(reserve("r3", 300, &resp).ok());                          // −500 exactly
  EXPECT_EQ(resp.available_nano_usd(), -500);
  service.CloseHold(resp.hold_id());
  ASSERT_TRUE(reserve("r4", 300, &resp).ok());  // the released hold's room is back
}

TEST_F(BillingServiceTest, UnknownAccountIsNotFound) {
  grpc::ClientContext ctx;
  pb::GetAccountRequest req;
  req.set_account_id("acct_missing");
  pb::Account a;
  EXPECT_EQ(stub_->GetAccount(&ctx, req, &a).error_code(), grpc::NOT_FOUND);
}

}  // namespace
}  // namespace nexusflow::billing

namespace nexusflow::billing {
namespace {

TEST(SqliteLedgerStoreTest, SettlementsSurviveReopenExactlyOnce) {
  char dir[] = "/tmp/nf-ledger-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/ledger.db";
  std::string account;
  {
    auto store = OpenSqliteLedgerStore(path);
    ASSERT_TRUE(store.ok()) << store.status();
    auto a = (*store)->CreateAccount("acme", 1);
    ASSERT_TRUE(a.ok());
    account = a->id;
    ASSERT_TRUE((*store)->Credit(account, 1'000'000, "k", "", 1).ok());
    std::vector<UsageRow> rows(3);
    for (int i = 0; i < 3; ++i) {
      rows[i].request_id = "req_" + std::to_string(i % 2);  // req_0 twice in one batch
      rows[i].account_id = account;
      rows[i].cost = 1000;
      rows[i].created_at = 2;
    }
    auto results = (*store)->SettleBatch(rows);
    ASSERT_TRUE(results.ok());
    EXPECT_FALSE((*results)[0]->duplicate);
    EXPECT_FALSE((*results)[1]->duplicate);
    EXPECT_TRUE((*results)[2]->duplicate);
    UsageRow unknown;
    unknown.request_id = "req_x";
    unknown.account_id = "acct_missing";
    auto mixed = (*store)->SettleBatch({unknown});
    ASSERT_TRUE(mixed.ok());
    EXPECT_FALSE((*mixed)[0].ok());  // fails alone
  }
  auto store = OpenSqliteLedgerStore(path);
  ASSERT_TRUE(store.ok());
  auto a = (*store)->GetAccount(account);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->balance, 1'000'000 - 2000);
  EXPECT_EQ(a->total_spent, 2000);
  auto usage = (*store)->ListUsage(account, 10, 0);
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->size(), 2u);
  auto violations = (*store)->Verify();
  ASSERT_TRUE(violations.ok());
  EXPECT_TRUE(violations->empty()) << absl::StrJoin(*violations, "\n");
}

// An SQLite ledger in a fresh directory whose checkpointer runs every 5 ms and restarts a
// WAL past 1 MiB, with one well-funded account, for the WAL tests below.
class BusyLedger : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/nf-ledger-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    path_ = std::string(dir) + "/ledger.db";
    SqliteLedgerOptions options;
    options.checkpoint_interval = std::chrono::milliseconds(5);
    options.restart_frames = 256;
    auto store = OpenSqliteLedgerStore(path_, options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto a = store_->CreateAccount("acme", 1);
    ASSERT_TRUE(a.ok());
    account_ = a->id;
    ASSERT_TRUE(store_->Credit(account_, 1'000'000'000, "k", "", 1).ok());
  }
  // Tens of megabytes of WAL and ledger: not left behind in /tmp.
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path(path_).parent_path(), ec);
  }
  // Settles `batches` batches of 32 one-nano-USD requests, back to back; `after_each`
  // runs after every commit.
  void Settle(int first, int batches, const std::function<void()>& after_each = [] {}) {
    for (int b = first; b < first + batches; ++b) {
      std::vector<UsageRow> rows(32);
      for (int i = 0; i < 32; ++i) {
        rows[i].request_id = absl::StrCat("req_", b, "_", i);
        rows[i].account_id = account_;
        rows[i].model = "m";
        rows[i].cost = 1;
        rows[i].created_at = 2;
      }
      auto results = store_->SettleBatch(rows);
      ASSERT_TRUE(results.ok()) << results.status();
      after_each();
    }
  }
  int64_t WalSize() const {
    struct stat st{};
    return stat((path_ + "-wal").c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
  }
  int64_t TotalSpent() {
    auto account = store_->GetAccount(account_);
    return account.ok() ? account->total_spent : -1;
  }

  std::string path_;
  std::unique_ptr<LedgerStore> store_;
  std::string account_;
};

// Settlements committed back to back, as under a steady load, while the checkpointer runs:
// the WAL must start over now and then instead of growing with every commit.
TEST_F(BusyLedger, TheWalStaysBoundedUnderASteadyStreamOfCommits) {
  int64_t largest_wal = 0;
  Settle(0, 1000, [&] { largest_wal = std::max(largest_wal, WalSize()); });
  EXPECT_EQ(TotalSpent(), 1000 * 32);
  // Every commit appends several pages; without restarts it passes 100 MiB here.
  EXPECT_LT(largest_wal, 32 << 20) << "the WAL grew to " << largest_wal << " bytes";
  auto violations = store_->Verify();
  ASSERT_TRUE(violations.ok());
  EXPECT_TRUE(violations->empty()) << absl::StrJoin(*violations, "\n");
}

// A reader in another connection (`ledger verify`, a backup) holding a snapshot keeps the
// WAL from starting over, but must not hold the writer up: commits go on while it reads,
// and once it is done the WAL starts over and is trimmed again.
TEST_F(BusyLedger, AReaderElsewhereNeitherStopsCommitsNorKeepsTheWalLarge) {
  auto reader = SqliteDb::Open(path_);
  ASSERT_TRUE(reader.ok());
  ASSERT_TRUE((*reader)->Exec("BEGIN").ok());
  {
    auto count = (*reader)->Prepare("SELECT count(*) FROM usage_records");
    ASSERT_TRUE(count.ok());
    ASSERT_TRUE(count->Step().ok());
  }
  Settle(0, 300);
  const int64_t while_read = WalSize();
  EXPECT_GT(while_read, 4 << 20) << "the reader's snapshot should have kept the WAL";
  ASSERT_TRUE((*reader)->Exec("COMMIT").ok());
  Settle(300, 300);
  EXPECT_LT(WalSize(), while_read) << "the WAL was not started over once the reader ended";
  EXPECT_EQ(TotalSpent(), 600 * 32);
}

// Verify must stay usable on a ledger of millions of rows: SQLite runs a correlated
// subquery once per outer row, so one that scans a table (the journal has no index on its
// reference) makes a check quadratic. Every correlated subquery in the plans must search
// an index.
TEST(SqliteLedgerStoreTest, NoVerifyCheckScansATablePerRow) {
  char dir[] = "/tmp/nf-ledger-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/ledger.db";
  ASSERT_TRUE(OpenSqliteLedgerStore(path).ok());
  auto db = SqliteDb::Open(path);
  ASSERT_TRUE(db.ok());
  for (const auto& check : VerifyChecks()) {
    auto plan = (*db)->Prepare(std::string("EXPLAIN QUERY PLAN ") + check.sql);
    ASSERT_TRUE(plan.ok()) << check.name << ": " << plan.status();
    std::map<int64_t, int64_t> parent;
    std::map<int64_t, std::string> detail;
    std::string text;
    while (true) {
      auto row = plan->Step();
      ASSERT_TRUE(row.ok()) << check.name;
      if (!*row) break;
      parent[plan->Int(0)] = plan->Int(1);
      detail[plan->Int(0)] = plan->Text(3);
      text += plan->Text(3) + "\n";
    }
    for (const auto& [id, what] : detail) {
      if (what.rfind("SCAN", 0) != 0) continue;
      for (int64_t up = parent[id]; up != 0; up = parent[up])
        EXPECT_EQ(detail[up].find("CORRELATED"), std::string::npos)
            << check.name << " scans a table per row:\n" << text;
    }
  }
}

// A ledger written before accounts had `held` and `version` and usage records their
// `hold_id` opens, keeps its money and verifies.
TEST(SqliteLedgerStoreTest, ALedgerFromBeforeHoldsIsMigrated) {
  char dir[] = "/tmp/nf-ledger-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/ledger.db";
  {
    auto db = SqliteDb::Open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec(R"sql(
CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL,
  balance INTEGER NOT NULL DEFAULT 0, total_spent INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, debit_account TEXT NOT NULL,
  credit_account TEXT NOT NULL, amount INTEGER NOT NULL, kind TEXT NOT NULL,
  reference TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE credits (idempotency_key TEXT PRIMARY KEY, account_id TEXT NOT NULL,
  amount INTEGER NOT NULL, balance_after INTEGER NOT NULL, note TEXT NOT NULL,
  created_at INTEGER NOT NULL);
CREATE TABLE usage_records (seq INTEGER PRIMARY KEY AUTOINCREMENT,
  request_id TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL, key_id TEXT NOT NULL,
  model TEXT NOT NULL, protocol INTEGER NOT NULL, deployment_id TEXT NOT NULL,
  input_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,
  cache_write_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL, price_input INTEGER NOT NULL,
  price_output INTEGER NOT NULL, price_cache_read INTEGER NOT NULL,
  price_cache_write INTEGER NOT NULL, cost INTEGER NOT NULL, balance_after INTEGER NOT NULL,
  created_at INTEGER NOT NULL);
INSERT INTO accounts VALUES ('acct_old', 'old', 900, 100, 1, 2);
INSERT INTO journal (debit_account, credit_account, amount, kind, reference, created_at)
  VALUES ('@credits', 'acct_old', 1000, 'credit', 'k', 1),
         ('acct_old', '@revenue', 100, 'charge', 'req_old', 2);
INSERT INTO credits VALUES ('k', 'acct_old', 1000, 1000, '', 1);
INSERT INTO usage_records (request_id, account_id, key_id, model, protocol, deployment_id,
  input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
  price_input, price_output, price_cache_read, price_cache_write, cost, balance_after,
  created_at) VALUES ('req_old', 'acct_old', '', 'm', 0, '', 1, 0, 0, 0, 0, 0, 0, 0, 0, 100,
  900, 2);
)sql").ok());
  }
  auto store = OpenSqliteLedgerStore(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto a = (*store)->GetAccount("acct_old");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->balance, 900);
  EXPECT_EQ(a->held, 0);
  UsageRow row;
  row.request_id = "req_new";
  row.account_id = "acct_old";
  row.cost = 50;
  row.hold_id = "hold_new";
  auto settled = (*store)->Settle(row);
  ASSERT_TRUE(settled.ok()) << settled.status();
  EXPECT_EQ(settled->balance, 850);
  EXPECT_EQ(settled->version, 1);
  auto violations = (*store)->Verify();
  ASSERT_TRUE(violations.ok()) << violations.status();
  EXPECT_TRUE(violations->empty()) << absl::StrJoin(*violations, "\n");
}

}  // namespace
}  // namespace nexusflow::billing

namespace nexusflow::billing {
namespace {

// A store that can hold a credit or a settlement between its commit and its answer, to
// replay the race of two commits whose answers reach the service in the other order.
class PausingStore : public LedgerStore {
 public:
  explicit PausingStore(std::unique_ptr<LedgerStore> inner) : inner_(std::move(inner)) {}

  // The next Credit (or CommitBatch) commits, then waits for Resume().
  void PauseNextCredit() { pause_credit_ = true; }
  void PauseNextCommit() { pause_commit_ = true; }
  void WaitCommitted() { committed_.get_future().wait(); }
  void Resume() { resume_.set_value(); }

  bool shared() const override { return inner_->shared(); }
  absl::StatusOr<AccountRow> CreateAccount(const std::string& name, int64_t now) override {
    return inner_->CreateAccount(name, now);
  }
  absl::StatusOr<AccountRow> GetAccount(const std::string& id) override {
    return inner_->GetAccount(id);
  }
  absl::StatusOr<ChangeResult> Credit(const std::string& account_id, int64_t amount,
                                      const std::string& key, const std::string& note,
                                      int64_t now) override {
    auto r = inner_->Credit(account_id, amount, key, note, now);
    if (pause_credit_.exchange(false)) Pause();
    return r;
  }
  absl::StatusOr<std::vector<absl::StatusOr<ChangeResult>>> CommitBatch(
      const std::vector<UsageRow>& rows, const std::vector<HoldRelease>& releases) override {
    auto r = inner_->CommitBatch(rows, releases);
    if (pause_commit_.exchange(false)) Pause();
    return r;
  }
  absl::StatusOr<int64_t> UsageSequence(const std::string& a, const std::string& r) override {
    return inner_->UsageSequence(a, r);
  }
  absl::StatusOr<std::vector<UsageRow>> ListUsage(const std::string& a, int limit,
                                                  int64_t before) override {
    return inner_->ListUsage(a, limit, before);
  }
  absl::StatusOr<Reservation> Reserve(const HoldRow& h, int64_t overdraft, int64_t now) override {
    return inner_->Reserve(h, overdraft, now);
  }
  absl::StatusOr<bool> ReleaseHold(const std::string& id, int64_t now) override {
    return inner_->ReleaseHold(id, now);
  }
  absl::StatusOr<int64_t> ExpireHolds(int64_t now) override { return inner_->ExpireHolds(now); }
  absl::StatusOr<std::vector<std::string>> Verify() override { return inner_->Verify(); }

 private:
  void Pause() {
    committed_.set_value();
    resume_.get_future().wait();
  }

  std::unique_ptr<LedgerStore> inner_;
  std::atomic<bool> pause_credit_{false}, pause_commit_{false};
  std::promise<void> committed_, resume_;
};

class BillingMirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto inner = OpenSqliteLedgerStore(":memory:");
    ASSERT_TRUE(inner.ok()) << inner.status();
    store_ = new PausingStore(std::move(*inner));
    service_ = std::make_unique<BillingLedgerService>(std::unique_ptr<LedgerStore>(store_),
                                                      [] { return int64_t{1000}; });
    host_.AddService(service_.get());
    ASSERT_TRUE(host_.Start("127.0.0.1:0").ok());
    stub_ = pb::BillingLedgerService::NewStub(host_.InProcessChannel());
    auto a = store_->CreateAccount("acme", 1);
    ASSERT_TRUE(a.ok());
    account_ = a->id;
    ASSERT_TRUE(Credit(1'000'000'000, "k0").ok());
    // The mirror is loaded by the first hold.
    pb::ReserveRequest req;
    req.set_request_id("req_1");
    req.set_account_id(account_);
    req.set_amount_nano_usd(50'000'000);
    pb::ReserveResponse resp;
    ASSERT_TRUE(service_->ReserveHold(req, &resp).ok());
    hold_ = resp.hold_id();
  }

  grpc::Status Credit(int64_t amount, const std::string& key) {
    grpc::ClientContext ctx;
    pb::CreditRequest req;
    req.set_account_id(account_);
    req.set_amount_nano_usd(amount);
    req.set_idempotency_key(key);
    pb::CreditResponse resp;
    return stub_->Credit(&ctx, req, &resp);
  }

  absl::Status Settle() {
    pb::SettleRequest req;
    req.set_request_id("req_1");
    req.set_hold_id(hold_);
    req.set_account_id(account_);
    req.mutable_usage()->set_input_tokens(1000);
    req.mutable_usage()->set_output_tokens(500);
    *req.mutable_price() = Sonnet();  // 10.5M nano-USD
    pb::SettleResponse resp;
    absl::Status out = absl::UnknownError("not done");
    service_->SettleUsage(req, &resp, [&](const absl::Status& s) { out = s; });
    return out;
  }

  pb::Balance Balance() {
    grpc::ClientContext ctx;
    pb::GetBalanceRequest req;
    req.set_account_id(account_);
    pb::Balance b;
    EXPECT_TRUE(stub_->GetBalance(&ctx, req, &b).ok());
    return b;
  }

  void TearDown() override {
    auto violations = store_->Verify();
    ASSERT_TRUE(violations.ok()) << violations.status();
    EXPECT_TRUE(violations->empty()) << absl::StrJoin(*violations, "\n");
  }

  PausingStore* store_;  // owned by service_
  std::unique_ptr<BillingLedgerService> service_;
  ServerHost host_;
  std::unique_ptr<pb::BillingLedgerService::Stub> stub_;
  std::string account_, hold_;
};

constexpr int64_t kSettled = 1'000'000'000 + 500'000'000 - 10'500'000;

TEST_F(BillingMirrorTest, ACreditAnsweredAfterALaterSettlementStillCounts) {
  store_->PauseNextCredit();
  std::thread credit([this] { EXPECT_TRUE(Credit(500'000'000, "k1").ok()); });
  store_->WaitCommitted();         // the credit is in the ledger, its answer not yet back
  ASSERT_TRUE(Settle().ok());      // a settlement commits after it and answers first
  store_->Resume();
  credit.join();
  EXPECT_EQ(store_->GetAccount(account_)->balance, kSettled);
  pb::Balance b = Balance();
  EXPECT_EQ(b.balance_nano_usd(), kSettled);  // the mirror agrees with the ledger
  EXPECT_EQ(b.total_spent_nano_usd(), 10'500'000);
  EXPECT_EQ(b.held_nano_usd(), 0);
}

TEST_F(BillingMirrorTest, ASettlementAnsweredAfterALaterCreditKeepsTheCredit) {
  store_->PauseNextCommit();
  std::thread settle([this] { EXPECT_TRUE(Settle().ok()); });
  store_->WaitCommitted();                     // the settlement is in the ledger
  ASSERT_TRUE(Credit(500'000'000, "k1").ok());  // a credit commits after it and answers first
  store_->Resume();
  settle.join();
  EXPECT_EQ(store_->GetAccount(account_)->balance, kSettled);
  EXPECT_EQ(Balance().balance_nano_usd(), kSettled);
}

}  // namespace
}  // namespace nexusflow::billing

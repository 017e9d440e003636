#include <gtest/gtest.h>

#include <grpcpp/client_context.h>

#include "libs/rpc/server_host.h"
#include "services/billing-ledger/billing_service.h"
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

  int64_t now_ = 1000;  // unix seconds
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
}

}  // namespace
}  // namespace nexusflow::billing

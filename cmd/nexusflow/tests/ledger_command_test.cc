#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "cmd/nexusflow/ledger_command.h"
#include "libs/store/sqlite.h"
#include "services/billing-ledger/ledger_store.h"

namespace nexusflow {
namespace {

class LedgerVerifyCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/nf-ledger-verify-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/ledger.db";
    auto store = billing::OpenSqliteLedgerStore(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    auto a = (*store)->CreateAccount("acme", 1);
    ASSERT_TRUE(a.ok());
    account_ = a->id;
    ASSERT_TRUE((*store)->Credit(account_, 1'000, "k", "", 1).ok());
    billing::UsageRow row;
    row.request_id = "req_1";
    row.account_id = account_;
    row.cost = 100;
    ASSERT_TRUE((*store)->Settle(row).ok());
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  int Run(std::vector<std::string> args) {
    args.insert(args.begin(), "ledger");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    return RunLedgerCommand(static_cast<int>(argv.size()), argv.data());
  }

  std::string dir_, path_, account_;
};

TEST_F(LedgerVerifyCommandTest, AConsistentLedgerExitsZero) {
  EXPECT_EQ(Run({"verify", "--database=" + path_}), 0);
  EXPECT_EQ(Run({"verify", "--database", path_}), 0);
}

TEST_F(LedgerVerifyCommandTest, EachViolationIsPrintedAndTheExitIsOne) {
  {
    auto db = SqliteDb::Open(path_);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("UPDATE accounts SET balance = balance + 1").ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO journal (debit_account, credit_account, amount, kind, "
                            "reference, created_at) VALUES ('@revenue', '@revenue', 0, 'charge', "
                            "'req_1', 1)")
                    .ok());
  }
  ::testing::internal::CaptureStdout();
  int rc = Run({"verify", "--database=" + path_});
  std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("balance differs from its transfers: account " + account_), std::string::npos)
      << out;
  EXPECT_NE(out.find("request req_1 is charged 2 times"), std::string::npos) << out;
  EXPECT_NE(out.find("malformed transfer"), std::string::npos) << out;
}

TEST_F(LedgerVerifyCommandTest, TheDatabaseMayComeFromTheConfig) {
  std::string config = dir_ + "/nexusflow.yaml";
  std::ofstream(config) << "billing_ledger:\n  database: \"" << path_ << "\"\n";
  EXPECT_EQ(Run({"verify", "--config=" + config}), 0);
}

TEST_F(LedgerVerifyCommandTest, AMissingLedgerOrBadArgumentsExitTwo) {
  EXPECT_EQ(Run({"verify", "--database=" + dir_ + "/none.db"}), 2);
  EXPECT_EQ(Run({"verify", "--frobnicate"}), 2);
  EXPECT_EQ(Run({"audit"}), 2);
  EXPECT_EQ(Run({"verify", "--config=" + dir_ + "/none.yaml"}), 2);
}

}  // namespace
}  // namespace nexusflow

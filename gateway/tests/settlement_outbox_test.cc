// The settlement outbox: backoff, poison isolation, recovery after a killed process, and
// exactly one charge when a settlement is replayed against the real ledger.
#include "gateway/settlement_outbox.h"

#include <grpcpp/client_context.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "libs/rpc/server_host.h"
#include "libs/store/sqlite.h"
#include "services/billing-ledger/billing_service.h"

namespace nexusflow::gateway {
namespace {

namespace net = boost::asio;
using std::chrono::milliseconds;

// Generous: only a broken outbox takes this long.
constexpr milliseconds kPatience(30000);

// Directories the tests made, removed when they all pass.
std::vector<std::string>& TempDirs() {
  static std::vector<std::string> dirs;
  return dirs;
}

class RemoveTempDirs : public ::testing::Environment {
 public:
  void TearDown() override {
    if (::testing::UnitTest::GetInstance()->Failed()) return;
    for (const auto& d : TempDirs()) std::filesystem::remove_all(d);
  }
};
const auto* const kRemoveTempDirs = ::testing::AddGlobalTestEnvironment(new RemoveTempDirs);

std::string TempDir(const char* prefix) {
  std::string tmpl = std::string("/tmp/") + prefix + "-XXXXXX";
  std::string dir = mkdtemp(tmpl.data());
  TempDirs().push_back(dir);
  return dir;
}

std::string TempPath() { return TempDir("nf-outbox-test") + "/outbox.db"; }

// Runs a coroutine to its end on a private loop.
absl::Status RunToEnd(net::awaitable<absl::Status> coro) {
  net::io_context io;
  auto guard = net::make_work_guard(io);
  std::optional<absl::Status> out;
  net::co_spawn(io, std::move(coro), [&](std::exception_ptr, absl::Status s) {
    out = std::move(s);
    guard.reset();
  });
  io.run();
  return out.value_or(absl::InternalError("coroutine did not finish"));
}

billing::v1::SettleRequest Request(const std::string& id, int64_t input, int64_t output) {
  billing::v1::SettleRequest r;
  r.set_request_id(id);
  r.set_hold_id("hold_" + id);
  r.set_account_id("acct_test");
  r.set_key_id("key_test");
  r.set_model("m");
  r.mutable_usage()->set_input_tokens(input);
  r.mutable_usage()->set_output_tokens(output);
  r.mutable_price()->set_input_nano_usd_per_mtok(1'000'000'000);
  r.mutable_price()->set_output_nano_usd_per_mtok(2'000'000'000);
  return r;
}

// A billing that answers each settlement from a script, on the calling thread, and
// remembers what it was sent.
class ScriptedBilling {
 public:
  // The answer to the n-th attempt (0-based) of a request id.
  using Script = std::function<grpc::Status(const std::string& request_id, int attempt)>;
  explicit ScriptedBilling(Script script) : script_(std::move(script)) {}

  SettlementOutbox::Settler settler() {
    return [this](const billing::v1::SettleRequest& req,
                  std::function<void(const grpc::Status&)> done) {
      grpc::Status s;
      {
        std::lock_guard<std::mutex> lock(mu_);
        int attempt = attempts_[req.request_id()]++;
        s = script_(req.request_id(), attempt);
        if (s.ok()) settled_.push_back(req);
      }
      done(s);
    };
  }
  int attempts(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    return attempts_[id];
  }
  std::vector<billing::v1::SettleRequest> settled() {
    std::lock_guard<std::mutex> lock(mu_);
    return settled_;
  }

 private:
  Script script_;
  std::mutex mu_;
  std::map<std::string, int> attempts_;
  std::vector<billing::v1::SettleRequest> settled_;
};

SettlementOutbox::Options FastOptions(const std::string& path) {
  SettlementOutbox::Options o;
  o.path = path;
  o.first_retry = milliseconds(1);
  o.max_retry = milliseconds(8);
  o.max_attempts = 3;
  return o;
}

int64_t CountRows(const std::string& path, const std::string& table) {
  auto db = SqliteDb::Open(path);
  EXPECT_TRUE(db.ok()) << db.status();
  auto st = (*db)->Prepare("SELECT count(*) FROM " + table);
  EXPECT_TRUE(st.ok());
  EXPECT_TRUE(*st->Step());
  return st->Int(0);
}

TEST(SettlementOutboxTest, RetryDelayDoublesUpToTheCapWithJitter) {
  const milliseconds first(500), max(60000);
  EXPECT_EQ(RetryDelay(1, first, max, 0.0), milliseconds(250));
  EXPECT_EQ(RetryDelay(2, first, max, 0.0), milliseconds(500));
  EXPECT_EQ(RetryDelay(3, first, max, 0.0), milliseconds(1000));
  EXPECT_LT(RetryDelay(3, first, max, 0.999), milliseconds(2000));
  EXPECT_GT(RetryDelay(3, first, max, 0.999), milliseconds(1990));
  // Capped, and no overflow however many failures.
  EXPECT_EQ(RetryDelay(8, first, max, 0.0), milliseconds(30000));
  EXPECT_EQ(RetryDelay(1000, first, max, 0.0), milliseconds(30000));
  EXPECT_LT(RetryDelay(1000, first, max, 0.999), max);
  // Two entries failing together are spread apart.
  EXPECT_NE(RetryDelay(4, first, max, 0.1), RetryDelay(4, first, max, 0.9));
}

TEST(SettlementOutboxTest, StatusesThatCanNeverSucceedArePoison) {
  for (auto code : {grpc::INVALID_ARGUMENT, grpc::NOT_FOUND, grpc::FAILED_PRECONDITION,
                    grpc::PERMISSION_DENIED})
    EXPECT_TRUE(IsPoisonSettlement(code)) << code;
  for (auto code : {grpc::UNAVAILABLE, grpc::DEADLINE_EXCEEDED, grpc::INTERNAL,
                    grpc::RESOURCE_EXHAUSTED, grpc::ABORTED})
    EXPECT_FALSE(IsPoisonSettlement(code)) << code;
  EXPECT_TRUE(IsUnreachable(grpc::UNAVAILABLE));
  EXPECT_FALSE(IsUnreachable(grpc::INTERNAL));
}

TEST(SettlementOutboxTest, TheAllowanceStaysAheadOfTheOutputSent) {
  constexpr int64_t step = kOutputAllowanceStep;
  EXPECT_EQ(NextOutputAllowance(0, step), 0);
  EXPECT_EQ(NextOutputAllowance(1, step), step);
  EXPECT_EQ(NextOutputAllowance(step, step), step);
  EXPECT_EQ(NextOutputAllowance(step + 1, step), 2 * step);
  // One token per byte, never beyond the request's output limit.
  EXPECT_EQ(OutputTokensOfAllowance(2 * step, 0), 2 * step);
  EXPECT_EQ(OutputTokensOfAllowance(2 * step, 1000), 1000);
  EXPECT_EQ(OutputTokensOfAllowance(-5, 1000), 0);
  ChatAnswer a;
  a.text = "héllo";  // 6 bytes of UTF-8
  a.reasoning = "abc";
  a.tool_calls.push_back({"id", "get", "{}", ""});
  EXPECT_EQ(OutputTextBytes(a), 6 + 3 + 3 + 2);
}

TEST(SettlementOutboxTest, APoisonEntryIsSetAsideAndTheOthersSettle) {
  std::string path = TempPath();
  std::atomic<int> goods_settled{0};
  ScriptedBilling billing([&goods_settled](const std::string& id, int attempt) {
    if (id == "req_poison") return grpc::Status(grpc::FAILED_PRECONDITION, "no such account");
    if (id == "req_broken") return grpc::Status(grpc::INTERNAL, "ledger bug");
    // Refused until every good entry after it has settled: an outbox that waits for the
    // entry at its head would never get there.
    if (id == "req_stuck")
      return goods_settled < 20 ? grpc::Status(grpc::UNAVAILABLE, "down") : grpc::Status::OK;
    // Billing unreachable for a while: never counted toward the attempt limit.
    if (id == "req_outage")
      return attempt < 10 ? grpc::Status(grpc::UNAVAILABLE, "down") : grpc::Status::OK;
    if (attempt == 0) return grpc::Status(grpc::UNAVAILABLE, "down");
    ++goods_settled;
    return grpc::Status::OK;
  });
  {
    auto outbox = SettlementOutbox::Open(FastOptions(path), billing.settler());
    ASSERT_TRUE(outbox.ok()) << outbox.status();
    grpc::Status down(grpc::UNAVAILABLE, "down");
    // The stuck and the poison entries come first; everything after them must settle.
    ASSERT_TRUE(RunToEnd((*outbox)->Retry(Request("req_stuck", 10, 10), down)).ok());
    ASSERT_TRUE(RunToEnd((*outbox)->Retry(Request("req_poison", 10, 10), down)).ok());
    ASSERT_TRUE(RunToEnd((*outbox)->Retry(Request("req_broken", 10, 10), down)).ok());
    ASSERT_TRUE(RunToEnd((*outbox)->Retry(Request("req_outage", 10, 10), down)).ok());
    for (int i = 0; i < 20; ++i)
      ASSERT_TRUE(
          RunToEnd((*outbox)->Retry(Request("req_good" + std::to_string(i), 10, i), down)).ok());
    // Refused by the request path with a poison status: set aside without a retry.
    ASSERT_TRUE(RunToEnd((*outbox)->Retry(Request("req_refused", 10, 10),
                                          grpc::Status(grpc::INVALID_ARGUMENT, "bad")))
                    .ok());
    ASSERT_TRUE((*outbox)->WaitIdle(kPatience));
    auto stats = (*outbox)->stats();
    EXPECT_EQ(stats.pending, 0);
    EXPECT_EQ(stats.dead_letters, 3);
    EXPECT_EQ(stats.settled, 22);
  }
  EXPECT_GE(billing.attempts("req_stuck"), 2);
  EXPECT_EQ(billing.attempts("req_poison"), 1);  // poison: asked once
  EXPECT_EQ(billing.attempts("req_broken"), 3);  // max_attempts
  EXPECT_EQ(billing.attempts("req_refused"), 0);
  EXPECT_EQ(billing.attempts("req_outage"), 11);
  std::set<std::string> settled;
  for (const auto& r : billing.settled())
    EXPECT_TRUE(settled.insert(r.request_id()).second) << r.request_id();
  EXPECT_EQ(settled.size(), 22u);
  EXPECT_TRUE(settled.count("req_outage"));
  EXPECT_TRUE(settled.count("req_stuck"));
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(settled.count("req_good" + std::to_string(i)));
  EXPECT_EQ(CountRows(path, "settlements"), 0);
  EXPECT_EQ(CountRows(path, "dead_letters"), 3);

  // Dead letters stay aside after a restart.
  ScriptedBilling after([](const std::string&, int) { return grpc::Status::OK; });
  auto reopened = SettlementOutbox::Open(FastOptions(path), after.settler());
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->stats().recovered, 0);
}

TEST(SettlementOutboxTest, EntriesOfAKilledProcessAreSettledAtTheNextStart) {
  std::string path = TempPath();
  // A gateway process records a streamed request in progress and a finished one whose
  // settlement billing never acknowledged, then is killed.
  pid_t child = fork();
  if (child == 0) {
    ScriptedBilling down(
        [](const std::string&, int) { return grpc::Status(grpc::UNAVAILABLE, "down"); });
    auto outbox = SettlementOutbox::Open(FastOptions(path), down.settler());
    if (!outbox.ok()) _exit(3);
    billing::v1::SettleRequest tmpl = Request("req_streaming", 0, 0);
    tmpl.clear_usage();
    if (!RunToEnd((*outbox)->RecordStarted(tmpl, 120, 50000, kOutputAllowanceStep)).ok()) _exit(4);
    if (!RunToEnd((*outbox)->RecordProgress("req_streaming", 3 * kOutputAllowanceStep)).ok())
      _exit(5);
    (*outbox)->RecordFinal(Request("req_done", 30, 40));
    // Finished and settled: nothing is left of it.
    (*outbox)->RecordFinal(Request("req_settled", 1, 1));
    (*outbox)->Settled("req_settled");
    // Awaited: everything queued before it is written too.
    if (!RunToEnd((*outbox)->RecordStarted(Request("req_marker", 0, 0), 1, 1, 1)).ok()) _exit(8);
    kill(getpid(), SIGKILL);
    _exit(9);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);

  ScriptedBilling billing([](const std::string&, int) { return grpc::Status::OK; });
  auto outbox = SettlementOutbox::Open(FastOptions(path), billing.settler());
  ASSERT_TRUE(outbox.ok()) << outbox.status();
  EXPECT_EQ((*outbox)->stats().recovered, 3);
  ASSERT_TRUE((*outbox)->WaitIdle(kPatience));
  std::map<std::string, billing::v1::SettleRequest> got;
  for (const auto& r : billing.settled()) got[r.request_id()] = r;
  ASSERT_EQ(got.size(), 3u);
  ASSERT_TRUE(got.count("req_streaming"));
  ASSERT_TRUE(got.count("req_done"));
  ASSERT_TRUE(got.count("req_marker"));
  // The stream: its prompt estimate, and one token per byte of the recorded allowance.
  const auto& s = got["req_streaming"];
  EXPECT_EQ(s.usage().input_tokens(), 120);
  EXPECT_EQ(s.usage().output_tokens(), 3 * kOutputAllowanceStep);
  EXPECT_EQ(s.hold_id(), "hold_req_streaming");  // settling it closes its hold
  EXPECT_EQ(s.account_id(), "acct_test");
  EXPECT_EQ(s.price().output_nano_usd_per_mtok(), 2'000'000'000);
  // The finished one: its real usage.
  EXPECT_EQ(got["req_done"].usage().input_tokens(), 30);
  EXPECT_EQ(got["req_done"].usage().output_tokens(), 40);
  outbox->reset();  // the file is the outbox's alone while it is open
  EXPECT_EQ(CountRows(path, "settlements"), 0);
}

TEST(SettlementOutboxTest, ASecondProcessCannotOpenTheSameFile) {
  std::string path = TempPath();
  // The other process starts before this one opens the file (an SQLite connection must
  // not cross a fork), and tries once this one has it.
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  pid_t child = fork();
  if (child == 0) {
    char c;
    if (read(go[0], &c, 1) != 1) _exit(2);
    ScriptedBilling other([](const std::string&, int) { return grpc::Status::OK; });
    auto second = SettlementOutbox::Open(FastOptions(path), other.settler());
    _exit(second.ok() ? 0 : 1);
  }
  ScriptedBilling billing([](const std::string&, int) { return grpc::Status::OK; });
  auto first = SettlementOutbox::Open(FastOptions(path), billing.settler());
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(write(go[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
}

// The real ledger behind an in-process gRPC server.
class LedgerReplayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = billing::OpenSqliteLedgerStore(TempDir("nf-outbox-ledger") + "/ledger.db");
    ASSERT_TRUE(store.ok()) << store.status();
    service_ = std::make_unique<billing::BillingLedgerService>(std::move(*store));
    host_.AddService(service_.get());
    ASSERT_TRUE(host_.Start("127.0.0.1:0").ok());
    stub_ = billing::v1::BillingLedgerService::NewStub(host_.InProcessChannel());
    grpc::ClientContext ctx;
    billing::v1::CreateAccountRequest create;
    create.set_name("replay");
    billing::v1::Account account;
    ASSERT_TRUE(stub_->CreateAccount(&ctx, create, &account).ok());
    account_ = account.id();
    grpc::ClientContext cctx;
    billing::v1::CreditRequest credit;
    credit.set_account_id(account_);
    credit.set_amount_nano_usd(10'000'000'000);
    credit.set_idempotency_key("seed");
    billing::v1::CreditResponse cresp;
    ASSERT_TRUE(stub_->Credit(&cctx, credit, &cresp).ok());
  }
  void TearDown() override { host_.Shutdown(0); }

  // Sends the settlement to the ledger; with `lose_answer` the outbox is told billing was
  // unreachable although the ledger committed it (the answer lost on the way back).
  SettlementOutbox::Settler Settler(bool lose_answer, std::atomic<int>* calls) {
    return [this, lose_answer, calls](const billing::v1::SettleRequest& req,
                                      std::function<void(const grpc::Status&)> done) {
      struct Call {
        grpc::ClientContext ctx;
        billing::v1::SettleRequest req;
        billing::v1::SettleResponse resp;
      };
      auto call = std::make_shared<Call>();
      call->req = req;
      stub_->async()->Settle(
          &call->ctx, &call->req, &call->resp, [call, done, lose_answer, calls](grpc::Status s) {
            ++*calls;
            done(lose_answer && s.ok() ? grpc::Status(grpc::UNAVAILABLE, "lost") : s);
          });
    };
  }

  billing::v1::ListUsageResponse Usage() {
    grpc::ClientContext ctx;
    billing::v1::ListUsageRequest req;
    req.set_account_id(account_);
    billing::v1::ListUsageResponse resp;
    EXPECT_TRUE(stub_->ListUsage(&ctx, req, &resp).ok());
    return resp;
  }
  int64_t Balance() {
    grpc::ClientContext ctx;
    billing::v1::GetBalanceRequest req;
    req.set_account_id(account_);
    billing::v1::Balance b;
    EXPECT_TRUE(stub_->GetBalance(&ctx, req, &b).ok());
    return b.balance_nano_usd();
  }

  ServerHost host_;
  std::unique_ptr<billing::BillingLedgerService> service_;
  std::unique_ptr<billing::v1::BillingLedgerService::Stub> stub_;
  std::string account_;
};

TEST_F(LedgerReplayTest, ASettlementReplayedAfterARestartChargesOnce) {
  std::string path = TempPath();
  int64_t before = Balance();
  billing::v1::SettleRequest req = Request("req_replayed", 1000, 500);
  req.set_account_id(account_);
  req.clear_hold_id();
  std::atomic<int> first_calls{0}, second_calls{0};
  {
    // The ledger commits every attempt, the outbox never hears so and keeps retrying.
    auto outbox = SettlementOutbox::Open(FastOptions(path), Settler(true, &first_calls));
    ASSERT_TRUE(outbox.ok()) << outbox.status();
    (*outbox)->RecordFinal(req);
    ASSERT_TRUE(
        RunToEnd((*outbox)->Retry(req, grpc::Status(grpc::DEADLINE_EXCEEDED, "no answer"))).ok());
    for (int i = 0; i < 3000 && first_calls < 5; ++i) std::this_thread::sleep_for(milliseconds(10));
    ASSERT_GE(first_calls, 5);
  }
  EXPECT_EQ(CountRows(path, "settlements"), 1);
  // The next start replays it; the ledger answers with the first charge.
  auto outbox = SettlementOutbox::Open(FastOptions(path), Settler(false, &second_calls));
  ASSERT_TRUE(outbox.ok()) << outbox.status();
  EXPECT_EQ((*outbox)->stats().recovered, 1);
  ASSERT_TRUE((*outbox)->WaitIdle(kPatience));
  EXPECT_EQ(second_calls, 1);
  auto usage = Usage();
  ASSERT_EQ(usage.records_size(), 1);
  EXPECT_EQ(usage.records(0).request_id(), "req_replayed");
  // 1000 input at 1 USD/Mtok + 500 output at 2 USD/Mtok.
  EXPECT_EQ(usage.records(0).cost_nano_usd(), 2'000'000);
  EXPECT_EQ(before - Balance(), 2'000'000);
  outbox->reset();
  EXPECT_EQ(CountRows(path, "settlements"), 0);
}

}  // namespace
}  // namespace nexusflow::gateway

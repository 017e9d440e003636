// The billing ledger's request-path operations, through BillingLedgerService as the
// gateway calls it, on each store:
//
//   settle/<store>    one SettleUsage (a distinct request id, waited for until committed)
//                     per iteration; with several threads the service's group commit puts
//                     the settlements that arrive during a transaction into the next one.
//                     items_per_second = settlements committed per second (1, 32 and 256
//                     settling at once).
//   reserve/<store>   ReserveHold then CloseHold of a distinct request per iteration;
//                     reserve_p50_us / reserve_p99_us: latency of single ReserveHold calls
//                     (wall clock, per thread, averaged over threads).
//
// <store> is sqlite (a file in $TMPDIR, synchronous=FULL: the embedded mode, holds in
// memory) or postgres (NEXUSFLOW_BENCH_PG_URL, synchronous commit: the shared mode,
// holds in the store; tools/bench BENCH_MODE=ledger starts a throwaway server); without
// the variable the postgres cases stop with an error. One ledger per store for the whole
// process, one funded account.
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "services/billing-ledger/billing_service.h"

namespace {

using namespace nexusflow::billing;

std::string SqlitePath() {
  const char* tmp = std::getenv("TMPDIR");
  return std::string(tmp && *tmp ? tmp : "/tmp") + "/nexusflow-bench-ledger-" +
         std::to_string(getpid()) + ".db";
}

// Removes the SQLite ledger when the process ends (after the ledgers below are closed:
// this is constructed first, so destroyed last).
struct RemoveSqliteFiles {
  ~RemoveSqliteFiles() {
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((SqlitePath() + suffix).c_str());
  }
} remove_sqlite_files;

struct Ledger {
  std::unique_ptr<BillingLedgerService> service;
  std::string account;
};

Ledger* Open(const std::string& kind, std::string* error) {
  static std::mutex mu;
  static std::unique_ptr<Ledger> sqlite, postgres;
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Ledger>& slot = kind == "sqlite" ? sqlite : postgres;
  if (slot) return slot.get();
  std::string setting;
  if (kind == "sqlite") {
    setting = SqlitePath();
  } else {
    const char* url = std::getenv("NEXUSFLOW_BENCH_PG_URL");
    if (!url || !*url) {
      *error = "NEXUSFLOW_BENCH_PG_URL is not set";
      return nullptr;
    }
    setting = url;
  }
  auto store = OpenLedgerStore(setting);
  if (!store.ok()) {
    *error = std::string(store.status().message());
    return nullptr;
  }
  auto account = (*store)->CreateAccount("bench", 1);
  if (!account.ok() ||
      !(*store)->Credit(account->id, int64_t{1} << 60, "bench-" + account->id, "", 1).ok()) {
    *error = "cannot create and fund the account";
    return nullptr;
  }
  auto ledger = std::make_unique<Ledger>();
  ledger->service = std::make_unique<BillingLedgerService>(std::move(*store));
  ledger->account = account->id;
  slot = std::move(ledger);
  return slot.get();
}

double Percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i];
}

std::atomic<int64_t> next_request{0};

std::string RequestId(const std::string& kind) {
  return "bench_" + kind + "_" + std::to_string(getpid()) + "_" + std::to_string(next_request++);
}

void Settle(benchmark::State& state, const std::string& kind) {
  std::string error;
  Ledger* ledger = Open(kind, &error);
  if (!ledger) {
    state.SkipWithError(error.c_str());
    return;
  }
  pb::SettleRequest req;
  req.set_account_id(ledger->account);
  req.set_model("bench");
  req.mutable_usage()->set_input_tokens(1000);
  req.mutable_usage()->set_output_tokens(200);
  req.mutable_price()->set_input_nano_usd_per_mtok(3'000'000'000);
  req.mutable_price()->set_output_nano_usd_per_mtok(15'000'000'000);
  for (auto _ : state) {
    req.set_request_id(RequestId(kind));
    pb::SettleResponse resp;
    std::promise<absl::Status> done;
    // As the gateway calls it: the writer thread commits (with whatever else is queued).
    ledger->service->SettleUsage(req, &resp, [&](const absl::Status& s) { done.set_value(s); },
                                 /*may_commit_here=*/false);
    absl::Status s = done.get_future().get();
    if (!s.ok() || resp.duplicate() || resp.cost_nano_usd() != 6'000'000) {
      state.SkipWithError(("a settlement failed: " + std::string(s.message())).c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void Reserve(benchmark::State& state, const std::string& kind) {
  std::string error;
  Ledger* ledger = Open(kind, &error);
  if (!ledger) {
    state.SkipWithError(error.c_str());
    return;
  }
  std::vector<double> reserve_us;
  reserve_us.reserve(1 << 20);
  pb::ReserveRequest req;
  req.set_account_id(ledger->account);
  req.set_amount_nano_usd(50'000'000);
  for (auto _ : state) {
    req.set_request_id(RequestId(kind));
    pb::ReserveResponse resp;
    auto t0 = std::chrono::steady_clock::now();
    absl::Status s = ledger->service->ReserveHold(req, &resp);
    auto t1 = std::chrono::steady_clock::now();
    if (!s.ok()) {
      state.SkipWithError(("a hold was refused: " + std::string(s.message())).c_str());
      break;
    }
    ledger->service->CloseHold(resp.hold_id());
    reserve_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  state.SetItemsProcessed(state.iterations());
  using benchmark::Counter;
  state.counters["reserve_p50_us"] = Counter(Percentile(reserve_us, 0.50), Counter::kAvgThreads);
  state.counters["reserve_p99_us"] = Counter(Percentile(reserve_us, 0.99), Counter::kAvgThreads);
}

BENCHMARK_CAPTURE(Settle, sqlite, std::string("sqlite"))->Threads(1)->Threads(32)->Threads(256)->UseRealTime();
BENCHMARK_CAPTURE(Settle, postgres, std::string("postgres"))->Threads(1)->Threads(32)->Threads(256)->UseRealTime();
BENCHMARK_CAPTURE(Reserve, sqlite, std::string("sqlite"))->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_CAPTURE(Reserve, postgres, std::string("postgres"))->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

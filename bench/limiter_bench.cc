// Rate-limiter decisions: one Acquire and its Release per iteration, through the
// CounterStore the service uses, on a plan with every limit on (rpm, rpd, tpm, concurrency
// set high enough never to deny, so each call runs every check and counts in every window)
// over 1,000 subjects.
//
//   decide/memory   the embedded store
//   decide/redis    the Redis store on NEXUSFLOW_BENCH_REDIS_URL (tools/bench
//                   BENCH_MODE=limiter starts a throwaway redis-server); skipped with an
//                   error when the variable is unset
//
// Run with ->Threads(1) and ->Threads(2). items_per_second counts decisions (Acquire calls)
// over all threads; acquire_p50_us / acquire_p99_us / release_p99_us are latencies of single
// calls measured per thread (wall clock), averaged over the threads.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "services/rate-limiter/counter_store.h"

namespace {

using nexusflow::PlanLimits;
using namespace nexusflow::ratelimit;

constexpr int kSubjects = 1000;

PlanLimits Limits() {
  PlanLimits l;
  l.rpm = 1'000'000'000;
  l.rpd = 1'000'000'000;
  l.tpm = int64_t{1} << 50;
  l.concurrency = 1'000'000;
  return l;
}

// One store per kind for the whole process, made on first use (threads share it, as the
// gateway's event-loop threads and gRPC threads share the service's).
CounterStore* Store(const std::string& kind, std::string* error) {
  static std::mutex mu;
  static std::unique_ptr<CounterStore> memory, redis;
  std::lock_guard<std::mutex> lock(mu);
  if (kind == "memory") {
    if (!memory) memory = NewMemoryCounterStore();
    return memory.get();
  }
  if (!redis) {
    const char* url = std::getenv("NEXUSFLOW_BENCH_REDIS_URL");
    if (!url) {
      *error = "NEXUSFLOW_BENCH_REDIS_URL is not set";
      return nullptr;
    }
    RedisStoreOptions options;
    options.url = url;
    options.fail_open = false;  // an unreachable server must fail the run, not speed it up
    options.timeout = std::chrono::milliseconds(1000);
    auto store = NewRedisCounterStore(options);
    if (!store.ok()) {
      *error = std::string(store.status().message());
      return nullptr;
    }
    redis = std::move(*store);
  }
  return redis.get();
}

double Percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i];
}

void Decide(benchmark::State& state, const std::string& kind) {
  std::string error;
  CounterStore* store = Store(kind, &error);
  if (!store) {
    state.SkipWithError(error.c_str());
    return;
  }
  const PlanLimits limits = Limits();
  std::vector<std::string> subjects;
  for (int i = 0; i < kSubjects; ++i)
    subjects.push_back("bench_" + std::to_string(state.thread_index()) + "_" + std::to_string(i));
  // Check once that a decision is an admission and its release lands.
  {
    auto a = store->Acquire(subjects[0], limits, 100, Clock::now());
    if (a.denied_by != Denial::kNone || !store->Release(a.lease_id, 90, Clock::now()).ok()) {
      state.SkipWithError(
          ("a decision was not admitted and released: " + std::string(DenialName(a.denied_by)))
              .c_str());
      return;
    }
  }
  std::vector<double> acquire_us, release_us;
  acquire_us.reserve(1 << 20);
  release_us.reserve(1 << 20);
  size_t n = 0;
  for (auto _ : state) {
    const std::string& subject = subjects[n++ % kSubjects];
    auto t0 = std::chrono::steady_clock::now();
    Admission a = store->Acquire(subject, limits, 100, Clock::now());
    auto t1 = std::chrono::steady_clock::now();
    absl::Status released = store->Release(a.lease_id, 90, Clock::now());
    auto t2 = std::chrono::steady_clock::now();
    if (a.denied_by != Denial::kNone || !released.ok()) {
      state.SkipWithError("a decision failed during the run");
      break;
    }
    acquire_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    release_us.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
  }
  state.SetItemsProcessed(state.iterations());
  using benchmark::Counter;
  state.counters["acquire_p50_us"] = Counter(Percentile(acquire_us, 0.50), Counter::kAvgThreads);
  state.counters["acquire_p99_us"] = Counter(Percentile(acquire_us, 0.99), Counter::kAvgThreads);
  state.counters["release_p99_us"] = Counter(Percentile(release_us, 0.99), Counter::kAvgThreads);
}

BENCHMARK_CAPTURE(Decide, memory, std::string("memory"))->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_CAPTURE(Decide, redis, std::string("redis"))->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

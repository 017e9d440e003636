// The embedded CounterStore: per-subject deques of admission times and token entries,
// in 16 mutex-guarded shards.
#include <algorithm>
#include <deque>
#include <mutex>
#include <unordered_map>

#include "libs/common/ids.h"
#include "services/rate-limiter/counter_store.h"

namespace nexusflow::ratelimit {
namespace {

constexpr int kShards = 16;

int64_t UtcDay(Clock::time_point t) {
  auto d = std::chrono::floor<std::chrono::days>(t);
  return d.time_since_epoch().count();
}

Clock::time_point NextUtcMidnight(Clock::time_point t) {
  return Clock::time_point(std::chrono::floor<std::chrono::days>(t) + std::chrono::days(1));
}

struct TokenEntry {
  Clock::time_point at;
  int64_t tokens;
  uint64_t serial;  // identifies the entry for a correction on release
};

struct Subject {
  std::deque<Clock::time_point> requests;  // admission times within the window
  std::deque<TokenEntry> tokens;
  int64_t token_sum = 0;
  int64_t in_flight = 0;
  uint64_t next_serial = 0;
  int64_t day = -1;  // UTC day of day_count
  int64_t day_count = 0;

  int64_t Today(Clock::time_point now) const { return day == UtcDay(now) ? day_count : 0; }

  void Expire(Clock::time_point now) {
    while (!requests.empty() && requests.front() + kWindow <= now) requests.pop_front();
    while (!tokens.empty() && tokens.front().at + kWindow <= now) {
      token_sum -= tokens.front().tokens;
      tokens.pop_front();
    }
  }
};

struct Lease {
  std::string subject;
  uint64_t serial;
  Clock::time_point deadline;
  int64_t estimate;  // tokens counted at admission; -1 = the plan counted none
};

struct Shard {
  std::mutex mu;
  std::unordered_map<std::string, Subject> subjects;
  std::unordered_map<std::string, Lease> leases;
  Clock::time_point next_sweep{};
};

class MemoryCounterStore : public CounterStore {
 public:
  explicit MemoryCounterStore(Clock::duration ttl) : ttl_(ttl) {}

  Admission Acquire(const std::string& subject, const PlanLimits& limits, int64_t tokens,
                    Clock::time_point now) override {
    Shard& shard = shards_[std::hash<std::string>{}(subject) % kShards];
    std::lock_guard<std::mutex> lock(shard.mu);
    Sweep(shard, now);
    Subject& s = shard.subjects[subject];
    s.Expire(now);
    Admission a;
    // An expired lease frees its slot at its deadline, not at the next sweep.
    if (limits.concurrency > 0 && s.in_flight >= limits.concurrency) SweepLeases(shard, now);
    int64_t req_count = static_cast<int64_t>(s.requests.size());
    int64_t day_count = s.Today(now);
    if (limits.rpm > 0 && req_count >= limits.rpm) {
      a.denied_by = Denial::kRequests;
      // The oldest admission leaves the window first.
      a.retry_after = s.requests[req_count - limits.rpm] + kWindow - now;
    } else if (limits.rpd > 0 && day_count >= limits.rpd) {
      a.denied_by = Denial::kRequestsPerDay;
      a.retry_after = NextUtcMidnight(now) - now;
    } else if (limits.tpm > 0 && s.token_sum + tokens > limits.tpm) {
      a.denied_by = Denial::kTokens;
      if (tokens > limits.tpm) {
        a.never_fits = true;  // no window could hold it
      } else {
        int64_t need = s.token_sum + tokens - limits.tpm;
        for (const auto& e : s.tokens) {
          need -= e.tokens;
          if (need <= 0) {
            a.retry_after = e.at + kWindow - now;
            break;
          }
        }
      }
    } else if (limits.concurrency > 0 && s.in_flight >= limits.concurrency) {
      a.denied_by = Denial::kConcurrency;
      a.retry_after = std::chrono::seconds(1);
    } else {
      if (limits.rpm > 0) s.requests.push_back(now);
      if (limits.rpd > 0) {
        s.day = UtcDay(now);
        s.day_count = ++day_count;
      }
      uint64_t serial = s.next_serial++;
      if (limits.tpm > 0) {
        s.tokens.push_back({now, tokens, serial});
        s.token_sum += tokens;
      }
      ++s.in_flight;
      a.lease_id = NewId("lease_", 10);
      shard.leases[a.lease_id] = Lease{subject, serial, now + ttl_, limits.tpm > 0 ? tokens : -1};
      // The lease id carries its shard so Release finds it without a search.
      a.lease_id += "." + std::to_string(&shard - shards_);
      req_count = static_cast<int64_t>(s.requests.size());
    }
    a.requests.limit = limits.rpm;
    a.requests.remaining = limits.rpm > 0 ? std::max<int64_t>(0, limits.rpm - req_count) : 0;
    a.requests.reset_after =
        s.requests.empty() ? Clock::duration{} : s.requests.back() + kWindow - now;
    a.requests_per_day.limit = limits.rpd;
    a.requests_per_day.remaining =
        limits.rpd > 0 ? std::max<int64_t>(0, limits.rpd - day_count) : 0;
    a.requests_per_day.reset_after = day_count > 0 ? NextUtcMidnight(now) - now : Clock::duration{};
    a.tokens.limit = limits.tpm;
    a.tokens.remaining = limits.tpm > 0 ? std::max<int64_t>(0, limits.tpm - s.token_sum) : 0;
    a.tokens.reset_after =
        s.tokens.empty() ? Clock::duration{} : s.tokens.back().at + kWindow - now;
    return a;
  }

  absl::Status Release(const std::string& lease_id, int64_t actual_tokens,
                       Clock::time_point now) override {
    auto dot = lease_id.rfind('.');
    if (dot == std::string::npos) return absl::NotFoundError("unknown lease");
    int index = std::atoi(lease_id.c_str() + dot + 1);
    if (index < 0 || index >= kShards) return absl::NotFoundError("unknown lease");
    Shard& shard = shards_[index];
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.leases.find(lease_id.substr(0, dot));
    if (it == shard.leases.end()) return absl::NotFoundError("unknown or expired lease");
    const Lease& lease = it->second;
    Subject& s = shard.subjects[lease.subject];
    s.Expire(now);
    --s.in_flight;
    if (lease.deadline <= now) {  // expired, not swept yet: as if it had been
      shard.leases.erase(it);
      return absl::NotFoundError("unknown or expired lease");
    }
    if (actual_tokens >= 0 && lease.estimate >= 0) {
      // Entries are in serial order: find this lease's by binary search.
      auto e =
          std::lower_bound(s.tokens.begin(), s.tokens.end(), lease.serial,
                           [](const TokenEntry& t, uint64_t serial) { return t.serial < serial; });
      if (e != s.tokens.end() && e->serial == lease.serial) {
        s.token_sum += actual_tokens - e->tokens;
        e->tokens = actual_tokens;
      } else if (actual_tokens > lease.estimate) {
        // The admission's minute is over: what it did not count counts from now.
        s.tokens.push_back({now, actual_tokens - lease.estimate, s.next_serial++});
        s.token_sum += actual_tokens - lease.estimate;
      }
    }
    shard.leases.erase(it);
    return absl::OkStatus();
  }

 private:
  static void SweepLeases(Shard& shard, Clock::time_point now) {
    for (auto it = shard.leases.begin(); it != shard.leases.end();) {
      if (it->second.deadline <= now) {
        // A subject with a live lease is never swept, so it is there (no insertion, and
        // references into `subjects` stay valid).
        if (auto s = shard.subjects.find(it->second.subject); s != shard.subjects.end())
          --s->second.in_flight;
        it = shard.leases.erase(it);
      } else {
        ++it;
      }
    }
  }

  void Sweep(Shard& shard, Clock::time_point now) {
    if (now < shard.next_sweep) return;
    shard.next_sweep = now + std::chrono::seconds(5);
    SweepLeases(shard, now);
    for (auto it = shard.subjects.begin(); it != shard.subjects.end();) {
      it->second.Expire(now);
      const Subject& s = it->second;
      if (s.requests.empty() && s.tokens.empty() && s.in_flight == 0 && s.Today(now) == 0)
        it = shard.subjects.erase(it);
      else
        ++it;
    }
  }

  Clock::duration ttl_;
  Shard shards_[kShards];
};

}  // namespace

std::unique_ptr<CounterStore> NewMemoryCounterStore(Clock::duration lease_ttl) {
  return std::make_unique<MemoryCounterStore>(lease_ttl);
}

}  // namespace nexusflow::ratelimit

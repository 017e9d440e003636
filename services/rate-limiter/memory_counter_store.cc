#include <algorithm>
#include <deque>
#include <mutex>
#include <unordered_map>

#include "libs/common/ids.h"
#include "services/rate-limiter/counter_store.h"

namespace nexusflow::ratelimit {
namespace {

constexpr Clock::duration kWindow = std::chrono::seconds(60);
constexpr int kShards = 16;

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
    int64_t req_count = static_cast<int64_t>(s.requests.size());
    if (limits.rpm > 0 && req_count >= limits.rpm) {
      a.denied_by = Denial::kRequests;
      // The oldest admission leaves the window first.
      a.retry_after = s.requests[req_count - limits.rpm] + kWindow - now;
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
      uint64_t serial = s.next_serial++;
      if (limits.tpm > 0) {
        s.tokens.push_back({now, tokens, serial});
        s.token_sum += tokens;
      }
      ++s.in_flight;
      a.lease_id = NewId("lease_", 10);
      shard.leases[a.lease_id] = Lease{subject, serial, now + ttl_};
      // The lease id carries its shard so Release finds it without a search.
      a.lease_id += "." + std::to_string(&shard - shards_);
      req_count = static_cast<int64_t>(s.requests.size());
    }
    a.requests.limit = limits.rpm;
    a.requests.remaining = limits.rpm > 0 ? std::max<int64_t>(0, limits.rpm - req_count) : 0;
    a.requests.reset_after = s.requests.empty() ? Clock::duration{}
                                                : s.requests.back() + kWindow - now;
    a.tokens.limit = limits.tpm;
    a.tokens.remaining = limits.tpm > 0 ? std::max<int64_t>(0, limits.tpm - s.token_sum) : 0;
    a.tokens.reset_after = s.tokens.empty() ? Clock::duration{} : s.tokens.back().at + kWindow - now;
    return a;
  }

  bool Release(const std::string& lease_id, int64_t actual_tokens,
               Clock::time_point now) override {
    auto dot = lease_id.rfind('.');
    if (dot == std::string::npos) return false;
    int index = std::atoi(lease_id.c_str() + dot + 1);
    if (index < 0 || index >= kShards) return false;
    Shard& shard = shards_[index];
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.leases.find(lease_id.substr(0, dot));
    if (it == shard.leases.end()) return false;
    Subject& s = shard.subjects[it->second.subject];
    s.Expire(now);
    --s.in_flight;
    if (actual_tokens >= 0) {
      // Entries are in serial order: find this lease's by binary search.
      auto e = std::lower_bound(s.tokens.begin(), s.tokens.end(), it->second.serial,
                                [](const TokenEntry& t, uint64_t serial) { return t.serial < serial; });
      if (e != s.tokens.end() && e->serial == it->second.serial) {
        s.token_sum += actual_tokens - e->tokens;
        e->tokens = actual_tokens;
      }
    }
    shard.leases.erase(it);
    return true;
  }

 private:
  void Sweep(Shard& shard, Clock::time_point now) {
    if (now < shard.next_sweep) return;
    shard.next_sweep = now + std::chrono::seconds(5);
    for (auto it = shard.leases.begin(); it != shard.leases.end();) {
      if (it->second.deadline <= now) {
        --shard.subjects[it->second.subject].in_flight;
        it = shard.leases.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = shard.subjects.begin(); it != shard.subjects.end();) {
      it->second.Expire(now);
      if (it->second.requests.empty() && it->second.tokens.empty() && it->second.in_flight == 0)
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

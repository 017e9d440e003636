// Process-wide counts of streamed chat responses, served at `GET /mock/stats`.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace nexusflow::mock {

// How a streamed response ended.
enum class StreamEnd {
  kCompleted,  // every frame and the end of the body were written
  kDropped,    // closed early on purpose by `[mock:drop-after=N]`
  kAborted,    // the client went away (EOF or error on the socket, a failed or stuck write)
};

struct StreamCounts {
  std::int64_t open = 0;  // started and not yet ended
  std::int64_t started = 0;
  std::int64_t completed = 0;
  std::int64_t aborted = 0;
  std::int64_t dropped = 0;
  std::int64_t peak_open = 0;  // most streams open at once since the last ResetPeak
};

// Lock-free counters; any thread may update or read them. `open` is derived
// (started − completed − aborted − dropped), so it can never drift from the others.
class StreamStats {
 public:
  void Started() {
    started_.fetch_add(1);
    const std::int64_t now_open = open_.fetch_add(1) + 1;
    std::int64_t peak = peak_.load();
    while (now_open > peak && !peak_.compare_exchange_weak(peak, now_open)) {
    }
  }
  void Ended(StreamEnd end);
  // Starts a new peak from the streams open now.
  void ResetPeak() { peak_.store(open_.load()); }
  // The end counters are read before `started`, so `open` is never negative.
  StreamCounts Snapshot() const;

 private:
  std::atomic<std::int64_t> started_{0};
  std::atomic<std::int64_t> completed_{0};
  std::atomic<std::int64_t> aborted_{0};
  std::atomic<std::int64_t> dropped_{0};
  std::atomic<std::int64_t> open_{0};  // for the peak only
  std::atomic<std::int64_t> peak_{0};
};

// The counters every connection of this process reports to.
StreamStats& ProcessStreamStats();

// Counts one stream: started on construction, ended by the first End(); destroyed without an
// End() (a coroutine torn down at shutdown, an exception) it counts as aborted.
class StreamTracker {
 public:
  explicit StreamTracker(StreamStats& stats) : stats_(stats) { stats_.Started(); }
  ~StreamTracker() { End(StreamEnd::kAborted); }
  StreamTracker(const StreamTracker&) = delete;
  StreamTracker& operator=(const StreamTracker&) = delete;

  void End(StreamEnd end) {
    if (ended_) return;
    ended_ = true;
    stats_.Ended(end);
  }

 private:
  StreamStats& stats_;
  bool ended_ = false;
};

// `{"open_streams":N,"streams_started":N,"streams_completed":N,"streams_aborted":N,
//   "streams_dropped":N,"peak_open_streams":N}`
std::string StreamStatsBody(const StreamCounts& counts);

}  // namespace nexusflow::mock

#include "stream_stats.h"

#include <algorithm>

namespace nexusflow::mock {

void StreamStats::Ended(StreamEnd end) {
  open_.fetch_sub(1);
  switch (end) {
    case StreamEnd::kCompleted:
      completed_.fetch_add(1);
      break;
    case StreamEnd::kDropped:
      dropped_.fetch_add(1);
      break;
    case StreamEnd::kAborted:
      aborted_.fetch_add(1);
      break;
  }
}

StreamCounts StreamStats::Snapshot() const {
  StreamCounts counts;
  // A stream's start is ordered before its end (sequentially consistent atomics), so reading
  // the ends first sees no end whose start the later read of `started_` could miss.
  counts.completed = completed_.load();
  counts.aborted = aborted_.load();
  counts.dropped = dropped_.load();
  counts.started = started_.load();
  counts.open = std::max<std::int64_t>(
      0, counts.started - counts.completed - counts.aborted - counts.dropped);
  counts.peak_open = peak_.load();
  return counts;
}

StreamStats& ProcessStreamStats() {
  static StreamStats stats;
  return stats;
}

std::string StreamStatsBody(const StreamCounts& counts) {
  std::string body = "{\"open_streams\":";
  body += std::to_string(counts.open);
  body += ",\"streams_started\":";
  body += std::to_string(counts.started);
  body += ",\"streams_completed\":";
  body += std::to_string(counts.completed);
  body += ",\"streams_aborted\":";
  body += std::to_string(counts.aborted);
  body += ",\"streams_dropped\":";
  body += std::to_string(counts.dropped);
  body += ",\"peak_open_streams\":";
  body += std::to_string(counts.peak_open);
  body += '}';
  return body;
}

}  // namespace nexusflow::mock

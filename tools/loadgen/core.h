// The socket-free parts of nexusflow-loadgen, in a library of their own so a unit test can
// drive them: a latency histogram, an incremental SSE scanner and the URL parser.
#pragma once

#include <cstdint>
#include <optional>

#include <boost/json/value.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace nexusflow::loadgen {

// Log-linear histogram of non-negative integer values (microseconds here): exact below
// 2048, then 1024 buckets per power of two (relative error below 0.1 %), up to 2^40.
// Percentiles use the nearest rank; the maximum is kept exactly.
class Histogram {
 public:
  Histogram();
  void Record(std::int64_t value);
  void Merge(const Histogram& other);
  std::int64_t count() const { return count_; }
  std::int64_t max() const { return max_; }
  // The value at quantile q in [0, 1] (the midpoint of its bucket, never above max());
  // 0 when empty.
  std::int64_t Percentile(double q) const;

 private:
  static std::size_t Index(std::int64_t value);
  static std::int64_t Lowest(std::size_t index);
  static std::int64_t Width(std::size_t index);

  std::vector<std::int64_t> buckets_;
  std::int64_t count_ = 0;
  std::int64_t max_ = 0;
};

// One complete SSE event that carried `data:`.
struct SseEvent {
  bool done = false;     // the data was exactly `[DONE]`
  bool content = false;  // a chunk with a non-empty `content` or tool-call `arguments` string
};

// Splits a text/event-stream body, fed in arbitrary pieces, into events (a blank line ends
// an event; `\n`, `\r\n` and `\r` all end lines; `data:` lines of one event are joined).
class SseScanner {
 public:
  // Appends the events completed by `bytes` to `out`.
  void Feed(std::string_view bytes, std::vector<SseEvent>& out);

 private:
  void Line(std::string_view line, std::vector<SseEvent>& out);

  std::string line_;  // the unfinished line
  std::string data_;  // the current event's data
  bool has_data_ = false;
  bool after_cr_ = false;
};

// Whether a chunk's JSON carries text: a `"content"` or `"arguments"` member whose string
// value is not empty. A cheap scan, not a JSON parse.
bool ChunkHasContent(std::string_view json);

struct HttpUrl {
  std::string host;
  std::uint16_t port = 80;
  std::string target = "/";  // path and query
};

// `http://host[:port][/path]`; nullopt for anything else (https included).
std::optional<HttpUrl> ParseHttpUrl(std::string_view url);

// Serialises like boost::json::serialize, but doubles in their shortest plain form
// ("10.031", "25") rather than "1.0031E1", for reports that people read.
std::string ReportJson(const boost::json::value& value);

}  // namespace nexusflow::loadgen

#pragma once
// Server-sent events: an incremental parser for upstream streams and frame builders for
// the edge.
#include <string>
#include <string_view>
#include <vector>

namespace nexusflow {

struct SseEvent {
  std::string event;  // "" when the frame had no event: line
  std::string data;   // data: lines joined by '\n'
};

// Feed bytes as they arrive; complete events come out in order. Handles \n, \r\n and \r
// line ends, comments (":" lines), multi-line data and frames split across reads.
class SseParser {
 public:
  // Appends complete events to `out`.
  void Feed(std::string_view bytes, std::vector<SseEvent>& out);
  // Bytes held for an event not yet complete: its data so far and the open line (for limits).
  size_t Pending() const { return buffer_.size() + current_.data.size(); }

 private:
  void Line(std::string_view line, std::vector<SseEvent>& out);
  std::string buffer_;
  SseEvent current_;
  bool has_data_ = false;
  bool last_was_cr_ = false;
};

// "data: <data>\n\n"
std::string SseData(std::string_view data);
// "event: <event>\ndata: <data>\n\n"
std::string SseNamed(std::string_view event, std::string_view data);
// The frame of a parsed event: its event: line when named, one data: line per line of
// its data, then the blank line.
std::string SerializeSseEvent(const SseEvent& e);

}  // namespace nexusflow

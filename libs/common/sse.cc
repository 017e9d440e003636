#include "libs/common/sse.h"

namespace nexusflow {

void SseParser::Feed(std::string_view bytes, std::vector<SseEvent>& out) {
  // Whole runs between line ends are appended at once (a chunk is mostly one data line).
  while (!bytes.empty()) {
    if (last_was_cr_ && bytes.front() == '\n') {  // second half of \r\n
      bytes.remove_prefix(1);
      last_was_cr_ = false;
      continue;
    }
    last_was_cr_ = false;
    size_t end = bytes.find_first_of("\r\n");
    if (end == std::string_view::npos) {
      buffer_.append(bytes);
      return;
    }
    if (buffer_.empty()) {
      Line(bytes.substr(0, end), out);
    } else {
      buffer_.append(bytes.substr(0, end));
      Line(buffer_, out);
      buffer_.clear();
    }
    last_was_cr_ = bytes[end] == '\r';
    bytes.remove_prefix(end + 1);
  }
}

void SseParser::Line(std::string_view line, std::vector<SseEvent>& out) {
  if (line.empty()) {
    if (has_data_ || !current_.event.empty()) out.push_back(std::move(current_));
    current_ = SseEvent{};
    has_data_ = false;
    return;
  }
  if (line[0] == ':') return;  // comment / keep-alive
  auto colon = line.find(':');
  std::string_view field = line.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (has_data_) current_.data.push_back('\n');
    current_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    current_.event.assign(value);
  }
}

std::string SseData(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 8);
  out.append("data: ").append(data).append("\n\n");
  return out;
}

std::string SseNamed(std::string_view event, std::string_view data) {
  std::string out;
  out.reserve(event.size() + data.size() + 16);
  out.append("event: ").append(event).append("\ndata: ").append(data).append("\n\n");
  return out;
}

std::string SerializeSseEvent(const SseEvent& e) {
  std::string out;
  out.reserve(e.event.size() + e.data.size() + 16);
  if (!e.event.empty()) out.append("event: ").append(e.event).push_back('\n');
  std::string_view data = e.data;
  while (true) {
    size_t nl = data.find('\n');
    out.append("data: ").append(data.substr(0, nl)).push_back('\n');
    if (nl == std::string_view::npos) break;
    data.remove_prefix(nl + 1);
  }
  out.push_back('\n');
  return out;
}

}  // namespace nexusflow

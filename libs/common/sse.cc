#include "libs/common/sse.h"

namespace nexusflow {

void SseParser::Feed(std::string_view bytes, std::vector<SseEvent>& out) {
  for (char c : bytes) {
    if (c == '\n' && last_was_cr_) {  // second half of \r\n
      last_was_cr_ = false;
      continue;
    }
    last_was_cr_ = (c == '\r');
    if (c == '\n' || c == '\r') {
      Line(buffer_, out);
      buffer_.clear();
    } else {
      buffer_.push_back(c);
    }
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

}  // namespace nexusflow

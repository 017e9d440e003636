#include "core.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>

#include <boost/json.hpp>

namespace nexusflow::loadgen {
namespace {

constexpr std::int64_t kExactBelow = 2048;   // values below are their own bucket
constexpr int kSubBits = 10;                 // 1024 buckets per power of two above
constexpr int kMaxBits = 40;                 // values are capped below 2^40
constexpr std::size_t kBuckets =
    kExactBelow + (static_cast<std::size_t>(kMaxBits - kSubBits - 1) << kSubBits);

}  // namespace

Histogram::Histogram() : buckets_(kBuckets, 0) {}

std::size_t Histogram::Index(std::int64_t value) {
  if (value < kExactBelow) return static_cast<std::size_t>(value);
  const int shift = std::bit_width(static_cast<std::uint64_t>(value)) - (kSubBits + 1);
  const std::int64_t sub = (value >> shift) - (std::int64_t{1} << kSubBits);  // 0..1023
  return kExactBelow + (static_cast<std::size_t>(shift - 1) << kSubBits) +
         static_cast<std::size_t>(sub);
}

std::int64_t Histogram::Lowest(std::size_t index) {
  if (index < static_cast<std::size_t>(kExactBelow)) return static_cast<std::int64_t>(index);
  const std::size_t above = index - kExactBelow;
  const int shift = static_cast<int>(above >> kSubBits) + 1;
  const std::int64_t sub = static_cast<std::int64_t>(above & ((1u << kSubBits) - 1));
  return ((std::int64_t{1} << kSubBits) + sub) << shift;
}

std::int64_t Histogram::Width(std::size_t index) {
  if (index < static_cast<std::size_t>(kExactBelow)) return 1;
  return std::int64_t{1} << (static_cast<int>((index - kExactBelow) >> kSubBits) + 1);
}

void Histogram::Record(std::int64_t value) {
  value = std::clamp<std::int64_t>(value, 0, (std::int64_t{1} << kMaxBits) - 1);
  ++buckets_[Index(value)];
  ++count_;
  max_ = std::max(max_, value);
}

void Histogram::Merge(const Histogram& other) {
  for (std::size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
}

std::int64_t Histogram::Percentile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const std::int64_t rank =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(q * static_cast<double>(count_))));
  std::int64_t seen = 0;
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::min(max_, Lowest(i) + Width(i) / 2);
  }
  return max_;
}

void SseScanner::Feed(std::string_view bytes, std::vector<SseEvent>& out) {
  std::size_t pos = 0;
  if (after_cr_ && !bytes.empty() && bytes.front() == '\n') pos = 1;  // the \n of a split \r\n
  after_cr_ = false;
  while (pos < bytes.size()) {
    const std::size_t end = bytes.find_first_of("\r\n", pos);
    if (end == std::string_view::npos) {
      line_.append(bytes.substr(pos));
      return;
    }
    if (line_.empty()) {
      Line(bytes.substr(pos, end - pos), out);
    } else {
      line_.append(bytes.substr(pos, end - pos));
      Line(line_, out);
      line_.clear();
    }
    pos = end + 1;
    if (bytes[end] == '\r') {
      if (pos < bytes.size()) {
        if (bytes[pos] == '\n') ++pos;
      } else {
        after_cr_ = true;
      }
    }
  }
}

void SseScanner::Line(std::string_view line, std::vector<SseEvent>& out) {
  if (line.empty()) {
    if (has_data_) {
      SseEvent event;
      event.done = data_ == "[DONE]";
      event.content = !event.done && ChunkHasContent(data_);
      out.push_back(event);
    }
    data_.clear();
    has_data_ = false;
    return;
  }
  constexpr std::string_view kData = "data:";
  if (!line.starts_with(kData)) return;  // comments, event:, id:, retry:
  std::string_view value = line.substr(kData.size());
  if (value.starts_with(' ')) value.remove_prefix(1);
  if (has_data_) data_ += '\n';
  data_.append(value);
  has_data_ = true;
}

bool ChunkHasContent(std::string_view json) {
  for (std::string_view key : {std::string_view("\"content\""), std::string_view("\"arguments\"")}) {
    for (std::size_t pos = json.find(key); pos != std::string_view::npos;
         pos = json.find(key, pos + 1)) {
      std::size_t i = pos + key.size();
      while (i < json.size() && (json[i] == ' ' || json[i] == '\t')) ++i;
      if (i >= json.size() || json[i] != ':') continue;
      ++i;
      while (i < json.size() && (json[i] == ' ' || json[i] == '\t')) ++i;
      if (i + 1 < json.size() && json[i] == '"' && json[i + 1] != '"') return true;
    }
  }
  return false;
}

std::optional<HttpUrl> ParseHttpUrl(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (!url.starts_with(kScheme)) return std::nullopt;
  url.remove_prefix(kScheme.size());
  HttpUrl out;
  const std::size_t slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  if (slash != std::string_view::npos) out.target = std::string(url.substr(slash));
  std::string_view host = authority;
  std::string_view port;
  if (authority.starts_with('[')) {  // [v6]:port
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port = rest.substr(1);
    }
  } else if (const std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) return std::nullopt;
  out.host = std::string(host);
  if (!port.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return std::nullopt;
    }
    out.port = static_cast<std::uint16_t>(value);
  }
  return out;
}

namespace {

void AppendJson(const boost::json::value& value, std::string& out) {
  switch (value.kind()) {
    case boost::json::kind::double_: {
      const double d = value.get_double();
      if (!std::isfinite(d)) {
        out += "null";
        return;
      }
      char buf[64];
      auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::fixed);
      if (ec != std::errc()) {
        out += boost::json::serialize(value);
        return;
      }
      out.append(buf, end);
      return;
    }
    case boost::json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& member : value.get_object()) {
        if (!first) out += ',';
        first = false;
        out += boost::json::serialize(boost::json::value(member.key()));
        out += ':';
        AppendJson(member.value(), out);
      }
      out += '}';
      return;
    }
    case boost::json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& item : value.get_array()) {
        if (!first) out += ',';
        first = false;
        AppendJson(item, out);
      }
      out += ']';
      return;
    }
    default:
      out += boost::json::serialize(value);
  }
}

}  // namespace

std::string ReportJson(const boost::json::value& value) {
  std::string out;
  AppendJson(value, out);
  return out;
}

}  // namespace nexusflow::loadgen

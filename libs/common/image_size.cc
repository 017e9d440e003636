#include "libs/common/image_size.h"

#include <algorithm>

namespace nexusflow {
namespace {

uint32_t Be16(std::string_view b, size_t i) {
  return (static_cast<uint8_t>(b[i]) << 8) | static_cast<uint8_t>(b[i + 1]);
}
uint32_t Be32(std::string_view b, size_t i) { return (Be16(b, i) << 16) | Be16(b, i + 2); }
uint32_t Le16(std::string_view b, size_t i) {
  return static_cast<uint8_t>(b[i]) | (static_cast<uint8_t>(b[i + 1]) << 8);
}
uint32_t Le24(std::string_view b, size_t i) { return Le16(b, i) | (static_cast<uint8_t>(b[i + 2]) << 16); }

std::optional<ImageSize> Positive(int64_t w, int64_t h) {
  if (w <= 0 || h <= 0) return std::nullopt;
  return ImageSize{w, h};
}

std::optional<ImageSize> Jpeg(std::string_view b) {
  size_t i = 2;
  while (i + 4 <= b.size()) {
    if (static_cast<uint8_t>(b[i]) != 0xFF) return std::nullopt;
    uint8_t marker = static_cast<uint8_t>(b[i + 1]);
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {  // no length
      i += 2;
      continue;
    }
    uint32_t length = Be16(b, i + 2);
    if (length < 2) return std::nullopt;
    bool frame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (frame) {
      if (i + 9 > b.size()) return std::nullopt;
      return Positive(Be16(b, i + 7), Be16(b, i + 5));
    }
    i += 2 + length;
  }
  return std::nullopt;
}

std::optional<ImageSize> WebP(std::string_view b) {
  if (b.size() < 30) return std::nullopt;
  std::string_view chunk = b.substr(12, 4);
  if (chunk == "VP8 ") return Positive(Le16(b, 26) & 0x3FFF, Le16(b, 28) & 0x3FFF);
  if (chunk == "VP8L") {
    uint32_t bits = static_cast<uint8_t>(b[21]) | (static_cast<uint8_t>(b[22]) << 8) |
                    (static_cast<uint8_t>(b[23]) << 16) | (static_cast<uint32_t>(static_cast<uint8_t>(b[24])) << 24);
    return Positive((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1);
  }
  if (chunk == "VP8X") return Positive(Le24(b, 24) + 1, Le24(b, 27) + 1);
  return std::nullopt;
}

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

}  // namespace

std::optional<ImageSize> SniffImageSize(std::string_view b) {
  if (b.size() >= 24 && b.substr(0, 8) == std::string_view("\x89PNG\r\n\x1a\n", 8))
    return Positive(Be32(b, 16), Be32(b, 20));
  if (b.size() >= 10 && (b.substr(0, 6) == "GIF87a" || b.substr(0, 6) == "GIF89a"))
    return Positive(Le16(b, 6), Le16(b, 8));
  if (b.size() >= 4 && static_cast<uint8_t>(b[0]) == 0xFF && static_cast<uint8_t>(b[1]) == 0xD8) return Jpeg(b);
  if (b.size() >= 16 && b.substr(0, 4) == "RIFF" && b.substr(8, 4) == "WEBP") return WebP(b);
  return std::nullopt;
}

std::string DecodeBase64Prefix(std::string_view b64, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(max_bytes, b64.size() * 3 / 4 + 3));
  uint32_t acc = 0;
  int bits = 0;
  for (char c : b64) {
    if (out.size() >= max_bytes) break;
    int v = Base64Value(c);
    if (v < 0) break;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

std::optional<ImageSize> SniffDataUrlImageSize(std::string_view url) {
  if (url.substr(0, 5) != "data:") return std::nullopt;
  size_t comma = url.find(',');
  if (comma == std::string_view::npos) return std::nullopt;
  std::string_view meta = url.substr(5, comma - 5);
  if (meta.size() < 7 || meta.substr(meta.size() - 7) != ";base64") return std::nullopt;
  return SniffImageSize(DecodeBase64Prefix(url.substr(comma + 1), 64 * 1024));
}

}  // namespace nexusflow

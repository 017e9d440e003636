#pragma once
// The pixel size of an image from the first bytes of its file (PNG, JPEG, GIF, WebP), for
// token estimates: no decoding, only the header is read.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nexusflow {

struct ImageSize {
  int64_t width = 0;
  int64_t height = 0;
};

// The size written in the header of `bytes` (the file, or a prefix of it long enough to
// hold the header; a JPEG's size frame may come after its metadata segments); nullopt for
// an unknown format or a header cut short.
std::optional<ImageSize> SniffImageSize(std::string_view bytes);

// The first bytes (at most `max_bytes`) that the base64 text `b64` decodes to; stops at the
// first character outside the standard or URL-safe alphabet (padding included).
std::string DecodeBase64Prefix(std::string_view b64, size_t max_bytes);

// The size of the image in a `data:<mime>;base64,<data>` URL, from its first 64 KiB.
std::optional<ImageSize> SniffDataUrlImageSize(std::string_view url);

}  // namespace nexusflow

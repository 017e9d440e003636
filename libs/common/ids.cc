#include "libs/common/ids.h"

#include <openssl/rand.h>
#include <openssl/sha.h>

#include <chrono>
#include <stdexcept>

namespace nexusflow {
namespace {

void RandomBytes(unsigned char* out, int n) {
  if (RAND_bytes(out, n) != 1) throw std::runtime_error("RAND_bytes failed");
}

}  // namespace

std::string HexEncode(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

std::string NewId(std::string_view prefix, int random_bytes) {
  unsigned char buf[64];
  if (random_bytes > 64) random_bytes = 64;
  RandomBytes(buf, random_bytes);
  return std::string(prefix) +
         HexEncode(std::string_view(reinterpret_cast<char*>(buf), random_bytes));
}

std::string NewApiKeySecret() {
  static constexpr char kAlphabet[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string out = "sk-nf-";
  unsigned char buf[64];
  RandomBytes(buf, sizeof buf);
  int taken = 0;
  // Rejection sampling keeps the characters uniform.
  for (int i = 0; taken < 40; ++i) {
    if (i == sizeof buf) {
      RandomBytes(buf, sizeof buf);
      i = 0;
    }
    if (buf[i] >= 248) continue;
    out.push_back(kAlphabet[buf[i] % 62]);
    ++taken;
  }
  return out;
}

std::string Sha256(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return std::string(reinterpret_cast<char*>(digest), sizeof digest);
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace nexusflow

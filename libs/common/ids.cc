#include "libs/common/ids.h"

#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace nexusflow {
namespace {

void RandomBytes(unsigned char* out, int n) {
  if (RAND_bytes(out, n) != 1) throw std::runtime_error("RAND_bytes failed");
}

// Identifiers draw from a per-thread block of the same generator's bytes: one RAND_bytes
// call (whose fixed cost, a provider lookup per call, dwarfs a dozen bytes) serves hundreds
// of ids. Secrets (API keys) still call RAND_bytes directly.
void IdBytes(unsigned char* out, int n) {
  constexpr int kBlock = 4096;
  thread_local unsigned char block[kBlock];
  thread_local int used = kBlock;
  if (used + n > kBlock) {
    RandomBytes(block, kBlock);
    used = 0;
  }
  std::memcpy(out, block + used, n);
  std::memset(block + used, 0, n);  // handed out once
  used += n;
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
  random_bytes = std::clamp(random_bytes, 0, 64);
  IdBytes(buf, random_bytes);
  return std::string(prefix) +
         HexEncode(std::string_view(reinterpret_cast<char*>(buf), random_bytes));
}

std::string NewTimeOrderedId(std::string_view prefix) {
  static constexpr char kHex[] = "0123456789abcdef";
  const uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  unsigned char random[10];
  IdBytes(random, sizeof random);
  std::string out(prefix);
  out.reserve(prefix.size() + 12 + 2 * sizeof random);
  for (int shift = 44; shift >= 0; shift -= 4) out.push_back(kHex[(ms >> shift) & 15]);
  for (unsigned char c : random) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
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

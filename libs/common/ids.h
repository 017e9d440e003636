#pragma once
// Identifiers and secrets: random, URL-safe, prefixed by kind ("acct_", "key_", "req_").
#include <string>
#include <string_view>

namespace nexusflow {

// `prefix` followed by `random_bytes` random bytes as lowercase hex.
std::string NewId(std::string_view prefix, int random_bytes = 12);

// `prefix`, the milliseconds since the epoch as 12 hex digits, then 10 random bytes as
// hex: ids made later sort later (to the millisecond), so an index on them grows at its
// end instead of touching a random page per insert (the ledger's usage records are keyed
// by request id). 80 random bits keep ids made in the same millisecond apart.
std::string NewTimeOrderedId(std::string_view prefix);

// A new API key secret, "sk-nf-" followed by 40 base62 characters.
std::string NewApiKeySecret();

// SHA-256 of `data`, as 32 raw bytes.
std::string Sha256(std::string_view data);

std::string HexEncode(std::string_view bytes);

// Seconds since the epoch, as a decimal string, for log lines and ids.
int64_t UnixNow();

}  // namespace nexusflow

#pragma once
// Money is integer nano-USD (1 USD = 1,000,000,000). Decimal strings cross the admin API
// and config so that nothing is rounded through a float.
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace nexusflow {

inline constexpr int64_t kNanoPerUsd = 1'000'000'000;

// "25", "25.5", "0.000000001" → nano-USD. More than 9 decimals, a sign other than a
// leading '-', or anything not a number is an error.
absl::StatusOr<int64_t> ParseUsd(std::string_view text);

// nano-USD → decimal USD with at least two decimals and no trailing zeros past them:
// 1500000000 → "1.50", 1 → "0.000000001", -2500000000 → "-2.50".
std::string FormatUsd(int64_t nano);

// nano-USD as a JSON-friendly double (for /v1/balance), rounded to 9 decimals.
double UsdAsDouble(int64_t nano);

}  // namespace nexusflow

#include "libs/common/money.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace nexusflow {

absl::StatusOr<int64_t> ParseUsd(std::string_view text) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("'", std::string(text), "' is not a USD amount (digits with at most 9 decimals)"));
  };
  if (text.empty()) return bad();
  bool negative = false;
  size_t i = 0;
  if (text[0] == '-') {
    negative = true;
    i = 1;
  }
  int64_t units = 0;
  int digits = 0;
  for (; i < text.size() && text[i] != '.'; ++i) {
    if (text[i] < '0' || text[i] > '9') return bad();
    // Checked before it can overflow: the whole amount must fit int64 nano-USD.
    if (__builtin_mul_overflow(units, int64_t{10}, &units) ||
        __builtin_add_overflow(units, int64_t{text[i] - '0'}, &units) ||
        units > INT64_MAX / kNanoPerUsd)
      return bad();
    ++digits;
  }
  int64_t fraction = 0;
  int decimals = 0;
  if (i < text.size()) {
    ++i;  // '.'
    if (i == text.size()) return bad();
    for (; i < text.size(); ++i) {
      if (text[i] < '0' || text[i] > '9' || decimals == 9) return bad();
      fraction = fraction * 10 + (text[i] - '0');
      ++decimals;
    }
  }
  if (digits == 0 && decimals == 0) return bad();
  for (int d = decimals; d < 9; ++d) fraction *= 10;
  int64_t nano = 0;
  if (__builtin_mul_overflow(units, kNanoPerUsd, &nano) || __builtin_add_overflow(nano, fraction, &nano))
    return bad();
  return negative ? -nano : nano;
}

std::string FormatUsd(int64_t nano) {
  bool negative = nano < 0;
  uint64_t v = negative ? 0 - static_cast<uint64_t>(nano) : static_cast<uint64_t>(nano);
  uint64_t units = v / kNanoPerUsd;
  uint64_t fraction = v % kNanoPerUsd;
  std::string frac = std::to_string(fraction);
  frac.insert(0, 9 - frac.size(), '0');
  while (frac.size() > 2 && frac.back() == '0') frac.pop_back();
  return absl::StrCat(negative ? "-" : "", units, ".", frac);
}

double UsdAsDouble(int64_t nano) { return static_cast<double>(nano) / kNanoPerUsd; }

}  // namespace nexusflow

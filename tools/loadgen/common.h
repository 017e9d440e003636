// Helpers shared by nexusflow-loadgen's modes.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace nexusflow::loadgen {

using Clock = std::chrono::steady_clock;

// Every asynchronous call reports failure as an error_code, never as an exception.
inline constexpr auto kNoThrow = boost::asio::as_tuple(boost::asio::use_awaitable);

inline Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

inline std::int64_t Micros(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

// Rounded to three decimals, for the JSON report.
inline double Round3(double v) { return std::round(v * 1000.0) / 1000.0; }

}  // namespace nexusflow::loadgen

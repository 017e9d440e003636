#pragma once
// What the tests that start real processes share besides HTTP (http_get.h) and ports
// (ports.h): waiting for a condition, and reading one series off a /metrics page.
#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>

namespace nexusflow::testing {

// Polls `done` every 50 ms for up to `seconds`; its last answer.
inline bool WaitFor(const std::function<bool()>& done, int seconds) {
  for (int i = 0; i < seconds * 20; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

// The value of a metric line (`name{labels} value` as written) on a /metrics page; -1
// when absent.
inline double MetricValue(const std::string& page, const std::string& series) {
  size_t at = 0;
  while ((at = page.find(series, at)) != std::string::npos) {
    bool line_start = at == 0 || page[at - 1] == '\n';
    size_t after = at + series.size();
    if (line_start && after < page.size() && page[after] == ' ')
      return std::strtod(page.c_str() + after + 1, nullptr);
    at = after;
  }
  return -1;
}

}  // namespace nexusflow::testing

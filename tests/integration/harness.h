#pragma once
// What the tests that start real processes share besides HTTP (http_get.h) and ports
// (ports.h): starting a process, waiting for a condition, and reading one series off a
// /metrics page.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace nexusflow::testing {

// Starts `args` (args[0] a path) with `env` set and its stdout and stderr appended to
// `log`; the child is killed when the test process dies, however it ends.
inline pid_t SpawnLogged(const std::string& log, const std::vector<std::string>& args,
                         const std::vector<std::pair<std::string, std::string>>& env = {}) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // the test died before prctl
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

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

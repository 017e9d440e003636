// nexusflow-loadgen: bounded load for the benchmarks that wrk and h2load do not cover.
//
//   --mode=stream     N concurrent streaming chat requests (SSE), with time to first content,
//                     gaps between frames, [DONE], status and bytes per stream.
//   --mode=slowloris  N connections that never finish their request headers.
//   --mode=tasks      N async media tasks created (POST /v1/tasks) and polled until final.
//
// Tour: main.cc (flags), stream_mode.cc, slowloris_mode.cc, tasks_mode.cc, core.{h,cc} (histogram, SSE
// scanner, URL parser: the library nexusflow_loadgen_core, unit-tested in tests/).
// Every mode stops by themselves and print one JSON object on stdout; see README.md.
#include <sys/resource.h>

#include <charconv>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>

#include "loadgen.h"

namespace nexusflow::loadgen {

std::uint64_t RaiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return limit.rlim_cur;
}

}  // namespace nexusflow::loadgen

namespace {

using nexusflow::loadgen::SlowlorisOptions;
using nexusflow::loadgen::StreamOptions;
using nexusflow::loadgen::TasksOptions;

void PrintUsage(std::ostream& out) {
  out << "usage:\n"
         "  nexusflow-loadgen --mode=stream --url=http://127.0.0.1:PORT/v1/chat/completions\n"
         "      --key=KEY (--body=JSON | --body-file=PATH) --streams=N --duration-s=S\n"
         "      [--ramp-s=0] [--threads=1] [--repeat=1] [--timeout-s=60] [--grace-s=10]\n"
         "  nexusflow-loadgen --mode=slowloris --host=127.0.0.1 --port=P --connections=N\n"
         "      [--interval-ms=1000] --duration-s=S [--ramp-s=0] [--threads=1]\n"
         "      [--path=/v1/chat/completions] [--reconnect=0]\n"
         "  nexusflow-loadgen --mode=tasks --url=http://127.0.0.1:PORT/v1/tasks --key=KEY\n"
         "      (--body=JSON | --body-file=PATH) --tasks=N --duration-s=S [--connections=32]\n"
         "      [--poll-ms=3000]\n"
         "Prints one JSON object on stdout when done.\n";
}

bool ParseInt(std::string_view text, long min, long max, long& out) {
  long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    return false;
  }
  out = value;
  return true;
}

bool ParseSeconds(std::string_view text, double max, double& out) {
  try {
    std::size_t used = 0;
    const double value = std::stod(std::string(text), &used);
    if (used != text.size() || !(value >= 0) || value > max) return false;
    out = value;
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode;
  StreamOptions stream;
  SlowlorisOptions slow;
  TasksOptions tasks;
  std::string body_file;
  bool have_body = false;
  bool have_duration = false;

  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      PrintUsage(std::cout);
      return 0;
    }
    const std::size_t eq = arg.find('=');
    if (!arg.starts_with("--") || eq == std::string_view::npos) {
      std::cerr << "loadgen: expected --name=value, got '" << arg << "'\n";
      PrintUsage(std::cerr);
      return 2;
    }
    const std::string_view name = arg.substr(2, eq - 2);
    const std::string_view value = arg.substr(eq + 1);
    long n = 0;
    double s = 0;
    bool ok = true;
    if (name == "mode") {
      mode = value;
    } else if (name == "url") {
      stream.url = value;
    } else if (name == "key") {
      stream.key = value;
    } else if (name == "body") {
      stream.body = value;
      have_body = true;
    } else if (name == "body-file") {
      body_file = value;
    } else if (name == "host") {
      slow.host = value;
    } else if (name == "path") {
      slow.path = value;
    } else if (name == "port") {
      ok = ParseInt(value, 1, 65535, n);
      slow.port = static_cast<std::uint16_t>(n);
    } else if (name == "streams") {
      ok = ParseInt(value, 1, 1000000, n);
      stream.streams = static_cast<int>(n);
    } else if (name == "connections") {
      ok = ParseInt(value, 1, 1000000, n);
      slow.connections = tasks.connections = static_cast<int>(n);
    } else if (name == "tasks") {
      ok = ParseInt(value, 1, 1000000, n);
      tasks.tasks = static_cast<int>(n);
    } else if (name == "poll-ms") {
      ok = ParseInt(value, 1, 3600 * 1000, n);
      tasks.poll_ms = static_cast<int>(n);
    } else if (name == "threads") {
      ok = ParseInt(value, 1, 256, n);
      stream.threads = slow.threads = static_cast<int>(n);
    } else if (name == "repeat") {
      ok = ParseInt(value, 0, 1, n);
      stream.repeat = n == 1;
    } else if (name == "reconnect") {
      ok = ParseInt(value, 0, 1, n);
      slow.reconnect = n == 1;
    } else if (name == "interval-ms") {
      ok = ParseInt(value, 1, 3600 * 1000, n);
      slow.interval_ms = static_cast<int>(n);
    } else if (name == "duration-s") {
      ok = ParseSeconds(value, 86400, s);
      stream.duration_s = slow.duration_s = tasks.duration_s = s;
      have_duration = true;
    } else if (name == "ramp-s") {
      ok = ParseSeconds(value, 86400, s);
      stream.ramp_s = slow.ramp_s = s;
    } else if (name == "timeout-s") {
      ok = ParseSeconds(value, 86400, s) && s > 0;
      stream.timeout_s = s;
    } else if (name == "grace-s") {
      ok = ParseSeconds(value, 86400, s);
      stream.grace_s = s;
    } else {
      std::cerr << "loadgen: unknown flag --" << name << '\n';
      PrintUsage(std::cerr);
      return 2;
    }
    if (!ok) {
      std::cerr << "loadgen: bad value for --" << name << ": '" << value << "'\n";
      return 2;
    }
  }
  if (!have_duration) {
    std::cerr << "loadgen: --duration-s is required (every run is bounded)\n";
    return 2;
  }

  if ((mode == "stream" || mode == "tasks") && !body_file.empty()) {
    std::ifstream in(body_file, std::ios::binary);
    if (!in) {
      std::cerr << "loadgen: cannot read " << body_file << '\n';
      return 2;
    }
    std::ostringstream text;
    text << in.rdbuf();
    stream.body = text.str();
    have_body = true;
  }
  if (mode == "stream") {
    if (stream.url.empty() || !have_body) {
      std::cerr << "loadgen: --mode=stream needs --url and --body (or --body-file)\n";
      return 2;
    }
    return nexusflow::loadgen::RunStream(stream);
  }
  if (mode == "slowloris") {
    if (slow.port == 0) {
      std::cerr << "loadgen: --mode=slowloris needs --port\n";
      return 2;
    }
    return nexusflow::loadgen::RunSlowloris(slow);
  }
  if (mode == "tasks") {
    if (stream.url.empty() || !have_body) {
      std::cerr << "loadgen: --mode=tasks needs --url and --body (or --body-file)\n";
      return 2;
    }
    tasks.url = stream.url;
    tasks.key = stream.key;
    tasks.body = stream.body;
    return nexusflow::loadgen::RunTasks(tasks);
  }
  std::cerr << "loadgen: --mode must be stream, slowloris or tasks\n";
  PrintUsage(std::cerr);
  return 2;
}

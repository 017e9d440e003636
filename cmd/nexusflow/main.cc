// nexusflow: one binary, many targets. `--target=all` runs every service in one process;
// `--target=auth` (or a comma list) runs some of them, reaching the rest by config.
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_join.h"
#include "cmd/nexusflow/ledger_command.h"
#include "cmd/nexusflow/modules.h"
#include "libs/config/config_reference.h"

ABSL_FLAG(std::string, target, "all", "all, or a comma list of: auth, routing, rate-limiter, billing-ledger, provider-connector, gateway");
ABSL_FLAG(std::string, config, "nexusflow.yaml", "configuration file");
ABSL_FLAG(std::string, check_config, "", "validate this configuration file and exit");
ABSL_FLAG(std::string, grpc_listen, "", "override server.grpc_listen");
ABSL_FLAG(std::string, http_listen, "", "override server.http_listen");
ABSL_FLAG(std::string, metrics_listen, "", "override server.metrics_listen");

int main(int argc, char** argv) {
  // Abseil's mutex deadlock detection (on in Debian's build) costs every lock a graph
  // update; it is a debugging aid, not for serving.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage(
      "nexusflow --config=FILE [--target=all|auth,routing,...]\n"
      "  nexusflow ledger verify [--config=FILE | --database=URL|PATH]   check the billing "
      "ledger's invariants; exit 1 on any violation\n"
      "  nexusflow config-reference [--config=FILE]   print the configuration reference "
      "(docs/configuration.md), with FILE's environment variables");
  if (argc > 1 && std::string(argv[1]) == "ledger") return nexusflow::RunLedgerCommand(argc - 1, argv + 1);
  if (argc > 1 && std::string(argv[1]) == "config-reference") {
    // The configuration reference page (docs/configuration.md), with the environment
    // variables of --config=FILE when given.
    std::string file;
    for (int i = 2; i < argc; ++i)
      if (std::string a = argv[i]; a.rfind("--config=", 0) == 0) file = a.substr(9);
    std::string text;
    if (!file.empty()) {
      std::ifstream in(file);
      if (!in) {
        std::cerr << "nexusflow: cannot read " << file << "\n";
        return 2;
      }
      std::stringstream ss;
      ss << in.rdbuf();
      text = ss.str();
    }
    std::cout << nexusflow::ConfigReferenceMarkdown(text, file);
    return 0;
  }
  // Flags are spelled with dashes (--check-config); Abseil names them with underscores.
  std::vector<std::string> args(argv, argv + argc);
  for (auto& a : args) {
    if (a.rfind("--", 0) != 0) continue;
    for (size_t i = 2; i < a.size() && a[i] != '='; ++i)
      if (a[i] == '-') a[i] = '_';
  }
  std::vector<char*> ptrs;
  for (auto& a : args) ptrs.push_back(a.data());
  absl::ParseCommandLine(static_cast<int>(ptrs.size()), ptrs.data());

  if (std::string file = absl::GetFlag(FLAGS_check_config); !file.empty()) {
    auto config = nexusflow::LoadConfig(file);
    if (!config.ok()) {
      std::cerr << "invalid: " << config.status().message() << "\n";
      return 1;
    }
    std::cout << file << ": OK (" << config->routing.models.size() << " models, "
              << config->provider_connector.providers.size() << " providers, "
              << config->rate_limiter.plans.size() << " plans)\n";
    return 0;
  }

  auto targets = nexusflow::ParseTargets(absl::GetFlag(FLAGS_target));
  if (!targets.ok()) {
    std::cerr << "nexusflow: " << targets.status().message() << "\n";
    return 2;
  }
  auto config = nexusflow::LoadConfig(absl::GetFlag(FLAGS_config));
  if (!config.ok()) {
    std::cerr << "nexusflow: " << config.status().message() << "\n";
    return 2;
  }
  if (auto v = absl::GetFlag(FLAGS_grpc_listen); !v.empty()) config->server.grpc_listen = v;
  if (auto v = absl::GetFlag(FLAGS_http_listen); !v.empty()) config->server.http_listen = v;
  if (auto v = absl::GetFlag(FLAGS_metrics_listen); !v.empty()) config->server.metrics_listen = v;

  // Every connection is a descriptor (two for a stream in all-in-one: client and
  // upstream): take all the process may have.
  if (rlimit nofile{}; getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }

  // Signals are taken by sigwait below, so every thread started from here blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto process = nexusflow::StartProcess(*config, *targets, absl::GetFlag(FLAGS_config));
  if (!process.ok()) {
    std::cerr << "nexusflow: " << process.status().message() << "\n";
    return 1;
  }
  std::cerr << "nexusflow: running " << absl::StrJoin(*targets, ",") << " (gRPC "
            << config->server.grpc_listen
            << (targets->count("gateway") ? ", HTTP " + config->server.http_listen : "")
            << ")" << std::endl;

  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << "nexusflow: draining (signal " << sig << ", grace "
            << config->server.drain_grace_seconds << "s)" << std::endl;
  (*process)->Drain(config->server.drain_grace_seconds);
  process->reset();  // services flush what they hold (queued settlements) as they go
  std::cerr << "nexusflow: stopped" << std::endl;
  // Everything is written; skip the libraries' static teardown, which only waits.
  std::fflush(nullptr);
  std::_Exit(0);
}

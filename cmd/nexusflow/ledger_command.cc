#include "cmd/nexusflow/ledger_command.h"

#include <filesystem>
#include <iostream>
#include <string>

#include "libs/config/config.h"
#include "libs/store/postgres.h"
#include "services/billing-ledger/ledger_store.h"

namespace nexusflow {
namespace {

constexpr char kUsage[] =
    "usage: nexusflow ledger verify [--config=FILE | --database=URL|PATH]\n"
    "  Checks the billing ledger: the journal's transfers sum to zero, each balance equals\n"
    "  its transfers, no request is charged twice, no hold is both settled and released.\n"
    "  Prints each violation; exit status 0 = consistent, 1 = violations, 2 = error.\n"
    "  --config    the service's configuration (billing_ledger.database); default\n"
    "              nexusflow.yaml\n"
    "  --database  the ledger itself: a postgresql:// URL or an SQLite file\n";

// "--name=value" or "--name value"; advances `i` past what it consumed.
bool TakeFlag(int argc, char** argv, int& i, const std::string& name, std::string* value) {
  std::string arg = argv[i];
  for (const std::string& prefix : {"--" + name, "-" + name}) {
    if (arg == prefix && i + 1 < argc) {
      *value = argv[++i];
      return true;
    }
    if (arg.rfind(prefix + "=", 0) == 0) {
      *value = arg.substr(prefix.size() + 1);
      return true;
    }
  }
  return false;
}

int Verify(const std::string& database) {
  if (!IsPostgresUrl(database) && database != ":memory:" && !std::filesystem::exists(database)) {
    std::cerr << "nexusflow ledger verify: no ledger at " << database << "\n";
    return 2;
  }
  auto store = billing::OpenLedgerStore(database);
  if (!store.ok()) {
    std::cerr << "nexusflow ledger verify: " << store.status().message() << "\n";
    return 2;
  }
  auto violations = (*store)->Verify();
  if (!violations.ok()) {
    std::cerr << "nexusflow ledger verify: " << violations.status().message() << "\n";
    return 2;
  }
  for (const auto& v : *violations) std::cout << v << "\n";
  if (!violations->empty()) {
    std::cerr << "nexusflow ledger verify: " << violations->size() << " violation"
              << (violations->size() == 1 ? "" : "s") << "\n";
    return 1;
  }
  std::cerr << "nexusflow ledger verify: consistent\n";
  return 0;
}

}  // namespace

int RunLedgerCommand(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "verify") {
    bool help = argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h");
    (help ? std::cout : std::cerr) << kUsage;
    return help ? 0 : 2;
  }
  std::string config_path = "nexusflow.yaml", database;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (TakeFlag(argc, argv, i, "config", &config_path) ||
        TakeFlag(argc, argv, i, "database", &database))
      continue;
    std::cerr << "nexusflow ledger verify: unknown argument '" << arg << "'\n" << kUsage;
    return 2;
  }
  if (database.empty()) {
    auto config = LoadConfig(config_path);
    if (!config.ok()) {
      std::cerr << "nexusflow ledger verify: " << config.status().message() << "\n";
      return 2;
    }
    database = config->billing_ledger.database;
  }
  return Verify(database);
}

}  // namespace nexusflow

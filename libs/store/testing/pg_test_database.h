#pragma once
// A fresh PostgreSQL database per test, on the server named by NEXUSFLOW_TEST_PG_URL
// (tools/lib/with-postgres.sh starts a throwaway server and sets it). Without the
// variable, Create fails: a conformance suite never passes by skipping its server.
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace nexusflow {

class PgTestDatabase {
 public:
  static constexpr char kUrlVariable[] = "NEXUSFLOW_TEST_PG_URL";
  static absl::StatusOr<std::unique_ptr<PgTestDatabase>> Create();
  ~PgTestDatabase();  // drops the database
  // libpq keywords naming the new database (same server, user and password).
  const std::string& conninfo() const { return conninfo_; }

 private:
  PgTestDatabase(std::string server, std::string name, std::string conninfo)
      : server_(std::move(server)), name_(std::move(name)), conninfo_(std::move(conninfo)) {}
  std::string server_;  // conninfo of the server's maintenance database
  std::string name_;
  std::string conninfo_;
};

}  // namespace nexusflow

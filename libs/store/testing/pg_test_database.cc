#include "libs/store/testing/pg_test_database.h"

#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "libs/store/postgres.h"

namespace nexusflow {
namespace {

// `conninfo` with dbname replaced, as libpq keywords (works for URLs and keywords alike).
absl::StatusOr<std::string> WithDatabase(const std::string& conninfo, const std::string& db) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (!opts) {
    std::string msg = err ? err : "cannot parse";
    PQfreemem(err);
    return absl::InvalidArgumentError(absl::StrCat(PgTestDatabase::kUrlVariable, ": ", msg));
  }
  std::string out;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (std::string(o->keyword) == "dbname" || !o->val || !*o->val) continue;
    std::string v = o->val;
    std::string quoted;
    for (char ch : v) {
      if (ch == '\'' || ch == '\\') quoted.push_back('\\');
      quoted.push_back(ch);
    }
    absl::StrAppend(&out, o->keyword, "='", quoted, "' ");
  }
  PQconninfoFree(opts);
  absl::StrAppend(&out, "dbname='", db, "'");
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PgTestDatabase>> PgTestDatabase::Create() {
  const char* url = std::getenv(kUrlVariable);
  if (!url || !*url)
    return absl::FailedPreconditionError(absl::StrCat(
        kUrlVariable, " is not set: run the PostgreSQL cases through tools/lib/with-postgres.sh "
                      "(CTest does), which starts a throwaway server"));
  static std::atomic<int> counter{0};
  std::string name = absl::StrCat("nf_test_", getpid(), "_", counter++);
  auto admin = PgConnection::Open(url);
  if (!admin.ok()) return admin.status();
  if (auto s = (*admin)->Exec(absl::StrCat("DROP DATABASE IF EXISTS ", name)); !s.ok()) return s;
  if (auto s = (*admin)->Exec(absl::StrCat("CREATE DATABASE ", name)); !s.ok()) return s;
  auto conninfo = WithDatabase(url, name);
  if (!conninfo.ok()) return conninfo.status();
  return std::unique_ptr<PgTestDatabase>(new PgTestDatabase(url, name, *conninfo));
}

PgTestDatabase::~PgTestDatabase() {
  auto admin = PgConnection::Open(server_);
  if (admin.ok()) (void)(*admin)->Exec(absl::StrCat("DROP DATABASE IF EXISTS ", name_, " WITH (FORCE)"));
}

}  // namespace nexusflow

#!/usr/bin/env bash
# with-postgres.sh CMD [ARG...]: runs CMD against a throwaway PostgreSQL on 127.0.0.1,
# port $NF_PG_PORT (25432), with its URL in NEXUSFLOW_TEST_PG_URL; the server and its
# directory are gone when CMD ends, however it ends. Fails (never skips) when PostgreSQL
# is not installed. CTest runs the PostgreSQL store suites through it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/pg.sh"
port="${NF_PG_PORT:-25432}"
dir="$(mktemp -d "${TMPDIR:-/tmp}/nexusflow-pg.XXXXXX")"
cleanup() {
  nf_pg_stop "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
# CTest's resource lock keeps one run's suites apart; another build tree's run may hold
# the port a while: wait for it (bounded) rather than fail at once.
for _ in $(seq 1 180); do
  ss -Hltn "sport = :$port" 2>/dev/null | grep -q . || break
  sleep 1
done
# fsync stays on: the suites check behaviour, and a test server should commit like a real one.
nf_pg_start "$dir" "$port"
export NEXUSFLOW_TEST_PG_URL="$NF_PG_URL"
"$@"

#!/usr/bin/env bash
# Runs a test binary against a throwaway Redis on 127.0.0.1:$NEXUSFLOW_TEST_REDIS_PORT
# (26379), stopped on exit:
#   with_redis.sh BINARY [ARGS...]
# The binary gets NEXUSFLOW_TEST_REDIS_URL, and NEXUSFLOW_TEST_REDIS_CTL naming this script,
# which its outage tests call as `with_redis.sh stop` and `with_redis.sh start`.
# A machine without redis-server fails the test; it is not skipped.
set -euo pipefail
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
source "$(dirname "$self")/../../../tools/lib/redis.sh"
port="${NEXUSFLOW_TEST_REDIS_PORT:-26379}"

case "${1:-}" in
  stop) nf_redis_stop "$NEXUSFLOW_TEST_REDIS_DIR"; exit ;;
  start) nf_redis_start "$NEXUSFLOW_TEST_REDIS_DIR" "$port"; exit ;;
esac

dir="$(mktemp -d "${TMPDIR:-/tmp}/nf-redis.XXXXXX")"
cleanup() {
  nf_redis_stop "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
nf_redis_start "$dir" "$port"
export NEXUSFLOW_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
export NEXUSFLOW_TEST_REDIS_DIR="$dir"
export NEXUSFLOW_TEST_REDIS_CTL="$self"
"$@"

#!/usr/bin/env bash
# Runs the end-to-end tests against a real NexusFlow started by tools/run.
#
#   tests/e2e/run-e2e.sh all     # one process (--target=all)
#   tests/e2e/run-e2e.sh split   # one process per target (tools/run --split)
#   tests/e2e/run-e2e.sh scale   # two replicas of each on PostgreSQL and Redis, two gateways
#
# Each mode has its own port block, so CTest may run both (not at once: they share
# two cores). Extra arguments go to `node --test` (e.g. --test-name-pattern=billing).
# Env: NEXUSFLOW_E2E_START_TIMEOUT (s, default 180), NEXUSFLOW_E2E_STOP_TIMEOUT (s, 30),
# NEXUSFLOW_E2E_KEEP=1 keeps the data dir and log, NEXUSFLOW_E2E_LAUNCHER replaces
# tools/run (same contract: demo.env, stop on SIGTERM).
set -euo pipefail

MODE="${1:-}"
shift || true
case "$MODE" in
  all)   PORT_BASE=18; RUN_ARGS=() ;;
  split) PORT_BASE=28; RUN_ARGS=(--split) ;;
  scale) PORT_BASE=16; RUN_ARGS=(--split --scale); export NEXUSFLOW_E2E_GATEWAYS=2 ;;
  *) echo "usage: $0 all|split|scale [node --test args...]" >&2; exit 2 ;;
esac

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$E2E_DIR/../.." && pwd)"
NF_BUILD_DIR_E2E="${NF_BUILD_DIR:-$ROOT/build}"
START_TIMEOUT="${NEXUSFLOW_E2E_START_TIMEOUT:-180}"
STOP_TIMEOUT="${NEXUSFLOW_E2E_STOP_TIMEOUT:-30}"

# all: 18080 19100 19090(+0) 19300(+0); split: 28080 29100 29090..29095 29300..29305;
# scale: 16080 17100 17090..17095 and 17101..17105, 17300..17315, 17120 17121.
# Every port is below the ephemeral range (32768+), where a client socket could hold it.
HTTP_PORT="${PORT_BASE}080"
MOCK_PORT="$((PORT_BASE + 1))100"
GRPC_PORT="$((PORT_BASE + 1))090"
METRICS_PORT="$((PORT_BASE + 1))300"
PORTS=("$HTTP_PORT" "$MOCK_PORT")
for i in 0 1 2 3 4 5; do PORTS+=("$((GRPC_PORT + i))" "$((METRICS_PORT + i))"); done
# scale: the second replicas at +11..+15, PostgreSQL at +30 and Redis at +31.
if [[ "$MODE" == scale ]]; then
  for i in 1 2 3 4 5; do PORTS+=("$((GRPC_PORT + 10 + i))" "$((METRICS_PORT + 10 + i))"); done
  PORTS+=("$((GRPC_PORT + 30))" "$((GRPC_PORT + 31))")
fi

DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/nexusflow-e2e-$MODE.XXXXXX")"
LOG="$DATA_DIR/tools-run.log"
RUN_PID=""
RUN_SID=""
FAILED_STOP=0

log() { printf '[e2e %s] %s\n' "$MODE" "$*" >&2; }

# Processes still alive in tools/run's session (it was started with setsid).
session_procs() {
  [[ -n "$RUN_SID" ]] || return 0
  pgrep -s "$RUN_SID" 2>/dev/null || true
}

listening_ports() {
  local p out=()
  for p in "${PORTS[@]}"; do
    if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then out+=("$p"); fi
  done
  echo "${out[*]:-}"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$RUN_PID" ]] && kill -0 "$RUN_PID" 2>/dev/null; then
    log "cleanup: stopping tools/run (pid $RUN_PID)"
    kill -TERM "$RUN_PID" 2>/dev/null || true
    for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
      kill -0 "$RUN_PID" 2>/dev/null || break
      sleep 0.1
    done
  fi
  local left
  left="$(session_procs)"
  if [[ -n "$left" ]]; then
    log "cleanup: killing leftover processes of tools/run: ${left//$'\n'/ }"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$LOG" ]]; then
    log "FAILED (exit $rc); last 80 lines of $LOG:"
    tail -n 80 "$LOG" >&2 || true
  fi
  if [[ "${NEXUSFLOW_E2E_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
    log "data dir kept: $DATA_DIR"
  else
    rm -rf "$DATA_DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

LAUNCHER="${NEXUSFLOW_E2E_LAUNCHER:-$ROOT/tools/run}"
if [[ ! -x "$LAUNCHER" ]]; then
  log "$LAUNCHER is missing or not executable"
  exit 1
fi
if ! command -v node >/dev/null; then
  log "node is not installed"
  exit 1
fi
if [[ ! -d "$E2E_DIR/node_modules" ]]; then
  log "installing the SDKs (npm ci)"
  (cd "$E2E_DIR" && npm ci --no-audit --no-fund)
fi

busy="$(listening_ports)"
if [[ -n "$busy" ]]; then
  log "ports already in use: $busy (another e2e run, or a stale tools/run?)"
  exit 1
fi

export NEXUSFLOW_HTTP_PORT="$HTTP_PORT"
export NEXUSFLOW_MOCK_PORT="$MOCK_PORT"
# Known to the tests, which also call the mock directly (pass-through comparisons).
export NEXUSFLOW_MOCK_API_KEY="mock-upstream-e2e-${MODE}"
export NEXUSFLOW_GRPC_PORT="$GRPC_PORT"
export NEXUSFLOW_METRICS_PORT="$METRICS_PORT"
if [[ "$MODE" == scale ]]; then
  # Where tools/run --scale keeps its Redis (redis.test.mjs stops and restarts it).
  export NEXUSFLOW_E2E_REDIS_DIR="$DATA_DIR/redis" NEXUSFLOW_E2E_REDIS_PORT="$((GRPC_PORT + 31))"
  export NEXUSFLOW_E2E_LIMITER_METRICS="http://127.0.0.1:$((METRICS_PORT + 3))/metrics,http://127.0.0.1:$((METRICS_PORT + 13))/metrics"
fi
export NEXUSFLOW_ADMIN_KEY="nf-admin-e2e-${MODE}-0123456789abcdef"
export NEXUSFLOW_DEMO_KEY="sk-nf-e2edemo${MODE}0123456789abcdef0123"
export NEXUSFLOW_DATA_DIR="$DATA_DIR"
# The edge's connection deadlines (server.header_timeout_ms / body_timeout_ms in
# deploy/local/nexusflow.yaml), short so edge.test.mjs's slow-client tests run fast. The
# tests read them too, as they read NEXUSFLOW_MOCK_PORT for the mock's /mock/stats.
export NEXUSFLOW_HEADER_TIMEOUT_MS=2000
export NEXUSFLOW_BODY_TIMEOUT_MS=3000
# Media tasks (media.test.mjs): quick polls, two running tasks per key (a third waits
# queued), and images answered 504 after 5 s of waiting.
export NEXUSFLOW_MEDIA_POLL_MIN_MS=200 NEXUSFLOW_MEDIA_MAX_PER_KEY=2 NEXUSFLOW_IMAGE_WAIT_SECONDS=5
# Known here, so the run can check that it never leaks (see the secrets scan below).
export NEXUSFLOW_INTERNAL_TOKEN="nf-internal-e2e-${MODE}-$(openssl rand -hex 12)"
export NEXUSFLOW_ADMIN_RPC_TOKEN="nf-admin-rpc-e2e-${MODE}-$(openssl rand -hex 12)"

log "starting $LAUNCHER ${RUN_ARGS[*]:-} (data dir $DATA_DIR, log $LOG)"
cd "$ROOT"
# Own session, so every process it starts can be found (and checked gone) afterwards.
setsid "$LAUNCHER" "${RUN_ARGS[@]}" >"$LOG" 2>&1 </dev/null &
RUN_PID=$!
RUN_SID="$RUN_PID"

deadline=$((SECONDS + START_TIMEOUT))
until [[ -s "$DATA_DIR/demo.env" ]]; do
  if ! kill -0 "$RUN_PID" 2>/dev/null; then
    wait "$RUN_PID" && rc=0 || rc=$?
    RUN_PID=""
    log "tools/run exited (status $rc) before writing demo.env"
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    log "no $DATA_DIR/demo.env after ${START_TIMEOUT}s"
    exit 1
  fi
  sleep 0.5
done
sleep 0.2 # demo.env may still be being written
set -a
# shellcheck disable=SC1091
. "$DATA_DIR/demo.env"
set +a
for v in NEXUSFLOW_BASE_URL NEXUSFLOW_DEMO_KEY NEXUSFLOW_ADMIN_KEY NEXUSFLOW_DEMO_ACCOUNT; do
  if [[ -z "${!v:-}" ]]; then
    log "demo.env does not define $v"
    exit 1
  fi
done
export NEXUSFLOW_METRICS_URL="http://127.0.0.1:$METRICS_PORT/metrics"
origin="${NEXUSFLOW_BASE_URL%/v1}"
until curl -fsS -o /dev/null "$origin/readyz"; do
  if ((SECONDS >= deadline)); then
    log "$origin/readyz not 200 after ${START_TIMEOUT}s"
    exit 1
  fi
  sleep 0.5
done
log "up at $NEXUSFLOW_BASE_URL after ${SECONDS}s; running the tests"

tests=("$E2E_DIR"/*.test.mjs)
set +e
# One test file at a time: the scale run's Redis test stops and restarts Redis.
(cd "$E2E_DIR" && node --test --test-concurrency=1 --test-reporter=spec "$@" "${tests[@]}")
test_rc=$?
set -e

# The ledger the tests left must be consistent: transfers sum to zero, balances equal
# their transfers, no request charged twice, no hold both settled and released.
verify_rc=0
"$NF_BUILD_DIR_E2E/nexusflow" ledger verify --config="$ROOT/deploy/local/nexusflow.yaml" >&2 || verify_rc=$?
if ((verify_rc != 0)); then log "nexusflow ledger verify found the ledger inconsistent (exit $verify_rc)"; fi

# No secret in any process's log or any /metrics page: no API key secret (the demo key and
# every sk-nf- key the tests created), nor the admin key, the internal token, the admin RPC
# token or the upstream's key. (tools/run's own output prints the demo key on purpose: not scanned; nor
# is the mock provider's log, which is the upstream.)
secrets_rc=0
scan="$DATA_DIR/secrets-scan.txt"
: >"$scan"
for f in "$DATA_DIR"/logs/*.log; do
  [[ "$(basename "$f")" == mock-provider.log ]] || cat "$f" >>"$scan"
done
for port in $(seq "$METRICS_PORT" $((METRICS_PORT + 20))); do
  curl -fsS --max-time 5 "http://127.0.0.1:$port/metrics" >>"$scan" 2>/dev/null || true
done
curl -fsS --max-time 5 "$origin/metrics" >>"$scan" 2>/dev/null || true
leaks="$(grep -aoE 'sk-nf-[A-Za-z0-9]{40}' "$scan" | head -3 || true)"
for secret in "$NEXUSFLOW_ADMIN_KEY" "$NEXUSFLOW_INTERNAL_TOKEN" "$NEXUSFLOW_ADMIN_RPC_TOKEN" "$NEXUSFLOW_MOCK_API_KEY"; do
  if grep -aFq -- "$secret" "$scan"; then leaks+=$'\n'"${secret:0:12}…"; fi
done
if [[ -n "$leaks" ]]; then
  log "secrets found in the logs or metrics pages ($(wc -c <"$scan") bytes scanned): ${leaks//$'\n'/ }"
  secrets_rc=1
else
  log "secrets scan: none in $(wc -c <"$scan") bytes of logs and metrics pages"
fi

log "stopping tools/run (SIGTERM to pid $RUN_PID)"
kill -TERM "$RUN_PID"
stopped=0
for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
  if ! kill -0 "$RUN_PID" 2>/dev/null; then stopped=1; break; fi
  sleep 0.1
done
if ((stopped)); then
  wait "$RUN_PID" && run_rc=0 || run_rc=$?
  RUN_PID=""
  log "tools/run exited with status $run_rc"
else
  log "tools/run did not exit within ${STOP_TIMEOUT}s of SIGTERM"
  FAILED_STOP=1
fi
sleep 0.5
left="$(session_procs)"
if [[ -n "$left" ]]; then
  log "processes started by tools/run still running after it stopped:"
  ps -o pid,ppid,etime,args -p "${left//$'\n'/,}" >&2 || true
  FAILED_STOP=1
fi
busy="$(listening_ports)"
if [[ -n "$busy" ]]; then
  log "ports still listening after tools/run stopped: $busy"
  FAILED_STOP=1
fi

if ((test_rc != 0)); then
  log "tests failed (node --test exit $test_rc)"
  exit "$test_rc"
fi
if ((verify_rc != 0)); then exit 1; fi
if ((secrets_rc != 0)); then exit 1; fi
if ((FAILED_STOP)); then
  log "tests passed, but tools/run did not shut down cleanly"
  exit 1
fi
log "passed"

#!/usr/bin/env bash
# Runs every runnable example of docs/*.md against a real NexusFlow started by tools/run
# (all targets in one process, with the mock provider), and checks each output against
# what the page shows (tests/docs/README.md).
#
#   tests/docs/run-docs.sh               # every page
#   tests/docs/run-docs.sh quickstart    # some pages
#
# Its own ports (HTTP 24380; gRPC 24300..24305, metrics 24310..24315, mock 24390, all below
# the ephemeral range) and its own data dir, so it runs beside a tools/run on 8080.
# Env: NEXUSFLOW_DOCS_START_TIMEOUT (s, 180), NEXUSFLOW_DOCS_KEEP=1 keeps the data dir.
set -euo pipefail

DOCS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$DOCS_DIR/../.." && pwd)"
E2E_DIR="$ROOT/tests/e2e"
START_TIMEOUT="${NEXUSFLOW_DOCS_START_TIMEOUT:-180}"
STOP_TIMEOUT=30

HTTP_PORT=24380
MOCK_PORT=24390
GRPC_PORT=24300
METRICS_PORT=24310
PORTS=("$HTTP_PORT" "$MOCK_PORT")
for i in 0 1 2 3 4 5; do PORTS+=("$((GRPC_PORT + i))" "$((METRICS_PORT + i))"); done

DATA_DIR=""
LOG=""
RUN_PID=""
STARTED=0

log() { printf '[docs] %s\n' "$*" >&2; }

listening_ports() {
  local p out=()
  for p in "${PORTS[@]}"; do
    if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then out+=("$p"); fi
  done
  echo "${out[*]:-}"
}

# Stops tools/run (SIGTERM, it stops what it started), then anything left in its session.
stop_suite() {
  [[ -n "$RUN_PID" ]] || return 0
  if kill -0 "$RUN_PID" 2>/dev/null; then
    kill -TERM "$RUN_PID" 2>/dev/null || true
    for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
      kill -0 "$RUN_PID" 2>/dev/null || break
      sleep 0.1
    done
  fi
  local left
  left="$(pgrep -s "$RUN_PID" 2>/dev/null || true)"
  if [[ -n "$left" ]]; then
    log "killing processes tools/run left: ${left//$'\n'/ }"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
  fi
  RUN_PID=""
}

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_suite
  [[ -n "$DATA_DIR" ]] || exit "$rc"
  # A suite that did not start: what tools/run said. Blocks that failed: what the gateway logged.
  local show="$LOG"
  ((STARTED)) && show="$DATA_DIR/logs/nexusflow.log"
  if [[ $rc -ne 0 && -f "$show" ]]; then
    log "FAILED (exit $rc); last 30 lines of $show:"
    tail -n 30 "$show" >&2 || true
  fi
  if [[ "${NEXUSFLOW_DOCS_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
    log "data dir kept: $DATA_DIR"
  else
    rm -rf "$DATA_DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v node >/dev/null || { log "node is not installed"; exit 1; }
if [[ ! -d "$E2E_DIR/node_modules" ]]; then
  log "installing the SDKs (npm ci in tests/e2e)"
  (cd "$E2E_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi

# The runner's own rules first: they need no suite.
node --test --test-reporter=dot "$DOCS_DIR/match.test.mjs" >&2

busy="$(listening_ports)"
if [[ -n "$busy" ]]; then
  log "ports already in use: $busy (another docs run, or a stale tools/run?)"
  exit 1
fi

DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/nexusflow-docs.XXXXXX")"
LOG="$DATA_DIR/tools-run.log"
export NEXUSFLOW_HTTP_PORT="$HTTP_PORT" NEXUSFLOW_MOCK_PORT="$MOCK_PORT"
export NEXUSFLOW_GRPC_PORT="$GRPC_PORT" NEXUSFLOW_METRICS_PORT="$METRICS_PORT"
export NEXUSFLOW_DATA_DIR="$DATA_DIR"
NEXUSFLOW_ADMIN_KEY="nf-admin-docs-$(openssl rand -hex 16)"
export NEXUSFLOW_ADMIN_KEY
unset NEXUSFLOW_DEMO_KEY

log "starting tools/run (data dir $DATA_DIR)"
cd "$ROOT"
# Its own session, so everything it starts can be found afterwards.
setsid "$ROOT/tools/run" >"$LOG" 2>&1 </dev/null &
RUN_PID=$!
deadline=$((SECONDS + START_TIMEOUT))
until [[ -s "$DATA_DIR/demo.env" ]] && grep -q '^NEXUSFLOW_DEMO_ACCOUNT=' "$DATA_DIR/demo.env"; do
  if ! kill -0 "$RUN_PID" 2>/dev/null; then
    log "tools/run exited before it was ready"
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    log "tools/run not ready after ${START_TIMEOUT}s"
    exit 1
  fi
  sleep 0.5
done
origin="http://127.0.0.1:$HTTP_PORT"
curl -fsS -o /dev/null "$origin/readyz"
STARTED=1
log "up at $origin after ${SECONDS}s"

set +e
NEXUSFLOW_DOCS_ORIGIN="$origin" node "$DOCS_DIR/run-docs.mjs" "$@"
rc=$?
# The runner must fail a broken page, block by block, with the page and line.
broken="$(NEXUSFLOW_DOCS_ORIGIN="$origin" NEXUSFLOW_DOCS_DIR=tests/docs/broken node "$DOCS_DIR/run-docs.mjs" 2>&1)"
broken_rc=$?
set -e
missing=()
for want in "broken.md:16: exited with status 1" \
            "broken.md:24: output does not match the json output block at line 30" \
            "broken.md:36: output does not match the json output block at line 40" \
            "broken.md:46: model \`qwen9-ultra\` is not in deploy/local/nexusflow.yaml" \
            "5 runnable blocks ran on 1 pages in" "; 4 FAILED:"; do
  grep -qF -- "$want" <<<"$broken" || missing+=("$want")
done
if ((broken_rc != 1 || ${#missing[@]})) || grep -q "broken.md:6:" <<<"$broken"; then
  log "the runner did not fail tests/docs/broken/broken.md as it should (exit $broken_rc); missing: ${missing[*]:-none}"
  printf '%s\n' "$broken" >&2
  rc=1
else
  log "tests/docs/broken/broken.md failed as it should: 4 broken blocks found, with their lines"
fi

stop_suite
busy="$(listening_ports)"
if [[ -n "$busy" ]]; then
  log "ports still listening after tools/run stopped: $busy"
  exit 1
fi
exit "$rc"

# Shared by tools/run, tools/test and tools/bench: install what is missing, build.
# shellcheck shell=bash

NF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NF_BUILD="${NF_BUILD_DIR:-$NF_ROOT/build}"

# Debian packages the build and the tools need.
NF_BUILD_PACKAGES=(cmake ninja-build g++ pkg-config ccache curl openssl ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libboost1.81-dev libboost-json1.81-dev prometheus-cpp-dev libyaml-cpp-dev
  libsqlite3-dev libpq-dev libhiredis-dev libcurl4-openssl-dev libssl-dev libjemalloc-dev
  libgtest-dev libgmock-dev libbenchmark-dev)
# What the fuzz targets add (tests/fuzz): clang and its sanitizer and libFuzzer runtimes.
NF_FUZZ_PACKAGES=(clang libclang-rt-14-dev)
# Servers the tests start for themselves (tools/test ensures them): throwaway Redis for the
# rate-limiter's Redis store (tools/lib/redis.sh), PostgreSQL for the ledger and key store
# conformance suites (tools/lib/pg.sh), Prometheus (its server and promtool) and Python's
# YAML reader for the checks of deploy/prometheus and deploy/grafana (tests/prometheus); Go
# and Sprig for the Helm chart's template renderer, JSON Schema for its values (tests/helm).
NF_TEST_PACKAGES=(redis-server postgresql prometheus python3-yaml
  golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev python3-jsonschema)

nf_log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# nf_ensure_packages PKG...: apt-get installs the ones not installed yet.
nf_ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  nf_log "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# nf_ensure_node: Node.js and npm for the SDK tests (the machine's own when present).
nf_ensure_node() {
  command -v node >/dev/null || nf_ensure_packages nodejs
  command -v npm >/dev/null || nf_ensure_packages npm
}

# nf_build [TARGET...]: configures once, then builds (everything when no target given).
nf_build() {
  nf_ensure_packages "${NF_BUILD_PACKAGES[@]}"
  if [ ! -f "$NF_BUILD/build.ninja" ]; then
    nf_log "configuring $NF_BUILD"
    cmake -S "$NF_ROOT" -B "$NF_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  nf_log "building ${*:-everything}"
  ninja -C "$NF_BUILD" -j "${NF_JOBS:-2}" "$@"
}

# nf_wait_http URL SECONDS: waits for a 200.
nf_wait_http() {
  local url=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# nf_json_field JSON NAME: the first string value of "NAME" in a JSON text.
nf_json_field() {
  printf '%s' "$1" | grep -o "\"$2\":\"[^\"]*\"" | head -n1 | sed -e "s/^\"$2\":\"//" -e 's/"$//'
}

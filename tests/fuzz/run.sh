#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in their own tree and runs each
# as a CTest test for NEXUSFLOW_FUZZ_SECONDS (10 by default; set it for a long run).
# Called by tools/test; extra arguments go to ctest (e.g. -R anthropic).
set -euo pipefail
source "$(dirname "$0")/../../tools/lib/common.sh"

NF_FUZZ_BUILD="${NF_FUZZ_BUILD_DIR:-$NF_BUILD/fuzz}"
seconds="${NEXUSFLOW_FUZZ_SECONDS:-10}"

nf_ensure_packages "${NF_BUILD_PACKAGES[@]}" "${NF_FUZZ_PACKAGES[@]}"
if [ ! -f "$NF_FUZZ_BUILD/build.ninja" ]; then
  nf_log "configuring $NF_FUZZ_BUILD (clang, ASan + UBSan + libFuzzer)"
  CC=clang CXX=clang++ cmake -S "$NF_ROOT/tests/fuzz" -B "$NF_FUZZ_BUILD" -G Ninja \
    -DNEXUSFLOW_FUZZ_SECONDS="$seconds" >/dev/null
else
  cmake "$NF_FUZZ_BUILD" -DNEXUSFLOW_FUZZ_SECONDS="$seconds" >/dev/null
fi
nf_log "building the fuzz targets"
ninja -C "$NF_FUZZ_BUILD" -j "${NF_JOBS:-2}"
nf_log "fuzzing each target for ${seconds}s"
cd "$NF_FUZZ_BUILD"
ctest --output-on-failure -L fuzz -j "${NF_JOBS:-2}" "$@"

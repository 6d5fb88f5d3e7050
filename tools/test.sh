#!/usr/bin/env bash
# Set-up (tools/setup.sh) and every test, through CTest; then the scheduler's
# tests again in a ThreadSanitizer build (build-tsan/, GANTRY_TSAN=ON: only
# the torch-free libraries, since LibTorch is not instrumented).
# SKIP_TSAN=1 leaves the second part out. Last, every libFuzzer target
# (tools/fuzz.sh) for FUZZ_SECONDS each (10 by default here); SKIP_FUZZ=1
# leaves them out.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
"$ROOT/tools/setup.sh" "$@"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)"

if [ "${SKIP_TSAN:-0}" != 1 ]; then
  TSAN_DIR=${TSAN_DIR:-$ROOT/build-tsan}
  cmake -S "$ROOT" -B "$TSAN_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DGANTRY_TSAN=ON > /dev/null
  cmake --build "$TSAN_DIR" -j"$(nproc)" --target scheduler_tests
  # halt_on_error: any data race fails the run.
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
    ctest --test-dir "$TSAN_DIR" --output-on-failure -j"$(nproc)"
fi

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  FUZZ_SECONDS=${FUZZ_SECONDS:-10} "$ROOT/tools/fuzz.sh"
fi

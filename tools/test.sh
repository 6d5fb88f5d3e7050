#!/usr/bin/env bash
# Set-up (tools/setup.sh) and every test, through CTest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
"$ROOT/tools/setup.sh" "$@"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)"

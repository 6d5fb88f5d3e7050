#!/usr/bin/env bash
# Set-up (tools/setup.sh), then gantry-server on the built-in demo model on
# 127.0.0.1:50051 (LISTEN to change). Extra arguments go to gantry-server.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
"$ROOT/tools/setup.sh"
exec "$BUILD_DIR/server/gantry-server" --config "$ROOT/deploy/gantry.yaml" --listen "${LISTEN:-127.0.0.1:50051}" "$@"

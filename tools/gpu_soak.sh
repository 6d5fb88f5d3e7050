#!/usr/bin/env bash
# Issue 13's reliability soak on the GPU machine (../shared/device/README.md):
# serving_bench --soak_minutes 20 on the 8B-shaped model. One `run` call may
# last 10 minutes, so the soak runs detached (setsid survives the call) and
# later calls on the same warm machine watch it:
#   bash tools/gpu_soak.sh start   # build serving_bench, make the model, start
#                                  # the soak, then build and run the GPU test
#                                  # suites beside it (STEPS, as gpu_check.sh)
#   bash tools/gpu_soak.sh watch   # until the soak ends or WATCH_SECONDS pass
# Each call prints the soak's latest lines and leaves logs.tgz in $OUT. Carry
# .device (packed as tools/gpu_check.sh says); SOAK_MINUTES (default 20) and SOAK_STREAMS (64) set the workload.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-/tmp/build}
LOGS=/tmp/soak_logs
OUT=${OUT:-/tmp/out}
WATCH_SECONDS=${WATCH_SECONDS:-555}
mkdir -p "$OUT" "$LOGS"
T0=$SECONDS
finish() {
  tail -5 "$LOGS/soak.log" 2>/dev/null
  tar czf "$OUT/logs.tgz" -C "$LOGS" . 2>/dev/null
}
case "${1:-}" in
  start)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    (PYTHONUNBUFFERED=1 python3 "$ROOT/tools/make_test_models.py" --llama8b /tmp/llama8b > "$LOGS/model.log" 2>&1) &
    model_pid=$!
    TARGETS=serving_bench STEPS=build OUT="$LOGS/build_soak" BUILD="$BUILD" bash "$ROOT/tools/gpu_check.sh" \
      > "$LOGS/build_soak.log" 2>&1 || { tail -30 "$LOGS/build_soak.log"; finish; exit 1; }
    wait "$model_pid" || { tail -20 "$LOGS/model.log"; finish; exit 1; }
    echo "built and model made at $((SECONDS - T0)) s"
    . "$ROOT/.device/env.sh"
    setsid nohup bash -c "'$BUILD/bench/serving_bench' --model /tmp/llama8b --soak_minutes ${SOAK_MINUTES:-20} \
      --soak_streams ${SOAK_STREAMS:-64} > '$LOGS/soak.log' 2>&1; echo \"soak exit status \$?\" >> '$LOGS/soak.log'" \
      > /dev/null 2>&1 < /dev/null &
    # The test suites beside it: they share the GPU, not the soak's process.
    TARGETS="cuda_kernel_tests runtime_tests" STEPS="${STEPS:-build kernels runtime}" OUT="$LOGS/tests" \
      BUILD="$BUILD" timeout $((WATCH_SECONDS - (SECONDS - T0))) bash "$ROOT/tools/gpu_check.sh" 2>&1 \
      | grep -E "PASSED|FAILED|SKIPPED|error" | head -20
    ;;
  watch) ;;
  *) echo "usage: $0 start|watch" >&2; exit 2 ;;
esac
while ! grep -q "soak exit status" "$LOGS/soak.log" 2>/dev/null && [ $((SECONDS - T0)) -lt "$WATCH_SECONDS" ]; do
  sleep 5
done
finish

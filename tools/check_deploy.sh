#!/usr/bin/env bash
# The container check of issue 15 (minutes; not part of tools/test.sh). As root:
#   1. Docker's daemon, docker-compose and debootstrap (installed from Debian
#      when missing; the daemon started when it is not running);
#   2. the Debian 12 base image (tools/make_base_image.sh, when missing);
#   3. the CPU image (deploy/docker/Dockerfile) and Debian's Prometheus image;
#   4. the compose stack with the CPU profile (deploy/compose.yaml), on host
#      ports that do not clash with tools/serve.sh;
#   5. a chat completion through the adapter, gantry-health and gantry-cli
#      inside the server's container;
#   6. Prometheus in the stack has scraped both (its HTTP API);
#   7. Grafana answers with the provisioned datasource and dashboard, where
#      its image is there or can be pulled (GRAFANA_IMAGE); otherwise SKIPPED;
#   8. the stack stops cleanly (server and adapter exit 0 on SIGTERM).
# KEEP=1 leaves the stack running; JOBS (2) compile jobs for the image;
# SKIP_BUILD=1 uses the CPU and Prometheus images already there; CUDA_BUILD=0
# leaves out the attempt at the CUDA image.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PROJECT=${PROJECT:-gantry-check}
JOBS=${JOBS:-2}
export GANTRY_BIND=127.0.0.1
export GANTRY_GRPC_PORT=${GANTRY_GRPC_PORT:-15051}
export GANTRY_HTTP_PORT=${GANTRY_HTTP_PORT:-18080}
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-19090}
export GRAFANA_PORT=${GRAFANA_PORT:-13000}
export GRAFANA_IMAGE=${GRAFANA_IMAGE:-grafana/grafana-oss:11.2.0}
export GRAFANA_ADMIN_PASSWORD=${GRAFANA_ADMIN_PASSWORD:-admin}
export GANTRY_FLAVOUR=cpu

passed=0 failed=0 skipped=0
pass() { echo "check_deploy: PASS $*"; passed=$((passed + 1)); }
fail() { echo "check_deploy: FAIL $*"; failed=$((failed + 1)); }
skip() { echo "check_deploy: SKIPPED $*"; skipped=$((skipped + 1)); }
finish() {
  echo "check_deploy: $passed passed, $failed failed, $skipped skipped"
  [ "$failed" -eq 0 ]
  exit $?
}
# grep, quiet, reading all its input: `grep -q` stops at the first match, and
# under pipefail the writer's SIGPIPE would fail the pipeline.
has() { grep "$@" > /dev/null; }
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local seconds=$1
  shift
  for _ in $(seq "$seconds"); do
    "$@" > /dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

# 1. Tools. Builds need BuildKit (only the chosen flavour's stages are built):
# `docker buildx`, or a client that has BuildKit built in (Debian's 20.10).
missing=()
command -v dockerd > /dev/null || missing+=(docker.io)
command -v docker-compose > /dev/null || docker compose version > /dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap > /dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "check_deploy: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
if ! docker info > /dev/null 2>&1; then
  echo "check_deploy: starting dockerd (log: /tmp/dockerd.log)"
  # Low priority: image builds compile C++ on the machine's shared cores.
  nohup nice -n 19 dockerd > /tmp/dockerd.log 2>&1 &
  wait_for 60 docker info || { fail "Docker's daemon does not start (see /tmp/dockerd.log)"; finish; }
fi
if docker buildx version > /dev/null 2>&1; then
  BUILD=(docker build)
elif [ -x /usr/bin/docker ] && DOCKER_BUILDKIT=1 /usr/bin/docker build --help 2>/dev/null | has -- --secret; then
  BUILD=(env DOCKER_BUILDKIT=1 /usr/bin/docker build)
else
  fail "no BuildKit-capable docker client (install docker-buildx)"
  finish
fi
if docker compose version > /dev/null 2>&1; then
  COMPOSE_BIN=(docker compose)
else
  COMPOSE_BIN=(docker-compose)
fi
COMPOSE=("${COMPOSE_BIN[@]}" -p "$PROJECT" -f deploy/compose.yaml --profile cpu)

# 2. Base image.
if tools/make_base_image.sh; then pass "base image debian:bookworm"; else fail "base image"; finish; fi

# 3. Images (SKIP_BUILD=1: use gantry:cpu and gantry-prometheus:bookworm as
# they are, when there).
built() { [ "${SKIP_BUILD:-0}" = 1 ] && docker image inspect "$1" > /dev/null 2>&1; }
if built gantry:cpu; then
  skip "CPU image build (SKIP_BUILD=1; gantry:cpu of $(docker image inspect -f '{{.Created}}' gantry:cpu))"
elif nice -n 19 "${BUILD[@]}" --progress=plain -f deploy/docker/Dockerfile --build-arg FLAVOUR=cpu \
    --build-arg JOBS="$JOBS" -t gantry:cpu . > /tmp/check_deploy_build_cpu.log 2>&1; then
  pass "CPU image gantry:cpu ($(docker image inspect -f '{{.Size}}' gantry:cpu | awk '{printf "%.0f MB", $1/1e6}'))"
else
  tail -30 /tmp/check_deploy_build_cpu.log
  fail "CPU image (log: /tmp/check_deploy_build_cpu.log)"
  finish
fi
if built gantry-prometheus:bookworm; then
  skip "Prometheus image build (SKIP_BUILD=1)"
elif nice -n 19 "${BUILD[@]}" --progress=plain -f deploy/docker/prometheus.Dockerfile -t gantry-prometheus:bookworm \
    deploy > /tmp/check_deploy_build_prometheus.log 2>&1; then
  pass "Prometheus image gantry-prometheus:bookworm"
else
  tail -30 /tmp/check_deploy_build_prometheus.log
  fail "Prometheus image"
  finish
fi
# The CUDA flavour as far as this machine allows: its stages share the CPU
# build's base; NVIDIA's repository and the LibTorch zip need the network.
if [ "${CUDA_BUILD:-1}" != 1 ]; then
  skip "CUDA image build (CUDA_BUILD=0)"
elif nice -n 19 "${BUILD[@]}" --progress=plain -f deploy/docker/Dockerfile --build-arg FLAVOUR=cuda \
    --build-arg JOBS="$JOBS" -t gantry:cuda . > /tmp/check_deploy_build_cuda.log 2>&1; then
  pass "CUDA image gantry:cuda"
elif has -e "Could not resolve host" -e "Failed to connect" -e "curl: (6)" -e "curl: (7)" -e "curl: (28)" \
    /tmp/check_deploy_build_cuda.log; then
  skip "CUDA image: stopped at $(grep -o -m1 'https\?://[^/ ]*' /tmp/check_deploy_build_cuda.log | tail -1) (not reachable here; log: /tmp/check_deploy_build_cuda.log)"
else
  tail -30 /tmp/check_deploy_build_cuda.log
  fail "CUDA image (log: /tmp/check_deploy_build_cuda.log)"
fi
# Lint: dockerfile-utils (npm) checks instructions and their arguments.
if command -v npx > /dev/null && out=$(npx --yes dockerfile-utils@0.16.3 lint deploy/docker/Dockerfile 2>&1 &&
    npx --yes dockerfile-utils@0.16.3 lint deploy/docker/prometheus.Dockerfile 2>&1); then
  pass "Dockerfiles lint clean (dockerfile-utils)"
elif command -v npx > /dev/null; then
  fail "Dockerfile lint: $out"
else
  skip "Dockerfile lint: no npx"
fi
services=(gantry-server-cpu gantry-adapter prometheus)
grafana=0
if docker image inspect "$GRAFANA_IMAGE" > /dev/null 2>&1 || timeout 60 docker pull -q "$GRAFANA_IMAGE" > /dev/null 2>&1; then
  services+=(grafana)
  grafana=1
fi

# 4. The stack.
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then "${COMPOSE[@]}" down -v -t 60 > /dev/null 2>&1; fi
}
trap cleanup EXIT
"${COMPOSE[@]}" down -v > /dev/null 2>&1
if "${COMPOSE[@]}" up -d --no-build "${services[@]}"; then
  pass "compose up --profile cpu: ${services[*]}"
else
  fail "compose up"
  finish
fi
container() { "${COMPOSE[@]}" ps -q "$1"; }
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$(container "$1")")" = healthy ]; }
for s in gantry-server-cpu gantry-adapter prometheus; do
  if wait_for 180 healthy "$s"; then
    pass "$s healthy (its compose health check)"
  else
    fail "$s not healthy"
    docker logs --tail 30 "$(container "$s")"
  fi
done

# 5. The adapter and the server.
http=http://127.0.0.1:$GANTRY_HTTP_PORT
reply=$(curl -fsS "$http/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "demo", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "seed": 1}')
if echo "$reply" | has '"chat.completion"' && echo "$reply" | has '"completion_tokens"'; then
  pass "chat completion through the adapter: ${reply:0:160}..."
else
  fail "chat completion: $reply"
fi
stream=$(curl -fsSN "$http/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "demo", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": true}')
if echo "$stream" | has '^data: \[DONE\]'; then pass "streamed chat completion"; else fail "streamed chat: $stream"; fi
server=$(container gantry-server-cpu)
if out=$(docker exec "$server" gantry-health) && [ "$out" = SERVING ]; then
  pass "gantry-health in the server container: $out"
else
  fail "gantry-health: $out"
fi
if out=$(docker exec "$server" gantry-health demo); then pass "gantry-health demo: $out"; else fail "gantry-health demo: $out"; fi
if out=$(docker exec "$server" gantry-cli models 2>&1) && echo "$out" | has "demo .*ready"; then
  pass "gantry-cli models: $(echo "$out" | head -1)"
else
  fail "gantry-cli models: $out"
fi
if out=$(docker exec "$server" gantry-cli chat --model demo --max_tokens 4 "Hi" 2>&1); then
  pass "gantry-cli chat in the server container"
else
  fail "gantry-cli chat: $out"
fi
if [ "$(docker exec "$server" id -u)" = 10001 ]; then pass "the server runs as uid 10001"; else fail "server's user"; fi
models_rw=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/models"}}{{.RW}}{{end}}{{end}}' "$server")
if [ "$models_rw" = false ]; then pass "/models is mounted read-only"; else fail "/models mount RW=$models_rw"; fi

# 6. Prometheus scraped both: every target up, and series from each.
prom=http://127.0.0.1:$PROMETHEUS_PORT
query() { curl -fsS "$prom/api/v1/query" --data-urlencode "query=$1"; }
scraped() { query "$1" | has '"value":\[[0-9.]*,"[1-9]'; }
for q in 'up{job="gantry-server"}' 'up{job="gantry-adapter"}' 'gantry_model_state{model="demo",state="ready"}' \
         'sum(gantry_requests_total{model="demo"})' 'sum(gantry_adapter_requests_total)'; do
  if wait_for 60 scraped "$q"; then pass "Prometheus: $q"; else fail "Prometheus: $q: $(query "$q")"; fi
done

# 7. Grafana.
if [ "$grafana" = 1 ]; then
  grafana_url=http://127.0.0.1:$GRAFANA_PORT
  auth=(-u "admin:$GRAFANA_ADMIN_PASSWORD")
  if wait_for 120 curl -fsS "$grafana_url/api/health" &&
     curl -fsS "${auth[@]}" "$grafana_url/api/dashboards/uid/gantry-overview" | has '"title":"Gantry"' &&
     curl -fsS "${auth[@]}" "$grafana_url/api/datasources/uid/gantry-prometheus" | has '"url":"http://prometheus:9090"'; then
    pass "Grafana: dashboard gantry-overview and datasource gantry-prometheus provisioned"
  else
    fail "Grafana: dashboard or datasource missing"
  fi
else
  skip "Grafana: image $GRAFANA_IMAGE is not here and cannot be pulled (no registry reachable; Debian does not package Grafana)"
fi

# The gpu profile's reservation reaches the engine as a device request (it
# cannot start here: no NVIDIA runtime). gantry:cpu stands in for gantry:cuda
# when that is missing; only the container's settings are looked at.
tagged=0
if ! docker image inspect gantry:cuda > /dev/null 2>&1; then docker tag gantry:cpu gantry:cuda && tagged=1; fi
GPU_COMPOSE=("${COMPOSE_BIN[@]}" -p "$PROJECT-gpu" -f deploy/compose.yaml --profile gpu)
if "${GPU_COMPOSE[@]}" up --no-build --no-start gantry-server > /dev/null 2>&1; then
  request=$(docker inspect -f '{{json .HostConfig.DeviceRequests}}' "$("${GPU_COMPOSE[@]}" ps -q gantry-server)")
  if echo "$request" | has '"Driver":"nvidia","Count":1' && echo "$request" | has '"gpu"'; then
    pass "gpu profile: the GPU reservation reaches Docker as $request (not started: no GPU here)"
  else
    fail "gpu profile: device requests $request"
  fi
else
  fail "gpu profile: compose could not create gantry-server"
fi
"${GPU_COMPOSE[@]}" down -v > /dev/null 2>&1
[ "$tagged" = 1 ] && docker rmi gantry:cuda > /dev/null

# 8. Stop: SIGTERM, drain, exit 0.
if [ "${KEEP:-0}" = 1 ]; then
  echo "check_deploy: KEEP=1: the stack stays up (${COMPOSE[*]} down -v to stop it)"
  trap - EXIT
  finish
fi
adapter=$(container gantry-adapter)
"${COMPOSE[@]}" stop -t 60 > /dev/null 2>&1
for c in "$server" "$adapter"; do
  name=$(docker inspect -f '{{.Name}}' "$c")
  code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
  if [ "$code" = 0 ]; then pass "$name stopped cleanly (exit 0)"; else fail "$name exit code $code"; fi
done
if docker logs "$server" 2>&1 | has "draining"; then pass "the server drained on SIGTERM"; else fail "no drain in the server's log"; fi
"${COMPOSE[@]}" down -v > /dev/null 2>&1 && pass "compose down"
trap - EXIT
finish

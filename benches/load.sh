#!/usr/bin/env bash
# Load benchmark: the mock provider called directly, through the minimal Pingora proxy, through
# nginx and through Sluice, in one run, at concurrency 1, 16 and 64; plus streams: time to first
# byte at concurrency 1, throughput and CPU per stream at 64. Prints a table and writes bench-results/load-<time>.{json,md}.
#
#   bash benches/load.sh                 # defaults: 8 s per point after 2 s warm-up
#   DURATION=20 bash benches/load.sh     # longer points
#   ROUNDS=5 bash benches/load.sh        # more rounds (each point is the median over rounds)
#
# Pinning (2-core machine): the proxy under test runs alone on PROXY_CPUS (default core 0) with
# one worker thread; the mock provider and the load generator share HARNESS_CPUS (default core 1).
# Every target gets the same harness, so the ratios compare like with like.
#
# Idle vCPUs: on a KVM guest whose idle driver is haltpoll with guest_halt_poll_ns 0 (the
# machines here), an idle vCPU halts at once and every wake-up goes through the hypervisor;
# at concurrency 1 each proxied request waits on four of them, which then dominate the "added
# latency" of every proxy (the Pingora floor: 141 µs p50 with 0, 27 µs with 200 µs of polling,
# same run). So for the run the guest polls HALT_POLL_NS (default 200000) before halting, as a
# benchmark pins the CPU governor; the old value is restored on exit. HALT_POLL_NS= (empty)
# leaves the machine as it is. The report says which applied.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
PROXY_CPUS=${PROXY_CPUS:-0}
HARNESS_CPUS=${HARNESS_CPUS:-1}
PROXY_THREADS=${PROXY_THREADS:-1}
CONCURRENCY=${CONCURRENCY:-"1 16 64"}
# Streams: time to first byte at 1, throughput and CPU per stream at 64 (issue 15).
STREAM_CONCURRENCY=${STREAM_CONCURRENCY:-"1 64"}
SLUICE_ACCESS_LOG=${SLUICE_ACCESS_LOG:-true}
# One spend-log row per request into the embedded SQLite store, as by default; false sets
# general_settings.disable_spend_logs (spend counters stay).
SLUICE_SPEND_LOGS=${SLUICE_SPEND_LOGS:-true}
SLUICE_WORK_STEALING=${SLUICE_WORK_STEALING:-true}
TARGETS=${TARGETS:-"direct pingora nginx sluice sluice-no-spend-logs sluice-anthropic sluice-vkey sluice-shuffle sluice-router sluice-failover"}
STREAMING=${STREAMING:-1}
HALT_POLL_NS=${HALT_POLL_NS-200000}
HALT_POLL=/sys/module/haltpoll/parameters/guest_halt_poll_ns
MOCK_PORT=18080 BASELINE_PORT=18081 NGINX_PORT=18082 SLUICE_PORT=18083 SLUICE_NO_LOGS_PORT=18084 SLUICE_ROUTER_PORT=18085 SLUICE_SHUFFLE_PORT=18086
KEY=sk-bench-master-key

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need taskset || ! need cmake; then
  echo "installing nginx, util-linux, cmake (Debian packages)..." >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light util-linux cmake >/dev/null
fi

for p in $MOCK_PORT $BASELINE_PORT $NGINX_PORT $SLUICE_PORT $SLUICE_NO_LOGS_PORT $SLUICE_ROUTER_PORT $SLUICE_SHUFFLE_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done

cargo build --release -q -p sluice -p sluice-mock -p pingora-baseline -p sluice-loadgen
BIN=target/release
WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX)
PIDS=()
HALT_POLL_WAS=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true
  [ -n "$HALT_POLL_WAS" ] && echo "$HALT_POLL_WAS" >"$HALT_POLL" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
IDLE="machine default"
if [ -r "$HALT_POLL" ]; then
  IDLE="guest_halt_poll_ns $(cat "$HALT_POLL") (machine default)"
  if [ -n "$HALT_POLL_NS" ] && [ -w "$HALT_POLL" ]; then
    HALT_POLL_WAS=$(cat "$HALT_POLL")
    if echo "$HALT_POLL_NS" >"$HALT_POLL" 2>/dev/null; then
      IDLE="guest_halt_poll_ns $HALT_POLL_NS for the run (machine default $HALT_POLL_WAS)"
    else
      HALT_POLL_WAS=""
    fi
  fi
fi
echo "idle vCPUs: $IDLE" >&2

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 did not open" >&2
  exit 1
}

# --- the mock provider (harness cores)
taskset -c "$HARNESS_CPUS" "$BIN/sluice-mock" --listen "127.0.0.1:$MOCK_PORT" --threads 1 --served-model gpt-4o-mini-2024-07-18 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)

# --- the minimal Pingora proxy (proxy cores)
taskset -c "$PROXY_CPUS" "$BIN/pingora-baseline" --listen "127.0.0.1:$BASELINE_PORT" --upstream "127.0.0.1:$MOCK_PORT" --threads "$PROXY_THREADS" >"$WORK/baseline.log" 2>&1 &
PIDS+=($!)

# --- nginx as a plain reverse proxy with upstream keep-alive (proxy cores)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<EOF
worker_processes $PROXY_THREADS;
worker_cpu_affinity auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
taskset -c "$PROXY_CPUS" nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" -g 'daemon off;' >"$WORK/nginx.out" 2>&1 &
PIDS+=($!)

# --- Sluice with a realistic config: master key, two deployments, metrics on, access log on
cat >"$WORK/sluice.yaml" <<EOF
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-upstream-a
      rpm: 10000
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$MOCK_PORT
      api_key: sk-upstream-b
      rpm: 10000
  # The translated path: the same mock answering in Anthropic's Messages format.
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: http://127.0.0.1:$MOCK_PORT
      api_key: sk-ant-bench
litellm_settings:
  callbacks: ["prometheus"]
general_settings:
  master_key: $KEY
  disable_spend_logs: $([ "$SLUICE_SPEND_LOGS" = true ] && echo false || echo true)
sluice_settings:
  threads: $PROXY_THREADS
  access_log: $SLUICE_ACCESS_LOG
  work_stealing: $SLUICE_WORK_STEALING
EOF
SLUICE_DATABASE_PATH="$WORK/sluice.db" taskset -c "$PROXY_CPUS" "$BIN/sluice" --config "$WORK/sluice.yaml" --host 127.0.0.1 --port "$SLUICE_PORT" >"$WORK/sluice.log" 2>&1 &
PIDS+=($!)
# The same gateway without spend-log rows (the sluice-no-spend-logs target): issue 2's feature
# set (master key, two deployments, metrics, access log), so the cost of one row per request
# (issue 4) shows as the difference between the two.
sed 's/^  disable_spend_logs: .*/  disable_spend_logs: true/' "$WORK/sluice.yaml" >"$WORK/sluice-no-spend-logs.yaml"
SLUICE_DATABASE_PATH="$WORK/sluice-no-spend-logs.db" taskset -c "$PROXY_CPUS" "$BIN/sluice" --config "$WORK/sluice-no-spend-logs.yaml" --host 127.0.0.1 --port "$SLUICE_NO_LOGS_PORT" >"$WORK/sluice-no-spend-logs.log" 2>&1 &
PIDS+=($!)

# The router configured (the sluice-router and sluice-failover targets): two deployments of
# gpt-4o, num_retries 2, a fallback group, latency-based routing (issue 16). sluice-failover
# sends the same instance requests on which the second deployment answers 429 (retry-after 1)
# to half its calls: the retries and cooldowns must hide every one from the client.
cat >"$WORK/sluice-router.yaml" <<EOF
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-upstream-a
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-mini-2024-07-18
      api_base: http://127.0.0.1:$MOCK_PORT
      api_key: sk-upstream-b
  - model_name: gpt-4o-backup
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$MOCK_PORT
      api_key: sk-upstream-c
router_settings:
  routing_strategy: ${ROUTER_STRATEGY:-latency-based-routing}
  num_retries: 2
  fallbacks: [{"gpt-4o": ["gpt-4o-backup"]}]
litellm_settings:
  callbacks: ["prometheus"]
general_settings:
  master_key: $KEY
  disable_spend_logs: $([ "$SLUICE_SPEND_LOGS" = true ] && echo false || echo true)
sluice_settings:
  threads: $PROXY_THREADS
  access_log: $SLUICE_ACCESS_LOG
  work_stealing: $SLUICE_WORK_STEALING
EOF
SLUICE_DATABASE_PATH="$WORK/sluice-router.db" taskset -c "$PROXY_CPUS" "$BIN/sluice" --config "$WORK/sluice-router.yaml" --host 127.0.0.1 --port "$SLUICE_ROUTER_PORT" >"$WORK/sluice-router.log" 2>&1 &
PIDS+=($!)
# The same config with simple-shuffle (the sluice-shuffle target): what the router's strategy
# costs, with everything else equal.
sed 's/^  routing_strategy: .*/  routing_strategy: simple-shuffle/' "$WORK/sluice-router.yaml" >"$WORK/sluice-shuffle.yaml"
SLUICE_DATABASE_PATH="$WORK/sluice-shuffle.db" taskset -c "$PROXY_CPUS" "$BIN/sluice" --config "$WORK/sluice-shuffle.yaml" --host 127.0.0.1 --port "$SLUICE_SHUFFLE_PORT" >"$WORK/sluice-shuffle.log" 2>&1 &
PIDS+=($!)

for p in $MOCK_PORT $BASELINE_PORT $NGINX_PORT $SLUICE_PORT $SLUICE_NO_LOGS_PORT $SLUICE_ROUTER_PORT $SLUICE_SHUFFLE_PORT; do wait_port "$p"; done
# taskset execs its command, so $! above is the server's own pid.
declare -A PID_OF=(
  [pingora]=${PIDS[1]}
  [nginx]="${PIDS[2]} $(pgrep -P "${PIDS[2]}" | tr '\n' ' ')"
  [sluice]=${PIDS[3]}
  [sluice-anthropic]=${PIDS[3]}
  [sluice-vkey]=${PIDS[3]}
  [sluice-no-spend-logs]=${PIDS[4]}
  [sluice-router]=${PIDS[5]}
  [sluice-failover]=${PIDS[5]}
  [sluice-shuffle]=${PIDS[6]}
)
# A virtual key with a budget and rate limits (the sluice-vkey target): every request is looked
# up in the key cache, its worst case reserved and settled, its spend logged.
VKEY=$(curl -fsS "http://127.0.0.1:$SLUICE_PORT/key/generate" -H "authorization: Bearer $KEY" \
  -H 'content-type: application/json' \
  -d '{"max_budget": 1000000, "rpm_limit": 100000000, "tpm_limit": 100000000000}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
for pid in "${PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null || { echo "a benchmark process exited at start-up; logs in $WORK" >&2; cat "$WORK"/*.log >&2; exit 1; }
done

CHAT='{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello, how are you today?"}]}'
STREAM='{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Hello, how are you today?"}]}'
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

# CPU time (user + system, in clock ticks) used so far by the processes serving a target. The
# machine is shared and wall-clock throughput drifts with the neighbours; CPU per request is the
# steadier measure of what each proxy costs.
TICKS=$(getconf CLK_TCK)
cpu_ticks() { # pids...
  local total=0
  for pid in "$@"; do
    for task in /proc/"$pid"/task/*; do
      local line
      read -r line <"$task/stat" || continue
      # Thread names may hold spaces: split after the closing parenthesis (fields 3 onwards).
      local -a f=(${line##*) })
      total=$((total + f[11] + f[12]))
    done
  done
  echo "$total"
}
# The body a target gets: the translated path asks for the Anthropic-backed group.
body_for() { # target body
  case $1 in
  sluice-anthropic) echo "${2/\"gpt-4o\"/\"claude\"}" ;;
  # The mock answers 429 to half of deployment b's calls.
  sluice-failover) echo "${2%\}},\"mock\":{\"for_model\":{\"gpt-4o-mini-2024-07-18\":{\"status\":429,\"status_ratio\":0.5}}}}" ;;
  *) echo "$2" ;;
  esac
}
key_for() { # target
  if [ "$1" = sluice-vkey ]; then echo "$VKEY"; else echo "$KEY"; fi
}
run() { # label url concurrency body
  local target=${1#*/} before after
  local pids=${PID_OF[$target]:-}
  before=$(cpu_ticks $pids)
  taskset -c "$HARNESS_CPUS" "$BIN/sluice-loadgen" --label "$1" --url "$2" --concurrency "$3" \
    --duration "$DURATION" --warmup "$WARMUP" --body "$4" --header "authorization: Bearer $(key_for "$target")" >"$WORK/point.json"
  after=$(cpu_ticks $pids)
  python3 - "$WORK/point.json" "$((after - before))" "$TICKS" "$WARMUP" "$DURATION" "${pids:-none}" >>"$RESULTS" <<'PY'
import json, sys
point, ticks, hz, warmup, duration, pids = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
r = json.load(open(point))
served = r["rps"] * (warmup + duration)
r["cpu_us_per_request"] = (ticks / hz) * 1e6 / served if pids != "none" and served > 0 else None
print(json.dumps(r))
PY
}

declare -A URL=(
  [direct]="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
  [pingora]="http://127.0.0.1:$BASELINE_PORT/v1/chat/completions"
  [nginx]="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
  [sluice]="http://127.0.0.1:$SLUICE_PORT/v1/chat/completions"
  [sluice-anthropic]="http://127.0.0.1:$SLUICE_PORT/v1/chat/completions"
  [sluice-vkey]="http://127.0.0.1:$SLUICE_PORT/v1/chat/completions"
  [sluice-no-spend-logs]="http://127.0.0.1:$SLUICE_NO_LOGS_PORT/v1/chat/completions"
  [sluice-router]="http://127.0.0.1:$SLUICE_ROUTER_PORT/v1/chat/completions"
  [sluice-failover]="http://127.0.0.1:$SLUICE_ROUTER_PORT/v1/chat/completions"
  [sluice-shuffle]="http://127.0.0.1:$SLUICE_SHUFFLE_PORT/v1/chat/completions"
)
# Targets are interleaved within each round, and the order rotates from round to round, so a
# noisy neighbour on the shared machine (or whatever ran just before) hurts them alike; the
# report takes the median over rounds.
rotate() { # rotate <n> <items...>: the items starting at position n (mod count)
  local n=$1; shift; local items=("$@"); local k=${#items[@]}
  for ((i = 0; i < k; i++)); do printf '%s ' "${items[$(((i + n) % k))]}"; done
}
for round in $(seq 1 "$ROUNDS"); do
  ORDER=$(rotate "$((round - 1))" $TARGETS)
  for c in $CONCURRENCY; do
    for target in $ORDER; do
      echo "round $round: chat   c=$c $target" >&2
      run "chat/$target" "${URL[$target]}" "$c" "$(body_for "$target" "$CHAT")"
    done
  done
  [ "$STREAMING" = 1 ] || continue
  for c in $STREAM_CONCURRENCY; do
    for target in $ORDER; do
      echo "round $round: stream c=$c $target" >&2
      run "stream/$target" "${URL[$target]}" "$c" "$(body_for "$target" "$STREAM")"
    done
  done
done

mkdir -p bench-results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
cp "$RESULTS" "bench-results/load-$STAMP.jsonl"
python3 benches/report.py "$RESULTS" "$PROXY_CPUS" "$HARNESS_CPUS" "$PROXY_THREADS" "$ROUNDS" "$DURATION" "$IDLE" | tee "bench-results/load-$STAMP.md"
if grep -q '"errors": *[1-9]' "$RESULTS"; then
  echo "warning: some requests failed (see errors column)" >&2
fi

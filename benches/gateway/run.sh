#!/usr/bin/env bash
# Side-by-side benchmark of LLM gateways in front of an OpenRouter-compatible
# mock upstream: request overhead (healthy) and failover (primary always 429).
# Scenarios: A healthy, B primary always 429, C primary 30% 429, D primary at capacity,
# S healthy with every request streamed (time to first token, streams at 32 connections).
#
#   ./run.sh [--out PATH] [--suts baseline,nullproxy,litellm,portkey,ours] [--scenarios A,B,C,D,S]
#            [--duration 10] [--connections 32] [--warmup 3] [--probe 5]
#            [--latency-ms 0] [--retry-after 1] [--no-pin]
#
# Every option also has an env var (DURATION, CONNECTIONS, WARMUP, PROBE_DURATION,
# LATENCY_MS, RETRY_AFTER, SUTS, SCENARIOS, PIN=0|1, OUT). Durations are seconds.
# The `ours` slot runs $OURS_CMD (default: the crate's gateway example as ./setup.sh built
# it) with PORT, UPSTREAM_URL, PRIMARY_MODEL, FALLBACK_MODELS and UPSTREAM_API_KEY in its
# environment; see README.md.
# All traffic stays on 127.0.0.1; every load is bounded by `timeout`; every
# process started here is stopped by its PID (process group) on exit.
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PEERS="$HERE/.peers"
OURS_BIN="${OURS_BIN:-${OURS_TARGET_DIR:-$PEERS/target}/release/examples/proxy}"
# The crate's gateway example (examples/proxy): it reads PRIMARY_MODEL, FALLBACK_MODELS and
# UPSTREAM_API_KEY from the environment run.sh gives it.
if [ -z "${OURS_CMD+x}" ] && [ -x "$OURS_BIN" ]; then
  OURS_CMD='exec "$OURS_BIN" --port "$PORT" --upstream "$UPSTREAM_URL"'
fi
export OURS_BIN
OHA="$PEERS/bin/oha"
MOCK="$HERE/mock-upstream/target/release/mock-upstream"
NULLPROXY="$HERE/mock-upstream/target/release/null-proxy"
STREAM_LOAD="$HERE/mock-upstream/target/release/stream-load"
LIB="$HERE/lib/benchlib.py"

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
WARMUP="${WARMUP:-3}"
PROBE_DURATION="${PROBE_DURATION:-5}"
LATENCY_MS="${LATENCY_MS:-0}"
RETRY_AFTER="${RETRY_AFTER:-1}"
REQ_TIMEOUT="${REQ_TIMEOUT:-30}"
SUTS="${SUTS:-baseline,nullproxy,litellm,portkey,ours}"
SCENARIOS="${SCENARIOS:-A,B,S}"
PIN="${PIN:-1}"
OUT="${OUT:-}"
MOCK_PORT="${MOCK_PORT:-18080}"
LITELLM_PORT="${LITELLM_PORT:-18081}"
PORTKEY_PORT="${PORTKEY_PORT:-18082}"
OURS_PORT="${OURS_PORT:-18083}"
NULLPROXY_PORT="${NULLPROXY_PORT:-18084}"
OURS_PATH="${OURS_PATH:-/api/v1/chat/completions}"
OURS_START_TIMEOUT="${OURS_START_TIMEOUT:-300}"
LITELLM_PROVIDER="${LITELLM_PROVIDER:-openrouter}"   # or: openai
PORTKEY_PROVIDER="${PORTKEY_PROVIDER:-openrouter}"   # or: openai
# upstream model ids (real OpenRouter ids, so gateways that price/inspect models take
# their normal path; the mock accepts any id)
PRIMARY_MODEL="${PRIMARY_MODEL:-openai/gpt-4o-mini}"
FALLBACK_MODEL="${FALLBACK_MODEL:-anthropic/claude-3-haiku}"
UPSTREAM_KEY="sk-or-mock-key"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --suts) SUTS="$2"; shift 2 ;;
    --scenarios) SCENARIOS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --probe) PROBE_DURATION="$2"; shift 2 ;;
    --latency-ms) LATENCY_MS="$2"; shift 2 ;;
    --retry-after) RETRY_AFTER="$2"; shift 2 ;;
    --no-pin) PIN=0; shift ;;
    --pin) PIN=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 ;;
  esac
done
for v in DURATION CONNECTIONS WARMUP PROBE_DURATION LATENCY_MS REQ_TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "$v must be a whole number (seconds/ms), got '${!v}'" >&2; exit 2; }
done
[ "$(nproc)" -ge 2 ] || PIN=0

need=("$OHA" "$MOCK")
[[ ",$SCENARIOS," == *,S,* ]] && need+=("$STREAM_LOAD")
for f in "${need[@]}"; do
  [ -x "$f" ] || { echo "missing $f: run ./setup.sh first" >&2; exit 1; }
done

STAMP="$(date +%Y%m%d-%H%M%S)"
RUN_DIR="$HERE/results/run-$STAMP"
mkdir -p "$RUN_DIR"
[ -n "$OUT" ] || OUT="$RUN_DIR/results.json"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------ processes
STARTED=()   # PIDs (each the leader of its own process group) started by this script

alive() { [ -r "/proc/$1/stat" ] && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$1/stat" 2>/dev/null; }
group_alive() {
  local p
  for p in $(pgrep -g "$1" 2>/dev/null); do alive "$p" && return 0; done
  alive "$1"
}
stop_pid() {
  local pid="$1" i
  if group_alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for i in $(seq 100); do group_alive "$pid" || break; sleep 0.1; done
    if group_alive "$pid"; then
      log "pid $pid did not stop on SIGTERM, sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    fi
  fi
  wait "$pid" 2>/dev/null
  local keep=() p
  for p in "${STARTED[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  STARTED=("${keep[@]}")
}
cleanup() {
  local p
  for p in "${STARTED[@]}"; do stop_pid "$p"; done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

# start_bg CPU LOGFILE CMD... : starts CMD in its own session/process group,
# optionally pinned to CPU; sets BG_PID.
start_bg() {
  local cpu="$1" logf="$2"; shift 2
  if [ "$PIN" = 1 ] && [ -n "$cpu" ]; then
    setsid taskset -c "$cpu" "$@" >"$logf" 2>&1 </dev/null &
  else
    setsid "$@" >"$logf" 2>&1 </dev/null &
  fi
  BG_PID=$!
  STARTED+=("$BG_PID")
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# wait_port PORT PID TIMEOUT_S -> 0 when the port accepts, 1 if PID died / timed out
wait_port() {
  local port="$1" pid="$2" limit="$3" start now
  start=$(date +%s)
  while :; do
    port_open "$port" && return 0
    group_alive "$pid" || return 1
    now=$(date +%s)
    [ $((now - start)) -ge "$limit" ] && return 1
    sleep 0.2
  done
}
port_in_use_check() {
  if port_open "$1"; then
    echo "port $1 on 127.0.0.1 is already in use; set ${2}_PORT to a free port" >&2
    exit 1
  fi
}

# ------------------------------------------------------------------ pinning
SUT_CPU=""; AUX_CPU=""
OHA_THREADS=()
if [ "$PIN" = 1 ]; then
  SUT_CPU=1; AUX_CPU=0
  OHA_THREADS=(--worker-threads 1)
fi
aux() { if [ "$PIN" = 1 ]; then taskset -c "$AUX_CPU" "$@"; else "$@"; fi; }

# ------------------------------------------------------------------ bodies
BODY_TMPL="$HERE/config/body.template.json"
mk_body() { # MODEL STREAM(0|1) OUTFILE
  if [ "$2" = 1 ]; then
    sed -e "s#__MODEL__#$1#" -e 's#^{#{"stream":true,#' "$BODY_TMPL" >"$3"
  else
    sed -e "s#__MODEL__#$1#" "$BODY_TMPL" >"$3"
  fi
}

# ------------------------------------------------------------------ mock
MOCK_PID=""
mock_flags() {
  case "$1" in
    B) echo "--fail-model $PRIMARY_MODEL=429" ;;
    C) echo "--fail-rate $PRIMARY_MODEL=0.3:429" ;;
    A|S) echo "" ;;
    D) echo "--max-inflight $PRIMARY_MODEL=${CAPACITY:-8} --model-latency-ms $PRIMARY_MODEL=${CAP_LATENCY_MS:-20} --model-latency-ms $FALLBACK_MODEL=${CAP_LATENCY_MS:-20}" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}
start_mock() {
  local scen="$1" flags
  flags="$(mock_flags "$scen")" || exit 2
  # shellcheck disable=SC2086
  start_bg "$AUX_CPU" "$RUN_DIR/mock-$scen.log" "$MOCK" --listen "127.0.0.1:$MOCK_PORT" \
    --latency-ms "$LATENCY_MS" --retry-after "$RETRY_AFTER" $flags
  MOCK_PID=$BG_PID
  wait_port "$MOCK_PORT" "$MOCK_PID" 10 || { log "mock-upstream failed to start:"; cat "$RUN_DIR/mock-$scen.log" >&2; exit 1; }
}
mock_reset() { curl -s -m 5 -X POST "http://127.0.0.1:$MOCK_PORT/stats/reset" -o /dev/null; }
mock_stats() { curl -s -m 5 "http://127.0.0.1:$MOCK_PORT/stats" -o "$1"; }

# ------------------------------------------------------------------ SUT definitions
UPSTREAM_URL="http://127.0.0.1:$MOCK_PORT/api/v1"
LITELLM_KEY="sk-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

portkey_config() {
  local host="$UPSTREAM_URL"
  # Portkey appends the provider's endpoint to custom_host: openrouter -> /v1/chat/completions,
  # openai -> /chat/completions
  [ "$PORTKEY_PROVIDER" = openrouter ] && host="http://127.0.0.1:$MOCK_PORT/api"
  printf '{"strategy":{"mode":"fallback"},"targets":[%s,%s]}' \
    "{\"provider\":\"$PORTKEY_PROVIDER\",\"api_key\":\"$UPSTREAM_KEY\",\"custom_host\":\"$host\",\"override_params\":{\"model\":\"$PRIMARY_MODEL\"}}" \
    "{\"provider\":\"$PORTKEY_PROVIDER\",\"api_key\":\"$UPSTREAM_KEY\",\"custom_host\":\"$host\",\"override_params\":{\"model\":\"$FALLBACK_MODEL\"}}"
}

# sut_define NAME: sets URL, HDRS (array), REQ_MODEL, SUT_PORT, START_TIMEOUT; returns 1 to skip (SKIP_REASON)
sut_define() {
  SKIP_REASON=""; HDRS=(); SUT_PORT=""; START_TIMEOUT=180
  case "$1" in
    baseline)
      URL="$UPSTREAM_URL/chat/completions"; REQ_MODEL="$PRIMARY_MODEL"
      HDRS=("authorization: Bearer $UPSTREAM_KEY") ;;
    nullproxy)
      [ -x "$NULLPROXY" ] || { SKIP_REASON="null-proxy not built (run ./setup.sh)"; return 1; }
      SUT_PORT="$NULLPROXY_PORT"; URL="http://127.0.0.1:$SUT_PORT/api/v1/chat/completions"; REQ_MODEL="$PRIMARY_MODEL"
      HDRS=("authorization: Bearer $UPSTREAM_KEY") ;;
    litellm)
      [ -x "$PEERS/litellm-venv/bin/litellm" ] || { SKIP_REASON="LiteLLM not installed (run ./setup.sh)"; return 1; }
      SUT_PORT="$LITELLM_PORT"; URL="http://127.0.0.1:$SUT_PORT/v1/chat/completions"; REQ_MODEL="primary"
      HDRS=("authorization: Bearer $LITELLM_KEY") ;;
    portkey)
      [ -f "$PEERS/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ] || { SKIP_REASON="Portkey not installed (run ./setup.sh)"; return 1; }
      SUT_PORT="$PORTKEY_PORT"; URL="http://127.0.0.1:$SUT_PORT/v1/chat/completions"; REQ_MODEL="$PRIMARY_MODEL"
      HDRS=("x-portkey-config: $(portkey_config)") ;;
    ours)
      [ -n "${OURS_CMD:-}" ] || { SKIP_REASON="OURS_CMD not set and no gateway at $OURS_BIN (run ./setup.sh)"; return 1; }
      SUT_PORT="$OURS_PORT"; URL="http://127.0.0.1:$SUT_PORT$OURS_PATH"; REQ_MODEL="$PRIMARY_MODEL"
      START_TIMEOUT="$OURS_START_TIMEOUT"
      HDRS=("authorization: Bearer $UPSTREAM_KEY") ;;
    *) SKIP_REASON="unknown SUT '$1'"; return 1 ;;
  esac
  return 0
}

# sut_start NAME DIR: sets SUT_PID (empty for baseline)
sut_start() {
  local name="$1" dir="$2"
  SUT_PID=""
  case "$name" in
    baseline) return 0 ;;
    nullproxy)
      start_bg "$SUT_CPU" "$dir/sut.log" env PORT="$NULLPROXY_PORT" UPSTREAM_URL="$UPSTREAM_URL" "$NULLPROXY" ;;
    litellm)
      sed -e "s#__UPSTREAM__#$UPSTREAM_URL#" -e "s#__PROVIDER__#$LITELLM_PROVIDER#" \
        -e "s#__PRIMARY__#$PRIMARY_MODEL#" -e "s#__FALLBACK__#$FALLBACK_MODEL#" \
        "$HERE/config/litellm.yaml.tmpl" >"$dir/litellm.yaml"
      # cwd = run dir (LiteLLM may read a .env from cwd); offline switches for every
      # remote JSON it would otherwise fetch at start-up
      start_bg "$SUT_CPU" "$dir/sut.log" env -C "$dir" \
        LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True \
        LITELLM_LOCAL_AUTOROUTER_PRESETS=True LITELLM_LOCAL_BLOG_POSTS=True \
        LITELLM_LOCAL_POLICY_TEMPLATES=True LITELLM_MASTER_KEY="$LITELLM_KEY" \
        NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
        "$PEERS/litellm-venv/bin/litellm" --config "$dir/litellm.yaml" \
        --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 1 ;;
    portkey)
      start_bg "$SUT_CPU" "$dir/sut.log" env -C "$dir" \
        NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
        node --require "$HERE/lib/loopback-only.cjs" \
        "$PEERS/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" \
        "--port=$PORTKEY_PORT" --headless ;;
    ours)
      start_bg "$SUT_CPU" "$dir/sut.log" env -C "$HERE" \
        PORT="$OURS_PORT" UPSTREAM_URL="$UPSTREAM_URL" PRIMARY_MODEL="$PRIMARY_MODEL" \
        FALLBACK_MODELS="$FALLBACK_MODEL" UPSTREAM_API_KEY="$UPSTREAM_KEY" \
        NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
        bash -c "$OURS_CMD" ;;
  esac
  SUT_PID=$BG_PID
}

# run_oha OUTFILE DURATION_S CONNS BODYFILE  (bounded by timeout; -w waits for in-flight requests)
run_oha() {
  local out="$1" dur="$2" conns="$3" body="$4" h args=()
  for h in "${HDRS[@]}"; do args+=(-H "$h"); done
  aux timeout --kill-after=5 $((dur + REQ_TIMEOUT + 30)) "$OHA" -z "${dur}s" -c "$conns" -w \
    -t "${REQ_TIMEOUT}s" "${OHA_THREADS[@]}" --no-tui --output-format json --stats-success-breakdown \
    -m POST -H "content-type: application/json" "${args[@]}" -D "$body" "$URL" >"$out" 2>"$out.err"
}

# run_stream OUTFILE DURATION_S CONNS BODYFILE: the streaming load (scenario S), bounded
# like run_oha; stream-load prints one JSON object (streams/s, time to first token)
run_stream() {
  local out="$1" dur="$2" conns="$3" body="$4" h args=()
  for h in "${HDRS[@]}"; do args+=(--header "$h"); done
  aux timeout --kill-after=5 $((dur + REQ_TIMEOUT + 30)) "$STREAM_LOAD" --url "$URL" \
    --body "$body" --connections "$conns" --duration "$dur" --timeout "$REQ_TIMEOUT" \
    "${args[@]}" >"$out" 2>"$out.err"
}

smoke() { # DIR
  local dir="$1" h args=() code
  for h in "${HDRS[@]}"; do args+=(-H "$h"); done
  code=$(curl -s -m "$REQ_TIMEOUT" -o "$dir/smoke.json" -w '%{http_code}' -X POST \
    -H 'content-type: application/json' "${args[@]}" --data-binary @"$dir/body.json" "$URL")
  echo "smoke_status=$code" >>"$dir/meta.env"
  echo "smoke_result=$(python3 "$LIB" smoke json "$dir/smoke.json")" >>"$dir/meta.env"
  code=$(curl -s -N -m "$REQ_TIMEOUT" -o "$dir/smoke-stream.txt" -w '%{http_code}' -X POST \
    -H 'content-type: application/json' "${args[@]}" --data-binary @"$dir/body-stream.json" "$URL")
  echo "smoke_stream_status=$code" >>"$dir/meta.env"
  echo "smoke_stream_result=$(python3 "$LIB" smoke sse "$dir/smoke-stream.txt")" >>"$dir/meta.env"
}

# ------------------------------------------------------------------ record settings & versions
{
  echo "DURATION=${DURATION}s"; echo "CONNECTIONS=$CONNECTIONS"; echo "WARMUP=${WARMUP}s"
  echo "PROBE_DURATION=${PROBE_DURATION}s"; echo "LATENCY_MS=$LATENCY_MS"; echo "RETRY_AFTER=$RETRY_AFTER"
  echo "REQ_TIMEOUT=${REQ_TIMEOUT}s"; echo "PIN=$PIN"; echo "SUTS=$SUTS"; echo "SCENARIOS=$SCENARIOS"
  echo "LITELLM_PROVIDER=$LITELLM_PROVIDER"; echo "PORTKEY_PROVIDER=$PORTKEY_PROVIDER"
  echo "PRIMARY_MODEL=$PRIMARY_MODEL"; echo "FALLBACK_MODEL=$FALLBACK_MODEL"
  echo "OURS_CMD=${OURS_CMD:-}"; echo "STREAM=${STREAM:-0}"
} >"$RUN_DIR/settings.env"
{
  echo "litellm=$("$PEERS/litellm-venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || echo none)"
  echo "portkey_gateway=$(node -p "require('$PEERS/portkey/node_modules/@portkey-ai/gateway/package.json').version" 2>/dev/null || echo none)"
  echo "hono_node_server=$(node -p "require('$PEERS/portkey/node_modules/@hono/node-server/package.json').version" 2>/dev/null || echo none)"
  echo "oha=$("$OHA" --version 2>/dev/null | awk '{print $2}')"
  echo "node=$(node --version 2>/dev/null)"
  echo "python=$(python3 --version 2>&1 | awk '{print $2}')"
  echo "rustc=$(rustc --version 2>/dev/null | awk '{print $2}')"
} >"$RUN_DIR/versions.env"
: >"$RUN_DIR/order.txt"

port_in_use_check "$MOCK_PORT" MOCK
for s in ${SUTS//,/ }; do
  case "$s" in
    litellm) port_in_use_check "$LITELLM_PORT" LITELLM ;;
    portkey) port_in_use_check "$PORTKEY_PORT" PORTKEY ;;
    nullproxy) port_in_use_check "$NULLPROXY_PORT" NULLPROXY ;;
    ours) [ -n "${OURS_CMD:-}" ] && port_in_use_check "$OURS_PORT" OURS ;;
  esac
done

log "run dir: $RUN_DIR (pinning: $([ "$PIN" = 1 ] && echo 'SUT cpu1, mock+oha cpu0' || echo off))"

# ------------------------------------------------------------------ main loop
for scen in ${SCENARIOS//,/ }; do
  mock_flags "$scen" >/dev/null || exit 2
  log "== scenario $scen: starting mock-upstream $(mock_flags "$scen")"
  start_mock "$scen"
  for sut in ${SUTS//,/ }; do
    dir="$RUN_DIR/$scen-$sut"; mkdir -p "$dir"; : >"$dir/meta.env"
    echo "$scen $sut" >>"$RUN_DIR/order.txt"
    if ! sut_define "$sut"; then
      log "   $sut: skipped ($SKIP_REASON)"
      { echo "status=skipped"; echo "reason=$SKIP_REASON"; } >>"$dir/meta.env"
      continue
    fi
    mk_body "$REQ_MODEL" 0 "$dir/body.json"
    mk_body "$REQ_MODEL" 1 "$dir/body-stream.json"
    load_body="$dir/body.json"
    [ "${STREAM:-0}" = 1 ] && load_body="$dir/body-stream.json"
    # Scenario S: every request streamed, driven by stream-load (time to first token)
    load=run_oha; load_file=load.json; probe_file=probe.json
    if [ "$scen" = S ]; then
      load_body="$dir/body-stream.json"; load=run_stream; load_file=load-stream.json; probe_file=probe-stream.json
    fi

    t0=$(date +%s.%N)
    sut_start "$sut" "$dir"
    if [ -n "$SUT_PID" ]; then
      log "   $sut: starting (pid $SUT_PID), waiting up to ${START_TIMEOUT}s for port $SUT_PORT"
      if ! wait_port "$SUT_PORT" "$SUT_PID" "$START_TIMEOUT"; then
        why="did not start listening on 127.0.0.1:$SUT_PORT within ${START_TIMEOUT}s"
        group_alive "$SUT_PID" || why="exited during start-up"
        why="$why; last log line: $(grep -v '^\s*$' "$dir/sut.log" | tail -n 1 | cut -c1-200)"
        log "   $sut: FAILED: $why"
        { echo "status=failed"; echo "reason=$why"; } >>"$dir/meta.env"
        stop_pid "$SUT_PID"
        continue
      fi
      echo "startup_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')" >>"$dir/meta.env"
    fi

    smoke "$dir"
    log "   $sut: smoke $(grep -E '^smoke_(status|result)=' "$dir/meta.env" | tr '\n' ' ')"
    log "   $sut: smoke stream $(grep -E '^smoke_stream_' "$dir/meta.env" | tr '\n' ' ')"

    log "   $sut: warm-up ${WARMUP}s x $CONNECTIONS conns"
    [ "$WARMUP" -gt 0 ] && $load "$dir/warmup.json" "$WARMUP" "$CONNECTIONS" "$load_body"

    mock_reset
    [ -n "$SUT_PID" ] && read -r cpu0 _ < <(python3 "$LIB" proc "$SUT_PID")
    log "   $sut: load ${DURATION}s x $CONNECTIONS conns"
    $load "$dir/$load_file" "$DURATION" "$CONNECTIONS" "$load_body"; rc=$?
    mock_stats "$dir/load.stats.json"
    if [ -n "$SUT_PID" ]; then
      read -r cpu1 rss1 < <(python3 "$LIB" proc "$SUT_PID")
      echo "cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.3f", b-a}')" >>"$dir/meta.env"
      echo "rss_kb=$rss1" >>"$dir/meta.env"
    fi

    if [ "$PROBE_DURATION" -gt 0 ]; then
      mock_reset
      log "   $sut: probe ${PROBE_DURATION}s x 1 conn"
      $load "$dir/$probe_file" "$PROBE_DURATION" 1 "$load_body"
      mock_stats "$dir/probe.stats.json"
    fi

    if [ "$rc" -ne 0 ] || [ ! -s "$dir/$load_file" ]; then
      why="load generator failed (rc=$rc): $(head -c 300 "$dir/$load_file.err" 2>/dev/null)"
      { echo "status=failed"; echo "reason=$why"; } >>"$dir/meta.env"
      log "   $sut: FAILED: $why"
    else
      echo "status=ok" >>"$dir/meta.env"
      log "   $sut: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("rps=%.0f codes=%s errors=%s" % (d["summary"]["requestsPerSec"], d.get("statusCodeDistribution"), d.get("errorDistribution")) if "summary" in d else "streams/s=%.0f codes=%s errors=%s ttft=%s" % (d["streams_per_s"], d.get("status_codes"), d.get("error_kinds"), d.get("ttft_ms")))' "$dir/$load_file" 2>/dev/null)"
    fi
    if [ -n "$SUT_PID" ]; then
      group_alive "$SUT_PID" || { echo "note=SUT exited during the run" >>"$dir/meta.env"; log "   $sut: exited during the run"; }
      stop_pid "$SUT_PID"
    fi
  done
  stop_pid "$MOCK_PID"
done

python3 "$LIB" summarize "$RUN_DIR" "$OUT"
log "results: $OUT (markdown: ${OUT%.json}.md; raw oha/stats/logs: $RUN_DIR)"

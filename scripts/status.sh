#!/usr/bin/env bash
# Every service's state and health, the current model and its phase, GPUs, CPU and memory.
# Exit code 3 when the gateway is down.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
no_args "${BASH_SOURCE[0]}" "$@"

PY="$(command -v python3 || true)"
[[ -x "$VENV_DIR/bin/python" ]] && PY="$VENV_DIR/bin/python"

# health JSON -> lines (raw JSON when there is no Python to read it)
print_health() {
  [[ -n "$PY" ]] || { echo "$1"; return; }
  "$PY" - "$1" <<'PY' 2>/dev/null || echo "$1"
import json, sys
h = json.loads(sys.argv[1])
print(f"health: {h['status']}")
for name, s in h["services"].items():
    extra = s.get("error") or s.get("engine") or s.get("url") or ""
    print(f"  {name:<9} {s['status']:<15} {extra}")
PY
}

# /api/models/status JSON -> lines
print_model() {
  [[ -n "$PY" ]] || { echo "$1"; return; }
  "$PY" - "$1" <<'PY' 2>/dev/null || echo "$1"
import json, sys
s = json.loads(sys.argv[1])
print(f"model: {s['current_profile'] or '(not managed)'} [{s['runtime'] or '-'}] status {s['status']}"
      f", serving {s['served_model'] or '-'}")
sw = s.get("switch")
if sw:
    state = "done" if sw.get("finished_at") else "in progress"
    print(f"  last switch: {sw.get('previous') or '-'} -> {sw['target']}: phase {sw['phase']} ({state})")
if s.get("error"):
    print(f"  error: {s['error']}")
if s.get("hint"):
    print(f"  hint: {s['hint']}")
hw = s["hardware_info"]
print(f"hardware: {hw['gpu_count']} GPU(s), {hw['total_vram_gb']} GB" + (f" (probe: {hw['error']})" if hw.get("error") else ""))
for g in hw.get("gpus") or []:
    print(f"  GPU {g.get('index')}: {g.get('name')}  memory used {g.get('memory_used_gb')} of {g.get('memory_total_gb')} GB"
          f"  utilization {g.get('utilization_percent')}%")
PY
}

if command -v nvidia-smi >/dev/null; then
  say "GPUs (nvidia-smi)"
  nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu --format=csv,noheader ||
    warn "nvidia-smi failed"
fi

if [[ "$(deploy_mode)" == compose ]]; then
  say "compose services"
  compose_all_profiles ps -a
  ids="$(compose_all_profiles ps -q 2>/dev/null || true)"
  if [[ -n "$ids" ]] && command -v docker >/dev/null; then
    say "CPU and memory"
    # shellcheck disable=SC2086
    docker stats --no-stream --format 'table {{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}' $ids ||
      warn "docker stats failed"
  fi
  # asked inside the gateway container: no nginx, port or password needed
  health="$(compose exec -T gateway python -c 'import os, sys, urllib.request as u, urllib.error as e
try: r = u.urlopen("http://127.0.0.1:%s/health" % os.environ.get("GATEWAY_PORT", "8080"), timeout=5)
except e.HTTPError as x: r = x
sys.stdout.write(r.read().decode())' 2>/dev/null)" || { warn "the gateway does not answer /health"; exit 3; }
  print_health "$health"
  model="$(compose exec -T gateway python -m app.cli model-status 2>&1)" ||
    { warn "model status: $model"; exit 0; }
  print_model "$model"
  exit 0
fi

PORT="$(env_or_dotenv GATEWAY_PORT 8080)"
URL="http://127.0.0.1:$PORT"
if pid_alive "$RUN_DIR/gateway.pid"; then
  say "gateway: running (pid $(cat "$RUN_DIR/gateway.pid")) on $URL"
else
  say "gateway: stopped"
  exit 3
fi
pids=("$(cat "$RUN_DIR/gateway.pid")")
MODEL_PID_FILE="$(model_log_dir)/model-server.pid"
if [[ -f "$MODEL_PID_FILE" ]]; then
  model_pid="$(cut -d' ' -f1 "$MODEL_PID_FILE")"
  running "$model_pid" && pids+=("$model_pid")
fi
say "CPU and memory"
ps -o pid,pcpu,rss,etime,args -p "$(IFS=,; echo "${pids[*]}")" | cut -c1-150 || true
printf 'host: load %s, memory available %s MiB of %s MiB\n' "$(cut -d' ' -f1-3 /proc/loadavg)" \
  "$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)" "$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)"

health="$(curl -sS --max-time 5 "$URL/health" 2>/dev/null)" || { warn "the gateway does not answer /health"; exit 3; }
print_health "$health"
model="$(cd "$GATEWAY_DIR" && "$VENV_DIR/bin/python" -m app.cli model-status --url "$URL" 2>&1)" ||
  { warn "model status: $model"; exit 0; }
print_model "$model"

#!/usr/bin/env bash
# Every service's state and health, the current model and its phase, GPU use when there are GPUs.
# Exit code 3 when the gateway is down.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v nvidia-smi >/dev/null; then
  say "GPUs"
  nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu --format=csv,noheader ||
    warn "nvidia-smi failed"
fi

if [[ "$(deploy_mode)" == compose ]]; then
  say "compose services"
  compose ps
  PORT=""
  URL="https://localhost"
else
  PORT="$(env_or_dotenv GATEWAY_PORT 8080)"
  URL="http://127.0.0.1:$PORT"
  if pid_alive "$RUN_DIR/gateway.pid"; then
    say "gateway: running (pid $(cat "$RUN_DIR/gateway.pid")) on $URL"
  else
    say "gateway: stopped"
    exit 3
  fi
fi

health="$(curl -ksS --max-time 5 "$URL/health" 2>/dev/null)" || { warn "the gateway does not answer /health"; exit 3; }
"$VENV_DIR/bin/python" - "$health" <<'PY' 2>/dev/null || echo "$health"
import json, sys
h = json.loads(sys.argv[1])
print(f"health: {h['status']}")
for name, s in h["services"].items():
    extra = s.get("error") or s.get("engine") or s.get("url") or ""
    print(f"  {name:<9} {s['status']:<15} {extra}")
PY
token="$(local_admin_token "${PORT:-443}" 2>/dev/null || true)"
if [[ -n "$PORT" && -n "$token" ]]; then
  status="$(curl -fsS --max-time 5 "$URL/api/models/status" -H "Authorization: Bearer $token" 2>/dev/null)" || exit 0
  "$VENV_DIR/bin/python" - "$status" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
print(f"model: {s['current_profile'] or '(not managed)'} [{s['runtime'] or '-'}] status {s['status']}"
      f", serving {s['served_model'] or '-'}")
if s.get("switch") and not s["switch"]["finished_at"]:
    print(f"  switching to {s['switch']['target']}: phase {s['switch']['phase']}")
if s.get("error"):
    print(f"  error: {s['error']}")
if s.get("hint"):
    print(f"  hint: {s['hint']}")
hw = s["hardware_info"]
print(f"hardware: {hw['gpu_count']} GPU(s), {hw['total_vram_gb']} GB" + (f" (probe: {hw['error']})" if hw.get("error") else ""))
PY
fi

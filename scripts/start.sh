#!/usr/bin/env bash
# Start the service. Compose when a Docker engine answers (DEPLOY_MODE=compose), else the local
# mode: the gateway on SQLite with in-memory limits, serving the built UI, and a real small model
# on the CPU (Qwen2.5-Coder-0.5B-Instruct on llama.cpp) that the gateway's model manager starts as a
# child process.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
no_args "${BASH_SOURCE[0]}" "$@"

MODE="$(deploy_mode)"
if [[ "$MODE" == compose ]]; then
  command -v docker >/dev/null || die "DEPLOY_MODE=compose, but Docker is not installed (https://docs.docker.com/engine/install/debian/), or use DEPLOY_MODE=local"
  docker info >/dev/null 2>&1 || die "DEPLOY_MODE=compose, but no Docker engine answers at ${DOCKER_HOST:-the default socket}: start it (systemctl start docker), or use DEPLOY_MODE=local"
  if ! docker info 2>/dev/null | grep -qi nvidia; then
    warn "no NVIDIA container runtime in this Docker engine: the vllm service will not get GPUs (install nvidia-container-toolkit)"
  fi
  [[ -f "$ROOT_DIR/.env" ]] || "$ROOT_DIR/scripts/setup.sh"
  say "starting the compose stack"
  compose up -d --build
  say "started: https://localhost (nginx).  ./status   ./logs gateway   ./stop"
  exit 0
fi

PORT="$(env_or_dotenv GATEWAY_PORT 8080)"
HOST="$(env_or_dotenv GATEWAY_HOST 127.0.0.1)"
PID_FILE="$RUN_DIR/gateway.pid"
export MODEL_DEFAULT_PROFILE="${MODEL_DEFAULT_PROFILE:-$(env_or_dotenv MODEL_DEFAULT_PROFILE local-cpu)}"
VLLM_URL="$(env_or_dotenv VLLM_BASE_URL http://127.0.0.1:8000/v1)"
MODEL_PORT="$(sed -E 's#^https?://[^/:]+:([0-9]+).*#\1#;t;d' <<<"$VLLM_URL")"

if pid_alive "$PID_FILE"; then
  say "the gateway is already running (pid $(cat "$PID_FILE")) on http://$HOST:$PORT"
  exit 0
fi
command -v curl >/dev/null || apt_install curl ca-certificates
port_in_use "$PORT" && die "port $PORT is taken by another program: stop it, or set GATEWAY_PORT=<free port> in .env"
if [[ -n "$MODEL_PORT" ]] && port_in_use "$MODEL_PORT" && [[ ! -f "$(model_log_dir)/model-server.pid" ]]; then
  die "port $MODEL_PORT (VLLM_BASE_URL) is taken by another program: stop it, or set VLLM_BASE_URL=http://127.0.0.1:<free port>/v1 in .env"
fi

ensure_venv
mkdir -p "$LOG_DIR"
if [[ ! -f "$ROOT_DIR/frontend/dist/index.html" || "${REBUILD_UI:-0}" == 1 ]]; then
  "$ROOT_DIR/scripts/build-frontend.sh" || die "the web UI did not build (see above)"
fi

say "starting the gateway on http://$HOST:$PORT (log: $LOG_DIR/gateway.log)"
say "model profile: $MODEL_DEFAULT_PROFILE on $VLLM_URL (log: $(model_log_dir)/)"
# the gateway's output goes through app.logpipe, which rotates gateway.log by size
# (LOG_MAX_SIZE, LOG_MAX_FILE); the pipe's reader has a session of its own and ends with the gateway
LOG_MAX_SIZE="$(env_or_dotenv LOG_MAX_SIZE 20m)"
LOG_MAX_FILE="$(env_or_dotenv LOG_MAX_FILE 5)"
(
  cd "$GATEWAY_DIR"
  exec setsid "$VENV_DIR/bin/python" -m app.cli serve --host "$HOST" --port "$PORT" < /dev/null \
    > >(exec setsid "$VENV_DIR/bin/python" -m app.logpipe "$LOG_DIR/gateway.log" \
          --max-size "$LOG_MAX_SIZE" --max-file "$LOG_MAX_FILE" >/dev/null 2>&1) 2>&1
) &
echo $! > "$PID_FILE"

# up when /health/live answers; given up on at once when the gateway exits (a bad setting)
gateway_up() {
  local start=$SECONDS
  until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/health/live" 2>/dev/null; do
    pid_alive "$PID_FILE" || { sleep 0.5; return 1; }  # the log pipe's last lines
    (( SECONDS - start >= 60 )) && return 1
    sleep 0.3
  done
}
if ! gateway_up; then
  tail -n 30 "$LOG_DIR/gateway.log" >&2 || true
  pid_alive "$PID_FILE" && kill "$(cat "$PID_FILE")" 2>/dev/null || true
  rm -f "$PID_FILE"
  die "the gateway did not come up; its log is above"
fi

# the model loads in the background; wait for it so the first chat answers at once
say "waiting for the model server"
# The model manager's word, not the server's /health: it says running once /v1/models lists the
# profile's model (printed after the word), and error (with the reason) when the start failed.
TOKEN=""
SERVED=""
model_state() {
  [[ -n "$TOKEN" ]] || return 0
  curl -fsS --max-time 3 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/models/status" 2>/dev/null |
    "$VENV_DIR/bin/python" -c 'import json, sys; s = json.load(sys.stdin); print(s["status"], s.get("error") or s.get("served_model") or "")' 2>/dev/null || true
}
start=$SECONDS
while :; do
  [[ -n "$TOKEN" ]] || TOKEN="$(local_admin_token "$PORT" || true)"
  state="$(model_state)"
  case "$state" in
    running*) SERVED="${state#running }"; break ;;
    error*) warn "the model did not start: ${state#error } (./logs vllm)"; break ;;
  esac
  if (( SECONDS - start > 180 )); then
    warn "the model is not up after 180 s: see ./logs vllm and the status at /api/models/status"
    break
  fi
  pid_alive "$PID_FILE" || die "the gateway stopped (see $LOG_DIR/gateway.log)"
  sleep 0.3
done

cat <<MSG

  vLLM chat service (local mode) is up:
    chat UI:        http://$HOST:$PORT/
    log in:         admin / admin123   (user: test / test)
    API docs:       http://$HOST:$PORT/docs
    health:         http://$HOST:$PORT/health
    model:          $MODEL_DEFAULT_PROFILE${SERVED:+ ($SERVED)}  (switch in the UI's model menu, or POST /api/models/switch)

  ./status   ./logs [gateway|vllm] [--json]   ./stop
MSG

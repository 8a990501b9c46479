#!/usr/bin/env bash
# Start the local mode: the gateway on SQLite with in-memory limits, in the background.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT="$(env_or_dotenv GATEWAY_PORT 8080)"
HOST="$(env_or_dotenv GATEWAY_HOST 127.0.0.1)"
PID_FILE="$RUN_DIR/gateway.pid"

if pid_alive "$PID_FILE"; then
  say "the gateway is already running (pid $(cat "$PID_FILE")) on http://$HOST:$PORT"
  exit 0
fi
command -v curl >/dev/null || apt_install curl ca-certificates
port_in_use "$PORT" && die "port $PORT is taken by another program: stop it, or set GATEWAY_PORT=<free port>"

ensure_venv
mkdir -p "$LOG_DIR"

# The model server. Until the local CPU model joins this command, local mode starts the vLLM
# simulator (realistic pacing, scripted answers) on VLLM_BASE_URL when nothing serves there.
VLLM_URL="$(env_or_dotenv VLLM_BASE_URL http://127.0.0.1:8000/v1)"
MODEL_PORT="$(sed -E 's#^https?://(127\.0\.0\.1|localhost):([0-9]+).*#\2#;t;d' <<<"$VLLM_URL")"
if [[ -n "$MODEL_PORT" ]] && ! port_in_use "$MODEL_PORT" && ! pid_alive "$RUN_DIR/model.pid"; then
  say "starting the model server stand-in (vLLM simulator) on 127.0.0.1:$MODEL_PORT"
  (
    cd "$GATEWAY_DIR"
    exec setsid "$VENV_DIR/bin/python" -m simulator --host 127.0.0.1 --port "$MODEL_PORT" \
      --ttft-ms 150 --itl-ms 30 --tokens 60 >>"$LOG_DIR/model.log" 2>&1 < /dev/null
  ) &
  echo $! > "$RUN_DIR/model.pid"
  wait_http "http://127.0.0.1:$MODEL_PORT/health" 30 || die "the simulator did not start (see $LOG_DIR/model.log)"
fi
say "starting the gateway on http://$HOST:$PORT (log: $LOG_DIR/gateway.log)"
(
  cd "$GATEWAY_DIR"
  exec setsid "$VENV_DIR/bin/python" -m app.cli serve --host "$HOST" --port "$PORT" \
    >>"$LOG_DIR/gateway.log" 2>&1 < /dev/null
) &
echo $! > "$PID_FILE"

if ! wait_http "http://127.0.0.1:$PORT/health/live" 60; then
  tail -n 30 "$LOG_DIR/gateway.log" >&2 || true
  pid_alive "$PID_FILE" && kill "$(cat "$PID_FILE")" 2>/dev/null || true
  rm -f "$PID_FILE"
  die "the gateway did not come up; its log is above"
fi

cat <<MSG

  vLLM chat gateway is up:  http://$HOST:$PORT
  health:                   http://$HOST:$PORT/health
  API docs:                 http://$HOST:$PORT/docs
  log in (local mode):      admin / admin123   (user: test / test)
  model server:             $VLLM_URL

  curl -X POST http://$HOST:$PORT/api/auth/login -H 'Content-Type: application/json' \\
       -d '{"username":"admin","password":"admin123"}'

  ./status   ./logs   ./stop
MSG

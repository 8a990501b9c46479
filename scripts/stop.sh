#!/usr/bin/env bash
# Stop what ./start started: the compose stack, or the local gateway (which stops its model).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "$(deploy_mode)" == compose ]]; then
  say "stopping the compose stack (data volumes are kept; ./scripts/cleanup.sh removes them)"
  compose down
  exit 0
fi

stop_pid() {
  local name="$1" pid="$2"
  say "stopping the $name (pid $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  warn "the $name did not exit within 20 s, killing it"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

if pid_alive "$RUN_DIR/gateway.pid"; then
  stop_pid gateway "$(cat "$RUN_DIR/gateway.pid")"  # a graceful stop ends its model server too
fi
rm -f "$RUN_DIR/gateway.pid"
# a model server left behind by a gateway that was killed: its pid file names it
MODEL_PID_FILE="$GATEWAY_DIR/data/model-logs/model-server.pid"
if [[ -f "$MODEL_PID_FILE" ]]; then
  pid="$(cut -d' ' -f1 "$MODEL_PID_FILE")"
  if kill -0 "$pid" 2>/dev/null; then stop_pid "model server" "$pid"; fi
  rm -f "$MODEL_PID_FILE"
fi
say "stopped"

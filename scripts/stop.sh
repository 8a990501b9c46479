#!/usr/bin/env bash
# Stop what ./start started (graceful first, then forced after 20 s).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PID_FILE="$RUN_DIR/gateway.pid"
if ! pid_alive "$PID_FILE"; then
  rm -f "$PID_FILE"
  say "the gateway is not running"
  exit 0
fi
pid="$(cat "$PID_FILE")"
say "stopping the gateway (pid $pid)"
kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$pid" 2>/dev/null; then
  warn "no graceful exit after 20 s, killing"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
fi
rm -f "$PID_FILE"
say "stopped"

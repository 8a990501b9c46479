#!/usr/bin/env bash
# Stop what ./start started (graceful first, then forced after 20 s): the gateway, then the model.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_service() {
  local name="$1" pid_file="$RUN_DIR/$1.pid" pid
  if ! pid_alive "$pid_file"; then
    rm -f "$pid_file"
    return
  fi
  pid="$(cat "$pid_file")"
  say "stopping the $name (pid $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    warn "the $name did not exit within 20 s, killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
  fi
  rm -f "$pid_file"
}

stop_service gateway
stop_service model
say "stopped"

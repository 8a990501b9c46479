#!/usr/bin/env bash
# Show whether the local gateway runs and what its /health says.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT="$(env_or_dotenv GATEWAY_PORT 8080)"
PID_FILE="$RUN_DIR/gateway.pid"
if pid_alive "$PID_FILE"; then
  say "gateway: running (pid $(cat "$PID_FILE")) on port $PORT"
  curl -sS --max-time 5 "http://127.0.0.1:$PORT/health" || warn "gateway does not answer /health"
  echo
else
  say "gateway: stopped"
  exit 3
fi

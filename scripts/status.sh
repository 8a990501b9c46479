#!/usr/bin/env bash
# Show which local services run and what the gateway's /health says (exit 3 when it is down).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT="$(env_or_dotenv GATEWAY_PORT 8080)"
for service in gateway model; do
  if pid_alive "$RUN_DIR/$service.pid"; then
    say "$service: running (pid $(cat "$RUN_DIR/$service.pid"))"
  else
    say "$service: stopped"
  fi
done
if pid_alive "$RUN_DIR/gateway.pid"; then
  curl -sS --max-time 5 "http://127.0.0.1:$PORT/health" || warn "the gateway does not answer /health"
  echo
else
  exit 3
fi

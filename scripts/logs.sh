#!/usr/bin/env bash
# Follow a service's log. Local mode: gateway (default) or model. Compose: any service name.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

service="${1:-gateway}"
if [[ "$(deploy_mode)" == compose ]]; then
  exec compose logs -f --tail 100 "$service"
fi
if [[ "$service" == model ]]; then
  dir="$(model_log_dir)"
  file="$(ls -t "$dir"/*.log 2>/dev/null | head -n1 || true)"
  [[ -n "$file" ]] || die "no model server log yet (in $dir)"
else
  file="$LOG_DIR/$service.log"
fi
[[ -f "$file" ]] || die "no log for '$service' (known: gateway, model)"
exec tail -n 100 -F "$file"

#!/usr/bin/env bash
# Follow a service's log (default: gateway). Usage: ./logs [service]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

service="${1:-gateway}"
file="$LOG_DIR/$service.log"
[[ -f "$file" ]] || die "no log for '$service' yet (known: $(ls "$LOG_DIR" 2>/dev/null | sed 's/\.log$//' | tr '\n' ' '))"
exec tail -n 100 -F "$file"

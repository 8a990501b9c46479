#!/usr/bin/env bash
# Stop and start again (same mode, same settings).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
no_args "${BASH_SOURCE[0]}" "$@"
"$ROOT_DIR/scripts/stop.sh"
exec "$ROOT_DIR/scripts/start.sh"

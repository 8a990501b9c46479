#!/usr/bin/env bash
# A service's log, readable: ./logs [gateway|vllm|nginx|postgres|redis|...] [--json] [-n N] [--no-follow]
#   gateway (default)  the gateway's JSON lines as time, level, event, request id, status, latency
#   vllm (or model)    the model server: the vLLM container in compose (the one the gateway
#                      created after a switch too), the local model server's log in local mode
#   --json             the raw lines;  -n N: start N lines back (100);  --no-follow: print and exit
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

service=gateway named="" raw=0 lines=100 follow=1
while (($#)); do
  case "$1" in
    --json) raw=1 ;;
    -n | --tail) [[ $# -ge 2 ]] || die "-n needs a number"; lines="$2"; shift ;;
    --no-follow) follow=0 ;;
    -h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see ./logs --help)" ;;
    *) [[ -z "$named" ]] || die "one service at a time ('$named' and '$1')"; service="$1" named="$1" ;;
  esac
  shift
done
[[ "$lines" =~ ^[0-9]+$ ]] || die "-n needs a number"

PY="$(command -v python3 || true)"
[[ -x "$VENV_DIR/bin/python" ]] && PY="$VENV_DIR/bin/python"
readable() {
  if [[ $raw == 1 || -z "$PY" ]]; then cat; else
    local color=()
    [[ -t 1 ]] && color=(--color)
    "$PY" -u "$ROOT_DIR/scripts/logfmt.py" "${color[@]}"
  fi
}

if [[ "$(deploy_mode)" == compose ]]; then
  [[ "$service" == model ]] && service=vllm
  args=(logs --no-color --no-log-prefix --tail "$lines")
  [[ $follow == 1 ]] && args+=(-f)
  compose "${args[@]}" "$service" | readable
  exit "${PIPESTATUS[0]}"
fi

case "$service" in
  model | vllm)
    dir="$(model_log_dir)"
    # the server running now (its pid file names the profile), else the newest log
    file=""
    if [[ -f "$dir/model-server.pid" ]]; then
      profile="$(cut -d' ' -f2 "$dir/model-server.pid")"
      [[ -f "$dir/$profile.log" ]] && file="$dir/$profile.log"
    fi
    [[ -n "$file" ]] || file="$(ls -t "$dir"/*.log 2>/dev/null | head -n1 || true)"
    [[ -n "$file" ]] || die "no model server log yet (in $dir)"
    ;;
  gateway) file="$LOG_DIR/gateway.log" ;;
  *) die "local mode has two logs: gateway, vllm (or model); '$service' is a compose service" ;;
esac
[[ -f "$file" ]] || die "no log for '$service' yet ($file)"
if [[ $follow == 1 ]]; then
  tail -n "$lines" -F "$file" 2>/dev/null | readable
else
  tail -n "$lines" "$file" | readable
fi

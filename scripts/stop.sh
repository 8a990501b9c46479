#!/usr/bin/env bash
# Stop what ./start started: the compose stack, or the local gateway (which stops its model).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
no_args "${BASH_SOURCE[0]}" "$@"

if [[ "$(deploy_mode)" == compose ]]; then
  say "stopping the compose stack (data volumes are kept; ./scripts/cleanup.sh removes them)"
  compose_all_profiles down
  remove_stray_vllm
  exit 0
fi

if pid_alive "$RUN_DIR/gateway.pid"; then
  stop_pid "$(cat "$RUN_DIR/gateway.pid")" gateway  # a graceful stop ends its model server too
fi
rm -f "$RUN_DIR/gateway.pid"
# a model server left behind by a gateway that was killed: its pid file names it
MODEL_PID_FILE="$(model_log_dir)/model-server.pid"
if [[ -f "$MODEL_PID_FILE" ]]; then
  pid="$(cut -d' ' -f1 "$MODEL_PID_FILE")"
  stop_pid "$pid" "model server"
  rm -f "$MODEL_PID_FILE"
fi
say "stopped"

#!/usr/bin/env bash
# Delete data after asking: the local database, logs and model logs, or the compose volumes.
# `--yes` skips the question (scripts, CI).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

yes=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --yes | -y) yes=--yes ;;
    -h | --help) script_help "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument: $1 (scripts/cleanup.sh [--yes]; see --help)" ;;
  esac
  shift
done

confirm() {
  [[ "$1" == --yes ]] && return 0
  read -r -p "$2 [y/N] " answer
  [[ "$answer" =~ ^[Yy]$ ]]
}

if [[ "$(deploy_mode)" == compose ]]; then
  confirm "$yes" "Stop the stack and DELETE its volumes (database, Redis, UI build; the HF model cache is kept)?" ||
    { say "nothing deleted"; exit 0; }
  compose_all_profiles down --remove-orphans
  compose_all_profiles down -v --remove-orphans
  remove_stray_vllm
  say "compose volumes deleted (the HF cache, a host directory, is kept)"
  exit 0
fi

pid_alive "$RUN_DIR/gateway.pid" && die "the service is running: ./stop first"
targets=("$GATEWAY_DIR/data" "$RUN_DIR")
confirm "$yes" "DELETE the local database, the JWT secret and every log (${targets[*]})?" ||
  { say "nothing deleted"; exit 0; }
rm -rf "${targets[@]}"
say "deleted: ${targets[*]}"

#!/usr/bin/env bash
# Restore a backup: scripts/restore.sh FILE [--yes]
#
# Checks FILE against FILE.sha256 and reads it whole before touching anything; refuses to
# replace a database that holds data unless --yes is given; replaces it in one transaction;
# checks the row counts against FILE.json; then migrates the database to the current schema.
# Compose: the gateway is stopped during the restore and started again if it was running.
# Local mode: stop the gateway first (./stop).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
file="" yes=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --yes | -y) yes=(--yes); shift ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *) [[ -z "$file" ]] || die "one backup file at a time"; file="$1"; shift ;;
  esac
done
[[ -n "$file" ]] || { usage >&2; die "which backup? scripts/restore.sh FILE [--yes]"; }
[[ "$file" == /* ]] || file="$PWD/$file"
[[ -f "$file" ]] || die "no backup file at $file"

source "$ROOT_DIR/scripts/db-target.sh"
db_target

restore() { (cd "$GATEWAY_DIR" && "$DB_PYTHON" "$ROOT_DIR/scripts/dbbackup.py" restore "${DB_ARGS[@]}" "${yes[@]}" --migrations "$GATEWAY_DIR/migrations/versions" "$@" "$file"); }
# the file checked whole and the target's contents before anything is stopped or changed
restore --check-only || exit $?

restart_gateway=0
if [[ "$DB_MODE" == compose ]]; then
  if [[ -n "$(compose ps -q --status running gateway 2>/dev/null)" ]]; then
    say "stopping the gateway for the restore"
    compose stop gateway >/dev/null
    restart_gateway=1
  fi
elif pid_alive "$RUN_DIR/gateway.pid"; then
  die "the local gateway is running (pid $(cat "$RUN_DIR/gateway.pid")): stop it first (./stop)"
fi

rc=0
restore || rc=$?
if [[ $rc -eq 0 ]]; then
  say "migrating the restored database to the current schema"
  if [[ "$DB_MODE" == compose ]]; then
    compose run --rm --no-deps gateway python -m app.cli migrate || rc=$?
  else
    (cd "$GATEWAY_DIR" && DATABASE_URL="$DB_URL" "$VENV_DIR/bin/python" -m app.cli migrate) || rc=$?
  fi
fi
if [[ $restart_gateway -eq 1 ]]; then
  say "starting the gateway again"
  compose start gateway >/dev/null || rc=$?
fi
[[ $rc -eq 0 ]] && say "restored $(basename "$file")"
exit "$rc"

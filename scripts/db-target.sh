#!/usr/bin/env bash
# Sourced by backup.sh and restore.sh (after lib.sh): which database, and the tools to reach it.
# Sets DB_MODE (compose|local), DB_URL (local), DB_PYTHON and DB_ARGS for scripts/dbbackup.py.

db_target() {
  DB_MODE="$(deploy_mode)"
  if [[ "$DB_MODE" == compose ]]; then
    # the postgres service's own pg_dump/psql, through `compose exec`: nothing to install here
    DB_PYTHON="$(find_python)" || die "Python >= 3.11 is required"
    # dbbackup.py splits this string like a shell: the path is quoted (a checkout in `my repo`)
    DB_ARGS=(--compose --compose-cmd "$(compose_cmd) -f $(printf '%q' "$ROOT_DIR/docker-compose.yml")")
    DB_URL=""
    return
  fi
  [[ -x "$VENV_DIR/bin/python" ]] || ensure_venv
  DB_PYTHON="$VENV_DIR/bin/python"
  # the database the gateway itself would use: DATABASE_URL, POSTGRES_*, else SQLITE_PATH
  DB_URL="$(cd "$GATEWAY_DIR" && "$DB_PYTHON" -c \
    'from app.core.config import Settings; print(Settings().effective_database_url)')" ||
    die "could not read the database settings"
  if [[ "$DB_URL" == postgres* ]]; then
    local tool
    for tool in psql pg_dump pg_restore; do
      command -v "$tool" >/dev/null || { apt_install postgresql-client; break; }
    done
  fi
  DB_ARGS=(--url "$DB_URL")
}

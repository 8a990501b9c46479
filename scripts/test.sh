#!/usr/bin/env bash
# Install everything the tests need, then run every check: lint, types, the web UI's tests and
# build, and the Python test suite. Arguments go to pytest (and skip the web UI's part).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The tests use the real Postgres and Redis on 127.0.0.1; start them if this machine has them stopped.
if ! port_in_use 5432 && command -v pg_ctlcluster >/dev/null; then
  say "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi

if ! port_in_use 6379 && command -v redis-server >/dev/null; then
  say "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi

ensure_venv dev
cd "$GATEWAY_DIR"
say "ruff"
"$VENV_DIR/bin/ruff" check .
"$VENV_DIR/bin/ruff" format --check .
# the report generator lives beside the shell scripts; same rules
"$VENV_DIR/bin/ruff" check --config pyproject.toml ../scripts
"$VENV_DIR/bin/ruff" format --config pyproject.toml --check ../scripts
say "mypy"
"$VENV_DIR/bin/mypy"
# the web UI first: its build (frontend/dist) is what the local-mode and nginx tests serve
if [[ $# -eq 0 ]]; then
  say "frontend: types, lint, unit tests, build, end-to-end in Chromium"
  "$ROOT_DIR/scripts/test-frontend.sh"
fi
say "pytest"
"$VENV_DIR/bin/pytest" -q -p no:cacheprovider "$@"

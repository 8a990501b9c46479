#!/usr/bin/env bash
# Build the web UI into frontend/dist (served by the gateway at / in local mode).
# Installs the locked npm dependencies first when they are missing or stale.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FRONTEND_DIR="$ROOT_DIR/frontend"

ensure_node_modules() {
  command -v npm >/dev/null || apt_install nodejs npm
  local stamp="$FRONTEND_DIR/node_modules/.package-lock.json"
  if [[ ! -f "$stamp" || "$FRONTEND_DIR/package-lock.json" -nt "$stamp" ]]; then
    say "installing frontend dependencies (npm install from package-lock.json)"
    # not `npm ci`: its sync check wants every platform's optional package (rollup's native
    # builds) in the lock, and a registry mirror that serves only this platform's leaves them out
    (cd "$FRONTEND_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error)
  fi
}

# only when run, not when sourced by test-frontend.sh
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  no_args "${BASH_SOURCE[0]}" "$@"
  ensure_node_modules
  say "building the web UI into frontend/dist"
  (cd "$FRONTEND_DIR" && npx --no-install vite build --logLevel warn)
fi

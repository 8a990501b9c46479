#!/usr/bin/env bash
# Every front-end check: tsc, eslint, vitest, the production build, and the Playwright e2e tests
# (Debian's chromium against the real gateway + simulator, started and stopped by the tests).
# Screenshots of the main screens land in frontend/test-results/screenshots/.
source "$(dirname "${BASH_SOURCE[0]}")/build-frontend.sh"

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
[[ -x "$CHROMIUM" ]] || apt_install chromium fonts-noto-cjk
[[ -x "$VENV_DIR/bin/python" ]] || ensure_venv dev
ensure_node_modules

cd "$FRONTEND_DIR"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 CHROMIUM_PATH="$CHROMIUM"
mkdir -p test-results
step() { say "$1"; local t0=$SECONDS; shift; "$@"; say "  ($((SECONDS - t0)) s)"; }

step "tsc --noEmit" npx --no-install tsc --noEmit
step "eslint" npx --no-install eslint . --max-warnings=0
step "vitest" npx --no-install vitest run
step "vite build" npx --no-install vite build --logLevel warn
step "playwright e2e" npx --no-install playwright test

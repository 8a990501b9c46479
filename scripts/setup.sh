#!/usr/bin/env bash
# First-time checks and .env: Python, Node, Docker + Compose + NVIDIA runtime (for compose), a .env
# from .env.sample with generated secrets, and a self-signed TLS certificate for nginx.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
no_args "${BASH_SOURCE[0]}" "$@"

ok()   { printf '  \033[32mok\033[0m    %s\n' "$*"; }
miss() { printf '  \033[33mmissing\033[0m %s\n' "$*"; }

say "checking prerequisites"
if find_python >/dev/null; then ok "Python $("$(find_python)" -V 2>&1 | cut -d' ' -f2)"; else miss "Python >= 3.11 (./start installs it with apt)"; fi
if command -v node >/dev/null; then ok "Node $(node -v)"; else miss "Node.js >= 20 (to build the UI)"; fi
if command -v docker >/dev/null; then
  if docker info >/dev/null 2>&1; then ok "Docker engine"; else miss "a running Docker engine (compose mode; local mode works without)"; fi
  if compose_cmd >/dev/null; then ok "Docker Compose"; else miss "Docker Compose v2 (compose mode)"; fi
  if docker info 2>/dev/null | grep -qi 'nvidia'; then ok "NVIDIA container runtime"; else miss "NVIDIA Container Toolkit (GPUs in containers; install nvidia-container-toolkit)"; fi
else
  miss "Docker (compose mode only; the local mode needs none)"
fi
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  ok "NVIDIA driver: $(nvidia-smi -L | wc -l) GPU(s)"
else
  miss "NVIDIA driver / GPUs (the local CPU model and the simulator work without)"
fi

ENV_FILE="$ROOT_DIR/.env"
if [[ -f "$ENV_FILE" ]]; then
  say ".env exists: left as it is"
else
  say "writing .env from .env.sample with generated secrets"
  rand() { head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c "$1"; }
  sed -e "s/^JWT_SECRET=.*/JWT_SECRET=$(rand 64)/" \
      -e "s/^POSTGRES_PASSWORD=.*/POSTGRES_PASSWORD=$(rand 32)/" \
      -e "s/^ADMIN_PASSWORD=.*/ADMIN_PASSWORD=$(rand 20)/" \
      "$ROOT_DIR/.env.sample" > "$ENV_FILE"
  chmod 600 "$ENV_FILE"
  say "admin password: $(grep '^ADMIN_PASSWORD=' "$ENV_FILE" | cut -d= -f2) (in .env)"
fi

if [[ -x "$ROOT_DIR/scripts/make-cert.sh" ]]; then
  "$ROOT_DIR/scripts/make-cert.sh" "$(env_or_dotenv NGINX_SERVER_NAME localhost)"
fi
say "setup done"

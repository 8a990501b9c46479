#!/bin/sh
# Render nginx.conf.template into a working nginx.conf.
#   nginx/render-config.sh [OUTPUT]        (default: stdout)
# Every ${NGINX_*} placeholder comes from the environment, with the defaults below (those of
# the container); nginx's own $variables are left alone. The included snippets are read from
# NGINX_CONF_DIR, which defaults to this script's directory.
set -eu

here=$(cd "$(dirname "$0")" && pwd)

: "${NGINX_CONF_DIR:=$here}"
: "${NGINX_USER:=www-data}"
: "${NGINX_WORKER_PROCESSES:=auto}"
: "${NGINX_PID_FILE:=/run/nginx.pid}"
: "${NGINX_MIME_TYPES:=/etc/nginx/mime.types}"
: "${NGINX_TEMP_DIR:=/var/lib/nginx}"
: "${NGINX_ACCESS_LOG:=/dev/stdout}"
: "${NGINX_CLIENT_MAX_BODY:=8m}"
: "${NGINX_GATEWAY:=gateway:8080}"
: "${NGINX_SERVER_NAME:=_}"
# Docker's embedded DNS (every container on a user-defined network has it); how long an
# answer is kept, so replicas that come and go are seen within that time
: "${NGINX_RESOLVER:=127.0.0.11}"
: "${NGINX_RESOLVER_VALID:=5s}"
: "${NGINX_HTTP_LISTEN:=80}"
: "${NGINX_HTTPS_LISTEN:=443}"
: "${NGINX_HTTPS_REDIRECT_PORT:=}"
: "${NGINX_CERT:=/etc/nginx/certs/server.crt}"
: "${NGINX_CERT_KEY:=/etc/nginx/certs/server.key}"
: "${NGINX_UI_ROOT:=/srv/ui}"

export NGINX_CONF_DIR NGINX_USER NGINX_WORKER_PROCESSES NGINX_PID_FILE NGINX_MIME_TYPES \
    NGINX_TEMP_DIR NGINX_ACCESS_LOG NGINX_CLIENT_MAX_BODY NGINX_GATEWAY NGINX_SERVER_NAME \
    NGINX_HTTP_LISTEN NGINX_HTTPS_LISTEN NGINX_HTTPS_REDIRECT_PORT NGINX_CERT NGINX_CERT_KEY \
    NGINX_UI_ROOT NGINX_RESOLVER NGINX_RESOLVER_VALID

vars='${NGINX_CONF_DIR} ${NGINX_USER} ${NGINX_WORKER_PROCESSES} ${NGINX_PID_FILE}
${NGINX_MIME_TYPES} ${NGINX_TEMP_DIR} ${NGINX_ACCESS_LOG} ${NGINX_CLIENT_MAX_BODY}
${NGINX_GATEWAY} ${NGINX_SERVER_NAME} ${NGINX_HTTP_LISTEN} ${NGINX_HTTPS_LISTEN}
${NGINX_HTTPS_REDIRECT_PORT} ${NGINX_CERT} ${NGINX_CERT_KEY} ${NGINX_UI_ROOT}
${NGINX_RESOLVER} ${NGINX_RESOLVER_VALID}'

template="${NGINX_TEMPLATE:-$here/nginx.conf.template}"
if [ "$#" -ge 1 ]; then
    envsubst "$vars" <"$template" >"$1"
else
    envsubst "$vars" <"$template"
fi

#!/bin/sh
# Container start: a self-signed certificate when none is mounted, the config rendered from
# the environment, a syntax check, then nginx in the foreground.
set -eu

cert="${NGINX_CERT:-/etc/nginx/certs/server.crt}"
key="${NGINX_CERT_KEY:-/etc/nginx/certs/server.key}"
if [ ! -s "$cert" ] || [ ! -s "$key" ]; then
    echo "nginx: no certificate at $cert; making a self-signed one" >&2
    CERT_FILE="$cert" KEY_FILE="$key" /usr/local/bin/make-cert.sh "${NGINX_SERVER_NAME:-localhost}"
fi

mkdir -p "${NGINX_TEMP_DIR:-/var/lib/nginx}"
/etc/nginx/vllm-chat/render-config.sh /etc/nginx/nginx.conf
nginx -t -q -e stderr
exec nginx -e stderr -g 'daemon off;'

#!/bin/sh
# A self-signed TLS certificate for nginx, made once (kept when it already exists).
#   scripts/make-cert.sh [COMMON_NAME] [--force]
# Writes nginx/certs/server.crt and server.key (override with CERT_FILE / KEY_FILE). Valid for
# COMMON_NAME (default: localhost), localhost, 127.0.0.1 and ::1, for 825 days. Give your own
# certificate instead by putting it at those two paths.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
cert="${CERT_FILE:-$here/nginx/certs/server.crt}"
key="${KEY_FILE:-$here/nginx/certs/server.key}"
name="localhost"
force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) name="$arg" ;;
    esac
done

if [ "$force" = 0 ] && [ -s "$cert" ] && [ -s "$key" ]; then
    echo "certificate exists: $cert (--force makes a new one)"
    exit 0
fi
if ! command -v openssl >/dev/null 2>&1; then
    echo "make-cert: openssl is missing (apt-get install openssl)" >&2
    exit 1
fi

san="DNS:localhost,IP:127.0.0.1,IP:::1"
case "$name" in
    localhost|_) ;;
    *[!0-9.]*) san="DNS:$name,$san" ;;
    *) san="IP:$name,$san" ;;
esac
[ "$name" = "_" ] && name=localhost

mkdir -p "$(dirname "$cert")" "$(dirname "$key")"
umask 077
openssl req -x509 -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -days 825 -subj "/CN=$name" -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$key" -out "$cert" 2>/dev/null
chmod 600 "$key"
chmod 644 "$cert"
echo "self-signed certificate for $name: $cert"

#!/usr/bin/env bash
# Back up the database: scripts/backup.sh [--out DIR]   (default BACKUP_DIR, else ./backups)
#
# Postgres: pg_dump's custom format (compose: inside the postgres container; otherwise the
# client tools against DATABASE_URL / POSTGRES_*, installed from Debian when missing). SQLite:
# the online backup API. The gateway may keep serving: the backup is one consistent snapshot.
# Writes gateway-<UTC time>.{pgdump,sqlite3} with .sha256 and .json (row counts) beside it and
# prints the backup's path on stdout; BACKUP_KEEP=N then keeps the newest N backups in the folder
# (0, the default: all). Restore with scripts/restore.sh FILE.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
out="$(env_or_dotenv BACKUP_DIR backups)"
[[ "$out" == /* ]] || out="$ROOT_DIR/$out"  # BACKUP_DIR: relative to the repository
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) [[ $# -ge 2 ]] || die "--out needs a folder"; out="$(realpath -m -- "$2")"; shift 2 ;;
    --out=*) out="$(realpath -m -- "${1#--out=}")"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

source "$ROOT_DIR/scripts/db-target.sh"
db_target
umask 077
cd "$GATEWAY_DIR"
keep="$(env_or_dotenv BACKUP_KEEP 0)"
[[ "$keep" =~ ^[0-9]+$ ]] || die "BACKUP_KEEP must be a whole number (0: keep every backup)"
exec "$DB_PYTHON" "$ROOT_DIR/scripts/dbbackup.py" backup "${DB_ARGS[@]}" --out "$out" --keep "$keep"

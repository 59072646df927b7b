#!/usr/bin/env bash
# A throwaway PostgreSQL server for the ledger's tests (idempotent).
#
#   eval "$(.ci/postgres.sh)"        # exports PRIVRANK_TEST_POSTGRES_URL
#   .ci/postgres.sh stop             # stops the server and deletes its directory
#
# Installs Debian's `postgresql` package when no server binaries are present (needs root), then
# runs a cluster under $PRIVRANK_PG_DIR (default /tmp/privrank-pg) as the `postgres` user when
# started as root, listening on 127.0.0.1 only, on a free port, with trust authentication for
# local connections. It creates the database `privrank_test`, writes
# `export PRIVRANK_TEST_POSTGRES_URL=...` to $PRIVRANK_PG_DIR/env and prints that line on stdout
# (everything else goes to stderr). Run again, it reuses (or restarts) the same cluster.
set -euo pipefail

STATE="${PRIVRANK_PG_DIR:-/tmp/privrank-pg}"
DATA="$STATE/data"
DB=privrank_test
log() { echo "postgres.sh: $*" >&2; }

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

PGBIN="$(find_bin)"
if [ "${1:-}" = "stop" ]; then
  if [ -n "$PGBIN" ] && [ -d "$DATA" ]; then
    as_owner "$PGBIN/pg_ctl" -D "$DATA" -m fast stop >&2 || true
  fi
  rm -rf "$STATE"
  exit 0
fi

if [ -z "$PGBIN" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "PostgreSQL is not installed and this is not root: apt-get install postgresql first"
    exit 1
  fi
  log "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  PGBIN="$(find_bin)"
fi

mkdir -p "$STATE"
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$STATE"; fi

if [ ! -f "$DATA/PG_VERSION" ]; then
  log "initialising a cluster in $DATA"
  rm -rf "$DATA"
  as_owner "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 \
    --no-instructions >&2
fi

if [ -f "$STATE/port" ]; then
  PORT="$(cat "$STATE/port")"
else
  PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  echo "$PORT" > "$STATE/port"
fi

if ! as_owner "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "starting the server on 127.0.0.1:$PORT"
  as_owner "$PGBIN/pg_ctl" -D "$DATA" -l "$STATE/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$STATE -c fsync=off" \
    start >&2
fi

if ! as_owner "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = '$DB'" postgres | grep -q 1; then
  as_owner "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
fi

URL="postgresql://postgres@127.0.0.1:$PORT/$DB"
echo "export PRIVRANK_TEST_POSTGRES_URL=$URL" > "$STATE/env"
echo "export PRIVRANK_TEST_POSTGRES_URL=$URL"

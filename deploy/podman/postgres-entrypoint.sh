#!/bin/sh
# The official postgres image's start-up, for Debian's PostgreSQL (Containerfile.postgres): on
# the first start of an empty PGDATA, make the cluster with the superuser POSTGRES_USER and
# its password, create POSTGRES_DB, run the files of /docker-entrypoint-initdb.d (*.sh run, or
# sourced when not executable; *.sql through psql) against a server listening on its socket
# only; then run the server for everyone, password logins only over the network.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA POSTGRES_USER POSTGRES_DB

if [ "${1:-postgres}" != postgres ]; then
  exec "$@"
fi
[ "$#" -eq 0 ] || shift

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD: the superuser logs in with it}"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  # UTF8 as in the official image (LANG en_US.utf8): SQL_ASCII would hand clients bytes.
  initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
    --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  pg_ctl --pgdata="$PGDATA" --wait --silent \
    -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start
  if [ "$POSTGRES_DB" != postgres ]; then
    psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
      --set db="$POSTGRES_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then "$f"; else . "$f"; fi
        ;;
      *.sql)
        psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
          --dbname "$POSTGRES_DB" -f "$f"
        ;;
      *) ;;
    esac
    echo "ran $f"
  done
  pg_ctl --pgdata="$PGDATA" --wait --silent -m fast stop
  echo "PostgreSQL init process complete; ready for start up."
fi

exec postgres -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"

#!/bin/sh
# The governance database of the teams set-up (docker-compose.teams.yml). PostgreSQL's official image runs the files of
# /docker-entrypoint-initdb.d once, on the first start of an empty data directory, as the
# superuser POSTGRES_USER (who then owns the database and, through the one-shot
# `governance-db`, its tables). The services log in as plumbline_app, which that one-shot lets
# only insert and read audit records (`plumbline audit grant plumbline_app`).
set -eu
: "${PLUMBLINE_DB_PASSWORD:?set PLUMBLINE_DB_PASSWORD in .env for the teams set-up}"
psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$PLUMBLINE_DB_PASSWORD" <<'SQL'
CREATE ROLE plumbline_app LOGIN PASSWORD :'password';
CREATE DATABASE plumbline;
\connect plumbline
-- Nobody but the owner creates tables in it.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL

#!/usr/bin/env bash
# Run once by the postgis image's entrypoint as the bootstrap superuser, when the database volume is
# first created: the owner role (runs the migrations), the runtime role (API, worker, beat; DML
# only, granted by the migrations), the database owned by the owner, and the extensions, which
# need a superuser. Nothing else runs as the superuser.
set -euo pipefail
: "${O2O_DB_OWNER_PASSWORD:?}" "${O2O_DB_APP_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_pw="$O2O_DB_OWNER_PASSWORD" -v app_pw="$O2O_DB_APP_PASSWORD" <<'SQL'
CREATE ROLE o2o_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_pw';
CREATE ROLE o2o_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_pw';
CREATE DATABASE o2o OWNER o2o_owner;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname o2o <<'SQL'
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL

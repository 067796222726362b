#!/usr/bin/env bash
# Bring the platform's real services up and down on this machine: PostgreSQL 15 + PostGIS 3 and
# Redis from Debian packages, in a project-local state folder, plus the locked virtualenv.
#
#   scripts/platform.sh deps [test|load]  install what is missing (apt packages, uv, .venv; `load`
#                                     adds wrk, the HTTP load generator of `make load`)
#   scripts/platform.sh up            deps, then start PostgreSQL and Redis (reuses what runs)
#   scripts/platform.sh createdb NAME [OWNER]  create a database (with postgis, pg_trgm) unless it
#                                     exists, owned by the owner role o2o_owner unless told
#   scripts/platform.sh dropdb NAME   drop a database if it exists
#   scripts/platform.sh down          stop PostgreSQL, Redis and anything `make run` started
#   scripts/platform.sh status        say what runs
#
# PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user that the
# Debian package creates; as an ordinary user it belongs to that user (apt then goes through sudo).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.local"
PG_VERSION=15
PG_BIN="/usr/lib/postgresql/$PG_VERSION/bin"
PG_PORT=${O2O_PG_PORT:-55432}
REDIS_PORT=${O2O_REDIS_PORT:-56379}
PGDATA="$STATE/pg/data"
PG_LOG="$STATE/pg/postgres.log"
# Development-only credentials for the project-local cluster (never used in deployment).
PG_SUPERUSER_PASSWORD=${O2O_PG_SUPERUSER_PASSWORD:-postgres-dev-only}
APP_ROLE=o2o
APP_PASSWORD=${O2O_PG_APP_PASSWORD:-o2o-dev-only}
# Least privilege: the owner role owns the schema and runs the migrations; the runtime role (API,
# worker, beat, the test suite) gets DML only, granted by the migrations. Neither is a superuser.
# `o2o` above is kept for clusters and tools that predate them; nothing here alters or drops it.
OWNER_ROLE=o2o_owner
OWNER_PASSWORD=${O2O_PG_OWNER_PASSWORD:-o2o-owner-dev-only}
RUNTIME_ROLE=o2o_app
RUNTIME_PASSWORD=${O2O_PG_RUNTIME_PASSWORD:-o2o-app-dev-only}
UV_VERSION=0.13.9

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Run a command as the unprivileged owner of the cluster.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  as_root apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >/dev/null
}

ensure_venv() {
  local uv="$STATE/tools/bin/uv"
  if [ ! -x "$uv" ] || ! "$uv" --version 2>/dev/null | grep -q "$UV_VERSION"; then
    say "installing uv $UV_VERSION (the lock file's installer)"
    python3 -m venv "$STATE/tools"
    "$STATE/tools/bin/pip" install -q "uv==$UV_VERSION"
  fi
  # --frozen: install exactly uv.lock; never resolve anew at run time.
  UV_PYTHON_DOWNLOADS=never "$uv" sync --frozen --quiet --python python3.11
}

cmd_deps() {
  local pkgs=("postgresql-$PG_VERSION" "postgresql-$PG_VERSION-postgis-3" redis-server)
  if [ "${1:-}" = test ]; then
    # docker-compose validates the deployment recipe (no engine needed); chromium runs the
    # console's browser tests.
    pkgs+=(docker-compose chromium)
  fi
  # wrk, a C load generator: `make load` drives HTTP without a Python interpreter per request.
  [ "${1:-}" = load ] && pkgs+=(wrk)
  mkdir -p "$STATE"
  apt_install "${pkgs[@]}"
  ensure_venv
}

pg_running() { [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

pg_init() {
  [ -f "$PGDATA/PG_VERSION" ] && return 0
  say "creating a PostgreSQL cluster in .local/pg (port $PG_PORT)"
  mkdir -p "$STATE/pg"
  local pwfile="$STATE/pg/.pwfile"
  printf '%s\n' "$PG_SUPERUSER_PASSWORD" > "$pwfile"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$STATE/pg"
    as_pg test -x "$STATE/pg" || die "user postgres cannot reach $STATE; clone the project somewhere it can read"
  fi
  as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth-host=scram-sha-256 \
    --auth-local=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  cat >> "$PGDATA/postgresql.conf" <<CONF
# project-local development cluster
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 300
shared_buffers = 512MB
work_mem = 16MB
maintenance_work_mem = 512MB
fsync = on
synchronous_commit = off
logging_collector = off
CONF
  printf '%s\n' "${PG_SETTINGS[@]}" >> "$PGDATA/postgresql.conf"
}

# Planner settings, also applied to a cluster created before they were added (ALTER SYSTEM and
# a reload; no restart needed). SSD-backed, mostly cached data: random reads cost about what
# sequential ones do. JIT compiles for longer than the short queries of a request run.
PG_SETTINGS=("random_page_cost = 1.1" "jit = off")

pg_apply_settings() {
  local setting name value sql="" changes
  for setting in "${PG_SETTINGS[@]}"; do
    name=${setting%% *}
    value=${setting##* }
    sql+="SELECT format('ALTER SYSTEM SET %s = %L;', name, '$value') FROM pg_settings"
    sql+=" WHERE name = '$name' AND setting <> '$value' UNION ALL "
  done
  changes=$(psql_super -d postgres -tAc "${sql% UNION ALL }")
  [ -n "$changes" ] || return 0
  say "applying PostgreSQL settings: ${PG_SETTINGS[*]}"
  printf '%s\nSELECT pg_reload_conf();\n' "$changes" | psql_super -d postgres -q -v ON_ERROR_STOP=1 >/dev/null
}

# Create the owner and runtime roles when missing (additive and idempotent: a running cluster
# shared with other work gains the roles, nothing existing changes).
pg_ensure_roles() {
  psql_super -d postgres -v ON_ERROR_STOP=1 -q <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$OWNER_ROLE') THEN
    CREATE ROLE $OWNER_ROLE LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$OWNER_PASSWORD';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$RUNTIME_ROLE') THEN
    CREATE ROLE $RUNTIME_ROLE LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$RUNTIME_PASSWORD';
  END IF;
END \$\$;
SQL
}

pg_start() {
  pg_init
  if pg_running; then
    pg_ensure_roles
    pg_apply_settings
    return 0
  fi
  say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 60 start >/dev/null
  psql_super -d postgres -v ON_ERROR_STOP=1 -q <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_ROLE') THEN
    CREATE ROLE $APP_ROLE LOGIN SUPERUSER PASSWORD '$APP_PASSWORD';
  END IF;
END \$\$;
SQL
  pg_ensure_roles
  pg_apply_settings
}

psql_super() {
  PGPASSWORD="$PG_SUPERUSER_PASSWORD" psql -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

cmd_createdb() {
  local name=$1 owner=${2:-$OWNER_ROLE}
  if ! psql_super -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
    psql_super -d postgres -q -c "CREATE DATABASE \"$name\" OWNER $owner"
  fi
  # Extensions need a superuser; the first migration only asserts they exist.
  psql_super -d "$name" -q -c "CREATE EXTENSION IF NOT EXISTS postgis; CREATE EXTENSION IF NOT EXISTS pg_trgm" \
    2>&1 | grep -v NOTICE || true
}

cmd_dbowner() {
  psql_super -d postgres -tAc "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$1'"
}

cmd_dropdb() {
  psql_super -d postgres -q -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)"
}

redis_running() { redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; }

redis_start() {
  redis_running && return 0
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  mkdir -p "$STATE/redis"
  # Append-only persistence: queued Celery work survives a Redis restart.
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
    --dir "$STATE/redis" --pidfile "$STATE/redis/redis.pid" --logfile "$STATE/redis/redis.log" \
    --appendonly yes --appendfsync everysec --save "" >/dev/null
  local i
  for i in $(seq 1 50); do redis_running && return 0; sleep 0.1; done
  die "Redis did not start; see .local/redis/redis.log"
}

cmd_up() {
  cmd_deps "${1:-}"
  pg_start
  redis_start
}

cmd_down() {
  local pidfile
  for pidfile in "$STATE"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  if redis_running; then
    say "stopping Redis"
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  fi
  if pg_running; then
    say "stopping PostgreSQL"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  fi
}

cmd_status() {
  if pg_running; then echo "PostgreSQL: running on 127.0.0.1:$PG_PORT"; else echo "PostgreSQL: stopped"; fi
  if redis_running; then echo "Redis: running on 127.0.0.1:$REDIS_PORT"; else echo "Redis: stopped"; fi
}

case "${1:-}" in
  deps) shift; cmd_deps "$@" ;;
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  createdb) cmd_createdb "$2" "${3:-}" ;;
  dropdb) cmd_dropdb "$2" ;;
  dbowner) cmd_dbowner "$2" ;;
  status) cmd_status ;;
  pg-running) pg_running ;;
  redis-running) redis_running ;;
  *) die "usage: $0 deps [test] | up [test] | down | createdb NAME | dropdb NAME | status" ;;
esac

#!/usr/bin/env bash
# `make load`: the platform under load next to the reference endpoint (benchmarks/load.py), on the
# demo city (database o2o_load_demo, seeded here when empty) and on the search benchmark's
# 10,000-store city (o2o_bench; generated first with scripts/bench.sh search when missing).
# Installs wrk (Debian package) when it is missing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Development, chosen explicitly (the settings default to production and its refusals).
export O2O_ENV=${O2O_ENV:-development}
# The servers run as production, which needs their own keys; the clients sign tokens with the same.
for name in TOKEN_SECRET_KEY SESSION_SECRET_KEY IDENTITY_PEPPER; do
  export "O2O_$name=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
done
bash scripts/platform.sh deps load
bash scripts/platform.sh up
PG="postgresql+psycopg://o2o:o2o-dev-only@127.0.0.1:${O2O_PG_PORT:-55432}"
export O2O_REDIS_URL="redis://127.0.0.1:${O2O_REDIS_PORT:-56379}/3"
# The demo city in a database of its own: it lies where the benchmark city does.
DEMO_DB=${O2O_LOAD_DEMO_DB_NAME:-o2o_load_demo}
bash scripts/platform.sh createdb "$DEMO_DB"
export O2O_LOAD_DEMO_URL="$PG/$DEMO_DB"
O2O_DATABASE_URL="$O2O_LOAD_DEMO_URL" "$ROOT/.venv/bin/alembic" upgrade head >/dev/null
O2O_DATABASE_URL="$O2O_LOAD_DEMO_URL" "$ROOT/.venv/bin/python" -m o2o demo-data >/dev/null
DB_NAME=${O2O_BENCH_DB_NAME:-o2o_bench}
bash scripts/platform.sh createdb "$DB_NAME"
export O2O_DATABASE_URL="$PG/$DB_NAME"
"$ROOT/.venv/bin/alembic" upgrade head >/dev/null
status=0
"$ROOT/.venv/bin/python" -m benchmarks.load "$@" || status=$?
if [ "$status" = 3 ]; then
  O2O_BENCH_DB_NAME="$DB_NAME" bash scripts/bench.sh search
  "$ROOT/.venv/bin/python" -m benchmarks.load "$@"
else
  exit "$status"
fi

#!/usr/bin/env bash
# `make test`: start PostgreSQL + PostGIS and Redis (reusing them if `make run` has them up), run
# the whole suite against a database and Redis number of its own, then stop what it started.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

already_up=false
if bash scripts/platform.sh pg-running 2>/dev/null && bash scripts/platform.sh redis-running 2>/dev/null; then
  already_up=true
fi
bash scripts/platform.sh up test
if [ "$already_up" = false ]; then
  trap 'bash scripts/platform.sh down' EXIT
fi

export O2O_ENV=test
export O2O_TEST_DB_NAME=${O2O_TEST_DB_NAME:-o2o_test}
export O2O_DATABASE_URL="postgresql+psycopg://o2o:o2o-dev-only@127.0.0.1:${O2O_PG_PORT:-55432}/$O2O_TEST_DB_NAME"
export O2O_REDIS_URL="redis://127.0.0.1:${O2O_REDIS_PORT:-56379}/1"
# A fresh database each run, migrated once by the suite (tests/conftest.py).
bash scripts/platform.sh dropdb "$O2O_TEST_DB_NAME"
bash scripts/platform.sh createdb "$O2O_TEST_DB_NAME"
redis-cli -p "${O2O_REDIS_PORT:-56379}" -n 1 flushdb >/dev/null

"$ROOT/.venv/bin/python" -m pytest "$@"

#!/usr/bin/env bash
# `make load`: the API under load (benchmarks/load.py) on the search benchmark's city in the
# o2o_bench database; generates the city first (scripts/bench.sh search) when it is missing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/platform.sh up
DB_NAME=${O2O_BENCH_DB_NAME:-o2o_bench}
bash scripts/platform.sh createdb "$DB_NAME"
export O2O_DATABASE_URL="postgresql+psycopg://o2o:o2o-dev-only@127.0.0.1:${O2O_PG_PORT:-55432}/$DB_NAME"
export O2O_REDIS_URL="redis://127.0.0.1:${O2O_REDIS_PORT:-56379}/3"
"$ROOT/.venv/bin/alembic" upgrade head >/dev/null
status=0
"$ROOT/.venv/bin/python" -m benchmarks.load "$@" || status=$?
if [ "$status" = 3 ]; then
  O2O_BENCH_DB_NAME="$DB_NAME" bash scripts/bench.sh search
  "$ROOT/.venv/bin/python" -m benchmarks.load "$@"
else
  exit "$status"
fi

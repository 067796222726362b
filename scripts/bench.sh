#!/usr/bin/env bash
# `make bench`: run the benchmarks against a database of their own (o2o_bench) and print figures.
# Usage: scripts/bench.sh [module ...]   (default: every module in benchmarks/)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/platform.sh up
DB_NAME=${O2O_BENCH_DB_NAME:-o2o_bench}
bash scripts/platform.sh createdb "$DB_NAME"
export O2O_ENV=development
export O2O_DATABASE_URL="postgresql+psycopg://o2o:o2o-dev-only@127.0.0.1:${O2O_PG_PORT:-55432}/$DB_NAME"
export O2O_REDIS_URL="redis://127.0.0.1:${O2O_REDIS_PORT:-56379}/2"
"$ROOT/.venv/bin/alembic" upgrade head >/dev/null
modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
  for f in benchmarks/*.py; do
    name=$(basename "$f" .py)
    [ "$name" = __init__ ] || [ "${name#_}" != "$name" ] || modules+=("$name")
  done
fi
for m in "${modules[@]}"; do
  echo "==> benchmark: $m" >&2
  "$ROOT/.venv/bin/python" -m "benchmarks.$m"
done

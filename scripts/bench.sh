#!/usr/bin/env bash
# `make bench`: run the benchmarks, each against a database of its own, and print the figures.
# Usage: scripts/bench.sh [module ...]   (default: search, savepoint, orders, placement_cpu, hot_read_cpu, dispatch; the API under load is
# `make load`). O2O_BENCH_DB_NAME overrides the database of every module run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/platform.sh up
export O2O_ENV=development
export O2O_REDIS_URL="redis://127.0.0.1:${O2O_REDIS_PORT:-56379}/2"
modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(search savepoint orders placement_cpu hot_read_cpu dispatch)
for m in "${modules[@]}"; do
  # The search city is o2o_bench (the savepoint and load tests read it too); the races get databases of their
  # own, so they never disturb the city.
  if [ "$m" = search ] || [ "$m" = savepoint ] || [ "$m" = load ]; then db_default=o2o_bench; else db_default="o2o_bench_$m"; fi
  db=${O2O_BENCH_DB_NAME:-$db_default}
  bash scripts/platform.sh createdb "$db"
  export O2O_DATABASE_URL="postgresql+psycopg://o2o:o2o-dev-only@127.0.0.1:${O2O_PG_PORT:-55432}/$db"
  "$ROOT/.venv/bin/alembic" upgrade head >/dev/null
  echo "==> benchmark: $m (database $db)" >&2
  "$ROOT/.venv/bin/python" -m "benchmarks.$m"
done

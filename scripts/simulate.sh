#!/usr/bin/env bash
# `make simulate`: replay a day in the demo city (ranked dispatch vs first come, first served)
# on a database of its own (o2o_sim, emptied on every run) and print both SLA reports.
# Usage: scripts/simulate.sh [--seed N] [--orders N] [--couriers N] [--hours H]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/platform.sh up
DB_NAME=${O2O_SIM_DB_NAME:-o2o_sim}
case "$DB_NAME" in *_sim) ;; *) echo "O2O_SIM_DB_NAME must end in _sim (it is emptied)" >&2; exit 2 ;; esac
bash scripts/platform.sh createdb "$DB_NAME"
export O2O_ENV=development
export O2O_DATABASE_URL="postgresql+psycopg://o2o:o2o-dev-only@127.0.0.1:${O2O_PG_PORT:-55432}/$DB_NAME"
export O2O_REDIS_URL="redis://127.0.0.1:${O2O_REDIS_PORT:-56379}/3"
"$ROOT/.venv/bin/alembic" upgrade head >/dev/null
exec "$ROOT/.venv/bin/python" -m o2o simulate "$@"

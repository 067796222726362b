#!/usr/bin/env bash
# `make simulate`: replay a day in the demo city under each policy (fifo, ranked, platform) and
# print the reports side by side with one summary line per policy. Each policy runs in a process
# and a database of its own (o2o_<policy>_sim, emptied on every run), at the same time.
# Usage: scripts/simulate.sh [--scenario default|peak|storm] [--seed N] [--orders N]
#        [--couriers N] [--hours H] [--policy NAME ...] [--hindsight]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/platform.sh up
DB_NAME=${O2O_SIM_DB_NAME:-o2o_sim}
case "$DB_NAME" in *_sim) ;; *) echo "O2O_SIM_DB_NAME must end in _sim (it is emptied)" >&2; exit 2 ;; esac
url() { echo "postgresql+psycopg://o2o:o2o-dev-only@127.0.0.1:${O2O_PG_PORT:-55432}/$1"; }
export O2O_ENV=development
# Per-person limits count real seconds in Redis, while the day runs hundreds of times faster and
# the policies replay it at once with the same patients: a patient's few prescription requests
# of a day would land in one real minute. They are lifted for the replay, as `make load` does.
export O2O_PRESCRIPTION_REQUEST_RATE_LIMIT=${O2O_PRESCRIPTION_REQUEST_RATE_LIMIT:-1000000/hour}
export O2O_REDIS_URL="redis://127.0.0.1:${O2O_REDIS_PORT:-56379}/${O2O_SIM_REDIS_DB:-3}"
for db in "$DB_NAME" "${DB_NAME%_sim}_fifo_sim" "${DB_NAME%_sim}_ranked_sim" "${DB_NAME%_sim}_platform_sim"; do
  bash scripts/platform.sh createdb "$db"
  O2O_DATABASE_URL=$(url "$db") "$ROOT/.venv/bin/alembic" upgrade head >/dev/null 2>&1
done
export O2O_DATABASE_URL=$(url "$DB_NAME")
export O2O_SIM_POLICY_DATABASES=1
exec "$ROOT/.venv/bin/python" -m o2o simulate "$@"

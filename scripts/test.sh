#!/usr/bin/env bash
# `make test`: start PostgreSQL + PostGIS and Redis (reusing them if `make run` has them up), run
# the whole suite against a database and Redis number of its own, then stop what it started.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Servers a test run started belong to the test runs (this marker) until the last of them stops
# them; servers `make run` started (it removes the marker) are left running.
owned="$ROOT/.local/servers-started-by-tests"
already_up=false
if bash scripts/platform.sh pg-running 2>/dev/null && bash scripts/platform.sh redis-running 2>/dev/null; then
  already_up=true
fi
bash scripts/platform.sh up test
mkdir -p "$ROOT/.local"
[ "$already_up" = true ] || touch "$owned"
stop_if_last() {
  # Give up this run's slot first, so two runs ending together cannot each wait for the other.
  [ -n "${lockfd:-}" ] && flock -u "$lockfd"
  [ -e "$owned" ] || return 0
  # Leave the servers to a run that is still going in another slot.
  local n fd
  for n in 1 2 3 4 5 6 7; do
    exec {fd}>"$ROOT/.local/test-slot-$n.lock"
    if ! flock -n "$fd"; then exec {fd}>&-; return 0; fi
    flock -u "$fd"; exec {fd}>&-
  done
  rm -f "$owned"
  bash scripts/platform.sh down
}
trap stop_if_last EXIT

# Each run takes a free slot: its own database and Redis database number, so several runs (and a
# `make run` on database 0) never share state. Slot 1 is the usual one.
slot=""
for n in 1 2 3 4 5 6 7; do
  exec {lockfd}>"$ROOT/.local/test-slot-$n.lock"
  if flock -n "$lockfd"; then slot=$n; break; fi
  exec {lockfd}>&-
done
[ -n "$slot" ] || { echo "error: every test slot is busy" >&2; exit 1; }
if [ "$slot" = 1 ]; then db_default=o2o_test; redis_db=1; else db_default="o2o_s${slot}_test"; redis_db=$((slot + 8)); fi

export O2O_ENV=test
export O2O_TEST_DB_NAME=${O2O_TEST_DB_NAME:-$db_default}
export O2O_DATABASE_URL="postgresql+psycopg://o2o:o2o-dev-only@127.0.0.1:${O2O_PG_PORT:-55432}/$O2O_TEST_DB_NAME"
export O2O_REDIS_URL="redis://127.0.0.1:${O2O_REDIS_PORT:-56379}/$redis_db"
# A fresh database each run, migrated once by the suite (tests/conftest.py).
bash scripts/platform.sh dropdb "$O2O_TEST_DB_NAME"
bash scripts/platform.sh createdb "$O2O_TEST_DB_NAME"
redis-cli -p "${O2O_REDIS_PORT:-56379}" -n "$redis_db" flushdb >/dev/null

"$ROOT/.venv/bin/python" -m pytest "$@"

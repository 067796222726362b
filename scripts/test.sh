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
pg="127.0.0.1:${O2O_PG_PORT:-55432}"
# The suite runs as the runtime role (DML only), as the API, worker and beat do; the owner role
# migrates and cleans up (tests/conftest.py).
export O2O_DATABASE_URL="postgresql+psycopg://o2o_app:${O2O_PG_RUNTIME_PASSWORD:-o2o-app-dev-only}@$pg/$O2O_TEST_DB_NAME"
export O2O_OWNER_DATABASE_URL="postgresql+psycopg://o2o_owner:${O2O_PG_OWNER_PASSWORD:-o2o-owner-dev-only}@$pg/$O2O_TEST_DB_NAME"
export O2O_REDIS_URL="redis://127.0.0.1:${O2O_REDIS_PORT:-56379}/$redis_db"
# The suite's webhook receivers listen on this machine: allowed in test only (o2o/outbound.py).
export O2O_OUTBOUND_ALLOWED_HOSTS=127.0.0.1
# A fresh database each run, migrated once by the suite (tests/conftest.py), owned by the owner
# role; and an empty one beside it for the migration tests (the owner may not create databases).
for db in "$O2O_TEST_DB_NAME" "${O2O_TEST_DB_NAME}_migrations"; do
  bash scripts/platform.sh dropdb "$db"
  bash scripts/platform.sh createdb "$db"
done
redis-cli -p "${O2O_REDIS_PORT:-56379}" -n "$redis_db" flushdb >/dev/null

bash "$ROOT/scripts/i18n.sh" compile >/dev/null
"$ROOT/.venv/bin/python" -m pytest "$@"

#!/usr/bin/env bash
# `make run`: install what is missing, start PostgreSQL + PostGIS and Redis, migrate, load demo
# data, then run the API, a Celery worker and Celery beat in the foreground until Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Development, chosen explicitly (the settings default to production and its refusals).
export O2O_ENV=${O2O_ENV:-development}
PORT=${PORT:-8000}
DB_NAME=${O2O_DB_NAME:-o2o}
RUN="$ROOT/.local/run"

bash scripts/platform.sh up
# These servers are now the platform's: a test run that ends must not stop them.
rm -f "$ROOT/.local/servers-started-by-tests"
bash scripts/platform.sh createdb "$DB_NAME"
owner=$(bash scripts/platform.sh dbowner "$DB_NAME")
if [ "$owner" != o2o_owner ]; then
  echo "error: database $DB_NAME belongs to $owner, from before the owner role; recreate it with" \
    "\`bash scripts/platform.sh dropdb $DB_NAME\` (its data is lost) and run again" >&2
  exit 1
fi

# The owner role migrates; the API, worker and beat run as the runtime role (DML only).
pg="127.0.0.1:${O2O_PG_PORT:-55432}"
OWNER_URL="postgresql+psycopg://o2o_owner:${O2O_PG_OWNER_PASSWORD:-o2o-owner-dev-only}@$pg/$DB_NAME"
export O2O_DATABASE_URL=${O2O_DATABASE_URL:-postgresql+psycopg://o2o_app:${O2O_PG_RUNTIME_PASSWORD:-o2o-app-dev-only}@$pg/$DB_NAME}
export O2O_REDIS_URL=${O2O_REDIS_URL:-redis://127.0.0.1:${O2O_REDIS_PORT:-56379}/0}
PY="$ROOT/.venv/bin/python"

echo "==> compiling the translations" >&2
bash "$ROOT/scripts/i18n.sh" compile >/dev/null
echo "==> applying migrations" >&2
O2O_DATABASE_URL="$OWNER_URL" "$ROOT/.venv/bin/alembic" upgrade head
echo "==> loading demo data" >&2
"$PY" -m o2o demo-data

mkdir -p "$RUN"
pids=()
start() { # name, command...
  local name=$1; shift
  "$@" &
  local pid=$!
  echo "$pid" > "$RUN/$name.pid"
  pids+=("$pid")
}

stop_all() {
  trap - INT TERM EXIT
  echo "==> stopping API, worker and beat" >&2
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  rm -f "$RUN"/api.pid "$RUN"/worker.pid "$RUN"/beat.pid "$RUN"/payments.pid
}
trap stop_all INT TERM EXIT

start api "$ROOT/.venv/bin/uvicorn" main:app --host 127.0.0.1 --port "$PORT"
start worker "$ROOT/.venv/bin/celery" -A o2o.worker worker --loglevel=INFO --concurrency=2
start beat "$ROOT/.venv/bin/celery" -A o2o.worker beat --loglevel=INFO \
  --schedule "$RUN/celerybeat-schedule"
# The development payment app (registers itself; refuses production): captures each online
# payment a few seconds after the platform requests it, and confirms each refund.
PAYMENTS_PORT=${PAYMENTS_PORT:-8765}
start payments "$PY" -m o2o payments dev-app --port "$PAYMENTS_PORT" \
  --platform-url "http://127.0.0.1:$PORT"

cat >&2 <<MSG

  API      http://127.0.0.1:$PORT/api/v1/docs  (OpenAPI: /api/v1/openapi.json)
  Ready?   curl http://127.0.0.1:$PORT/readyz
  Payments development payment app on http://127.0.0.1:$PAYMENTS_PORT/hooks (pays each order)
  Ctrl-C stops the API, worker, beat and payment app; 'make stop' also stops PostgreSQL and Redis.

MSG
# Any one of them exiting brings the others down too.
wait -n "${pids[@]}"

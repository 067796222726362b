#!/usr/bin/env bash
# `make fuzz`: the API fuzzed from outside, before a release. A fresh database with the demo
# city, the API served by uvicorn, and schemathesis running every check through its examples,
# coverage, fuzzing and stateful phases (walking the OpenAPI links) as each demo role, with a
# fixed seed it prints. schemathesis.toml holds what the suite's fuzzing shares: the check that
# accepts a 422 to valid data only with a code the operation documents, and links as declared.
# tests/fuzz_release.py sends, every other time, a creating body that can succeed in the demo
# city, so the stateful phase has something to walk the links from.
#   FUZZ_SEED (default 7311), FUZZ_EXAMPLES per operation (default 60), FUZZ_ROLES, FUZZ_TIMEOUT
#   (seconds per request, default 30). The API log is kept in artifacts/fuzz/api.log.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/platform.sh up
DB=o2o_fuzz
SEED=${FUZZ_SEED:-7311}
EXAMPLES=${FUZZ_EXAMPLES:-60}
ROLES=${FUZZ_ROLES:-"patient pharmacist courier doctor admin"}
PORT=${FUZZ_PORT:-8765}
export O2O_ENV=development
# As in deployment: the owner role migrates, the API runs as the runtime role (DML only).
pg="127.0.0.1:${O2O_PG_PORT:-55432}"
OWNER_URL="postgresql+psycopg://o2o_owner:${O2O_PG_OWNER_PASSWORD:-o2o-owner-dev-only}@$pg/$DB"
export O2O_DATABASE_URL="postgresql+psycopg://o2o_app:${O2O_PG_RUNTIME_PASSWORD:-o2o-app-dev-only}@$pg/$DB"
export O2O_REDIS_URL="redis://127.0.0.1:${O2O_REDIS_PORT:-56379}/15"
# The fuzzer sends thousands of requests a minute: rate limits would answer most of them 429.
export O2O_SEARCH_RATE_LIMIT="100000/minute" O2O_ORDER_RATE_LIMIT="100000/minute"
export O2O_REGISTER_RATE_LIMIT="100000/minute" O2O_COURIER_LOCATION_RATE_LIMIT="100000/second"
export O2O_LOGIN_FAILURES_ALLOWED=100000
bash scripts/platform.sh dropdb "$DB" >/dev/null
bash scripts/platform.sh createdb "$DB" >/dev/null
redis-cli -p "${O2O_REDIS_PORT:-56379}" -n 15 flushdb >/dev/null
O2O_DATABASE_URL="$OWNER_URL" .venv/bin/alembic upgrade head >/dev/null
.venv/bin/python -m o2o demo-data >/dev/null
mkdir -p artifacts/fuzz
# The API's own log (one line per request, tracebacks of any server error) goes to a file; the
# terminal shows the fuzzer's progress.
.venv/bin/uvicorn main:app --host 127.0.0.1 --port "$PORT" --log-level warning --no-access-log \
  >artifacts/fuzz/api.log 2>&1 &
api=$!
trap 'kill $api 2>/dev/null; wait $api 2>/dev/null || true' EXIT
up=false
for _ in $(seq 240); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && { up=true; break; }
  sleep 0.5
done
[ "$up" = true ] || { echo "error: the API did not start; see artifacts/fuzz/api.log" >&2; exit 1; }
# The shared settings, with this run's hooks module in place of the suite's (schemathesis reads
# one hooks module, from its settings file before the environment).
sed 's/^hooks = .*/hooks = "tests.fuzz_release"/' schemathesis.toml >artifacts/fuzz/schemathesis.toml
echo "fuzzing with seed $SEED, $EXAMPLES examples per operation, as: $ROLES"
failed=0
for role in $ROLES; do
  token=$(curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/auth/token" \
    -d "username=$role@example.com&password=demo-password" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  echo "== as $role"
  .venv/bin/schemathesis --config-file artifacts/fuzz/schemathesis.toml run "http://127.0.0.1:$PORT/api/v1/openapi.json" \
    --checks all --exclude-checks positive_data_acceptance --phases examples,coverage,fuzzing,stateful \
    --seed "$SEED" --max-examples "$EXAMPLES" --request-timeout "${FUZZ_TIMEOUT:-30}" \
    --exclude-path-regex '/metrics$' \
    -H "Authorization: Bearer $token" \
    --report junit --report-junit-path "artifacts/fuzz/$role.xml" || failed=1
done
exit $failed

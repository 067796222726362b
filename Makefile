# The two commands of the README are `make run` and `make test`; the rest are helpers.
.PHONY: run test stop status bench load simulate lint format fuzz

run: ## install what is missing, start everything, serve on http://127.0.0.1:8000 (PORT overrides)
	bash scripts/run.sh

test: ## the whole test suite against real PostGIS, Redis and a Celery worker
	bash scripts/test.sh

stop: ## stop anything `make run` or `make test` left running
	bash scripts/platform.sh down

status:
	bash scripts/platform.sh status

lint: ## ruff, and the import-linter contracts that keep the floors (pyproject.toml)
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

bench: ## benchmarks (benchmark city, the walk's savepoint, order and claim races, the CPU time of a placement and of the hot reads); prints the figures
	bash scripts/bench.sh

load: ## the API under load next to a bare reference endpoint (wrk; demo and 10,000-store cities, flash sale, courier rush); prints the ratios
	bash scripts/load.sh $(ARGS)

SCENARIO ?= peak
simulate: ## a simulated day of the demo city under fifo, ranked and platform (SCENARIO=default|peak|storm, ARGS="--seed 3 --hindsight")
	bash scripts/simulate.sh --scenario $(SCENARIO) $(ARGS)

fuzz: ## schemathesis against the served API (all checks; examples, coverage, fuzzing, stateful) as each demo role; FUZZ_SEED, FUZZ_EXAMPLES
	bash scripts/fuzz.sh

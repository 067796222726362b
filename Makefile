# The two commands of the README are `make run` and `make test`; the rest are helpers.
.PHONY: run test stop status bench lint format

run: ## install what is missing, start everything, serve on http://127.0.0.1:8000 (PORT overrides)
	bash scripts/run.sh

test: ## the whole test suite against real PostGIS, Redis and a Celery worker
	bash scripts/test.sh

stop: ## stop anything `make run` or `make test` left running
	bash scripts/platform.sh down

status:
	bash scripts/platform.sh status

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

bench: ## benchmarks (benchmark city, order and claim races); prints the figures
	bash scripts/bench.sh

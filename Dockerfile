# syntax=docker/dockerfile:1
# Application image for the API, the Celery worker and beat, and the one-off migration job.
# The same image serves every role; docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1

# The lock file's installer, pinned.
RUN pip install "uv==0.13.9"

WORKDIR /app

# Dependencies first, from the lock file only, so this layer is reused until the lock changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the source.
COPY o2o/ ./o2o/
COPY stores/ ./stores/
COPY prescriptions/ ./prescriptions/
COPY dispatch/ ./dispatch/
COPY migrations/ ./migrations/
COPY main.py alembic.ini ./
# The translations' .mo files are built here from the committed .po files (they are not in git).
RUN /app/.venv/bin/pybabel compile -d o2o/locale

# Run unprivileged. The code and the virtualenv stay owned by root, so the app cannot alter them.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app
USER app

ENV PATH=/app/.venv/bin:$PATH \
    O2O_ENV=production

EXPOSE 8000

# The server is uvicorn's, its workers each accepting on a socket of their own (o2o/serve.py), so
# a burst of new connections is spread over the workers instead of landing on the first awake.
# Slow or huge requests must not exhaust the workers (tests/test_resource_limits.py checks these):
# --timeout-keep-alive 5        idle keep-alive connections close after 5 s;
# --limit-concurrency 256       past 256 open connections+tasks per worker, new ones get 503 at once
#                               instead of queueing behind a flood;
# --backlog 2048                connections the kernel holds for each worker's socket while it is busy;
# --h11-max-incomplete-event-size 16384  request line + headers capped at 16 KB;
# --timeout-graceful-shutdown 20  a deploy waits at most 20 s for requests in flight.
# Bodies are capped in the app (O2O_MAX_BODY_BYTES, 413, counted while streaming) and the reverse
# proxy in front buffers request bodies, so a client trickling bytes holds a proxy connection, not
# a worker.
CMD ["python", "-m", "o2o.serve", "main:app", "--host", "0.0.0.0", "--port", "8000", "--workers", "4", "--proxy-headers", \
     "--timeout-keep-alive", "5", "--limit-concurrency", "256", "--backlog", "2048", \
     "--h11-max-incomplete-event-size", "16384", "--timeout-graceful-shutdown", "20"]

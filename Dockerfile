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

# Run unprivileged. The code and the virtualenv stay owned by root, so the app cannot alter them.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app
USER app

ENV PATH=/app/.venv/bin:$PATH

EXPOSE 8000

CMD ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000", "--workers", "4", "--proxy-headers"]

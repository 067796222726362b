"""The deployment recipe: docker-compose.yml validates and wires the services correctly, and the
Dockerfile builds from the lock file and runs unprivileged. No database or Docker engine needed:
`docker-compose config` only parses, validates and interpolates the file."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = ("migrate", "api", "worker", "beat")
LONG_RUNNING_APP_SERVICES = ("api", "worker", "beat")


def _compose_command() -> list[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian package `docker-compose`)")
    return [binary]


def _run_config(extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"O2O_SECRET_KEY", "POSTGRES_PASSWORD", "FORWARDED_ALLOW_IPS"}
        and not k.startswith("COMPOSE_")
    }
    env.update(extra_env or {})
    return subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), "docker-compose.yml is missing"
    result = _run_config()
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict) and "services" in config
    return config


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _command(service: dict) -> list[str]:
    command = service.get("command")
    if command is None:
        return []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _healthcheck_test(service: dict) -> str:
    check = service.get("healthcheck")
    assert check, "no healthcheck"
    assert not check.get("disable", False)
    test = check["test"]
    return test if isinstance(test, str) else " ".join(str(part) for part in test)


def test_all_services_are_defined(services: dict) -> None:
    assert {"db", "redis", "migrate", "api", "worker", "beat"} <= set(services)


def test_images(services: dict) -> None:
    assert services["db"]["image"] == "postgis/postgis:15-3.4"
    assert services["redis"]["image"] == "redis:7-alpine"
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert build, f"{name} does not build the app image"
        context = build["context"] if isinstance(build, dict) else build
        assert Path(context).resolve() == ROOT, f"{name} builds from {context}"


def test_db_and_redis_and_api_have_healthchecks(services: dict) -> None:
    assert "pg_isready" in _healthcheck_test(services["db"])
    assert "-U o2o" in _healthcheck_test(services["db"])
    assert "redis-cli" in _healthcheck_test(services["redis"])
    assert "ping" in _healthcheck_test(services["redis"])
    api_check = _healthcheck_test(services["api"])
    assert "urllib" in api_check
    assert "http://127.0.0.1:8000/readyz" in api_check


@pytest.mark.parametrize("name", LONG_RUNNING_APP_SERVICES)
def test_app_services_wait_for_migration_and_healthy_stores(services: dict, name: str) -> None:
    depends = services[name].get("depends_on")
    assert isinstance(depends, dict), f"{name}: depends_on must carry conditions"
    assert depends.get("migrate", {}).get("condition") == "service_completed_successfully"
    assert depends.get("db", {}).get("condition") == "service_healthy"
    assert depends.get("redis", {}).get("condition") == "service_healthy"


def test_migrate_runs_alembic_once_after_db_is_healthy(services: dict) -> None:
    migrate = services["migrate"]
    assert _command(migrate) == ["alembic", "upgrade", "head"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert str(migrate.get("restart")) == "no"


def test_db_data_lives_in_a_named_volume(compose: dict, services: dict) -> None:
    volumes = services["db"].get("volumes") or []
    mounts = {}
    for volume in volumes:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            mounts[target] = source
        else:
            mounts[volume["target"]] = volume.get("source")
    source = mounts.get("/var/lib/postgresql/data")
    assert source == "pgdata", f"PostgreSQL data is mounted from {source!r}"
    assert "pgdata" in (compose.get("volumes") or {}), "pgdata is not a declared named volume"


def test_redis_persists(compose: dict, services: dict) -> None:
    redis = services["redis"]
    assert "--appendonly" in _command(redis) and "yes" in _command(redis)
    assert any(
        (v if isinstance(v, str) else v.get("source", "")).startswith("redisdata")
        for v in redis.get("volumes") or []
    )
    assert "redisdata" in (compose.get("volumes") or {})


def test_worker_and_beat_start_celery_with_the_app(services: dict) -> None:
    worker = _command(services["worker"])
    beat = _command(services["beat"])
    for command, role in ((worker, "worker"), (beat, "beat")):
        assert command[0] == "celery"
        assert "-A" in command and command[command.index("-A") + 1] == "o2o.worker"
        assert role in command
    assert "--schedule" in beat and beat[beat.index("--schedule") + 1].startswith("/tmp/")


def test_api_publishes_port_8000(services: dict) -> None:
    ports = services["api"].get("ports") or []
    published = set()
    for port in ports:
        if isinstance(port, str):
            published.add(port.rsplit(":", 2)[-2:] == ["8000", "8000"])
        else:
            published.add(int(port["published"]) == 8000 and int(port["target"]) == 8000)
    assert True in published


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_share_production_environment(services: dict, name: str) -> None:
    env = services[name].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    assert env.get("O2O_ENV") == "production"
    assert env.get("O2O_DATABASE_URL", "").startswith("postgresql+psycopg://o2o:")
    assert "@db:5432/o2o" in env["O2O_DATABASE_URL"]
    assert env.get("O2O_REDIS_URL") == "redis://redis:6379/0"
    assert "O2O_SECRET_KEY" in env
    # Without the variable the secret stays empty, which production refuses; never a baked default.
    assert not env["O2O_SECRET_KEY"]


def test_secrets_are_interpolated_from_the_environment() -> None:
    result = _run_config({"O2O_SECRET_KEY": "s" * 48, "POSTGRES_PASSWORD": "pw-from-env"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["api"]["environment"]["O2O_SECRET_KEY"] == "s" * 48
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == "pw-from-env"
    assert "o2o:pw-from-env@db:5432" in services["worker"]["environment"]["O2O_DATABASE_URL"]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    assert DOCKERFILE.is_file(), "Dockerfile is missing"
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_base_image_and_pinned_uv() -> None:
    instructions = _dockerfile_instructions()
    assert ("FROM", "python:3.11-slim-bookworm") in instructions
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    assert any("pip install" in run and "uv==0.13.9" in run for run in runs)


def test_dockerfile_installs_from_the_lock_before_copying_source() -> None:
    instructions = _dockerfile_instructions()
    sync = [
        i
        for i, (keyword, rest) in enumerate(instructions)
        if keyword == "RUN" and "uv sync" in rest
    ]
    assert len(sync) == 1, "expected exactly one `uv sync`"
    sync_at = sync[0]
    command = instructions[sync_at][1]
    assert "--frozen" in command and "--no-dev" in command and "--no-install-project" in command
    copies = [(i, rest) for i, (keyword, rest) in enumerate(instructions) if keyword == "COPY"]
    lock_copy = [i for i, rest in copies if "uv.lock" in rest.split()]
    assert lock_copy and lock_copy[0] < sync_at, "uv.lock must be copied before `uv sync`"
    source_copies = [i for i, rest in copies if "main.py" in rest or "o2o/" in rest]
    assert source_copies and min(source_copies) > sync_at, "source must be copied after `uv sync`"


def test_dockerfile_runs_unprivileged() -> None:
    instructions = _dockerfile_instructions()
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users, "the image runs as root: no USER instruction"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert users[-1] == "app"


def test_dockerfile_runtime_settings() -> None:
    instructions = _dockerfile_instructions()
    env = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert "PATH=/app/.venv/bin:$PATH" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert ("EXPOSE", "8000") in instructions
    cmd = [rest for keyword, rest in instructions if keyword == "CMD"]
    assert cmd and "uvicorn" in cmd[-1] and "main:app" in cmd[-1]
    assert "--proxy-headers" in cmd[-1]


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing"
    entries = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".git", ".local", ".venv", ".hypothesis"):
        assert required in entries, f"{required} is not excluded"
    assert any("__pycache__" in entry for entry in entries)

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
# Every secret the recipe requires (`${VAR:?}`): without any one of them it does not validate.
SECRETS = {
    "POSTGRES_PASSWORD": "pw-superuser",
    "O2O_DB_OWNER_PASSWORD": "pw-owner",
    "O2O_DB_APP_PASSWORD": "pw-app",
    "REDIS_PASSWORD": "pw-redis",
    "O2O_TOKEN_SECRET_KEY": "t" * 48,
    "O2O_SESSION_SECRET_KEY": "s" * 48,
    "O2O_IDENTITY_PEPPER": "p" * 48,
    "O2O_METRICS_TOKEN": "m" * 48,
}
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
        if k not in {"O2O_SECRET_KEY", "FORWARDED_ALLOW_IPS", *SECRETS}
        and not k.startswith("COMPOSE_")
    }
    env.update(SECRETS if extra_env is None else extra_env)
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
    assert "-d o2o" in _healthcheck_test(services["db"])
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
    assert "--appendonly yes" in " ".join(_command(redis))
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
    # Least privilege: the migration runs as the owner, everything else as the runtime role.
    role = "o2o_owner" if name == "migrate" else "o2o_app"
    password = SECRETS["O2O_DB_OWNER_PASSWORD" if name == "migrate" else "O2O_DB_APP_PASSWORD"]
    assert env.get("O2O_DATABASE_URL") == f"postgresql+psycopg://{role}:{password}@db:5432/o2o"
    assert env.get("O2O_REDIS_URL") == "redis://:pw-redis@redis:6379/0"
    for key in ("O2O_TOKEN_SECRET_KEY", "O2O_SESSION_SECRET_KEY", "O2O_IDENTITY_PEPPER"):
        assert env[key] == SECRETS[key]


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_the_recipe_refuses_to_run_without_each_secret(missing: str) -> None:
    result = _run_config({k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0
    assert missing in result.stderr


def test_database_bootstrap_and_redis_password(services: dict) -> None:
    db = services["db"]
    assert db["environment"]["POSTGRES_USER"] == "postgres"
    assert any("deploy/postgres-init.sh" in str(v) for v in db["volumes"])
    init = (ROOT / "deploy" / "postgres-init.sh").read_text()
    assert "NOSUPERUSER" in init and "CREATE DATABASE o2o OWNER o2o_owner" in init
    assert "--requirepass" in " ".join(_command(services["redis"]))
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == "pw-redis"


def test_image_runs_as_production_by_default() -> None:
    assert ("ENV", "PATH=/app/.venv/bin:$PATH O2O_ENV=production") in [
        (k, " ".join(v.split())) for k, v in _dockerfile_instructions()
    ]


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
    # The platform's server (uvicorn's workers, each on a socket of its own: o2o/serve.py).
    assert cmd and '"o2o.serve", "main:app"' in cmd[-1]
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

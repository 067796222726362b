"""Secrets fail closed: outside development and test (chosen explicitly) the platform does not
start without its own key for each purpose, and tokens are pinned to HMAC algorithms."""

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError

from o2o import clock, security
from o2o.config import DEV_SECRET_KEY, Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "O2O_TOKEN_SECRET_KEY": "t" * 40,
    "O2O_SESSION_SECRET_KEY": "s" * 40,
    "O2O_IDENTITY_PEPPER": "p" * 40,
    "O2O_DATABASE_URL": "postgresql+psycopg://app:pw@db:5432/o2o",
}


def _start_app(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("O2O_")}
    env.update(extra)
    return subprocess.run(
        [sys.executable, "-c", "from o2o.config import get_settings; get_settings(); import main"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_o2o_env_the_platform_is_production_and_refuses_to_start():
    result = _start_app({})
    assert result.returncode != 0
    assert "O2O_ENV=production" in result.stderr and "O2O_TOKEN_SECRET_KEY" in result.stderr


def test_production_starts_with_its_keys():
    result = _start_app({"O2O_ENV": "production", **KEYS})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "missing", ["O2O_TOKEN_SECRET_KEY", "O2O_SESSION_SECRET_KEY", "O2O_IDENTITY_PEPPER"]
)
def test_each_key_is_required(missing):
    env = {k.removeprefix("O2O_").lower(): v for k, v in KEYS.items() if k != missing}
    with pytest.raises(ValidationError, match=missing):
        Settings(env="production", **env)


def test_keys_must_differ_and_not_be_the_development_key():
    same = {k.removeprefix("O2O_").lower(): v for k, v in KEYS.items()}
    same["session_secret_key"] = same["token_secret_key"]
    with pytest.raises(ValidationError, match="must differ"):
        Settings(env="production", **same)
    dev = {**same, "session_secret_key": DEV_SECRET_KEY}
    with pytest.raises(ValidationError, match="O2O_SESSION_SECRET_KEY"):
        Settings(env="production", **dev)


def test_one_key_per_purpose():
    settings = get_settings()
    keys = {settings.key(n) for n in ("token_secret_key", "session_secret_key", "identity_pepper")}
    assert len(keys) == 3
    # A token signed with the console's session key (or any other) is refused.
    forged = jwt.encode(
        {
            "sub": "1",
            "role": "admin",
            "iat": clock.now(),
            "exp": clock.now().timestamp() + 600,
            "typ": "access",
        },
        settings.key("session_secret_key"),
        "HS256",
    )
    with pytest.raises(security.TokenError):
        security.decode_access_token(forged)


def test_jwt_algorithm_is_pinned():
    with pytest.raises(ValidationError):
        Settings(env="test", jwt_algorithm="none")
    unsigned = jwt.encode(
        {
            "sub": "1",
            "role": "admin",
            "iat": 1,
            "exp": clock.now().timestamp() + 600,
            "typ": "access",
        },
        None,
        "none",
    )
    with pytest.raises(security.TokenError):
        security.decode_access_token(unsigned)


def _production(**overrides) -> Settings:
    env = {k.removeprefix("O2O_").lower(): v for k, v in KEYS.items()}
    env.update(overrides)
    return Settings(env="production", **env)


def test_a_rotated_identity_pepper_keeps_its_previous_versions():
    old = "o" * 40
    settings = _production(identity_pepper_version=2, identity_pepper_previous=f"1:{old}")
    assert settings.identity_peppers() == {2: "p" * 40, 1: old}
    assert _production().identity_peppers() == {1: "p" * 40}


def test_two_identity_pepper_versions_may_not_share_a_secret():
    for env in ("production", "test"):
        with pytest.raises(ValidationError, match="must not share a secret"):
            if env == "production":
                _production(identity_pepper_version=2, identity_pepper_previous=f"1:{'p' * 40}")
            else:
                Settings(
                    env="test",
                    identity_pepper="q" * 40,
                    identity_pepper_version=3,
                    identity_pepper_previous=f"1:{'r' * 40},2:{'r' * 40}",
                )


def test_previous_identity_peppers_fail_closed_in_production():
    with pytest.raises(ValidationError, match="version 1 must be a random value"):
        _production(identity_pepper_version=2, identity_pepper_previous="1:short")
    with pytest.raises(ValidationError, match="version 1 must be a random value"):
        _production(identity_pepper_version=2, identity_pepper_previous=f"1:{DEV_SECRET_KEY}")
    with pytest.raises(ValidationError, match="version 1 must differ from the other keys"):
        _production(identity_pepper_version=2, identity_pepper_previous=f"1:{'t' * 40}")
    # The current version cannot also be listed as a previous one.
    with pytest.raises(ValidationError, match="which is O2O_IDENTITY_PEPPER_VERSION"):
        _production(identity_pepper_version=2, identity_pepper_previous=f"2:{'o' * 40}")
    # Without the current pepper nothing starts, previous ones or not.
    env = {k.removeprefix("O2O_").lower(): v for k, v in KEYS.items() if k != "O2O_IDENTITY_PEPPER"}
    with pytest.raises(ValidationError, match="O2O_IDENTITY_PEPPER must be set"):
        Settings(
            env="production",
            identity_pepper_version=2,
            identity_pepper_previous=f"1:{'o' * 40}",
            **env,
        )


def test_a_malformed_previous_pepper_is_refused_without_echoing_it():
    secret = "a-secret-that-must-not-be-printed-0123456789"
    for value in (secret, f"x:{secret}", f"0:{secret}", f"1:{secret},1:{'o' * 40}"):
        with pytest.raises(ValidationError) as refused:
            Settings(env="test", identity_pepper_version=2, identity_pepper_previous=value)
        assert "O2O_IDENTITY_PEPPER_PREVIOUS" in str(refused.value)
        assert secret not in str(refused.value)


def test_a_refusal_prints_none_of_the_values_it_was_given():
    env = {k.removeprefix("O2O_").lower(): v for k, v in KEYS.items()}
    with pytest.raises(ValidationError) as refused:
        Settings(env="production", **env, identity_pepper_previous="hunter2xyz")
    assert "O2O_IDENTITY_PEPPER_PREVIOUS entries must be version:secret" in str(refused.value)
    assert "hunter2xyz" not in str(refused.value)

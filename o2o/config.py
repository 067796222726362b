"""The one Settings object, read from environment variables (prefix O2O_) and an optional .env."""

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development defaults, clearly marked: they match the project-local cluster started by
# scripts/platform.sh and are refused when O2O_ENV=production.
DEV_SECRET_KEY = "dev-only-secret-key-change-me-in-production-0000000000"
DEV_DATABASE_URL = "postgresql+psycopg://o2o:o2o-dev-only@127.0.0.1:55432/o2o"
DEV_REDIS_URL = "redis://127.0.0.1:56379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="O2O_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str = DEV_DATABASE_URL
    redis_url: str = DEV_REDIS_URL
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)

    access_token_minutes: int = Field(60, ge=1, le=24 * 60)
    jwt_algorithm: str = "HS256"

    # Failed logins allowed per account and per client address in the window, then 429.
    login_failures_allowed: int = Field(5, ge=1)
    login_failure_window_seconds: int = Field(300, ge=1)

    # Sign-ups per client address (limits syntax: "N/period").
    register_rate_limit: str = "10/hour"

    max_body_bytes: int = 11 * 1024 * 1024

    sla_minutes: int = Field(120, ge=1)

    # Celery: seconds before a task taken by a worker that died is handed out again.
    task_visibility_timeout_s: int = Field(300, ge=10)

    db_pool_size: int = 10
    db_max_overflow: int = 20

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> "Settings":
        if self.env == "production":
            secret = self.secret_key.get_secret_value()
            if not secret or secret == DEV_SECRET_KEY or len(secret) < 32:
                raise ValueError("O2O_SECRET_KEY must be set to a random value of 32+ characters")
        return self


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read once."""
    return Settings()

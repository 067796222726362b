"""Plain factory functions: make_x(session, **overrides) -> the row, flushed."""

import itertools

from sqlalchemy.orm import Session

from o2o.security import create_access_token
from o2o.users import service as users_service
from o2o.users.models import Role, User

PASSWORD = "correct-horse-battery"
_seq = itertools.count(1)


def make_user(
    session: Session,
    *,
    role: Role = Role.PATIENT,
    email: str | None = None,
    password: str = PASSWORD,
    name: str | None = None,
    store_ids: list[int] | None = None,
) -> User:
    n = next(_seq)
    return users_service.create_user(
        session,
        email=email or f"{role.value}{n}@test.example.com",
        password=password,
        name=name or f"{role.value.title()} {n}",
        role=role,
        store_ids=store_ids,
    )


def token_for(user: User, minutes: int | None = None) -> str:
    return create_access_token(str(user.id), role=user.role.value, minutes=minutes)


def auth(user: User) -> dict[str, str]:
    """Authorization header for a user."""
    return {"Authorization": f"Bearer {token_for(user)}"}

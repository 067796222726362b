"""Plain factory functions: make_x(session, **overrides) -> the row, flushed."""

import functools
import itertools

from sqlalchemy.orm import Session

from o2o.security import create_access_token, hash_password
from o2o.users import service as users_service
from o2o.users.models import Role, User

PASSWORD = "correct-horse-battery"
_seq = itertools.count(1)


@functools.cache
def _password_hash(password: str) -> str:
    # argon2 is slow on purpose; tests need many users with a handful of passwords.
    return hash_password(password)


def make_user(
    session: Session,
    *,
    role: Role = Role.PATIENT,
    email: str | None = None,
    password: str = PASSWORD,
    name: str | None = None,
    store_ids: list[int] | None = None,
) -> User:
    """A user (linked to stores when staff), flushed; each password is hashed once per run."""
    n = next(_seq)
    user = User(
        email=email or f"{role.value}{n}@test.example.com",
        name=name or f"{role.value.title()} {n}",
        password_hash=_password_hash(password),
        role=role,
    )
    session.add(user)
    session.flush()
    if store_ids:
        users_service.link_stores(session, user, store_ids)
    return user


def token_for(user: User, minutes: int | None = None) -> str:
    return create_access_token(str(user.id), role=user.role.value, minutes=minutes)


def auth(user: User) -> dict[str, str]:
    """Authorization header for a user."""
    return {"Authorization": f"Bearer {token_for(user)}"}

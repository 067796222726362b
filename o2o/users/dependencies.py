"""Who is calling: the bearer token's user, and role checks, as chained dependencies."""

import functools
import ipaddress
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from sqlalchemy import bindparam, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, joinedload, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from o2o.config import get_settings
from o2o.db import DbSession, DriverConnection, DriverLender, SessionRunner
from o2o.errors import Forbidden, Unauthorized
from o2o.i18n import gettext as _
from o2o.security import TokenError, decode_access_token
from o2o.users.models import Role, User, UserStoreLink

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)

# The user and their stores in one statement (the relationship's own load is a second one),
# built once: every authenticated request runs it, and building it (and its cache key) each time
# cost as much as running it.
_USER_WITH_STORES = (
    select(User).options(joinedload(User.store_links)).where(User.id == bindparam("user_id"))
)


def get_current_user(
    session: DbSession, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> User:
    """Load the user the bearer token names, or refuse with 401."""
    return user_from_token(session, token)


async def get_current_user_async(
    runner: SessionRunner, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> User:
    """Load the user the bearer token names for an async endpoint, or refuse with 401."""
    return await runner.run(user_from_token, token)


async def bearer_subject(token: Annotated[str | None, Depends(oauth2_scheme)]) -> tuple[int, int]:
    """The user id and token version the bearer token carries, or 401: checked before anything
    is asked of the database."""
    return _token_subject(token)


async def get_current_user_driver(
    subject: Annotated[tuple[int, int], Depends(bearer_subject)], conn: DriverConnection
) -> User:
    """Load the user the bearer token names on the request's driver connection, or refuse with
    401: for an endpoint that does its work on that connection and takes no session at all (a
    courier's claim). A token that is not valid is refused before a connection is taken. The
    user is a detached copy, every column and the stores loaded, for reading only."""
    return await _user_on(conn, subject)


async def get_current_user_lent(
    subject: Annotated[tuple[int, int], Depends(bearer_subject)], lend: DriverLender
) -> User:
    """As get_current_user_driver, on a driver connection lent for the one statement and taken
    back at once: for an async endpoint whose work runs on a session (placing an order), so the
    session's transaction does not open for the read, and the request holds no driver
    connection while it works."""
    async with lend() as conn:
        return await _user_on(conn, subject)


async def _user_on(conn: AsyncConnection, subject: tuple[int, int]) -> User:
    user_id, version = subject
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_USER_ROW_SQL, {"user_id": user_id})
        rows = await cur.fetchall()
    return _current(_detached_user(rows[0]) if rows else None, version)


def user_from_token(session: Session, token: str | None) -> User:
    """Return the active user a bearer token names under its current version; 401 otherwise."""
    user_id, version = _token_subject(token)
    user = session.execute(_USER_WITH_STORES, {"user_id": user_id}).unique().scalar_one_or_none()
    return _current(user, version)


def _token_subject(token: str | None) -> tuple[int, int]:
    """Return the user id and the token version a bearer token carries; 401 if it is not valid."""
    if not token:
        raise Unauthorized()
    try:
        claims = decode_access_token(token)
    except TokenError as exc:
        if exc.reason == "expired":
            raise Unauthorized(
                _("Your session has expired; sign in again."), code="token_expired"
            ) from None
        raise Unauthorized(_("The access token is not valid."), code="invalid_token") from None
    try:
        return int(claims["sub"]), claims.get("ver", 0)
    except (TypeError, ValueError):
        raise Unauthorized(_("The access token is not valid."), code="invalid_token") from None


def _current(user: User | None, version: int) -> User:
    if user is None or not user.is_active:
        raise Unauthorized(_("The account is no longer active."), code="invalid_token")
    if version != user.token_version:
        # Issued before a password change or a deactivation: revoked.
        raise Unauthorized(
            _("This access token has been revoked; sign in again."), code="invalid_token"
        )
    return user


# The user's row as the driver reads it: every mapped column (under its attribute's name) and
# the stores the user works at, in one statement. Every attribute of User is a plain column of
# its table (checked here, at import, rather than failing each request); the driver reads an
# enum column as its text, turned back into the column's enum class.
_USER_COLUMNS = tuple(
    (attribute.key, attribute.columns[0]) for attribute in sa_inspect(User).column_attrs
)
if not all(column.table is User.__table__ for _, column in _USER_COLUMNS):
    raise RuntimeError("every attribute of User must be a plain column of its table")
_ENUMS = {
    key: column.type.enum_class
    for key, column in _USER_COLUMNS
    if getattr(column.type, "enum_class", None) is not None
}
_USER_ROW_SQL = (
    "SELECT "
    + ", ".join(f"u.{column.name} AS {key}" for key, column in _USER_COLUMNS)
    + ", ARRAY(SELECT l.store_id FROM user_stores l WHERE l.user_id = u.id) AS store_ids"
    " FROM users u WHERE u.id = %(user_id)s"
)


def _detached_user(row: dict[str, Any]) -> User:
    """A detached User of the row: as if loaded by a session since closed (its identity set, no
    pending changes), with its stores."""
    values = {key: row[key] for key, _ in _USER_COLUMNS}
    values.update({key: enum(values[key]) for key, enum in _ENUMS.items()})
    user = User(**values)
    make_transient_to_detached(user)
    links = [UserStoreLink(user_id=user.id, store_id=store_id) for store_id in row["store_ids"]]
    set_committed_value(user, "store_links", links)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
AsyncCurrentUser = Annotated[User, Depends(get_current_user_async)]


def require_role(*roles: Role, current: Callable[..., Any] = get_current_user) -> Callable:
    """Depend on a signed-in user whose role is one of roles; others get 403. `current` loads
    the user (get_current_user_async for async endpoints)."""
    allowed = frozenset(roles)

    # async: a check this small runs in the event loop, not in a worker thread.
    async def dependency(user: Annotated[User, Depends(current)]) -> User:
        if user.role not in allowed:
            raise Forbidden(
                _("Your role may not do this."),
                details={"allowed_roles": sorted(r.value for r in allowed)},
            )
        return user

    # Read by the OpenAPI builder to document the 403 (o2o/openapi.py).
    dependency.allowed_roles = allowed
    return dependency


AdminUser = Annotated[User, Depends(require_role(Role.ADMIN))]
PatientUser = Annotated[User, Depends(require_role(Role.PATIENT))]
# A patient for an async write on a session, loaded on a driver connection lent for the read.
WritingPatientUser = Annotated[
    User, Depends(require_role(Role.PATIENT, current=get_current_user_lent))
]


@functools.cache
def _trusted(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(
        ipaddress.ip_network(p.strip(), strict=False) for p in spec.split(",") if p.strip()
    )


def _is_trusted(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(request: Request) -> str:
    """The client's address: the peer, or behind trusted proxies (O2O_TRUSTED_PROXIES) the last
    X-Forwarded-For entry that is not one of them. Nobody else can choose their address."""
    peer = request.client.host if request.client else "unknown"
    networks = _trusted(get_settings().trusted_proxies)
    if not networks or not _is_trusted(peer, networks):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _is_trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer

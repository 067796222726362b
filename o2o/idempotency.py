"""Idempotency-Key for POSTs that create things: a retry gets the first answer, not a second order.

The key is claimed first, by one statement committed as it ends (`claim`, on a driver
connection in autocommit): a row inserted with `ON CONFLICT`, so a concurrent twin sees it at
once and is told the first is still in flight. The
final response is stored by the claim's holder in the same transaction as the work (`finish`), so
"order exists" and "response recorded" commit together or not at all. Refusals (4xx) are recorded
too, in a transaction after the work's has rolled back; unexpected failures give the key back
(`abandon`). A claim whose process died stops blocking after
`idempotency_stale_seconds` and may be taken over by a retry of the same request.
"""

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import LockNotAvailable
from sqlalchemy import (
    ForeignKey,
    String,
    bindparam,
    delete,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, Session, mapped_column

from o2o.config import get_settings
from o2o.db import Base
from o2o.errors import Conflict, InvalidInput
from o2o.i18n import gettext as _


class IdempotencyRecord(Base):
    """The first response to a POST with an Idempotency-Key, replayed for retries."""

    __tablename__ = "idempotency_records"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # sha256 of method, path and canonical body: the same key with another body is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    # Who holds the key while the first request runs: the response is stored only by the holder,
    # so a request whose stale claim was taken over cannot also store (and create) an order.
    claim_token: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    response_status: Mapped[int | None]
    response_body: Mapped[dict | None] = mapped_column(JSONB)
    # When the current claim was taken (renewed when a stale claim is taken over).
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(index=True)


R = IdempotencyRecord


@dataclass(frozen=True)
class Claim:
    """This request holds the key and must finish (or abandon) it."""

    user_id: int
    key: str
    token: uuid.UUID


@dataclass(frozen=True)
class Replay:
    """The key was used before with this request: answer with the stored response."""

    status: int
    body: Any


class KeyReused(InvalidInput):
    code = "idempotency_key_reused"


class RequestInFlight(Conflict):
    code = "request_in_flight"


def request_hash(method: str, path: str, body: Any) -> str:
    """Fingerprint a request: method, path and the body in canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method.upper()} {path}\n{canonical}".encode()).hexdigest()


# The claim: an INSERT ... ON CONFLICT on the driver's connection, in autocommit, so the row is
# committed as the statement ends and a twin request sees it at once. The row is taken over only
# when its answer has expired, or when the same request was left unfinished long enough ago that
# its process must have died.
_CLAIM = """
    INSERT INTO idempotency_records AS r
        (user_id, key, request_hash, claim_token, created_at, expires_at)
    VALUES (%(user_id)s, %(key)s, %(request_hash)s, %(token)s, now(), now() + %(ttl)s)
    ON CONFLICT (user_id, key) DO UPDATE SET
        request_hash = excluded.request_hash,
        claim_token = excluded.claim_token,
        created_at = excluded.created_at,
        expires_at = excluded.expires_at,
        response_status = NULL,
        response_body = NULL
    WHERE r.expires_at <= now()
       OR (r.response_status IS NULL
           AND r.created_at < now() - %(stale)s
           AND r.request_hash = excluded.request_hash)
    RETURNING r.claim_token
"""
# The key's use as committed, when the claim found it taken.
_EARLIER_USE = """
    SELECT request_hash, response_status, response_body FROM idempotency_records
    WHERE user_id = %(user_id)s AND key = %(key)s
"""


async def claim(
    conn: AsyncConnection, *, user_id: int, key: str, request_hash: str
) -> Claim | Replay:
    """Take the key for this request, or say what the earlier use of it means.

    Run on a driver connection in autocommit (`o2o.db.DriverLender`): the claim is committed as
    its statement ends, so a twin request sees it at once (a key found taken is read by a second
    statement); the work runs in a transaction of its own afterwards. Raises 422
    `idempotency_key_reused` (another body) or 409 `request_in_flight` (also when the key's row
    stays locked past the pool's lock timeout).
    """
    settings = get_settings()
    token = uuid.uuid4()
    params = {"user_id": user_id, "key": key, "request_hash": request_hash}
    async with conn.cursor() as cur:
        try:
            await cur.execute(
                _CLAIM,
                params
                | {
                    "token": token,
                    "ttl": timedelta(hours=settings.idempotency_ttl_hours),
                    "stale": timedelta(seconds=settings.idempotency_stale_seconds),
                },
            )
        except LockNotAvailable:
            # The key's row is locked by a twin still committing its answer, past the driver
            # pool's lock timeout (`o2o.db.DRIVER_LOCK_TIMEOUT`).
            raise _in_flight() from None
        taken = await cur.fetchone()
        if taken is not None and taken[0] == token:
            return Claim(user_id, key, token)
        # Taken: its state as committed now (the holder may have answered since the claim).
        await cur.execute(_EARLIER_USE, params)
        existing = await cur.fetchone()
    if existing is None:  # purged since the claim's statement: the key is free again
        return await claim(conn, user_id=user_id, key=key, request_hash=request_hash)
    earlier_hash, response_status, response_body = existing
    if earlier_hash != request_hash:
        raise KeyReused(
            _("This Idempotency-Key was already used for a different request; use a new key."),
        )
    if response_status is not None:
        return Replay(response_status, response_body)
    raise _in_flight()


def _in_flight() -> RequestInFlight:
    return RequestInFlight(
        _("The first request with this Idempotency-Key is still being processed; retry shortly."),
        details={"retry_after_seconds": 1},
        headers={"Retry-After": "1"},
    )


def finish(session: Session, claim: Claim, status: int, body: Any) -> bool:
    """Store the response for the claim's holder; False if the claim was lost (taken over)."""
    result = session.execute(
        _FINISH,
        {
            "holder_user_id": claim.user_id,
            "holder_key": claim.key,
            "holder_token": claim.token,
            "answer_status": status,
            "answer_body": body,
        },
    )
    return result.rowcount == 1


# The holder's UPDATE of its answer, built once on the table (no ORM work per request).
_FINISH = (
    update(R.__table__)
    .where(
        R.__table__.c.user_id == bindparam("holder_user_id"),
        R.__table__.c.key == bindparam("holder_key"),
        R.__table__.c.claim_token == bindparam("holder_token"),
        R.__table__.c.response_status.is_(None),
    )
    .values(response_status=bindparam("answer_status"), response_body=bindparam("answer_body"))
)


async def abandon(conn: AsyncConnection, claim: Claim) -> None:
    """Give the key back after an unexpected failure, so a retry runs the request again: on a
    driver connection in autocommit, after the work's transaction has rolled back. A claim taken
    over since, or answered, is left alone."""
    async with conn.cursor() as cur:
        await cur.execute(
            "DELETE FROM idempotency_records WHERE user_id = %s AND key = %s"
            " AND claim_token = %s AND response_status IS NULL",
            (claim.user_id, claim.key, claim.token),
        )


def purge_expired(session: Session, *, batch: int = 5000) -> int:
    """Delete up to `batch` records whose answer is past its time; return how many."""
    doomed = (
        select(R.user_id, R.key)
        .where(R.expires_at <= func.now())
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    result = session.execute(
        delete(R)
        .where(R.expires_at <= func.now(), tuple_(R.user_id, R.key).in_(doomed))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount

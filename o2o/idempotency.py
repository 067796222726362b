"""Idempotency-Key for POSTs that create things: a retry gets the first answer, not a second order.

The key is claimed first, in its own short transaction (`claim`): a row inserted with
`ON CONFLICT`, so a concurrent twin sees it at once and is told the first is still in flight. The
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

from sqlalchemy import (
    ForeignKey,
    Interval,
    String,
    bindparam,
    delete,
    func,
    select,
    text,
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


# The claim: an INSERT ... ON CONFLICT, as SQL text. SQLAlchemy's PostgreSQL INSERT is never
# cached (its ON CONFLICT clauses have no cache key), so built as a construct it was compiled
# anew on every placement; text is compiled once. The row is taken over only when its answer
# has expired, or when the same request was left unfinished long enough ago that its process
# must have died.
_CLAIM = (
    text(
        """
        INSERT INTO idempotency_records AS r
            (user_id, key, request_hash, claim_token, created_at, expires_at)
        VALUES (:claim_user_id, :claim_key, :claim_hash, :claim_token_value, now(), now() + :ttl)
        ON CONFLICT (user_id, key) DO UPDATE SET
            request_hash = excluded.request_hash,
            claim_token = excluded.claim_token,
            created_at = excluded.created_at,
            expires_at = excluded.expires_at,
            response_status = NULL,
            response_body = NULL
        WHERE r.expires_at <= now()
           OR (r.response_status IS NULL
               AND r.created_at < now() - :stale
               AND r.request_hash = excluded.request_hash)
        RETURNING r.claim_token
        """
    )
    .bindparams(
        bindparam("claim_token_value", type_=UUID(as_uuid=True)),
        bindparam("ttl", type_=Interval),
        bindparam("stale", type_=Interval),
    )
    .columns(claim_token=UUID(as_uuid=True))
)


def claim(session: Session, *, user_id: int, key: str, request_hash: str) -> Claim | Replay:
    """Take the key for this request, or say what the earlier use of it means.

    Run in a transaction of its own and commit right after, so a twin request sees the claim.
    Raises 422 `idempotency_key_reused` (another body) or 409 `request_in_flight`.
    """
    settings = get_settings()
    token = uuid.uuid4()
    taken = session.scalar(
        _CLAIM,
        {
            "claim_user_id": user_id,
            "claim_key": key,
            "claim_hash": request_hash,
            "claim_token_value": token,
            "ttl": timedelta(hours=settings.idempotency_ttl_hours),
            "stale": timedelta(seconds=settings.idempotency_stale_seconds),
        },
    )
    if taken == token:
        return Claim(user_id, key, token)

    # The conflicting row is locked by the statement above, so this reads its settled state.
    existing = session.scalar(
        select(R)
        .where(R.user_id == user_id, R.key == key)
        .execution_options(populate_existing=True)
    )
    if existing is None:  # purged between the two statements: the key is free again
        return claim(session, user_id=user_id, key=key, request_hash=request_hash)
    if existing.request_hash != request_hash:
        raise KeyReused(
            _("This Idempotency-Key was already used for a different request; use a new key."),
        )
    if existing.response_status is not None:
        return Replay(existing.response_status, existing.response_body)
    raise RequestInFlight(
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


def abandon(session: Session, claim: Claim) -> None:
    """Give the key back after an unexpected failure, so a retry runs the request again."""
    session.execute(
        delete(R)
        .where(
            R.user_id == claim.user_id,
            R.key == claim.key,
            R.claim_token == claim.token,
            R.response_status.is_(None),
        )
        .execution_options(synchronize_session=False)
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

"""The outbox relay: fan events out to the webhook endpoints that want them, then send each
(event, endpoint) pair, signed, until the endpoint acknowledges it, with exponential backoff.

- Fan-out re-reads events from a little before the last watermark (Settings
  `outbox_fanout_lag_s`): an event's `created_at` is its transaction's start, so one committed
  late may carry an older time than events already seen; `ON CONFLICT DO NOTHING` on (event,
  endpoint) makes the overlap harmless. A type in `o2o.outbox.EXACT_SUBSCRIPTION_ONLY` (it
  carries a secret) goes only to endpoints that name it exactly, never to a wildcard.
- Sending: due deliveries are claimed with `FOR UPDATE SKIP LOCKED` and leased (their due time
  is pushed past the longest the batch can take) in a short transaction, then sent outside any
  transaction. Two relays never hold the same delivery, a relay that dies mid-send leaves it to
  be sent again when the lease ends, and the receiver recognises a repeat by `X-O2O-Event-Id`.
- Signature: `X-O2O-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with the
  timestamp in `X-O2O-Timestamp`, so a captured request cannot be replayed later with a new time.
"""

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from o2o import clock, outbound, outbox
from o2o.config import get_settings
from o2o.errors import NotFound
from o2o.i18n import gettext
from o2o.outbox import OutboxEvent
from o2o.webhooks.models import DeliveryStatus, OutboxDelivery, WebhookEndpoint

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-O2O-Signature"
TIMESTAMP_HEADER = "X-O2O-Timestamp"
EVENT_ID_HEADER = "X-O2O-Event-Id"
EVENT_TYPE_HEADER = "X-O2O-Event-Type"


# ---------------------------------------------------------------------------------------------
# Signing


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """Return the signature header value for a body sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_s: int = 300,
    now: float | None = None,
) -> bool:
    """Check a received webhook (what a receiver does): right signature, recent timestamp."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


def event_body(event: OutboxEvent) -> bytes:
    """Serialise an event as sent: compact JSON with sorted keys (stable bytes for a retry)."""
    return json.dumps(
        {
            "id": str(event.id),
            "type": event.event_type,
            "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id,
            "created_at": event.created_at.isoformat(),
            "data": event.payload,
        },
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    ).encode()


def backoff_s(attempts: int) -> float:
    """Seconds to wait after the given number of failed attempts (doubling, capped)."""
    settings = get_settings()
    return min(
        settings.webhook_backoff_max_s, settings.webhook_backoff_base_s * 2 ** (attempts - 1)
    )


# ---------------------------------------------------------------------------------------------
# Endpoints (admin)


def create_endpoint(
    session: Session,
    *,
    url: str,
    event_types: list[str],
    secret: str | None,
    description: str | None,
) -> WebhookEndpoint:
    """Register an endpoint; a secret is generated when none is given."""
    endpoint = WebhookEndpoint(
        url=url,
        event_types=event_types,
        secret=secret or secrets.token_urlsafe(32),
        description=description,
    )
    session.add(endpoint)
    session.flush()
    session.refresh(endpoint)
    return endpoint


def list_endpoints(session: Session) -> list[WebhookEndpoint]:
    """Return every endpoint, active or not, oldest first."""
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def deactivate_endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint:
    """Stop sending to an endpoint (its pending deliveries are given up)."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(gettext("No such webhook endpoint."), code="webhook_not_found")
    endpoint.is_active = False
    session.execute(
        text(
            "UPDATE outbox_deliveries SET status = 'gave_up', last_error = 'endpoint deactivated' "
            "WHERE endpoint_id = :id AND status = 'pending'"
        ),
        {"id": endpoint_id},
    )
    session.flush()
    return endpoint


def address(session: Session, event: OutboxEvent, endpoint_id: int) -> OutboxDelivery:
    """Send an event to one endpoint (in the current transaction), whatever types it wants."""
    # Written with the event at the next flush, after it (the relationship orders the two).
    delivery = OutboxDelivery(event=event, endpoint_id=endpoint_id, next_attempt_at=clock.now())
    session.add(delivery)
    return delivery


# ---------------------------------------------------------------------------------------------
# Fan-out


_FAN_OUT_SQL = """
INSERT INTO outbox_deliveries (event_id, endpoint_id, next_attempt_at)
SELECT e.id, ep.id, now()
FROM outbox_events e
JOIN webhook_endpoints ep
  ON ep.is_active
 AND e.created_at >= ep.created_at
 AND (e.event_type = ANY(ep.event_types)
      OR (e.event_type <> ALL(:exact_only)
          AND ('*' = ANY(ep.event_types)
               OR split_part(e.event_type, '.', 1) || '.*' = ANY(ep.event_types))))
WHERE e.created_at > :since
ON CONFLICT (event_id, endpoint_id) DO NOTHING
"""


def fan_out(session: Session) -> int:
    """Create the deliveries of events not yet fanned out; return how many were created."""
    # The single state row is locked: one fan-out at a time (another relay simply waits).
    session.execute(
        text("INSERT INTO outbox_relay_state (id) VALUES (1) ON CONFLICT (id) DO NOTHING")
    )
    until = session.execute(
        text("SELECT fanned_out_until FROM outbox_relay_state WHERE id = 1 FOR UPDATE")
    ).scalar_one()
    first_endpoint = session.scalar(
        text("SELECT min(created_at) FROM webhook_endpoints WHERE is_active")
    )
    if first_endpoint is None:
        return 0
    lag = timedelta(seconds=get_settings().outbox_fanout_lag_s)
    since = (
        max(until - lag, first_endpoint - timedelta(microseconds=1))
        if until
        else (first_endpoint - timedelta(microseconds=1))
    )
    created = session.execute(
        text(_FAN_OUT_SQL),
        {"since": since, "exact_only": list(outbox.EXACT_SUBSCRIPTION_ONLY)},
    ).rowcount
    session.execute(
        text(
            """
            UPDATE outbox_relay_state
            SET fanned_out_until = GREATEST(
                fanned_out_until,
                (SELECT max(created_at) FROM outbox_events WHERE created_at > :since))
            WHERE id = 1
            """
        ),
        {"since": since},
    )
    return created


# ---------------------------------------------------------------------------------------------
# Sending


@dataclass(frozen=True)
class Leased:
    delivery_id: int
    attempt: int
    url: str
    secret: str
    event_id: str
    event_type: str
    body: bytes


def lease_due(session: Session, *, limit: int, now: datetime | None = None) -> list[Leased]:
    """Claim up to `limit` due deliveries for this relay (SKIP LOCKED) and lease them."""
    settings = get_settings()
    now = now or clock.now()
    # Long enough for the whole batch to time out one by one: no other relay takes them meanwhile.
    lease = timedelta(seconds=limit * settings.webhook_timeout_s + 30)
    rows = session.execute(
        text(
            """
            UPDATE outbox_deliveries d
            SET attempts = d.attempts + 1, next_attempt_at = :lease_until
            FROM (
                SELECT id FROM outbox_deliveries
                WHERE status = 'pending' AND next_attempt_at <= :now
                ORDER BY next_attempt_at, id
                LIMIT :limit
                FOR UPDATE SKIP LOCKED
            ) due
            WHERE d.id = due.id
            RETURNING d.id, d.attempts, d.event_id, d.endpoint_id
            """
        ),
        {"now": now, "limit": limit, "lease_until": now + lease},
    ).all()
    if not rows:
        return []
    events = {
        e.id: e
        for e in session.scalars(
            select(OutboxEvent).where(OutboxEvent.id.in_({r.event_id for r in rows}))
        )
    }
    endpoints = {
        ep.id: ep
        for ep in session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.id.in_({r.endpoint_id for r in rows}))
        )
    }
    leased = []
    for row in sorted(rows, key=lambda r: r.id):
        event, endpoint = events[row.event_id], endpoints[row.endpoint_id]
        leased.append(
            Leased(
                delivery_id=row.id,
                attempt=row.attempts,
                url=endpoint.url,
                secret=endpoint.secret,
                event_id=str(event.id),
                event_type=event.event_type,
                body=event_body(event),
            )
        )
    return leased


def send(client: httpx.Client, item: Leased) -> tuple[int | None, str | None]:
    """POST one delivery; return (status code, error) — a 2xx status means delivered."""
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "o2o-webhooks/1",
        EVENT_ID_HEADER: item.event_id,
        EVENT_TYPE_HEADER: item.event_type,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(item.secret, timestamp, item.body),
    }
    try:
        # Resolved and checked at every send, and connected to the address checked.
        target = outbound.resolve_for_send(item.url)
    except outbound.UnsafeURL as exc:
        return None, f"refused: {exc}"[:500]
    url, host_header, extensions = outbound.pinned_request_args(target)
    try:
        response = client.post(
            url, content=item.body, headers={**headers, **host_header}, extensions=extensions
        )
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}"


def record_outcome(
    session: Session, item: Leased, status_code: int | None, error: str | None, *, now: datetime
) -> DeliveryStatus:
    """Mark a delivery delivered, or schedule its retry, or give it up after the last attempt."""
    settings = get_settings()
    delivery = session.get(OutboxDelivery, item.delivery_id, with_for_update=True)
    if delivery is None or delivery.status is not DeliveryStatus.PENDING:
        return delivery.status if delivery else DeliveryStatus.GAVE_UP
    if delivery.attempts != item.attempt and error is not None:
        # Our lease ran out and another relay has taken the delivery: its outcome counts.
        return delivery.status
    delivery.last_status_code = status_code
    if error is None:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
        delivery.last_error = None
    elif item.attempt >= settings.webhook_max_attempts:
        delivery.status = DeliveryStatus.GAVE_UP
        delivery.last_error = error
        log.warning(
            "webhook delivery %s given up after %s attempts", item.delivery_id, item.attempt
        )
    else:
        delivery.last_error = error
        delivery.next_attempt_at = now + timedelta(seconds=backoff_s(item.attempt))
    session.flush()
    return delivery.status


@dataclass
class RelayResult:
    fanned_out: int = 0
    delivered: int = 0
    retrying: int = 0
    gave_up: int = 0


def relay(
    session_factory: Callable[[], Any],
    *,
    max_batches: int = 10,
    client: httpx.Client | None = None,
) -> RelayResult:
    """Fan out new events and send what is due, batch by batch (each in its own transactions).

    `session_factory` is a context manager factory such as `o2o.db.session_scope`. Due times and
    backoff follow `o2o.clock` (tests step it); signature timestamps are always real time, since
    receivers check them against their own clocks.
    """
    settings = get_settings()
    result = RelayResult()
    with session_factory() as session:
        result.fanned_out = fan_out(session)
    own_client = client is None
    # trust_env=False: no proxy from the environment may carry the request elsewhere.
    client = client or httpx.Client(
        timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False
    )
    try:
        for _ in range(max_batches):
            with session_factory() as session:
                batch = lease_due(session, limit=settings.webhook_batch_size)
            if not batch:
                break
            for item in batch:
                status_code, error = send(client, item)
                with session_factory() as session:
                    outcome = record_outcome(session, item, status_code, error, now=clock.now())
                if outcome is DeliveryStatus.DELIVERED:
                    result.delivered += 1
                elif outcome is DeliveryStatus.GAVE_UP:
                    result.gave_up += 1
                else:
                    result.retrying += 1
    finally:
        if own_client:
            client.close()
    return result

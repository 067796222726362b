"""Payment apps: registration by an admin, secret rotation with a grace period, and the check of
a signed event (HMAC-SHA256 over "<timestamp>.<raw body>", timestamp within a few minutes).

A payment app is two things to the platform: a webhook endpoint (the outbox relay sends it the
payment and refund requests, signed with the app's secret) and a sender of signed events to
`POST /payments/events`. One secret serves both directions.
"""

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.errors import Conflict, NotFound, Unauthorized
from o2o.i18n import gettext as _
from o2o.payments.models import PaymentApp
from o2o.webhooks import relay
from o2o.webhooks.models import WebhookEndpoint

APP_HEADER = "X-Payment-App"
TIMESTAMP_HEADER = "X-Payment-Timestamp"
SIGNATURE_HEADER = "X-Payment-Signature"


class BadSignature(Unauthorized):
    code = "invalid_signature"


class StaleSignature(Unauthorized):
    code = "stale_timestamp"


def endpoint_marker(app_id: int) -> str:
    """Return the event type the app's endpoint is registered for: one nothing else emits, so the
    relay's fan-out sends it only what is addressed to this app."""
    return f"payment_app_{app_id}.addressed"


def new_secret() -> str:
    """Return a fresh HMAC key (256 bits)."""
    return secrets.token_urlsafe(32)


def register_app(session: Session, *, name: str, webhook_url: str) -> tuple[PaymentApp, str]:
    """Register a payment app; return it and its secret (shown to the admin once)."""
    if session.scalar(select(PaymentApp.id).where(PaymentApp.name == name)) is not None:
        raise Conflict(_("A payment app with this name exists."), code="payment_app_exists")
    secret = new_secret()
    endpoint = relay.create_endpoint(
        session,
        url=webhook_url,
        event_types=["payment_app.pending"],
        secret=secret,
        description=f"Payment app {name}"[:200],
    )
    app = PaymentApp(name=name, webhook_endpoint_id=endpoint.id, secret=secret)
    session.add(app)
    session.flush()
    endpoint.event_types = [endpoint_marker(app.id)]
    session.flush()
    session.refresh(app)
    return app, secret


def get_app(session: Session, app_id: int, *, lock: bool = False) -> PaymentApp:
    """Load a payment app (404 if unknown)."""
    app = session.get(PaymentApp, app_id, with_for_update=lock)
    if app is None:
        raise NotFound(_("No such payment app."), code="payment_app_not_found")
    return app


def list_apps(session: Session) -> list[PaymentApp]:
    """Return every payment app, oldest first."""
    return list(session.scalars(select(PaymentApp).order_by(PaymentApp.id)))


def rotate_secret(
    session: Session, app_id: int, *, now: datetime | None = None
) -> tuple[PaymentApp, str]:
    """Give an app a new secret; the old one still verifies for the grace period."""
    now = now or clock.now()
    app = get_app(session, app_id, lock=True)
    secret = new_secret()
    app.previous_secret = app.secret
    app.previous_secret_until = now + timedelta(hours=get_settings().payment_secret_grace_hours)
    app.secret = secret
    # Requests to the app are signed with the new key at once: the app accepts both while it
    # rolls its own configuration over.
    session.get(WebhookEndpoint, app.webhook_endpoint_id).secret = secret
    session.flush()
    return app, secret


# The app new online payments go to: the most recently registered active one (its id and its
# endpoint's; a payment's opening statement reads it, `o2o.payments.service.open_payment`).
CURRENT_APP_SQL = (
    "SELECT id, webhook_endpoint_id FROM payment_apps WHERE is_active ORDER BY id DESC LIMIT 1"
)


@dataclass(frozen=True)
class SignedHeaders:
    app_id: str | None
    timestamp: str | None
    signature: str | None


def signature_for(secret: str, timestamp: int | str, body: bytes) -> str:
    """Return the `X-Payment-Signature` value of a body sent at `timestamp` (unix seconds)."""
    return relay.sign(secret, timestamp, body)


def authenticate(
    session: Session, headers: SignedHeaders, body: bytes, *, now: datetime | None = None
) -> PaymentApp:
    """Return the app that signed this body, or raise 401 (unknown app, bad or stale signature)."""
    now = now or clock.now()
    try:
        app_id = int(headers.app_id or "")
        sent = int(headers.timestamp or "")
    except ValueError:
        raise BadSignature(_("The payment event is not signed.")) from None
    app = session.get(PaymentApp, app_id) if 0 < app_id < 2**31 else None
    if app is None or not app.is_active or not headers.signature:
        raise BadSignature(_("The payment event's signature does not verify."))
    if abs(now.timestamp() - sent) > get_settings().payment_signature_tolerance_s:
        raise StaleSignature(
            _("The payment event's timestamp is too far from the platform's clock."),
            details={"tolerance_s": get_settings().payment_signature_tolerance_s},
        )
    keys = [app.secret]
    if app.previous_secret and app.previous_secret_until and app.previous_secret_until > now:
        keys.append(app.previous_secret)
    if not any(
        hmac.compare_digest(signature_for(key, sent, body), headers.signature) for key in keys
    ):
        raise BadSignature(_("The payment event's signature does not verify."))
    return app

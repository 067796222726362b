"""A development payment app: what a real one does, against no provider at all.

`python -m o2o payments dev-app` registers it (or finds it) and serves its webhook receiver on a
local port. Each payment request the platform sends it (signed, through the outbox relay) is
captured after a short delay, each refund request confirmed, by signed events POSTed back to
`/api/v1/payments/events`, exactly as a production payment app would for its provider. The
simulation and the benchmarks pay in-process with `pay()`, through the same signed-event intake.
It refuses to run in production: a production deployment plugs in its own payment app.
"""

import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.payments import apps, intake
from o2o.payments.models import Payment, PaymentApp
from o2o.webhooks import relay
from o2o.webhooks.models import WebhookEndpoint

log = logging.getLogger(__name__)

DEV_APP_NAME = "Development payment app"
EVENTS_PATH = "/api/v1/payments/events"


class ProductionRefused(RuntimeError):
    """The development payment app never runs in production."""


def refuse_production() -> None:
    """Raise unless the platform runs in development or test."""
    if get_settings().env == "production":
        raise ProductionRefused(
            "The development payment app captures every payment without a provider: it refuses "
            "to run in production. Register your provider's payment app instead."
        )


def register(session: Session, *, webhook_url: str) -> tuple[PaymentApp, str]:
    """Register the development app (or point the existing one at `webhook_url`)."""
    refuse_production()
    app = session.scalar(select(PaymentApp).where(PaymentApp.name == DEV_APP_NAME))
    if app is None:
        return apps.register_app(session, name=DEV_APP_NAME, webhook_url=webhook_url)
    endpoint = session.get(WebhookEndpoint, app.webhook_endpoint_id)
    endpoint.url, endpoint.is_active, app.is_active = webhook_url, True, True
    session.flush()
    return app, app.secret


def signed_event(app: PaymentApp, secret: str, body: dict) -> tuple[dict[str, str], bytes]:
    """Return (headers, raw body) of an event signed as the README's Payments section says."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    timestamp = int(clock.now().timestamp())
    return {
        apps.APP_HEADER: str(app.id),
        apps.TIMESTAMP_HEADER: str(timestamp),
        apps.SIGNATURE_HEADER: apps.signature_for(secret, timestamp, raw),
        "Content-Type": "application/json",
    }, raw


def captured(payment: Payment) -> dict:
    """Return the `captured` event of a payment, in full."""
    return {
        "event_id": f"dev-{uuid.uuid4()}",
        "type": "captured",
        "payment_id": str(payment.id),
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "psp_reference": f"dev-{payment.id.hex[:16]}",
    }


def pay(session: Session, order) -> None:
    """Capture an order's online payment in-process, through the signed-event intake."""
    refuse_production()
    payment = session.scalar(select(Payment).where(Payment.order_id == order.id))
    app = session.get(PaymentApp, payment.app_id)
    headers, raw = signed_event(app, app.secret, captured(payment))
    intake.receive(
        session,
        apps.SignedHeaders(
            headers[apps.APP_HEADER],
            headers[apps.TIMESTAMP_HEADER],
            headers[apps.SIGNATURE_HEADER],
        ),
        raw,
    )


class DevPaymentApp:
    """The webhook receiver: verifies each request, answers at once, reports back later."""

    def __init__(
        self, app: PaymentApp, secret: str, *, platform_url: str, delay_s: float = 2.0
    ) -> None:
        self.app, self.secret = app, secret
        self.events_url = platform_url.rstrip("/") + EVENTS_PATH
        self.delay_s = delay_s

    def receive(self, headers, body: bytes) -> int:
        """Take one signed request from the platform; return the HTTP status to answer."""
        if not relay.verify(
            self.secret,
            headers.get(relay.TIMESTAMP_HEADER, ""),
            body,
            headers.get(relay.SIGNATURE_HEADER, ""),
            now=clock.now().timestamp(),
        ):
            return 401
        event = json.loads(body)
        data = event["data"]
        if event["type"] == "payment.requested":
            report = {
                "event_id": f"dev-capture-{data['payment_id']}",
                "type": "captured",
                "payment_id": data["payment_id"],
                "amount_minor": data["amount_minor"],
                "currency": data["currency"],
                "psp_reference": f"dev-{data['payment_id'][:8]}",
            }
        elif event["type"] == "payment.refund_requested":
            report = {
                "event_id": f"dev-refund-{data['refund_id']}",
                "type": "refunded",
                "payment_id": data["payment_id"],
                "refund_id": data["refund_id"],
                "amount_minor": data["amount_minor"],
                "currency": data["currency"],
                "psp_reference": f"dev-refund-{data['refund_id'][:8]}",
            }
        else:
            return 200
        threading.Timer(self.delay_s, self.report, args=(report,)).start()
        return 200

    def report(self, body: dict, *, attempts: int = 5) -> None:
        """POST a signed event to the platform, retrying what it asks to be sent again."""
        for attempt in range(attempts):
            headers, raw = signed_event(self.app, self.secret, body)
            try:
                r = httpx.post(self.events_url, content=raw, headers=headers, timeout=10)
                log.info("reported %s %s: %s", body["type"], body["payment_id"], r.status_code)
                if r.status_code < 500 and r.status_code != 409:
                    return
            except httpx.HTTPError as exc:
                log.warning("platform unreachable: %s", exc)
            time.sleep(2 * (attempt + 1))

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        """Return the HTTP server of the receiver (call serve_forever on it)."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server name)
                length = int(self.headers.get("Content-Length") or 0)
                status = outer.receive(self.headers, self.rfile.read(min(length, 1 << 20)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, fmt, *args):
                log.info("dev payment app: " + fmt, *args)

        return ThreadingHTTPServer((host, port), Handler)

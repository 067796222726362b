"""Where the money goes: refunds sent to an app that was down and retried, "late = free" paid out,
pay-at-store pickups, prescriptions only after payment, the hoarding caps, the report."""

import threading
import uuid
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from dispatch import monitor
from o2o import clock
from o2o.config import get_settings
from o2o.order_flow.tasks import expire_due_orders
from o2o.orders.models import Order
from o2o.outbox import OutboxEvent
from o2o.payments import apps as payment_apps
from o2o.payments.models import Payment
from o2o.users.models import Role
from o2o.webhooks import relay
from o2o.webhooks.models import OutboxDelivery
from tests.factories import (
    auth,
    make_lot,
    make_product,
    make_store,
    make_user,
    offset,
    payment_app,
    payment_event,
)
from tests.orders.helpers import order_body, stock
from tests.prescriptions.helpers import request_body

API = "/api/v1"
EVENTS = f"{API}/payments/events"


@pytest.fixture
def world(db):
    store = make_store(db, at=offset(500, 0), zone_half_side_m=3000)
    product = make_product(db, name="Ibuprofen 200 mg")
    lot = make_lot(db, store, product, on_hand=20, price_minor=1200)
    return {
        "store": store,
        "product": product,
        "lot": lot,
        "patient": make_user(db, role=Role.PATIENT),
        "staff": make_user(db, role=Role.PHARMACIST, store_ids=[store.id]),
        "admin": make_user(db, role=Role.ADMIN),
    }


def place(client, world, qty=1, *, who="patient", product=None, **extra):
    body = order_body([((product or world["product"]).id, qty)]) | extra
    return client.post(f"{API}/orders", json=body, headers=auth(world[who]))


def placed(client, world, qty=1, **kw) -> dict:
    r = place(client, world, qty, **kw)
    assert r.status_code == 201, r.text
    return r.json()


def capture(client, db, order) -> None:
    headers, raw = payment_event(db, order["payment"]["id"])
    r = client.post(EVENTS, content=raw, headers=headers)
    assert r.status_code == 200, r.text


def read(client, world, order_id, who="patient") -> dict:
    return client.get(f"{API}/orders/{order_id}", headers=auth(world[who])).json()


class PaymentAppServer:
    """A payment app's webhook receiver on a real local port; answers `status` to each call."""

    def __init__(self, port: int):
        self.received: list[tuple[dict, bytes]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((dict(self.headers), body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()
    return port


def test_a_refund_is_retried_until_the_app_is_back_then_confirmed(client, db, world):
    from o2o.payments import apps

    port = free_port()
    app, secret = apps.register_app(
        db, name="Pay app on a real port", webhook_url=f"http://127.0.0.1:{port}/hooks"
    )
    order = placed(client, world, 2)
    headers, raw = payment_event(db, order["payment"]["id"], secret=secret, app_id=app.id)
    assert client.post(EVENTS, content=raw, headers=headers).status_code == 200
    r = client.post(
        f"{API}/orders/{order['id']}/cancel",
        json={"reason": "No longer needed"},
        headers=auth(world["patient"]),
    )
    refund = r.json()["refunds"][0]

    @contextmanager
    def in_test(*_a):
        yield db
        db.flush()

    # The app is down: nothing listens on its port. The relay records the failure, keeps it.
    first = relay.relay(in_test)
    assert first.delivered == 0 and first.retrying >= 1
    server = PaymentAppServer(port)
    try:
        # Before the backoff has passed nothing is sent again.
        assert relay.relay(in_test).delivered == 0
        later = clock.now() + timedelta(seconds=get_settings().webhook_backoff_max_s + 1)
        with clock.use(lambda: later):
            again = relay.relay(in_test)
        assert again.delivered >= 1
    finally:
        server.stop()
    by_type = {h["X-O2O-Event-Type"]: (h, body) for h, body in server.received}
    h, body = by_type["payment.refund_requested"]
    assert relay.verify(secret, h["X-O2O-Timestamp"], body, h["X-O2O-Signature"])
    assert f'"refund_id":"{refund["id"]}"'.encode() in body
    assert b'"amount_minor":2400' in body
    # The app confirms: the refund succeeded.
    headers, raw = payment_event(
        db,
        order["payment"]["id"],
        "refunded",
        refund_id=refund["id"],
        amount_minor=2400,
        secret=secret,
        app_id=app.id,
    )
    assert client.post(EVENTS, content=raw, headers=headers).json()["applied"] is True
    assert read(client, world, order["id"])["refunds"][0]["status"] == "succeeded"


def test_a_breached_delivery_refunds_its_delivery_fee_once(client, db, world):
    payment_app(db)
    body = order_body([(world["product"].id, 1)], fulfillment="delivery", address_at=offset(900, 0))
    r = client.post(f"{API}/orders", json=body, headers=auth(world["patient"]))
    order = r.json()
    assert order["delivery_fee_minor"] == 500 and order["total_minor"] == 1700
    capture(client, db, order)
    deadline = read(client, world, order["id"])["sla_deadline"]
    late = clock.now() + timedelta(hours=2, minutes=1)
    assert monitor.run(db, now=late).breached == 1
    assert monitor.run(db, now=late + timedelta(minutes=1)).breached == 0
    after = read(client, world, order["id"])
    assert deadline is not None and after["compensation_minor"] == 500
    assert [(x["amount_minor"], x["reason"]) for x in after["refunds"]] == [(500, "late_delivery")]
    # Cancelled later by the store: what is left of the capture goes back, never more.
    client.post(
        f"{API}/orders/{order['id']}/cancel", json={"reason": "Lost"}, headers=auth(world["staff"])
    )
    refunds = read(client, world, order["id"])["refunds"]
    assert [(x["amount_minor"], x["reason"]) for x in refunds] == [
        (500, "late_delivery"),
        (1200, "order_cancelled"),
    ]


def test_a_pay_at_store_pickup_is_released_at_once_and_paid_at_handover(client, db, world):
    order = placed(client, world, 2, payment_method="at_store")
    assert order["status"] == "released"
    assert (order["payment"]["method"], order["payment"]["status"]) == ("at_store", "pending")
    assert order["payment"]["due_at"] is None
    staff = auth(world["staff"])
    for action in ("prepare", "ready"):
        assert client.post(f"{API}/orders/{order['id']}/{action}", headers=staff).status_code == 200
    code = order["pickup_code"]
    r = client.post(
        f"{API}/orders/{order['id']}/handover", json={"pickup_code": code}, headers=staff
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "payment_not_collected"
    assert r.json()["error"]["details"]["amount_minor"] == 2400
    r = client.post(
        f"{API}/orders/{order['id']}/handover",
        json={"pickup_code": code, "payment_collected": True},
        headers=staff,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed" and r.json()["payment"]["status"] == "captured"
    assert stock(db, world["lot"]) == (18, 0)


def test_pay_at_store_is_for_pickups_only(client, db, world):
    r = place(
        client,
        world,
        fulfillment="delivery",
        payment_method="at_store",
        delivery_address={"location": {"lat": 31.24, "lon": 121.47}, "text": "Room 1"},
    )
    assert r.status_code == 422, r.text


def test_a_prescription_is_requested_only_for_a_paid_order(client, db, world):
    payment_app(db)
    rx = make_product(db, name="Amoxicillin 500 mg", rx_only=True)
    make_lot(db, world["store"], rx, on_hand=5)
    order = placed(client, world, product=rx)
    order_row = db.get(Order, uuid.UUID(order["id"]))
    r = client.post(
        f"{API}/prescriptions", json=request_body(order_row), headers=auth(world["patient"])
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_not_awaiting_prescription"
    capture(client, db, order)
    r = client.post(
        f"{API}/prescriptions", json=request_body(order_row), headers=auth(world["patient"])
    )
    assert r.status_code == 201, r.text


def test_an_expired_prescription_wait_cancels_and_refunds_in_full(client, db, world):
    payment_app(db)
    rx = make_product(db, name="Amoxicillin 500 mg", rx_only=True)
    make_lot(db, world["store"], rx, on_hand=5, price_minor=3000)
    order = placed(client, world, product=rx)
    capture(client, db, order)
    assert read(client, world, order["id"])["status"] == "awaiting_prescription"
    later = clock.now() + timedelta(hours=24, minutes=1)
    assert expire_due_orders(db, now=later) == (1, 1)
    after = read(client, world, order["id"])
    assert after["status"] == "cancelled"
    assert [(x["amount_minor"], x["reason"]) for x in after["refunds"]] == [
        (3000, "order_cancelled")
    ]


def test_three_unpaid_orders_is_the_most_a_patient_may_hold(client, db, world):
    payment_app(db)
    first = placed(client, world)
    placed(client, world)
    placed(client, world)
    r = place(client, world)
    assert r.status_code == 409 and r.json()["error"]["code"] == "too_many_open_orders"
    assert stock(db, world["lot"]) == (20, 3)
    # Paying one frees a place; at-store orders are unpaid too until the counter.
    capture(client, db, first)
    assert place(client, world).status_code == 201
    r = place(client, world, payment_method="at_store")
    assert r.status_code == 409 and r.json()["error"]["code"] == "too_many_open_orders"
    # Another patient is not affected.
    world["other"] = make_user(db, role=Role.PATIENT)
    assert place(client, world, who="other").status_code == 201


def test_units_of_one_product_are_capped_across_open_orders(client, db, world, monkeypatch):
    payment_app(db)
    monkeypatch.setattr(get_settings(), "max_open_units_per_product", 5)
    capture(client, db, placed(client, world, 3))
    r = place(client, world, 3)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "too_many_open_units"
    assert error["details"]["products"] == [
        {"product_id": world["product"].id, "held": 3, "requested": 3, "limit": 5}
    ]
    assert place(client, world, 2).status_code == 201


def test_no_payment_app_means_online_payment_is_unavailable(client, db, world):
    r = place(client, world)
    assert r.status_code == 409 and r.json()["error"]["code"] == "payments_unavailable"
    assert stock(db, world["lot"]) == (20, 0)
    assert place(client, world, payment_method="at_store").status_code == 201


def test_an_online_payment_is_asked_of_the_newest_active_app(client, db, world):
    older, _ = payment_apps.register_app(
        db, name="Older provider", webhook_url="https://older.example.test/hooks"
    )
    newer, _ = payment_apps.register_app(
        db, name="Newer provider", webhook_url="https://newer.example.test/hooks"
    )

    def asked_of(order: dict) -> tuple[int, list[int]]:
        """The payment's app and the endpoints its request is addressed to, as stored."""
        db.expire_all()
        payment = db.get(Payment, uuid.UUID(order["payment"]["id"]))
        endpoints = db.scalars(
            select(OutboxDelivery.endpoint_id)
            .join(OutboxEvent, OutboxEvent.id == OutboxDelivery.event_id)
            .where(OutboxEvent.aggregate_id == str(payment.id))
        ).all()
        return payment.app_id, endpoints

    assert asked_of(placed(client, world)) == (newer.id, [newer.webhook_endpoint_id])
    newer.is_active = False
    db.commit()
    assert asked_of(placed(client, world)) == (older.id, [older.webhook_endpoint_id])
    older.is_active = False
    db.commit()
    r = place(client, world)
    assert r.status_code == 409 and r.json()["error"]["code"] == "payments_unavailable"
    assert stock(db, world["lot"]) == (20, 2)
    for written in (Order, Payment, OutboxDelivery):
        assert db.scalar(select(func.count()).select_from(written)) == 2


def test_the_report_reconciles_a_stores_day(client, db, world):
    payment_app(db)
    kept = placed(client, world, 2)
    capture(client, db, kept)
    gone = placed(client, world, 1)
    capture(client, db, gone)
    r = client.post(
        f"{API}/orders/{gone['id']}/cancel", json={"reason": "x"}, headers=auth(world["patient"])
    )
    refund = r.json()["refunds"][0]
    headers, raw = payment_event(
        db, gone["payment"]["id"], "refunded", refund_id=refund["id"], amount_minor=1200
    )
    assert client.post(EVENTS, content=raw, headers=headers).status_code == 200
    day = clock.today(world["store"].timezone).isoformat()
    r = client.get(
        f"{API}/admin/payments/report",
        params={"from": day, "to": day},
        headers=auth(world["admin"]),
    )
    assert r.status_code == 200, r.text
    report = r.json()
    figures = {
        "currency": "CNY",
        "captured_minor": 3600,
        "refunded_minor": 1200,
        "compensation_minor": 0,
        "outstanding_minor": 2400,
    }
    assert report["total"] == [figures]
    assert report["days"] == [figures | {"date": day}]
    assert report["stores"] == [
        figures | {"store_id": world["store"].id, "store_name": world["store"].name}
    ]
    assert (
        client.get(
            f"{API}/admin/payments/report",
            params={"from": day, "to": day},
            headers=auth(world["staff"]),
        ).status_code
        == 403
    )
    bad = client.get(
        f"{API}/admin/payments/report",
        params={"from": day, "to": "2000-01-01"},
        headers=auth(world["admin"]),
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_range"


def test_payment_apps_are_registered_by_admins_and_rotated_with_a_grace_period(client, db, world):
    admin = auth(world["admin"])
    body = {"name": "WeChat Pay integration", "webhook_url": "https://pay.example.test/hooks"}
    assert (
        client.post(
            f"{API}/admin/payment-apps", json=body, headers=auth(world["staff"])
        ).status_code
        == 403
    )
    r = client.post(f"{API}/admin/payment-apps", json=body, headers=admin)
    assert r.status_code == 201, r.text
    app_id, old_secret = r.json()["id"], r.json()["secret"]
    assert len(old_secret) >= 32
    listed = client.get(f"{API}/admin/payment-apps", headers=admin).text
    assert old_secret not in listed and "WeChat Pay integration" in listed
    assert client.post(f"{API}/admin/payment-apps", json=body, headers=admin).status_code == 409
    # New orders go to the newest app.
    order = placed(client, world)
    payment = db.get(Payment, uuid.UUID(order["payment"]["id"]))
    assert payment.app_id == app_id

    r = client.post(f"{API}/admin/payment-apps/{app_id}/rotate-secret", headers=admin)
    assert r.status_code == 200
    new_secret = r.json()["secret"]
    assert new_secret != old_secret and r.json()["previous_secret_until"]
    # Within the grace period the old key still verifies; after it, only the new one.
    headers, raw = payment_event(db, payment.id, "failed", secret=old_secret, app_id=app_id)
    assert client.post(EVENTS, content=raw, headers=headers).status_code == 200
    after_grace = clock.now() + timedelta(
        hours=get_settings().payment_secret_grace_hours, minutes=1
    )
    with clock.use(lambda: after_grace):
        headers, raw = payment_event(db, payment.id, secret=old_secret, app_id=app_id)
        r = client.post(EVENTS, content=raw, headers=headers)
        assert r.status_code == 401
        headers, raw = payment_event(db, payment.id, secret=new_secret, app_id=app_id)
        r = client.post(EVENTS, content=raw, headers=headers)
        assert r.status_code == 200 and r.json()["payment_status"] == "captured"
    assert db.scalar(select(Payment.status).where(Payment.id == payment.id)).value == "captured"

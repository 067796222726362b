"""The platform driven as a payment app drives it: signed events, forged and stale ones, replays,
wrong amounts, events out of order, captures after expiry, refunds and their confirmation."""

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from o2o import clock
from o2o.order_flow.tasks import expire_due_orders
from o2o.outbox import OutboxEvent
from o2o.payments.models import Payment, PaymentEvent, Refund
from o2o.users.models import Role
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
from tests.orders.helpers import order_body, stock, watched

API = "/api/v1"
EVENTS = f"{API}/payments/events"


@pytest.fixture
def world(db):
    store = make_store(db, at=offset(500, 0), zone_half_side_m=3000)
    product = make_product(db, name="Ibuprofen 200 mg")
    lot = make_lot(db, store, product, on_hand=10, price_minor=1200)
    app, secret = payment_app(db)
    return {
        "store": store,
        "product": product,
        "lot": lot,
        "app": app,
        "secret": secret,
        "patient": make_user(db, role=Role.PATIENT),
        "staff": make_user(db, role=Role.PHARMACIST, store_ids=[store.id]),
        "admin": make_user(db, role=Role.ADMIN),
    }


def place(client, world, qty=2, **extra) -> dict:
    body = order_body([(world["product"].id, qty)]) | extra
    r = client.post(f"{API}/orders", json=body, headers=auth(world["patient"]))
    assert r.status_code == 201, r.text
    return r.json()


def read(client, world, order_id) -> dict:
    r = client.get(f"{API}/orders/{order_id}", headers=auth(world["patient"]))
    assert r.status_code == 200, r.text
    return r.json()


def send(client, db, payment_id, type_="captured", **kw):
    headers, raw = payment_event(db, payment_id, type_, **kw)
    return client.post(EVENTS, content=raw, headers=headers)


def events_stored(db) -> int:
    return db.scalar(select(func.count()).select_from(PaymentEvent))


def test_a_signed_capture_releases_the_order(client, db, world):
    order = place(client, world)
    assert order["status"] == "awaiting_payment"
    r = send(client, db, order["payment"]["id"])
    assert r.status_code == 200, r.text
    assert r.json()["applied"] is True
    order = read(client, world, order["id"])
    assert order["status"] == "released"
    assert order["payment"]["status"] == "captured"


def test_a_capture_compiles_nothing_once_one_has_run(client, db, world):
    # Every online payment's capture comes through here: a statement SQLAlchemy cannot cache
    # (its PostgreSQL INSERT ... ON CONFLICT, which recorded the event) costs each its compilation.
    first, second = place(client, world, qty=1), place(client, world, qty=1)
    assert send(client, db, first["payment"]["id"]).status_code == 200

    with watched() as seen:
        r = send(client, db, second["payment"]["id"])

    assert r.status_code == 200, r.text
    assert r.json()["applied"] is True
    assert seen.compiled_anew == [], "\n".join(seen.compiled_anew)


def test_the_payment_request_goes_to_the_app_through_the_outbox(client, db, world):
    order = place(client, world)
    requested = db.scalar(
        select(OutboxEvent).where(
            OutboxEvent.event_type == "payment.requested",
            OutboxEvent.aggregate_id == order["payment"]["id"],
        )
    )
    assert requested.payload["amount_minor"] == order["total_minor"] == 2400
    assert requested.payload["order_id"] == order["id"]
    # Addressed to this app's endpoint only.
    deliveries = db.scalars(
        select(OutboxDelivery.endpoint_id).where(OutboxDelivery.event_id == requested.id)
    ).all()
    assert deliveries == [world["app"].webhook_endpoint_id]


@pytest.mark.parametrize(
    "tamper",
    ["wrong_secret", "body_changed", "no_signature", "unknown_app", "stale", "future"],
)
def test_forged_or_stale_events_are_refused_with_401_and_change_nothing(client, db, world, tamper):
    order = place(client, world)
    payment_id = order["payment"]["id"]
    kw = {}
    if tamper == "wrong_secret":
        kw["secret"] = "not-the-apps-secret-" + "x" * 20
    if tamper == "stale":
        kw["sent_at"] = clock.now() - timedelta(minutes=5, seconds=2)
    if tamper == "future":
        kw["sent_at"] = clock.now() + timedelta(minutes=6)
    if tamper == "unknown_app":
        kw["app_id"] = world["app"].id + 1000
    headers, raw = payment_event(db, payment_id, **kw)
    if tamper == "body_changed":
        raw = raw.replace(b'"captured"', b'"failed"')
    if tamper == "no_signature":
        headers.pop("X-Payment-Signature")
    r = client.post(EVENTS, content=raw, headers=headers)
    assert r.status_code == 401, r.text
    expected = "stale_timestamp" if tamper in ("stale", "future") else "invalid_signature"
    assert r.json()["error"]["code"] == expected
    assert read(client, world, order["id"])["status"] == "awaiting_payment"
    assert events_stored(db) == 0


def test_a_timestamp_just_inside_five_minutes_is_accepted(client, db, world):
    order = place(client, world)
    r = send(client, db, order["payment"]["id"], sent_at=clock.now() - timedelta(minutes=4))
    assert r.status_code == 200, r.text


def test_a_replayed_event_answers_200_and_changes_nothing(client, db, world):
    order = place(client, world)
    headers, raw = payment_event(db, order["payment"]["id"], event_id="evt-once")
    first = client.post(EVENTS, content=raw, headers=headers)
    assert first.status_code == 200 and first.json()["applied"] is True
    timeline = read(client, world, order["id"])["timeline"]
    again = client.post(EVENTS, content=raw, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["applied"] is False and again.json()["outcome"].startswith("replay")
    assert read(client, world, order["id"])["timeline"] == timeline
    assert events_stored(db) == 1
    # The same event id carrying another event is refused.
    reused = send(client, db, order["payment"]["id"], "failed", event_id="evt-once")
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "event_id_reused"


@pytest.mark.parametrize(
    ("amount_delta", "currency"), [(-1, None), (1, None), (0, "USD")], ids=["less", "more", "usd"]
)
def test_a_capture_of_the_wrong_amount_or_currency_is_422_and_changes_nothing(
    client, db, world, amount_delta, currency
):
    order = place(client, world)
    r = send(
        client,
        db,
        order["payment"]["id"],
        amount_minor=order["total_minor"] + amount_delta,
        currency=currency,
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "amount_mismatch"
    after = read(client, world, order["id"])
    assert after["status"] == "awaiting_payment" and after["payment"]["status"] == "pending"
    assert events_stored(db) == 0
    # The right capture still goes through afterwards.
    assert send(client, db, order["payment"]["id"]).status_code == 200


def test_refunded_before_captured_is_409_then_both_apply_in_order(client, db, world):
    order = place(client, world)
    payment_id = order["payment"]["id"]
    # Cancelled by the patient after paying: the refund request goes out.
    assert send(client, db, payment_id).status_code == 200
    r = client.post(
        f"{API}/orders/{order['id']}/cancel",
        json={"reason": "Bought it elsewhere"},
        headers=auth(world["patient"]),
    )
    assert r.status_code == 200, r.text
    refund = r.json()["refunds"][0]
    assert (refund["amount_minor"], refund["status"]) == (2400, "requested")

    # Another order: its app reports a refund before it reported the capture.
    other = place(client, world, qty=1)
    early = send(client, db, other["payment"]["id"], "refunded", amount_minor=1200)
    assert early.status_code == 409, early.text
    assert early.json()["error"]["code"] == "payment_not_captured"
    assert read(client, world, other["id"])["status"] == "awaiting_payment"
    # The first order's refund is confirmed by its id.
    ok = send(client, db, payment_id, "refunded", amount_minor=2400, refund_id=refund["id"])
    assert ok.status_code == 200 and ok.json()["applied"] is True
    assert read(client, world, order["id"])["refunds"][0]["status"] == "succeeded"


def test_a_failure_after_the_capture_is_stale_and_ignored(client, db, world):
    order = place(client, world)
    payment_id = order["payment"]["id"]
    assert send(client, db, payment_id).status_code == 200
    late = send(client, db, payment_id, "failed")
    assert late.status_code == 200 and late.json()["applied"] is False
    assert read(client, world, order["id"])["payment"]["status"] == "captured"


def test_a_failed_payment_may_still_be_captured_before_the_deadline(client, db, world):
    order = place(client, world)
    payment_id = order["payment"]["id"]
    assert send(client, db, payment_id, "failed").json()["payment_status"] == "failed"
    assert read(client, world, order["id"])["status"] == "awaiting_payment"
    assert send(client, db, payment_id).json()["payment_status"] == "captured"
    assert read(client, world, order["id"])["status"] == "released"


def test_an_unpaid_order_expires_once_at_its_deadline_and_a_late_capture_is_refunded(
    client, db, world
):
    order = place(client, world)
    due = clock.now() + timedelta(minutes=15, seconds=1)
    assert expire_due_orders(db, now=due - timedelta(seconds=2)) == (0, 0)
    assert expire_due_orders(db, now=due) == (1, 1)
    assert expire_due_orders(db, now=due) == (0, 0)
    expired = read(client, world, order["id"])
    assert expired["status"] == "cancelled"
    assert "Not paid within 15 minutes" in expired["cancel_reason"]
    assert expired["payment"]["status"] == "cancelled"
    assert stock(db, world["lot"]) == (10, 0)
    # The app captures after all: the order stays cancelled and the money goes back at once.
    r = send(client, db, order["payment"]["id"])
    assert r.status_code == 200 and r.json()["applied"] is True
    after = read(client, world, order["id"])
    assert after["status"] == "cancelled"
    assert [(x["amount_minor"], x["reason"], x["status"]) for x in after["refunds"]] == [
        (2400, "captured_after_cancel", "requested")
    ]
    assert stock(db, world["lot"]) == (10, 0)
    asked = db.scalars(
        select(OutboxEvent.payload).where(OutboxEvent.event_type == "payment.refund_requested")
    ).all()
    assert [(p["refund_id"], p["amount_minor"]) for p in asked] == [
        (after["refunds"][0]["id"], 2400)
    ]


def test_refunds_never_exceed_what_was_captured(client, db, world):
    from o2o.payments import service
    from o2o.payments.states import RefundTooLarge

    order = place(client, world)
    assert send(client, db, order["payment"]["id"]).status_code == 200
    payment = db.get(Payment, uuid.UUID(order["payment"]["id"]))
    service.request_refund(db, payment, 2000, reason="late_delivery")
    with pytest.raises(RefundTooLarge):
        service.request_refund(db, payment, 401, reason="late_delivery")
    # Cancelling refunds only what is left.
    r = client.post(
        f"{API}/orders/{order['id']}/cancel", json={"reason": "x"}, headers=auth(world["staff"])
    )
    assert [x["amount_minor"] for x in r.json()["refunds"]] == [2000, 400]
    total = db.scalar(select(func.sum(Refund.amount_minor)).where(Refund.payment_id == payment.id))
    assert total == payment.captured_minor == 2400


def test_a_refund_of_another_amount_is_refused(client, db, world):
    order = place(client, world)
    assert send(client, db, order["payment"]["id"]).status_code == 200
    r = client.post(
        f"{API}/orders/{order['id']}/cancel", json={"reason": "x"}, headers=auth(world["patient"])
    )
    refund_id = r.json()["refunds"][0]["id"]
    wrong = send(
        client, db, order["payment"]["id"], "refunded", amount_minor=2399, refund_id=refund_id
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "amount_mismatch"
    failed = send(client, db, order["payment"]["id"], "refund_failed", refund_id=refund_id)
    assert failed.status_code == 200
    assert read(client, world, order["id"])["refunds"][0]["status"] == "failed"


def test_an_event_for_another_apps_payment_is_404(client, db, world):
    from o2o.payments import apps

    order = place(client, world)
    other, secret = apps.register_app(db, name="Other app", webhook_url="https://other.test/h")
    headers, raw = payment_event(db, order["payment"]["id"], secret=secret, app_id=other.id)
    r = client.post(EVENTS, content=raw, headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "payment_not_found"


def test_a_malformed_event_is_422(client, db, world):
    order = place(client, world)
    headers, _ = payment_event(db, order["payment"]["id"])
    raw = json.dumps({"event_id": "e1", "type": "captured"}).encode()
    from o2o.payments.apps import signature_for

    ts = headers["X-Payment-Timestamp"]
    headers["X-Payment-Signature"] = signature_for(world["secret"], ts, raw)
    r = client.post(EVENTS, content=raw, headers=headers)
    assert r.status_code == 422, r.text

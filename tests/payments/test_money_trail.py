"""One order's whole money trail, from placement to the last refund, through real requests (run
with `-s` to print it): placed, payment requested from the app, captured, released, late (the
delivery fee refunded), cancelled by the store (the rest refunded), both refunds confirmed, and
the day's reconciliation."""

from datetime import timedelta

from sqlalchemy import select

from dispatch import monitor
from o2o import clock
from o2o.outbox import OutboxEvent
from o2o.users.models import Role
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
from tests.orders.helpers import order_body

API = "/api/v1"


def test_one_orders_money_trail_from_placement_to_refund(client, db):
    trail: list[str] = []
    payment_app(db)
    store = make_store(db, at=offset(500, 0), zone_half_side_m=3000, name="Riverside Pharmacy")
    product = make_product(db, name="Ibuprofen 200 mg")
    make_lot(db, store, product, on_hand=10, price_minor=1200)
    patient = make_user(db, role=Role.PATIENT)
    staff = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    admin = make_user(db, role=Role.ADMIN)

    def app_reports(type_: str, **kw) -> dict:
        headers, raw = payment_event(db, order["payment"]["id"], type_, **kw)
        r = client.post(f"{API}/payments/events", content=raw, headers=headers)
        assert r.status_code == 200, r.text
        trail.append(f"POST /payments/events {raw.decode()} -> 200 {r.json()}")
        return r.json()

    def outbox(event_type: str) -> list[dict]:
        return list(
            db.scalars(select(OutboxEvent.payload).where(OutboxEvent.event_type == event_type))
        )

    body = order_body([(product.id, 1)], fulfillment="delivery", address_at=offset(900, 0))
    r = client.post(f"{API}/orders", json=body, headers=auth(patient))
    assert r.status_code == 201
    order = r.json()
    trail.append(
        f"POST /orders -> 201 status={order['status']} total_minor={order['total_minor']} "
        f"payment={order['payment']}"
    )
    assert order["payment"]["amount_minor"] == 1700
    (requested,) = outbox("payment.requested")
    trail.append(f"outbox -> payment app: payment.requested {requested}")

    assert app_reports("captured")["payment_status"] == "captured"
    order = client.get(f"{API}/orders/{order['id']}", headers=auth(patient)).json()
    assert order["status"] == "released"
    trail.append(f"GET /orders/{{id}} -> status={order['status']} payment={order['payment']}")

    # Two hours and a minute later the delivery is late: "late = free" is paid out.
    late = clock.now() + timedelta(hours=2, minutes=1)
    assert monitor.run(db, now=late).breached == 1
    (late_refund,) = outbox("payment.refund_requested")
    trail.append(f"SLA monitor: breached; outbox -> payment app: refund_requested {late_refund}")
    app_reports("refunded", refund_id=late_refund["refund_id"], amount_minor=500)

    r = client.post(
        f"{API}/orders/{order['id']}/cancel",
        json={"reason": "Courier could not reach the address"},
        headers=auth(staff),
    )
    assert r.status_code == 200
    trail.append(f"POST /orders/{{id}}/cancel (store) -> status={r.json()['status']}")
    (rest,) = [
        p for p in outbox("payment.refund_requested") if p["refund_id"] != late_refund["refund_id"]
    ]
    trail.append(f"outbox -> payment app: refund_requested {rest}")
    assert rest["amount_minor"] == 1200
    app_reports("refunded", refund_id=rest["refund_id"], amount_minor=1200)

    order = client.get(f"{API}/orders/{order['id']}", headers=auth(patient)).json()
    refunds = [(x["amount_minor"], x["reason"], x["status"]) for x in order["refunds"]]
    assert refunds == [(500, "late_delivery", "succeeded"), (1200, "order_cancelled", "succeeded")]
    trail.append(f"GET /orders/{{id}} -> status={order['status']} refunds={order['refunds']}")

    day = clock.today(store.timezone).isoformat()
    report = client.get(
        f"{API}/admin/payments/report", params={"from": day, "to": day}, headers=auth(admin)
    ).json()
    assert report["total"] == [
        {
            "currency": "CNY",
            "captured_minor": 1700,
            "refunded_minor": 1700,
            "compensation_minor": 500,
            "outstanding_minor": 0,
        }
    ]
    trail.append(f"GET /admin/payments/report?from={day}&to={day} -> total={report['total']}")
    print("\n" + "\n".join(trail))

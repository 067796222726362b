"""What one placement asks of the database, counted: under a flash sale a placement's cost is its
statements, each through the ORM's Python (docs/BENCHMARKS.md, "Load"), so a change that adds
one to the common path shows here."""

from geoalchemy2.elements import WKBElement, WKTElement
from sqlalchemy import inspect, select

from o2o.db import session_scope
from o2o.geo import to_latlon
from o2o.order_flow import checkout
from o2o.order_flow.schemas import OrderIn
from o2o.orders.models import Fulfillment, Order
from o2o.outbox import OutboxEvent
from o2o.payments.models import Payment, PaymentApp
from o2o.users.models import Role
from o2o.webhooks.models import OutboxDelivery
from stores.models import Store
from tests.factories import (
    auth,
    make_lot,
    make_order,
    make_product,
    make_store,
    make_user,
    offset,
)
from tests.orders.helpers import order_body, watched

# The caller and the Idempotency-Key's claim, each on a driver connection lent for it (in
# autocommit: no BEGIN or COMMIT around them); then the placement's transaction: the cart's
# products read with the patient's lock taken (one statement), the caps, the routing walk (no
# savepoint: a walk the index refuses redoes the placement; the chosen store is taken from its
# row) and the cart's equivalents, the stock's plan, the order with its lines, their lots, its
# timeline entry and its outbox event (one statement), the payment to the current app with its
# request to that app (one statement), the key's answer and the lot's take (sent with the
# COMMIT, in one round trip). `watched` counts the driver's statements with SQLAlchemy's.
PLACEMENT_STATEMENTS = 11


def test_an_online_pickup_with_an_idempotency_key_runs_its_statements_and_no_more(real_client):
    with session_scope() as s:
        store = make_store(s, at=offset(400, 0), name="Renmin Road Pharmacy")
        product = make_product(s, name="Mask pack")
        make_lot(s, store, product, on_hand=20)
        patient = make_user(s, role=Role.PATIENT)
        product_id, store_id = product.id, store.id
    headers = auth(patient)
    # The first placement fills the process's caches (the cart's store counts, the hours): an
    # app's patients order the same products again and again.
    warm = real_client.post(
        "/api/v1/orders",
        json=order_body([(product_id, 1)]),
        headers=headers | {"Idempotency-Key": "a"},
    )
    assert warm.status_code == 201, warm.text

    with watched() as seen:
        placed = real_client.post(
            "/api/v1/orders",
            json=order_body([(product_id, 2)]),
            headers=headers | {"Idempotency-Key": "b"},
        )
    statements = seen.run

    assert placed.status_code == 201, placed.text
    assert placed.json()["store"] == {"id": store_id, "name": "Renmin Road Pharmacy"}
    assert len(statements) <= PLACEMENT_STATEMENTS, "\n".join(statements)
    # The store is read by the routing walk alone: its row there names it in the answer and
    # gives the order its currency, fee and the lots' shelf-life floor, with no read of its own.
    assert not any(s.startswith("SELECT stores.") for s in statements), "\n".join(statements)
    # Every statement was compiled by the first placement and comes from SQLAlchemy's cache: one
    # SQLAlchemy cannot cache (such as its PostgreSQL INSERT ... ON CONFLICT), or one whose cache
    # key differs on every call, costs every placement its compilation. (A statement rebuilt on
    # every call in the same shape is still found in the cache: this does not catch that.)
    assert seen.compiled_anew == [], "\n".join(seen.compiled_anew)


def _as_read(obj) -> dict:
    """Every mapped column of an object, a point as (lat, lon)."""
    values = {}
    for prop in inspect(obj).mapper.column_attrs:
        value = getattr(obj, prop.key)
        values[prop.key] = to_latlon(value) if isinstance(value, WKBElement | WKTElement) else value
    return values


def _order_as_read(placed: checkout.Placed) -> dict:
    order = placed.order
    return {
        "order": _as_read(order),
        "lines": [
            (_as_read(line), [_as_read(a) for a in line.allocations]) for line in order.lines
        ],
        "timeline": [_as_read(e) for e in order.events],
        "payment": _as_read(placed.payment),
    }


def test_a_placed_order_is_held_as_written_and_its_answer_reads_nothing_back(db):
    store = make_store(db, at=offset(500, 0), zone_half_side_m=3000)
    masks, fever = make_product(db, name="Mask pack"), make_product(db, name="Fever syrup")
    # Three masks come from two lots (first expiring first), the syrup from one.
    make_lot(db, store, masks, on_hand=2, days=100, price_minor=1000)
    make_lot(db, store, masks, on_hand=5, days=200, price_minor=1300)
    make_lot(db, store, fever, on_hand=4)
    patient = make_user(db, role=Role.PATIENT)
    body = OrderIn.model_validate(
        order_body(
            [(masks.id, 3), (fever.id, 1)], fulfillment="delivery", address_at=offset(1500, 300)
        )
    )

    placed = checkout.place(db, patient, body)
    with watched() as seen:
        held = _order_as_read(placed)
    # The order, its lines, their lots, its timeline and its payment were written by the
    # placement's own statements, whose values the session holds: answering reads nothing.
    assert seen.run == []
    db.commit()
    order_id, payment_id = placed.order.id, placed.payment.id

    db.expunge_all()
    stored = checkout.Placed(
        order=db.get(Order, order_id),
        store=checkout.OrderStore.of(db.get(Store, store.id)),
        payment=db.get(Payment, payment_id),
        waiver=None,
    )
    assert _order_as_read(stored) == held
    assert held["order"]["fulfillment"] is Fulfillment.DELIVERY
    assert [(line["product_id"], line["quantity"]) for line, _ in held["lines"]] == [
        (masks.id, 3),
        (fever.id, 1),
    ]
    assert [[a["quantity"] for a in lots] for _, lots in held["lines"]] == [[2, 1], [1]]
    # The outbox holds the order's creation for subscribers and the payment's request for its app.
    sent = db.execute(
        select(OutboxEvent.event_type, OutboxEvent.payload).where(
            OutboxEvent.aggregate_id.in_([str(order_id), str(payment_id)])
        )
    ).all()
    assert sorted(event_type for event_type, _ in sent) == ["order.created", "payment.requested"]
    requested = db.scalar(
        select(OutboxDelivery.endpoint_id)
        .join(OutboxEvent, OutboxEvent.id == OutboxDelivery.event_id)
        .where(OutboxEvent.aggregate_id == str(payment_id))
    )
    assert requested == db.get(PaymentApp, placed.payment.app_id).webhook_endpoint_id


def test_an_order_whose_placement_is_rolled_back_leaves_the_session(db):
    store = make_store(db, at=offset(500, 0))
    masks = make_product(db, name="Mask pack")
    make_lot(db, store, masks, on_hand=5)
    patient = make_user(db, role=Role.PATIENT)
    body = OrderIn.model_validate(order_body([(masks.id, 2)]))
    db.commit()

    first = checkout.place(db, patient, body)
    order_id, lines = first.order.id, list(first.order.lines)
    db.rollback()

    # Gone with its rows, as an order the unit of work had inserted would be: the session holds
    # none of its objects, and a read of it finds nothing.
    assert first.order not in db and first.payment not in db
    assert lines and all(line not in db for line in lines)
    assert db.get(Order, order_id) is None
    second = checkout.place(db, patient, body)
    db.commit()
    assert db.get(Order, second.order.id) is second.order


def test_an_order_written_with_columns_left_unset_reads_none_of_them_back(db):
    store = make_store(db, at=offset(500, 0))
    masks = make_product(db, name="Mask pack")
    lot = make_lot(db, store, masks, on_hand=5)
    patient = make_user(db, role=Role.PATIENT)
    # The factory sets neither a line's requested product nor its substitution reason.
    order = make_order(db, patient, store, [(lot, 1)])
    with watched() as seen:
        line = order.lines[0]
        read = (line.requested_product_id, line.substitution_reason, line.substitution)
        read += (order.cancel_reason, order.pickup_point_id, order.split_position)
    assert seen.run == []
    assert read == (None, None, "not_allowed", None, None, None)

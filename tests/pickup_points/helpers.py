"""Pickup points for tests: a point near its store, an order placed, paid, packed and (for the
world of the access matrix) one already waiting at the point."""

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatch.run_models import ParcelStatus, PickupParcel, PickupRun, RunStatus
from o2o import clock
from o2o.orders import lifecycle
from o2o.orders.models import Fulfillment, LotAllocation, Order, OrderLine, OrderStatus
from o2o.security import new_code
from o2o.users.models import User
from stores import allocation, pickup_points
from stores.models import Lot, Store
from stores.pickup_points import PickupPoint
from tests import factories
from tests.factories import auth, pay_through

API = "/api/v1"
# 1.5 km north of the store: about 8 minutes' ride at 18 km/h with the 1.35 detour factor.
POINT_AT = factories.offset(1500, 0)


def make_point(
    session: Session,
    store: Store,
    *,
    leader: User | None = None,
    at: tuple[float, float] = POINT_AT,
    rate_bp: int = 1000,
    run_times: list[str] | None = None,
) -> PickupPoint:
    """A pickup point `at` (lat, lon), led by `leader`, flushed."""
    return pickup_points.create_point(
        session,
        store,
        name="Lobby of Block 7",
        address="7 Community Lane",
        lat=at[0],
        lon=at[1],
        opening_hours=None,
        leader_user_id=leader.id if leader else None,
        commission_rate_bp=rate_bp,
        run_times=run_times,
    )


def order_body(point: PickupPoint, items: list[tuple[int, int]]) -> dict:
    return {
        "items": [{"product_id": p, "quantity": q} for p, q in items],
        "location": {"lat": POINT_AT[0], "lon": POINT_AT[1]},
        "fulfillment": "pickup_point",
        "pickup_point_id": point.id,
    }


def place_paid_ready(
    client, session, patient, staff, point, items, *, substitution: str | None = None
) -> uuid.UUID:
    """Place a pickup-point order through the API (each line with `substitution` when given),
    pay it, and have the store pack it."""
    body = order_body(point, items)
    if substitution is not None:
        for line in body["items"]:
            line["substitution"] = substitution
    r = client.post(f"{API}/orders", json=body, headers=auth(patient))
    assert r.status_code == 201, r.text
    order_id = uuid.UUID(r.json()["id"])
    assert pay_through(client, session, order_id).status_code == 200
    for action in ("prepare", "ready"):
        r = client.post(f"{API}/orders/{order_id}/{action}", headers=auth(staff))
        assert r.status_code == 200, r.text
    return order_id


def waiting_at_point(
    session: Session,
    point: PickupPoint,
    patient: User,
    lot: Lot,
    *,
    quantity: int = 1,
    now: datetime | None = None,
) -> Order:
    """An order already carried to the point and held there for its patient (rows, flushed)."""
    now = now or clock.now()
    reserved = allocation.reserve_lines(
        session,
        point.store_id,
        [allocation.LineRequest(lot.product_id, quantity)],
        min_expiry=now.date(),
    )
    order = Order(
        id=uuid.uuid4(),
        patient_id=patient.id,
        store_id=point.store_id,
        status=OrderStatus.READY,
        fulfillment=Fulfillment.PICKUP_POINT,
        requested_fulfillment="pickup_point",
        routing_reason="Test routing.",
        patient_location=point.location,
        delivery_location=point.location,
        delivery_address_text=point.address,
        pickup_point_id=point.id,
        currency="CNY",
        subtotal_minor=lot.price_minor * quantity,
        delivery_fee_minor=0,
        compensation_minor=0,
        pickup_code=new_code(),
        delivery_code=new_code(),
        pickup_code_failures=0,
        created_at=now - timedelta(hours=3),
        released_at=now - timedelta(hours=3),
        ready_at=now,
        sla_deadline=now,
    )
    order.lines.append(
        OrderLine(
            product_id=lot.product_id,
            quantity=quantity,
            price_minor=lot.price_minor,
            rx_only=False,
            allocations=[
                LotAllocation(lot_id=a.lot_id, quantity=a.quantity)
                for a in reserved[lot.product_id]
            ],
        )
    )
    lifecycle.create(session, order, actor_id=patient.id, at=order.created_at)
    departs_at = now - timedelta(minutes=point.run_travel_minutes)
    run = session.scalar(
        select(PickupRun).where(PickupRun.point_id == point.id, PickupRun.departs_at == departs_at)
    )
    if run is None:
        run = PickupRun(
            point_id=point.id,
            store_id=point.store_id,
            departs_at=departs_at,
            arrives_at=now,
            status=RunStatus.ARRIVED,
            handoff_code=new_code(),
            arrived_at=now,
        )
        session.add(run)
        session.flush()
    session.add(
        PickupParcel(
            order_id=order.id,
            point_id=point.id,
            run_id=run.id,
            status=ParcelStatus.AT_POINT,
            arrived_at=now,
            hold_expires_at=now + timedelta(hours=48),
        )
    )
    session.flush()
    return order


def carry_run(client, courier: User, leader: User, point: PickupPoint, *, here, departure) -> None:
    """The courier (at `here`, lat/lon) claims the point's run shortly before `departure`, picks
    it up then, and hands it over at the point with the leader's hand-off code."""
    with clock.use(lambda: departure - timedelta(minutes=5)):
        r = client.post(
            f"{API}/dispatch/claim", json={"lat": here[0], "lon": here[1]}, headers=auth(courier)
        )
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
    with clock.use(lambda: departure):
        r = client.post(f"{API}/dispatch/jobs/{job_id}/pickup", headers=auth(courier))
        assert r.status_code == 200, r.text
        r = client.get(f"{API}/pickup-points/{point.id}/runs", headers=auth(leader))
        (run,) = r.json()["items"]
        r = client.post(
            f"{API}/dispatch/jobs/{job_id}/deliver",
            json={"delivery_code": run["handoff_code"]},
            headers=auth(courier),
        )
        assert r.status_code == 200, r.text

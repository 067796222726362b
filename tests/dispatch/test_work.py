"""Working a job: pickup, delivery with the patient's code, failure, release, and who may act."""

from sqlalchemy import select

from dispatch.models import Job, JobStatus
from o2o.orders.models import OrderEvent, OrderStatus
from o2o.outbox import OutboxEvent
from o2o.users.models import Role
from tests import factories
from tests.dispatch import helpers
from tests.factories import auth, make_user

API = "/api/v1"
HERE = {"lat": factories.offset(300, 0)[0], "lon": factories.offset(300, 0)[1]}


def _claimed(db, client, store, headers, **order_kw):
    order = helpers.make_delivery_order(db, store, **order_kw)
    r = client.post(f"{API}/dispatch/claim", json=HERE, headers=headers)
    assert r.status_code == 200, r.text
    return order, r.json()["id"]


def _picked_up(db, client, store, headers, **order_kw):
    order, job_id = _claimed(db, client, store, headers, **order_kw)
    r = client.post(f"{API}/dispatch/jobs/{job_id}/pickup", headers=headers)
    assert r.status_code == 200, r.text
    return order, job_id


def test_pickup_then_delivery_completes_the_order_and_commits_the_stock(
    db, client, store, courier_headers
):
    order, job_id = _claimed(db, client, store, courier_headers, quantity=2)
    lot = helpers.lot_of(db, order)
    assert (lot.on_hand, lot.reserved) == (7, 2)

    r = client.post(f"{API}/dispatch/jobs/{job_id}/pickup", headers=courier_headers)
    assert r.status_code == 200 and r.json()["status"] == "picked_up"
    db.refresh(order)
    assert order.status is OrderStatus.OUT_FOR_DELIVERY

    r = client.post(
        f"{API}/dispatch/jobs/{job_id}/deliver",
        json={"delivery_code": helpers.DELIVERY_CODE},
        headers=courier_headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "delivered"
    db.refresh(order)
    assert order.status is OrderStatus.COMPLETED and order.completed_at is not None
    lot = helpers.lot_of(db, order)
    assert (lot.on_hand, lot.reserved) == (5, 0)
    statuses = db.scalars(
        select(OrderEvent.to_status).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id)
    ).all()
    assert statuses[-2:] == [OrderStatus.OUT_FOR_DELIVERY, OrderStatus.COMPLETED]
    # Nothing left to do on it.
    again = client.post(
        f"{API}/dispatch/jobs/{job_id}/deliver",
        json={"delivery_code": helpers.DELIVERY_CODE},
        headers=courier_headers,
    )
    assert again.status_code == 404


def test_a_delivery_needs_a_pickup_first(db, client, store, courier_headers):
    _, job_id = _claimed(db, client, store, courier_headers)
    r = client.post(
        f"{API}/dispatch/jobs/{job_id}/deliver",
        json={"delivery_code": helpers.DELIVERY_CODE},
        headers=courier_headers,
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_picked_up"


def test_wrong_codes_are_counted_and_lock_the_job_after_five(db, client, store, courier_headers):
    order, job_id = _picked_up(db, client, store, courier_headers)
    lefts = []
    for _ in range(5):
        r = client.post(
            f"{API}/dispatch/jobs/{job_id}/deliver",
            json={"delivery_code": "000000"},
            headers=courier_headers,
        )
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "wrong_delivery_code"
        lefts.append(r.json()["error"]["details"]["attempts_left"])
    assert lefts == [4, 3, 2, 1, 0]
    # Locked: even the right code is refused now; the store handles it.
    r = client.post(
        f"{API}/dispatch/jobs/{job_id}/deliver",
        json={"delivery_code": helpers.DELIVERY_CODE},
        headers=courier_headers,
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_locked"
    db.refresh(order)
    assert order.status is OrderStatus.OUT_FOR_DELIVERY
    told = db.scalars(
        select(OutboxEvent).where(
            OutboxEvent.event_type == "dispatch.job_locked",
            OutboxEvent.aggregate_id == str(order.id),
        )
    ).all()
    assert len(told) == 1 and told[0].payload["store_id"] == store.id

    # The store's pharmacist lets the courier try again.
    outsider = make_user(db, role=Role.PHARMACIST)
    r = client.post(f"{API}/dispatch/jobs/{job_id}/unlock", headers=auth(outsider))
    assert r.status_code == 404
    staff = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    r = client.post(f"{API}/dispatch/jobs/{job_id}/unlock", headers=auth(staff))
    assert r.status_code == 200 and r.json()["status"] == "picked_up"
    assert r.json()["dropoff_exact"] is True  # the store's staff see where the parcel goes
    r = client.post(
        f"{API}/dispatch/jobs/{job_id}/deliver",
        json={"delivery_code": helpers.DELIVERY_CODE},
        headers=courier_headers,
    )
    assert r.status_code == 200


def test_a_failed_delivery_returns_the_order_to_the_store_and_opens_a_new_job(
    db, client, store, courier_headers
):
    order, job_id = _picked_up(db, client, store, courier_headers)
    r = client.post(
        f"{API}/dispatch/jobs/{job_id}/fail",
        json={"reason": "nobody home, phone off"},
        headers=courier_headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "failed"
    db.refresh(order)
    assert order.status is OrderStatus.READY
    jobs = db.scalars(select(Job).where(Job.order_id == order.id).order_by(Job.attempt)).all()
    assert [(j.status, j.attempt) for j in jobs] == [(JobStatus.FAILED, 1), (JobStatus.OPEN, 2)]
    assert jobs[0].fail_reason == "nobody home, phone off"
    assert jobs[1].deadline == order.sla_deadline
    # The courier's slot is free again and the new job is in the pool.
    r = client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers)
    assert r.status_code == 200 and r.json()["id"] == str(jobs[1].id)


def test_a_failure_needs_a_reason_and_a_pickup(db, client, store, courier_headers):
    _, job_id = _claimed(db, client, store, courier_headers)
    r = client.post(
        f"{API}/dispatch/jobs/{job_id}/fail", json={"reason": "  "}, headers=courier_headers
    )
    assert r.status_code == 422
    r = client.post(
        f"{API}/dispatch/jobs/{job_id}/fail", json={"reason": "bike broke"}, headers=courier_headers
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_picked_up"


def test_release_puts_a_claimed_job_back_in_the_pool(db, client, store, courier_headers):
    order, job_id = _claimed(db, client, store, courier_headers)
    r = client.post(f"{API}/dispatch/jobs/{job_id}/release", headers=courier_headers)
    assert r.status_code == 200 and r.json()["status"] == "open"
    # Open again, the job shows its approximate drop-off, even to the courier who gave it back.
    assert r.json()["dropoff_exact"] is False and "address_text" not in r.json()
    job = db.get(Job, r.json()["id"])
    db.refresh(job)
    assert job.courier_id is None and job.claimed_at is None
    # After pickup a release is refused: the parcel is with the courier.
    r = client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers)
    client.post(f"{API}/dispatch/jobs/{job_id}/pickup", headers=courier_headers)
    r = client.post(f"{API}/dispatch/jobs/{job_id}/release", headers=courier_headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_picked_up"


def test_another_courier_acting_on_my_job_gets_404(db, client, store, courier_headers):
    order, job_id = _claimed(db, client, store, courier_headers)
    rival = auth(helpers.make_courier(db, home_store=store, at=factories.offset(300, 0)))
    calls = [
        client.get(f"{API}/dispatch/jobs/{job_id}", headers=rival),
        client.post(f"{API}/dispatch/jobs/{job_id}/pickup", headers=rival),
        client.post(
            f"{API}/dispatch/jobs/{job_id}/deliver",
            json={"delivery_code": helpers.DELIVERY_CODE},
            headers=rival,
        ),
        client.post(
            f"{API}/dispatch/jobs/{job_id}/fail", json={"reason": "not mine"}, headers=rival
        ),
        client.post(f"{API}/dispatch/jobs/{job_id}/release", headers=rival),
    ]
    assert [c.status_code for c in calls] == [404] * 5
    assert all(c.json()["error"]["code"] == "job_not_found" for c in calls)
    assert client.get(f"{API}/dispatch/jobs/{job_id}", headers=courier_headers).status_code == 200
    db.refresh(order)
    assert order.status is OrderStatus.READY
    unknown = client.post(
        f"{API}/dispatch/jobs/00000000-0000-0000-0000-000000000000/pickup", headers=rival
    )
    assert unknown.status_code == 404
    assert client.post(f"{API}/dispatch/jobs/not-a-uuid/pickup", headers=rival).status_code == 422

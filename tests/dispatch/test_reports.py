"""SLA reports: on-time rate, p50/p95 minutes from release to hand-over, breaches, and who may
read them."""

from datetime import UTC, datetime, timedelta

import pytest

from dispatch import actions, monitor, pool
from o2o.users.models import Role
from tests import factories
from tests.dispatch import helpers
from tests.factories import auth, make_store, make_user

API = "/api/v1"
HERE = factories.offset(300, 0)


def _deliver_after(db, store, courier, minutes: float, *, released_at: datetime):
    """A delivery released at `released_at` and handed over `minutes` later."""
    order = helpers.make_delivery_order(db, store, released_at=released_at)
    job = pool.claim_job(db, courier, helpers.job_of(db, order).id, lat=HERE[0], lon=HERE[1])
    actions.pickup(db, courier, job.id, now=released_at + timedelta(minutes=minutes / 2))
    actions.deliver(
        db, courier, job.id, helpers.DELIVERY_CODE, now=released_at + timedelta(minutes=minutes)
    )
    return order


@pytest.fixture
def delivered(db, store, courier):
    """Ten deliveries of 10, 20, ..., 100 minutes, plus one of 150 (late) and one still open."""
    start = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    orders = [
        _deliver_after(db, store, courier, 10 * (i + 1), released_at=start + timedelta(hours=i))
        for i in range(10)
    ]
    late = _deliver_after(db, store, courier, 150, released_at=start + timedelta(hours=11))
    stuck = helpers.make_delivery_order(db, store, released_at=start + timedelta(hours=12))
    monitor.run(db, now=start + timedelta(hours=15))
    return start, orders, late, stuck


def test_the_report_counts_on_time_percentiles_breaches_and_compensation(
    db, client, store, delivered
):
    start, orders, late, stuck = delivered
    admin = helpers.make_user_fast(db, Role.ADMIN)
    params = {
        "store_id": store.id,
        "from": start.isoformat(),
        "to": (start + timedelta(days=1)).isoformat(),
    }
    r = client.get(f"{API}/sla/report", params=params, headers=auth(admin))
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["store_id"] == store.id
    assert report["delivered"] == 11
    assert report["on_time"] == 10
    assert report["on_time_rate"] == pytest.approx(10 / 11, abs=1e-4)
    # percentile_cont over 10, 20, ..., 100 and 150 minutes.
    assert report["p50_minutes"] == pytest.approx(60.0)
    assert report["p95_minutes"] == pytest.approx(125.0)
    breaches = {b["order_id"]: b for b in report["breaches"]}
    assert set(breaches) == {str(late.id), str(stuck.id)}
    assert breaches[str(late.id)]["reason"] == "delivered_late"
    assert breaches[str(late.id)]["delivered_at"] is not None
    assert breaches[str(stuck.id)]["reason"] == "no_courier"
    assert breaches[str(stuck.id)]["delivered_at"] is None
    assert report["breach_count"] == 2
    assert report["compensation_minor"] == 2 * store.delivery_fee_minor


def test_an_empty_period_reports_zero_without_rates(db, client, store, delivered):
    admin = helpers.make_user_fast(db, Role.ADMIN)
    params = {
        "store_id": store.id,
        "from": "2025-01-01T00:00:00+00:00",
        "to": "2025-01-02T00:00:00+00:00",
    }
    report = client.get(f"{API}/sla/report", params=params, headers=auth(admin)).json()
    assert report["delivered"] == 0 and report["on_time_rate"] is None
    assert report["p50_minutes"] is None and report["breaches"] == []


def test_the_stores_pharmacist_may_read_it_others_may_not(db, client, store, delivered):
    params = {"store_id": store.id}
    own = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    assert client.get(f"{API}/sla/report", params=params, headers=auth(own)).status_code == 200
    other_store = make_store(
        db, at=factories.offset(5000, 5000), zone_half_side_m=helpers.DELIVERY_ZONE_M
    )
    stranger = make_user(db, role=Role.PHARMACIST, store_ids=[other_store.id])
    r = client.get(f"{API}/sla/report", params=params, headers=auth(stranger))
    assert r.status_code == 404
    for role in (Role.PATIENT, Role.COURIER, Role.DOCTOR):
        headers = auth(helpers.make_user_fast(db, role))
        assert client.get(f"{API}/sla/report", params=params, headers=headers).status_code == 403
    admin = helpers.make_user_fast(db, Role.ADMIN)
    r = client.get(f"{API}/sla/report", params={"store_id": 999999}, headers=auth(admin))
    assert r.status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-11-21T00:00:00+00:00", "to": "2026-11-20T00:00:00+00:00"},
        {"from": "2024-01-01T00:00:00+00:00", "to": "2026-01-01T00:00:00+00:00"},
        {"from": "2026-11-20T00:00:00", "to": "2026-11-21T00:00:00"},
        {"from": "yesterday"},
    ],
)
def test_bad_periods_are_refused(db, client, store, params):
    admin = helpers.make_user_fast(db, Role.ADMIN)
    r = client.get(
        f"{API}/sla/report", params={"store_id": store.id, **params}, headers=auth(admin)
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] in {"invalid_period", "invalid_input"}

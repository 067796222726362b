"""The SLA report counts deliveries completed in [from, to), instants given with their UTC offset:
a store's local day is asked for from its local midnight to the next, with the store's offset.
Stores on both sides of UTC (Kiritimati, UTC+14; Pago Pago, UTC-11) show that the day a delivery
falls in is the store's, not UTC's. Checked at pinned instants whose local days are known, and
at the real time of the run."""

from datetime import UTC, datetime, timedelta

import pytest

from dispatch import actions, pool
from o2o import clock
from o2o.users.models import Role
from tests import factories
from tests.dispatch import helpers
from tests.factories import auth, make_store
from tests.local_days import CASE_IDS, CASES, ZONES, local_midnight

API = "/api/v1"
HERE = factories.offset(300, 0)


def zone_store(db, zone: str):
    return make_store(
        db, at=factories.SHANGHAI, zone_half_side_m=helpers.DELIVERY_ZONE_M, timezone=zone
    )


def deliver_at(db, store, delivered_at: datetime):
    """A delivery of `store` released 30 minutes before `delivered_at` and handed over then."""
    courier = helpers.make_courier(db, home_store=store, at=HERE)
    released_at = delivered_at - timedelta(minutes=30)
    order = helpers.make_delivery_order(db, store, released_at=released_at)
    job = pool.claim_job(db, courier, helpers.job_of(db, order).id, lat=HERE[0], lon=HERE[1])
    actions.pickup(db, courier, job.id, now=released_at + timedelta(minutes=10))
    actions.deliver(db, courier, job.id, helpers.DELIVERY_CODE, now=delivered_at)
    return order


def delivered_in(client, headers, store, start: datetime | None, end: datetime | None) -> int:
    params: dict = {"store_id": store.id}
    if start is not None:
        params["from"] = start.isoformat()
    if end is not None:
        params["to"] = end.isoformat()
    r = client.get(f"{API}/sla/report", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["delivered"]


def local_day_period(day, zone: str) -> tuple[datetime, datetime]:
    return local_midnight(day, zone), local_midnight(day + timedelta(days=1), zone)


@pytest.mark.parametrize(("case", "zone", "at", "local_day"), CASES, ids=CASE_IDS)
def test_a_delivery_counts_in_the_stores_local_day(db, client, case, zone, at, local_day):
    store = zone_store(db, zone)
    deliver_at(db, store, at)
    headers = auth(helpers.make_user_fast(db, Role.ADMIN))
    start, end = local_day_period(local_day, zone)
    assert start.isoformat().endswith("+14:00" if zone == ZONES[0] else "-11:00")
    assert delivered_in(client, headers, store, start, end) == 1
    for other_day in (local_day - timedelta(days=1), local_day + timedelta(days=1)):
        assert delivered_in(client, headers, store, *local_day_period(other_day, zone)) == 0
    # The same instant in UTC's own day: the period is instants, whatever offset names them.
    utc_day = at.date()
    utc_start = datetime(utc_day.year, utc_day.month, utc_day.day, tzinfo=UTC)
    assert delivered_in(client, headers, store, utc_start, utc_start + timedelta(days=1)) == 1


@pytest.mark.parametrize(("case", "zone", "at", "local_day"), CASES, ids=CASE_IDS)
def test_the_default_period_is_the_seven_days_up_to_now(db, client, case, zone, at, local_day):
    store = zone_store(db, zone)
    deliver_at(db, store, at - timedelta(hours=1))
    deliver_at(db, store, at - timedelta(days=8))
    with clock.use(lambda: at):
        headers = auth(helpers.make_user_fast(db, Role.ADMIN))
        assert delivered_in(client, headers, store, None, None) == 1


def test_todays_deliveries_count_in_the_stores_local_today_at_the_real_time(db, client):
    headers = auth(helpers.make_user_fast(db, Role.ADMIN))
    for zone in ZONES:
        store = zone_store(db, zone)
        now = clock.now()
        today = clock.today(zone, at=now)
        start, end = local_day_period(today, zone)
        # Half way between the store's midnight and now: today there, and already past.
        deliver_at(db, store, start + (now - start) / 2)
        assert delivered_in(client, headers, store, start, end) == 1, zone
        yesterday = local_day_period(today - timedelta(days=1), zone)
        assert delivered_in(client, headers, store, *yesterday) == 0, zone

"""A run leaves at the point's run times on the store's own clock, for stores on both sides of
UTC: the order placed goes on the store's next run, today or on the store's tomorrow."""

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from o2o import clock
from o2o.users.models import Role
from tests.factories import auth, make_lot, make_product, make_store, make_user
from tests.local_days import CASE_IDS, CASES, KIRITIMATI, PAGO_PAGO
from tests.pickup_points import helpers
from tests.pickup_points.helpers import API

# The day of the first run each store can still make (runs at 10:00, 15:00 and 19:00 local; an
# order needs prep 10 + 30 minutes), by hand: at 10:30 UTC on 10 March it is 00:30 on the 11th
# on Kiritimati (the 11th's 10:00 run) and 23:30 on the 9th on Pago Pago (the 19:00 run has gone:
# the 10th's 10:00 run); at 11:30 UTC, 01:30 on the 11th and 00:30 on the 10th.
FIRST_RUN_DAY = {
    ("both-off-utc", KIRITIMATI): date(2026, 3, 11),
    ("both-off-utc", PAGO_PAGO): date(2026, 3, 10),
    ("kiritimati-ahead", KIRITIMATI): date(2026, 3, 11),
    ("kiritimati-ahead", PAGO_PAGO): date(2026, 3, 10),
}


@pytest.mark.parametrize(("case", "zone", "at", "local_day"), CASES, ids=CASE_IDS)
def test_an_order_goes_on_the_stores_next_run_by_its_local_clock(
    client, db, case, zone, at, local_day
):
    store = make_store(db, timezone=zone)
    leader = make_user(db, role=Role.LEADER)
    point = helpers.make_point(db, store, leader=leader)
    lot = make_lot(db, store, make_product(db), on_hand=3)
    patient = make_user(db, role=Role.PATIENT)
    with clock.use(lambda: at):
        r = client.post(
            f"{API}/orders",
            json=helpers.order_body(point, [(lot.product_id, 1)]),
            headers=auth(patient),
        )
    assert r.status_code == 201, r.text
    departs = datetime.combine(FIRST_RUN_DAY[(case, zone)], time(10), tzinfo=ZoneInfo(zone))
    arrives = departs + timedelta(minutes=point.run_travel_minutes)
    assert datetime.fromisoformat(r.json()["sla_deadline"]) == arrives
    # The leader's list of runs starts at the store's local midnight: the booked run is in it.
    with clock.use(lambda: at):
        leader_runs = client.get(
            f"{API}/pickup-points/{point.id}/runs",
            headers=auth(leader),
        )
    assert [datetime.fromisoformat(x["departs_at"]) for x in leader_runs.json()["items"]] == [
        departs
    ]

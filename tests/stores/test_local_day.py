"""Shelf life is counted from the store's own day: a store on Kiritimati (UTC+14) or Pago Pago
(UTC-11) may be a day ahead of or behind UTC. A lot expiring within min_shelf_life_days of the
store's local today is not sold; one expiring the day after is. Checked at pinned instants whose
local days are known, and at the real time of the run."""

from datetime import timedelta

import pytest

from o2o import clock
from o2o.users.models import Role
from stores import service
from tests.factories import SHANGHAI, auth, make_lot, make_product, make_store, make_user, offset
from tests.local_days import CASE_IDS, CASES, ZONES

API = "/api/v1"
HERE = {"lat": SHANGHAI[0], "lon": SHANGHAI[1]}
SHELF_LIFE_DAYS = 30


def found_stores(client, product) -> list[int]:
    """The ids of the stores the search offers one unit of `product` from."""
    body = {"location": HERE, "items": [{"product_id": product.id, "quantity": 1}]}
    r = client.post(f"{API}/search/stores", json=body)
    assert r.status_code == 200, r.text
    return [result["store"]["id"] for result in r.json()["results"] if not result["missing"]]


@pytest.mark.parametrize(("case", "zone", "at", "local_day"), CASES, ids=CASE_IDS)
def test_shelf_life_counts_from_the_stores_local_day(client, db, case, zone, at, local_day):
    store = make_store(db, timezone=zone, min_shelf_life_days=SHELF_LIFE_DAYS)
    inside, sellable = make_product(db), make_product(db)
    last_day_inside = local_day + timedelta(days=SHELF_LIFE_DAYS - 1)
    make_lot(db, store, inside, lot_number="INSIDE", expiry_date=last_day_inside)
    make_lot(db, store, sellable, lot_number="SELLABLE", expiry_date=last_day_inside + timedelta(1))
    staff = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    with clock.use(lambda: at):
        assert clock.today(zone) == local_day
        assert service.min_sellable_expiry(store, clock.now()) == last_day_inside + timedelta(1)
        assert found_stores(client, inside) == []
        assert found_stores(client, sellable) == [store.id]
        r = client.get(f"{API}/stores/{store.id}/inventory", headers=auth(staff))
    assert r.status_code == 200, r.text
    sellable_by_lot = {item["lot_number"]: item["sellable"] for item in r.json()["items"]}
    assert sellable_by_lot == {"INSIDE": False, "SELLABLE": True}


def test_shelf_life_counts_from_the_stores_local_day_at_the_real_time(client, db):
    stores = [
        make_store(db, at=offset(100 * (n + 1)), timezone=zone, min_shelf_life_days=SHELF_LIFE_DAYS)
        for n, zone in enumerate(ZONES)
    ]
    for _ in range(2):  # once more if a store's day ended while the search ran
        now = clock.now()
        days = [clock.today(store.timezone, at=now) for store in stores]
        # Whatever the hour, one of the two stores is on another date than UTC.
        assert any(day != clock.today("UTC", at=now) for day in days)
        inside, sellable = make_product(db), make_product(db)
        for store, day in zip(stores, days, strict=True):
            last_day_inside = day + timedelta(days=SHELF_LIFE_DAYS - 1)
            make_lot(db, store, inside, expiry_date=last_day_inside)
            make_lot(db, store, sellable, expiry_date=last_day_inside + timedelta(1))
        offered_inside = found_stores(client, inside)
        offered_sellable = found_stores(client, sellable)
        if days == [clock.today(store.timezone) for store in stores]:
            break
    assert offered_inside == []
    assert sorted(offered_sellable) == sorted(store.id for store in stores)

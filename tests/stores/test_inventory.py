from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, update

from o2o import clock
from o2o.users.models import Role
from stores import inventory, service
from stores.models import Lot, ProductStockStats
from stores.schemas import InventoryIn
from tests.factories import auth, make_product, make_store, make_user
from tests.stores.helpers import API, lot_line, state


@pytest.fixture
def store(db):
    return make_store(db)


@pytest.fixture
def staff(db, store):
    return make_user(db, role=Role.PHARMACIST, store_ids=[store.id])


@pytest.fixture
def products(db):
    return [make_product(db) for _ in range(3)]


def put(client, store, user, sync_id: str, *lots: dict):
    return client.put(
        f"{API}/stores/{store.id}/inventory",
        json={"sync_id": sync_id, "lots": list(lots)},
        headers=auth(user),
    )


def on_hand(db, store) -> dict[tuple[int, str], int]:
    rows = db.execute(
        select(Lot.product_id, Lot.lot_number, Lot.on_hand).where(Lot.store_id == store.id)
    )
    return {(p, n): q for p, n, q in rows}


def store_count(db, product) -> int | None:
    return db.scalar(
        select(ProductStockStats.store_count)
        .where(ProductStockStats.product_id == product.id)
        .execution_options(populate_existing=True)
    )


def test_sync_upserts_lots_and_on_hand_sets_the_quantity(client, db, store, staff, products):
    a, b, _ = products
    r = put(
        client, store, staff, "pos-1", lot_line(a.id, on_hand=12), lot_line(b.id, lot_number="B7")
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"applied": True, "lot_count": 2}
    assert on_hand(db, store) == {(a.id, "L1"): 12, (b.id, "B7"): 12}

    r = put(
        client, store, staff, "pos-2", lot_line(a.id, on_hand=5), lot_line(a.id, lot_number="L2")
    )
    assert r.json()["applied"] is True
    assert on_hand(db, store) == {(a.id, "L1"): 5, (a.id, "L2"): 12, (b.id, "B7"): 12}


def test_a_sync_id_seen_before_changes_nothing(client, db, store, staff, products):
    a = products[0]
    assert put(client, store, staff, "pos-1", lot_line(a.id, on_hand=12)).json()["applied"]
    before = state(db)
    again = put(client, store, staff, "pos-1", lot_line(a.id, on_hand=99))
    assert again.status_code == 200
    assert again.json() == {"applied": False, "lot_count": 0}
    assert on_hand(db, store) == {(a.id, "L1"): 12}
    assert state(db) == before


def test_the_same_sync_id_at_another_store_is_its_own_sync(client, db, store, products):
    other = make_store(db)
    admin = make_user(db, role=Role.ADMIN)
    a = products[0]
    assert put(client, store, admin, "pos-1", lot_line(a.id)).json()["applied"] is True
    assert put(client, other, admin, "pos-1", lot_line(a.id)).json()["applied"] is True


def test_unknown_products_are_listed_and_nothing_is_applied(client, db, store, staff, products):
    a = products[0]
    before = state(db)
    r = put(
        client,
        store,
        staff,
        "pos-1",
        lot_line(a.id),
        lot_line(999_998),
        lot_line(999_999, lot_number="X"),
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "unknown_products"
    assert error["details"] == {"product_ids": [999_998, 999_999]}
    assert state(db) == before
    # The refused sync left no trace: the same id applies once corrected.
    assert put(client, store, staff, "pos-1", lot_line(a.id)).json()["applied"] is True


@pytest.mark.parametrize(
    "bad",
    [
        {"on_hand": -1},
        {"on_hand": 1_000_001},
        {"on_hand": 2.5},
        {"price_minor": -1},
        {"price_minor": 10**9 + 1},
        {"currency": "cny"},
        {"lot_number": ""},
        {"lot_number": "x" * 65},
        {"expiry_date": "2027-02-30"},
        {"expiry_date": "1999-12-31"},
        {"product_id": 0},
        {"product_id": 2**31},
        {"colour": "red"},
    ],
)
def test_bad_lot_values_are_refused_and_nothing_changes(client, db, store, staff, products, bad):
    before = state(db)
    r = put(
        client, store, staff, "pos-1", lot_line(products[0].id), {**lot_line(products[1].id), **bad}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"
    assert state(db) == before


@pytest.mark.parametrize(
    "body",
    [
        {"sync_id": "pos-1", "lots": []},
        {"sync_id": "", "lots": [{}]},
        {"sync_id": "x" * 129, "lots": []},
        {"lots": []},
    ],
)
def test_bad_sync_envelopes_are_refused(client, db, store, staff, body):
    before = state(db)
    r = client.put(f"{API}/stores/{store.id}/inventory", json=body, headers=auth(staff))
    assert r.status_code == 422
    assert state(db) == before


def test_more_than_5000_lots_is_refused(client, db, store, staff, products):
    lots = [lot_line(products[0].id, lot_number=f"L{n}") for n in range(5001)]
    before = state(db)
    r = put(client, store, staff, "pos-big", *lots)
    assert r.status_code == 422
    assert state(db) == before


def test_a_lot_twice_in_one_sync_is_refused(client, db, store, staff, products):
    a = products[0]
    before = state(db)
    r = put(client, store, staff, "pos-1", lot_line(a.id, on_hand=1), lot_line(a.id, on_hand=2))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "repeated_lot"
    assert "repeated" in r.json()["error"]["details"][0]["message"]
    assert state(db) == before


def test_zero_on_hand_empties_a_lot(client, db, store, staff, products):
    a = products[0]
    put(client, store, staff, "pos-1", lot_line(a.id, on_hand=12))
    assert put(client, store, staff, "pos-2", lot_line(a.id, on_hand=0)).json()["applied"]
    assert on_hand(db, store) == {(a.id, "L1"): 0}


def test_on_hand_below_reserved_is_refused_naming_the_lots(client, db, store, staff, products):
    a, b, _ = products
    put(client, store, staff, "pos-1", lot_line(a.id, on_hand=10), lot_line(b.id, on_hand=10))
    db.execute(update(Lot).where(Lot.product_id == a.id).values(reserved=6))
    before = state(db)
    r = put(client, store, staff, "pos-2", lot_line(a.id, on_hand=5), lot_line(b.id, on_hand=1))
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "below_reserved"
    assert error["details"]["lots"] == [
        {"product_id": a.id, "lot_number": "L1", "on_hand": 5, "reserved": 6}
    ]
    assert state(db) == before  # b's lot, which was fine, is unchanged too
    # Exactly what orders hold is allowed.
    assert put(client, store, staff, "pos-3", lot_line(a.id, on_hand=6)).json()["applied"]


def test_lots_in_another_currency_are_refused(client, db, store, staff, products):
    before = state(db)
    r = put(client, store, staff, "pos-1", lot_line(products[0].id, currency="USD"))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "currency_mismatch"
    assert state(db) == before


@pytest.mark.parametrize("method", ["put", "get"])
def test_staff_of_another_store_is_refused(client, db, store, products, method):
    elsewhere = make_user(db, role=Role.PHARMACIST, store_ids=[make_store(db).id])
    before = state(db)
    if method == "put":
        r = put(client, store, elsewhere, "pos-1", lot_line(products[0].id))
    else:
        r = client.get(f"{API}/stores/{store.id}/inventory", headers=auth(elsewhere))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "not_store_staff"
    assert state(db) == before


@pytest.mark.parametrize("role", [Role.PATIENT, Role.DOCTOR, Role.COURIER])
def test_other_roles_are_refused(client, db, store, products, role):
    caller = make_user(db, role=role)
    before = state(db)
    assert put(client, store, caller, "pos-1", lot_line(products[0].id)).status_code == 403
    r = client.get(f"{API}/stores/{store.id}/inventory", headers=auth(caller))
    assert r.status_code == 403
    assert state(db) == before


def test_anonymous_callers_must_sign_in(client, db, store, products):
    before = state(db)
    body = {"sync_id": "pos-1", "lots": [lot_line(products[0].id)]}
    assert client.put(f"{API}/stores/{store.id}/inventory", json=body).status_code == 401
    assert client.get(f"{API}/stores/{store.id}/inventory").status_code == 401
    # Also for a store that does not exist: no hint before signing in.
    assert client.put(f"{API}/stores/999999/inventory", json=body).status_code == 401
    assert state(db) == before


def test_admin_may_sync_any_store_and_unknown_store_is_404(client, db, store, products):
    admin = make_user(db, role=Role.ADMIN)
    assert put(client, store, admin, "pos-1", lot_line(products[0].id)).json()["applied"]
    r = client.put(
        f"{API}/stores/999999/inventory",
        json={"sync_id": "pos-1", "lots": [lot_line(products[0].id)]},
        headers=auth(admin),
    )
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "store_not_found"


def test_staff_see_on_hand_reserved_available_and_sellable(client, db, store, staff, products):
    a, b, _ = products
    soon = (clock.today(store.timezone) + timedelta(days=10)).isoformat()
    put(
        client,
        store,
        staff,
        "pos-1",
        lot_line(a.id, lot_number="FRESH", on_hand=10),
        lot_line(a.id, lot_number="OLD", on_hand=4, expiry_date=soon),
        lot_line(b.id, on_hand=3),
    )
    db.execute(update(Lot).where(Lot.lot_number == "FRESH").values(reserved=3))
    r = client.get(f"{API}/stores/{store.id}/inventory", headers=auth(staff))
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(i["product_id"], i["lot_number"]) for i in items] == [
        (a.id, "OLD"),  # soonest expiry first within a product
        (a.id, "FRESH"),
        (b.id, "L1"),
    ]
    old, fresh = items[0], items[1]
    assert (fresh["on_hand"], fresh["reserved"], fresh["available"]) == (10, 3, 7)
    assert fresh["sellable"] is True
    assert old["sellable"] is False  # within the 30-day minimum shelf life
    assert fresh["product_name"] == a.name and fresh["gtin"] == a.gtin
    assert r.json()["next_cursor"] is None


def test_inventory_filters_by_product_and_pages(client, db, store, staff, products):
    a, b, _ = products
    put(
        client,
        store,
        staff,
        "pos-1",
        *(lot_line(a.id, lot_number=f"A{n}") for n in range(5)),
        lot_line(b.id),
    )
    url = f"{API}/stores/{store.id}/inventory"
    only_b = client.get(url, params={"product_id": b.id}, headers=auth(staff)).json()
    assert [i["product_id"] for i in only_b["items"]] == [b.id]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(url, params=params, headers=auth(staff)).json()
        seen += [i["id"] for i in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) == 6
    # Outside the cursor alphabet the schema states; well formed, but given out by no list.
    bad = client.get(url, params={"cursor": "garbage!"}, headers=auth(staff))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    bad = client.get(url, params={"cursor": "Z2FyYmFnZQ"}, headers=auth(staff))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cursor"


def test_stock_stats_count_stores_with_available_unexpired_stock(db, products):
    a, b, c = products
    stores = [make_store(db) for _ in range(3)]
    # Past on every calendar: the count compares with the database's current_date, which can be
    # a day behind the store's own.
    expired = clock.today(stores[1].timezone) - timedelta(days=2)
    lots = {
        0: [lot_line(a.id), lot_line(b.id, on_hand=0)],
        1: [lot_line(a.id), lot_line(b.id, expiry_date=expired.isoformat())],
        2: [lot_line(c.id, on_hand=4)],
    }
    for n, store in enumerate(stores):
        inventory.apply_inventory_sync(db, store, InventoryIn(sync_id="s", lots=lots[n]))
    assert (store_count(db, a), store_count(db, b), store_count(db, c)) == (2, 0, 1)

    db.execute(update(Lot).where(Lot.product_id == c.id).values(reserved=4))
    inventory.refresh_stock_stats(db)
    assert store_count(db, c) == 0  # all of it is held for orders


def test_sync_expires_lots_the_session_holds(db, store, products):
    a = products[0]
    inventory.apply_inventory_sync(db, store, InventoryIn(sync_id="1", lots=[lot_line(a.id)]))
    lot = db.scalars(select(Lot).where(Lot.store_id == store.id)).one()
    assert lot.on_hand == 12
    inventory.apply_inventory_sync(
        db, store, InventoryIn(sync_id="2", lots=[lot_line(a.id, on_hand=3)])
    )
    assert lot.on_hand == 3


def test_sellable_follows_the_store_calendar_day(db, store):
    # 2026-11-22 17:00 UTC is already 2026-11-23 in Shanghai.
    now = datetime(2026, 11, 22, 17, 0, tzinfo=UTC)
    assert service.min_sellable_expiry(store, now) == date(2026, 11, 23) + timedelta(days=30)

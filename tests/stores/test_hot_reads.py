"""The nearby list and store search are written straight from the services' data to JSON (no
model on the way out): their answers are exactly what the documented models would write, field
for field, for open and closed stores, partial stores, equivalents and split plans."""

from datetime import UTC, datetime

from sqlalchemy import update

from o2o import clock
from stores.models import Store
from stores.schemas import Page
from stores.search_schemas import NearbyItemOut, SearchOut
from tests.factories import make_product
from tests.stores.helpers import HERE, NEARBY, SEARCH, search_body, stock, store_at

# A Monday 03:00 in Shanghai: the store open 08:00 to 20:00 is closed and opens at 00:00 UTC.
MONDAY_NIGHT = datetime(2026, 11, 22, 19, 0, tzinfo=UTC)
DAY_HOURS = [{"weekday": d, "opens": "08:00", "closes": "20:00"} for d in range(7)]


def as_documented(model, answer: dict) -> dict:
    """The answer as the route's model writes it: equal only if nothing is missing, extra or
    written differently."""
    return model.model_validate(answer).model_dump(mode="json", by_alias=True)


def test_the_nearby_list_is_written_as_its_model_writes_it(client, db):
    store_at(db, 300, services=("pickup", "delivery"))
    closed = store_at(db, 600, opening_hours=DAY_HOURS)
    db.commit()
    with clock.use(lambda: MONDAY_NIGHT):
        response = client.get(NEARBY, params=HERE)
    assert response.status_code == 200
    answer = response.json()
    assert answer == as_documented(Page[NearbyItemOut], answer)
    by_id = {item["store"]["id"]: item["store"] for item in answer["items"]}
    assert by_id[closed.id]["is_open_now"] is False
    assert by_id[closed.id]["opens_at"] == "2026-11-23T00:00:00Z"
    assert by_id[closed.id]["opening_hours"] == DAY_HOURS


def test_a_store_changed_in_the_database_is_listed_as_it_now_is(client, db):
    # A change made past the API (a bulk update, another worker's edit) shows on the next
    # request: nothing the list shows of a store is kept from an earlier one.
    store = store_at(db, 300, name="Renmin Road Pharmacy")
    db.commit()
    with clock.use(lambda: MONDAY_NIGHT):
        before = client.get(NEARBY, params=HERE).json()["items"][0]["store"]
        db.execute(
            update(Store)
            .where(Store.id == store.id)
            .values(
                name="Renmin Road Pharmacy (24 h)",
                opening_hours=DAY_HOURS,
                offers_delivery=True,
                delivery_fee_minor=700,
            )
        )
        db.commit()
        after = client.get(NEARBY, params=HERE).json()["items"][0]["store"]
    assert (before["name"], before["opening_hours"], before["services"]) == (
        "Renmin Road Pharmacy",
        None,
        ["pickup"],
    )
    assert before["is_open_now"] is True
    assert after["name"] == "Renmin Road Pharmacy (24 h)"
    assert after["opening_hours"] == DAY_HOURS
    assert after["services"] == ["pickup", "delivery"]
    assert after["delivery_fee_minor"] == 700
    assert (after["is_open_now"], after["opens_at"]) == (False, "2026-11-23T00:00:00Z")


def test_a_search_with_partial_stores_equivalents_and_a_split_plan_is_written_as_its_model(
    client, db
):
    asked = make_product(db)
    twin = make_product(db, generic_name=asked.generic_name)  # an equivalent of `asked`
    other = make_product(db)
    near = store_at(db, 200, opening_hours=DAY_HOURS)
    stock(db, near, asked, 1)
    far = store_at(db, 900)
    stock(db, far, twin, 5)
    stock(db, far, other, 1)  # complete thanks to the equivalent
    split_a, split_b = store_at(db, 1500), store_at(db, 1800)
    rare, rarer = make_product(db), make_product(db)
    stock(db, split_a, rare, 3)
    stock(db, split_b, rarer, 3)
    db.commit()
    with clock.use(lambda: MONDAY_NIGHT):
        plain = client.post(SEARCH, json=search_body([(asked, 2), (other, 1)], limit=5))
        split = client.post(
            SEARCH, json=search_body([(rare, 1), (rarer, 1)], limit=5, allow_split=True)
        )
    for response in (plain, split):
        assert response.status_code == 200
        answer = response.json()
        assert answer == as_documented(SearchOut, answer)
    results = {r["store"]["id"]: r for r in plain.json()["results"]}
    assert results[near.id]["missing"]  # a partial store, closed at night
    assert results[near.id]["opens_at"] == "2026-11-23T00:00:00Z"
    assert results[far.id]["substitutes"] == [
        {"for_product_id": asked.id, "product_id": twin.id, "quantity": 2}
    ]
    assert split.json()["split_plan"]["store_count"] == 2

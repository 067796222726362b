from datetime import UTC, datetime

import pytest

from o2o.users.models import Role
from stores import service
from tests.factories import SHANGHAI, auth, make_store, make_user
from tests.stores.helpers import API, square_zone, state, store_body

BOWTIE = {
    "type": "Polygon",
    "coordinates": [
        [[121.46, 31.22], [121.48, 31.24], [121.48, 31.22], [121.46, 31.24], [121.46, 31.22]]
    ],
}
UNCLOSED = {
    "type": "Polygon",
    "coordinates": [[[121.46, 31.22], [121.48, 31.22], [121.48, 31.24], [121.46, 31.24]]],
}
POINT = {"type": "Point", "coordinates": [121.47, 31.23]}
OUT_OF_RANGE = {
    "type": "Polygon",
    "coordinates": [[[179.5, 31.0], [181.5, 31.0], [181.5, 32.0], [179.5, 31.0]]],
}


@pytest.fixture
def admin(db):
    return make_user(db, role=Role.ADMIN)


def test_admin_registers_a_store_that_anyone_can_read(client, db, admin):
    body = store_body(
        name="Renhe Pharmacy People's Square",
        opening_hours=[{"weekday": 0, "opens": "08:00", "closes": "22:00"}],
        delivery_fee_minor=600,
    )
    created = client.post(f"{API}/stores", json=body, headers=auth(admin))
    assert created.status_code == 201, created.text
    store = created.json()

    read = client.get(f"{API}/stores/{store['id']}")
    assert read.status_code == 200
    assert read.json() == store
    assert store["name"] == "Renhe Pharmacy People's Square"
    assert store["location"] == {"lat": SHANGHAI[0], "lon": SHANGHAI[1]}
    assert store["timezone"] == "Asia/Shanghai"
    assert store["opening_hours"] == body["opening_hours"]
    assert store["services"] == ["pickup", "delivery"]
    assert store["delivery_fee_minor"] == 600
    assert store["currency"] == "CNY"
    assert store["min_shelf_life_days"] == 30


def test_zone_comes_back_as_the_polygon_sent(client, db, admin):
    zone = square_zone()
    store = client.post(f"{API}/stores", json=store_body(delivery_zone=zone), headers=auth(admin))
    returned = store.json()["delivery_zone"]
    assert returned["type"] == "Polygon"
    assert [list(p) for p in returned["coordinates"][0]] == zone["coordinates"][0]


def test_always_open_and_never_open_stores(client, db, admin):
    always = client.post(f"{API}/stores", json=store_body(opening_hours=None), headers=auth(admin))
    assert always.json()["is_open_now"] is True
    assert always.json()["opens_at"] is None
    never = client.post(f"{API}/stores", json=store_body(opening_hours=[]), headers=auth(admin))
    assert never.json()["is_open_now"] is False
    assert never.json()["opens_at"] is None


def test_closed_store_says_when_it_opens(db):
    store = make_store(
        db,
        zone=square_zone(),
        opening_hours=[{"weekday": 0, "opens": "08:00", "closes": "22:00"}],
        timezone="Asia/Shanghai",
    )
    sunday_noon_utc = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
    view = service.store_out(store, now=sunday_noon_utc)
    assert view.is_open_now is False
    assert view.opens_at == datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # Monday 08:00 local
    open_view = service.store_out(store, now=datetime(2026, 11, 30, 1, 0, tzinfo=UTC))
    assert open_view.is_open_now is True and open_view.opens_at is None


@pytest.mark.parametrize(
    ("zone", "reason"),
    [
        (BOWTIE, "Self-intersection"),
        (UNCLOSED, "closed"),
        (POINT, "Polygon or MultiPolygon"),
        (OUT_OF_RANGE, "lon in [-180, 180]"),
        ({"type": "Polygon", "coordinates": [[[121.4, 31.2], [121.5, 31.2]]]}, "coordinates"),
        ("not geojson", "GeoJSON"),
    ],
)
def test_invalid_zones_are_refused_with_the_reason_and_never_stored(
    client, db, admin, zone, reason
):
    before = state(db)
    r = client.post(f"{API}/stores", json=store_body(delivery_zone=zone), headers=auth(admin))
    if isinstance(zone, str):  # not an object at all: refused by the schema
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    else:
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_zone"
        assert reason in error["message"]
        assert reason in error["details"]["reason"]
    assert state(db) == before


def test_a_3d_zone_is_stored_flat(client, db, admin):
    zone = square_zone()
    zone["coordinates"] = [[[*p, 12.5] for p in zone["coordinates"][0]]]
    r = client.post(f"{API}/stores", json=store_body(delivery_zone=zone), headers=auth(admin))
    assert r.status_code == 201, r.text
    assert all(len(p) == 2 for p in r.json()["delivery_zone"]["coordinates"][0])


def test_a_multipolygon_zone_is_accepted(client, db, admin):
    a = square_zone(31.23, 121.47, 0.01)["coordinates"]
    b = square_zone(31.30, 121.55, 0.01)["coordinates"]
    zone = {"type": "MultiPolygon", "coordinates": [a, b]}
    r = client.post(f"{API}/stores", json=store_body(delivery_zone=zone), headers=auth(admin))
    assert r.status_code == 201, r.text
    assert r.json()["delivery_zone"]["type"] == "MultiPolygon"


@pytest.mark.parametrize(
    "overrides",
    [
        {"location": {"lat": 91, "lon": 121.47}},
        {"location": {"lat": 31.2, "lon": -180.5}},
        {"location": {"lat": 31.2}},
        {"opening_hours": [{"weekday": 7, "opens": "08:00", "closes": "22:00"}]},
        {"opening_hours": [{"weekday": 0, "opens": "8am", "closes": "22:00"}]},
        {"services": ["teleport"]},
        {"services": []},
        {"currency": "yuan"},
        {"prep_minutes": -1},
        {"delivery_fee_minor": -5},
        {"delivery_fee_minor": 1.5},
        {"detour_factor": 0.5},
        {"name": "   "},
        {"surprise": True},
    ],
)
def test_bad_store_fields_are_refused_and_nothing_is_stored(client, db, admin, overrides):
    before = state(db)
    r = client.post(f"{API}/stores", json=store_body(**overrides), headers=auth(admin))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"
    assert state(db) == before


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "unknown_timezone"),
        ({"timezone": "localtime"}, "unknown_timezone"),
        (
            {"opening_hours": [{"weekday": 0, "opens": "08:00", "closes": "08:00"}]},
            "empty_opening_interval",
        ),
        (
            {
                "opening_hours": [
                    {"weekday": 0, "opens": "08:00", "closes": "14:00"},
                    {"weekday": 0, "opens": "12:00", "closes": "20:00"},
                ]
            },
            "overlapping_hours",
        ),
    ],
)
def test_store_fields_well_formed_but_meaningless_are_refused_with_their_own_code(
    client, db, admin, overrides, code
):
    before = state(db)
    r = client.post(f"{API}/stores", json=store_body(**overrides), headers=auth(admin))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
    assert state(db) == before


def test_a_store_that_delivers_needs_a_zone(client, db, admin):
    before = state(db)
    r = client.post(
        f"{API}/stores",
        json=store_body(services=["pickup", "delivery"], delivery_zone=None),
        headers=auth(admin),
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "zone_required"
    assert state(db) == before


def test_pickup_only_store_needs_no_zone(client, db, admin):
    r = client.post(
        f"{API}/stores",
        json=store_body(services=["pickup"], delivery_zone=None),
        headers=auth(admin),
    )
    assert r.status_code == 201, r.text
    assert r.json()["services"] == ["pickup"]
    assert r.json()["delivery_zone"] is None


@pytest.mark.parametrize("role", [Role.PATIENT, Role.PHARMACIST, Role.DOCTOR, Role.COURIER])
def test_only_admins_register_or_change_stores(client, db, role):
    store = make_store(db, zone=square_zone())
    caller = make_user(db, role=role, store_ids=[store.id] if role is Role.PHARMACIST else None)
    before = state(db)
    created = client.post(f"{API}/stores", json=store_body(), headers=auth(caller))
    changed = client.patch(
        f"{API}/stores/{store.id}", json={"name": "Mine now"}, headers=auth(caller)
    )
    assert created.status_code == 403
    assert changed.status_code == 403
    assert state(db) == before


def test_anonymous_callers_must_sign_in_to_write(client, db):
    store = make_store(db, zone=square_zone())
    before = state(db)
    assert client.post(f"{API}/stores", json=store_body()).status_code == 401
    assert client.patch(f"{API}/stores/{store.id}", json={"name": "x"}).status_code == 401
    assert state(db) == before


def test_patch_changes_only_the_fields_sent(client, db, admin):
    store = make_store(
        db, zone=square_zone(), opening_hours=[{"weekday": 0, "opens": "08:00", "closes": "22:00"}]
    )
    r = client.patch(
        f"{API}/stores/{store.id}",
        json={"name": "Renamed Pharmacy", "prep_minutes": 25, "opening_hours": None},
        headers=auth(admin),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "Renamed Pharmacy"
    assert body["prep_minutes"] == 25
    assert body["opening_hours"] is None and body["is_open_now"] is True
    assert body["address"] == store.address
    assert body["services"] == ["pickup", "delivery"]
    assert client.get(f"{API}/stores/{store.id}").json() == body


def test_patch_moves_the_store_and_replaces_the_zone(client, db, admin):
    store = make_store(db, zone=square_zone())
    zone = square_zone(31.30, 121.50, 0.03)
    r = client.patch(
        f"{API}/stores/{store.id}",
        json={"location": {"lat": 31.30, "lon": 121.50}, "delivery_zone": zone},
        headers=auth(admin),
    )
    assert r.status_code == 200, r.text
    assert r.json()["location"] == {"lat": 31.30, "lon": 121.50}
    assert [list(p) for p in r.json()["delivery_zone"]["coordinates"][0]] == zone["coordinates"][0]


@pytest.mark.parametrize(
    ("patch", "code"),
    [
        ({"delivery_zone": BOWTIE}, "invalid_zone"),
        ({"delivery_zone": None}, "zone_required"),
        ({"name": None}, "invalid_input"),
        ({"services": None}, "invalid_input"),
        ({"timezone": "Nowhere/Land"}, "unknown_timezone"),
        ({"location": {"lat": -95, "lon": 0}}, "invalid_input"),
    ],
)
def test_a_refused_patch_changes_nothing(client, db, admin, patch, code):
    store = make_store(db, zone=square_zone())
    before = state(db)
    r = client.patch(f"{API}/stores/{store.id}", json=patch, headers=auth(admin))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
    assert state(db) == before


def test_stopping_delivery_allows_dropping_the_zone(client, db, admin):
    store = make_store(db, zone=square_zone())
    r = client.patch(
        f"{API}/stores/{store.id}",
        json={"services": ["pickup"], "delivery_zone": None},
        headers=auth(admin),
    )
    assert r.status_code == 200, r.text
    assert r.json()["services"] == ["pickup"] and r.json()["delivery_zone"] is None


def test_starting_delivery_without_a_zone_is_refused(client, db, admin):
    store = make_store(db)  # pickup only, no zone
    before = state(db)
    r = client.patch(
        f"{API}/stores/{store.id}", json={"services": ["pickup", "delivery"]}, headers=auth(admin)
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "zone_required"
    assert state(db) == before


def test_unknown_store_is_404(client, db, admin):
    r = client.get(f"{API}/stores/999999")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "store_not_found"
    patched = client.patch(f"{API}/stores/999999", json={"name": "x"}, headers=auth(admin))
    assert patched.status_code == 404


@pytest.mark.parametrize("store_id", ["0", "2147483648", "99999999999999999999999"])
def test_a_store_id_outside_the_columns_range_is_invalid_input(client, db, admin, store_id):
    # The schema states the range (1 to 2**31 - 1); an id past it is refused, never looked up.
    r = client.get(f"{API}/stores/{store_id}")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    patched = client.patch(f"{API}/stores/{store_id}", json={"name": "x"}, headers=auth(admin))
    assert patched.status_code == 422


def test_store_paths_take_numeric_ids_only(client, db):
    # A word after /stores/ is another route (e.g. /stores/nearby), never a malformed store id.
    r = client.get(f"{API}/stores/abc")
    assert r.status_code == 404
    assert r.json()["error"]["code"] != "invalid_input"

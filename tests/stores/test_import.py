import pytest
from sqlalchemy import select

from o2o.users.models import Role
from stores.models import Store
from tests.factories import auth, make_user
from tests.stores.helpers import API, state, store_body

BOWTIE = {
    "type": "Polygon",
    "coordinates": [
        [[121.46, 31.22], [121.48, 31.24], [121.48, 31.22], [121.46, 31.24], [121.46, 31.22]]
    ],
}


def feature(lat: float = 31.2304, lon: float = 121.4737, **properties) -> dict:
    props = store_body(**properties)
    del props["location"]
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": props,
    }


def collection(*features) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


@pytest.fixture
def admin(db):
    return make_user(db, role=Role.ADMIN)


def _mixed() -> dict:
    return collection(
        feature(name="Good Pharmacy", lat=31.25, lon=121.50),
        feature(name="Bowtie Pharmacy", delivery_zone=BOWTIE),
        feature(name="Martian Pharmacy", timezone="Mars/Base"),
        {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": []},
            "properties": {},
        },
        feature(name="Far North", lat=95.0),
    )


def _reasons(refused: list[dict]) -> dict[int, str]:
    return {r["index"]: r["reason"] for r in refused}


def test_import_creates_every_store(client, db, admin):
    r = client.post(
        f"{API}/stores/import",
        json=collection(feature(name="North", lat=31.26), feature(name="South", lat=31.20)),
        headers=auth(admin),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"] == 2 and body["refused"] == []
    stores = [client.get(f"{API}/stores/{i}").json() for i in body["store_ids"]]
    assert [(s["name"], s["location"]["lat"]) for s in stores] == [
        ("North", 31.26),
        ("South", 31.20),
    ]


def test_one_bad_feature_refuses_the_whole_import_with_indexes_and_reasons(client, db, admin):
    before = state(db)
    r = client.post(f"{API}/stores/import", json=_mixed(), headers=auth(admin))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_features"
    reasons = _reasons(error["details"]["refused"])
    assert sorted(reasons) == [1, 2, 3, 4]
    assert "Self-intersection" in reasons[1]
    assert "timezone" in reasons[2] and "Mars/Base" in reasons[2]
    assert "Point" in reasons[3]
    assert "lat" in reasons[4]
    assert "4 of 5" in error["message"]
    assert state(db) == before


def test_partial_import_keeps_the_valid_features_and_reports_the_rest(client, db, admin):
    r = client.post(f"{API}/stores/import?partial=true", json=_mixed(), headers=auth(admin))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"] == 1
    assert sorted(_reasons(body["refused"])) == [1, 2, 3, 4]
    names = db.scalars(select(Store.name).where(Store.id.in_(body["store_ids"]))).all()
    assert names == ["Good Pharmacy"]
    assert db.scalar(select(Store.id).where(Store.name == "Bowtie Pharmacy")) is None


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("just a string", "Feature"),
        ({"type": "Feature", "geometry": None, "properties": {}}, "Point"),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [1]},
                "properties": {},
            },
            "[lon, lat]",
        ),
        (
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [121, 31]}},
            "properties",
        ),
        ({**feature(), "properties": {**feature()["properties"], "surprise": 1}}, "surprise"),
        (
            {**feature(), "properties": {**feature()["properties"], "location": {"lat": 1}}},
            "Point geometry",
        ),
        (feature(services=["pickup", "delivery"], delivery_zone=None), "delivery_zone"),
    ],
)
def test_each_kind_of_bad_feature_is_named(client, db, admin, bad, reason):
    r = client.post(
        f"{API}/stores/import?partial=true", json=collection(feature(), bad), headers=auth(admin)
    )
    assert r.status_code == 200, r.text
    refused = r.json()["refused"]
    assert [x["index"] for x in refused] == [1]
    assert reason in refused[0]["reason"]


@pytest.mark.parametrize(
    "body",
    [
        {"type": "Feature", "features": []},
        {"type": "FeatureCollection", "features": []},
        {"type": "FeatureCollection"},
        [],
    ],
)
def test_not_a_feature_collection_is_refused(client, db, admin, body):
    before = state(db)
    r = client.post(f"{API}/stores/import", json=body, headers=auth(admin))
    assert r.status_code == 422
    assert state(db) == before


@pytest.mark.parametrize("role", [Role.PATIENT, Role.PHARMACIST])
def test_only_admins_import(client, db, role):
    caller = make_user(db, role=role)
    before = state(db)
    r = client.post(f"{API}/stores/import", json=collection(feature()), headers=auth(caller))
    assert r.status_code == 403
    assert client.post(f"{API}/stores/import", json=collection(feature())).status_code == 401
    assert state(db) == before

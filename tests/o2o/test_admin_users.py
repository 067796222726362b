import pytest
from sqlalchemy import text

from o2o.users.models import Role
from tests.factories import auth, make_user

API = "/api/v1"


def _store(db, name="S") -> int:
    return db.scalar(
        text(
            "INSERT INTO stores (name, address, location) VALUES "
            "(:n, 'addr', ST_GeogFromText('POINT(121.47 31.23)')) RETURNING id"
        ),
        {"n": name},
    )


def test_admin_creates_a_pharmacist_linked_to_stores(client, db):
    admin = make_user(db, role=Role.ADMIN)
    s1, s2 = _store(db, "A"), _store(db, "B")
    r = client.post(
        f"{API}/admin/users",
        headers=auth(admin),
        json={
            "email": "ph@example.org",
            "password": "long-enough-pw",
            "name": "Ph",
            "role": "pharmacist",
            "store_ids": [s2, s1],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "pharmacist"
    assert r.json()["store_ids"] == sorted([s1, s2])


@pytest.mark.parametrize("role", [Role.PATIENT, Role.DOCTOR, Role.PHARMACIST, Role.COURIER])
def test_only_admins_create_staff(client, db, role):
    caller = make_user(db, role=role)
    r = client.post(
        f"{API}/admin/users",
        headers=auth(caller),
        json={"email": "x@example.org", "password": "long-enough-pw", "name": "X", "role": "admin"},
    )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"


def test_unknown_store_ids_are_refused_and_nobody_is_created(client, db):
    admin = make_user(db, role=Role.ADMIN)
    r = client.post(
        f"{API}/admin/users",
        headers=auth(admin),
        json={
            "email": "ph2@example.org",
            "password": "long-enough-pw",
            "name": "Ph",
            "role": "pharmacist",
            "store_ids": [999999],
        },
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"] == {"store_ids": [999999]}
    count = db.scalar(text("SELECT count(*) FROM users WHERE email = 'ph2@example.org'"))
    assert count == 0


def test_store_ids_only_for_pharmacists(client, db):
    admin = make_user(db, role=Role.ADMIN)
    s1 = _store(db)
    r = client.post(
        f"{API}/admin/users",
        headers=auth(admin),
        json={
            "email": "c@example.org",
            "password": "long-enough-pw",
            "name": "C",
            "role": "courier",
            "store_ids": [s1],
        },
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "store_ids_not_allowed"

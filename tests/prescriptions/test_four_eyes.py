"""Four eyes on doctor keys: the admin who created a doctor's account cannot approve that
doctor's signing key; another admin can."""

from o2o.users.models import Role
from prescriptions import signing
from tests.factories import auth, make_user
from tests.prescriptions.helpers import API, prove_key


def test_the_admin_who_created_the_doctor_cannot_approve_its_key(client, db):
    creator = make_user(db, role=Role.ADMIN)
    other_admin = make_user(db, role=Role.ADMIN)
    r = client.post(
        f"{API}/admin/users",
        json={
            "email": "dr.new@test.example.com",
            "password": "a-long-password-1",
            "name": "Dr New",
            "role": "doctor",
        },
        headers=auth(creator),
    )
    assert r.status_code == 201, r.text
    doctor_token = client.post(
        f"{API}/auth/token",
        data={"username": "dr.new@test.example.com", "password": "a-long-password-1"},
    ).json()["access_token"]
    key = signing.generate_private_key()
    r = client.post(
        f"{API}/doctors/me/keys",
        json={"public_key": signing.public_key_b64(key)},
        headers={"Authorization": f"Bearer {doctor_token}"},
    )
    assert r.status_code == 201, r.text
    key_id = r.json()["id"]
    prove_key(client, {"Authorization": f"Bearer {doctor_token}"}, key, r.json())

    r = client.post(f"{API}/admin/doctor-keys/{key_id}/approve", headers=auth(creator))
    assert r.status_code == 403 and r.json()["error"]["code"] == "four_eyes_required"
    r = client.post(f"{API}/admin/doctor-keys/{key_id}/approve", headers=auth(other_admin))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"

"""Who may call each prescription endpoint: anonymous callers get 401, roles that may never do
it 403, and users who may not see this prescription 404 (as if it did not exist)."""

import uuid

import pytest
from sqlalchemy import func, select

from o2o.users.models import Role
from prescriptions.models import PrescriptionAudit
from tests.factories import auth
from tests.prescriptions.helpers import API, PNG, claim_and_issue, items_for, request_body


@pytest.fixture
def issued(client, db, world) -> str:
    """An issued prescription with an attachment: every read endpoint has something to show."""
    order = world.order(db)
    r = client.post(
        f"{API}/prescriptions",
        data=request_body(order),
        files={"attachment": ("scan.png", PNG, "image/png")},
        headers=auth(world.patient),
    )
    pid = r.json()["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)))
    return pid


READS = ["", "/attachment", "/audit", "/fhir"]


def _who(world, name):
    return {
        "patient": world.patient,
        "other_patient": world.other_patient,
        "pharmacist": world.pharmacist,
        "other_pharmacist": world.other_pharmacist,
        "admin": world.admin,
        "courier": world.courier,
        "doctor": world.doctor.user,
        "other_doctor": world.other_doctor.user,
    }[name]


@pytest.mark.parametrize("path", READS)
def test_reads_for_those_allowed(client, world, issued, path):
    for name in ("patient", "pharmacist", "admin", "doctor"):
        r = client.get(f"{API}/prescriptions/{issued}{path}", headers=auth(_who(world, name)))
        assert r.status_code == 200, (name, path, r.text)


@pytest.mark.parametrize("path", READS)
def test_reads_hidden_from_everyone_else(client, world, issued, path):
    assert client.get(f"{API}/prescriptions/{issued}{path}").status_code == 401
    for name in ("other_patient", "other_pharmacist", "courier", "other_doctor"):
        r = client.get(f"{API}/prescriptions/{issued}{path}", headers=auth(_who(world, name)))
        assert r.status_code == 404, (name, path)
        assert r.json()["error"]["code"] == "prescription_not_found"
    # An id that does not exist looks the same to the owner.
    r = client.get(f"{API}/prescriptions/{uuid.uuid4()}{path}", headers=auth(world.patient))
    assert r.status_code == 404


def test_reading_does_not_leak_the_identity_number(client, db, world, issued):
    for name in ("patient", "pharmacist", "admin", "doctor"):
        r = client.get(f"{API}/prescriptions/{issued}", headers=auth(_who(world, name)))
        assert "110101199001011234" not in r.text
        assert r.json()["patient"]["id_number_masked"] == "1101**********1234"


DOCTOR_ACTIONS = [
    ("claim", None),
    (
        "signing-payload",
        {
            "items": [
                {"product_id": 1, "quantity": 1, "dose": "d", "frequency": "f", "duration_days": 1}
            ]
        },
    ),
    ("issue", {"payload": "e30=", "signature": "AAAA"}),
    ("decline", {"reason": "no"}),
]


@pytest.mark.parametrize("action, body", DOCTOR_ACTIONS)
def test_doctor_actions_are_for_doctors_only(client, db, world, action, body):
    order = world.order(db)
    pid = client.post(
        f"{API}/prescriptions", json=request_body(order), headers=auth(world.patient)
    ).json()["id"]
    url = f"{API}/prescriptions/{pid}/{action}"
    assert client.post(url, json=body).status_code == 401
    for name in ("patient", "pharmacist", "admin", "courier"):
        r = client.post(url, json=body, headers=auth(_who(world, name)))
        assert r.status_code == 403, (name, action)
    # Nothing happened: the request is still waiting, only its "requested" audit entry exists.
    r = client.get(f"{API}/prescriptions/{pid}", headers=auth(world.patient))
    assert r.json()["status"] == "requested"
    assert db.scalar(select(func.count()).select_from(PrescriptionAudit)) == 1


def test_doctor_actions_on_an_unknown_id_are_404(client, world):
    r = client.post(f"{API}/prescriptions/{uuid.uuid4()}/claim", headers=world.doctor.headers)
    assert r.status_code == 404


def test_review_is_for_the_stores_pharmacists_only(client, world, issued):
    url = f"{API}/prescriptions/{issued}/review"
    body = {"decision": "approve"}
    assert client.post(url, json=body).status_code == 401
    for name in ("patient", "doctor", "admin", "courier"):
        assert client.post(url, json=body, headers=auth(_who(world, name))).status_code == 403
    assert client.post(url, json=body, headers=auth(world.other_pharmacist)).status_code == 404
    r = client.get(f"{API}/prescriptions/{issued}", headers=auth(world.patient))
    assert r.json()["status"] == "issued"


def test_queue_is_for_doctors_and_pharmacists(client, world):
    url = f"{API}/prescriptions/queue"
    assert client.get(url).status_code == 401
    for name in ("patient", "admin", "courier"):
        assert client.get(url, headers=auth(_who(world, name))).status_code == 403
    for name in ("doctor", "pharmacist"):
        assert client.get(url, headers=auth(_who(world, name))).status_code == 200


def test_post_prescription_is_for_patients(client, db, world):
    order = world.order(db)
    url = f"{API}/prescriptions"
    assert client.post(url, json=request_body(order)).status_code == 401
    for name in ("doctor", "pharmacist", "admin", "courier"):
        r = client.post(url, json=request_body(order), headers=auth(_who(world, name)))
        assert r.status_code == 403


def test_doctor_keys_are_for_doctors(client, world):
    from prescriptions import signing

    body = {"public_key": signing.public_key_b64(signing.generate_private_key())}
    url = f"{API}/doctors/me/keys"
    assert client.post(url, json=body).status_code == 401
    assert client.get(url).status_code == 401
    for name in ("patient", "pharmacist", "admin", "courier"):
        assert client.post(url, json=body, headers=auth(_who(world, name))).status_code == 403
        assert client.get(url, headers=auth(_who(world, name))).status_code == 403
    # A doctor lists their own keys only.
    mine = client.get(url, headers=world.doctor.headers).json()["items"]
    assert [k["id"] for k in mine] == [world.doctor.key_id]


@pytest.mark.parametrize("action", ["approve", "revoke"])
def test_key_administration_is_for_admins(client, world, action):
    url = f"{API}/admin/doctor-keys/{world.doctor.key_id}/{action}"
    assert client.post(url).status_code == 401
    for name in ("patient", "pharmacist", "doctor", "courier"):
        assert client.post(url, headers=auth(_who(world, name))).status_code == 403
    assert client.get(f"{API}/admin/doctor-keys").status_code == 401
    assert (
        client.get(f"{API}/admin/doctor-keys", headers=auth(world.doctor.user)).status_code == 403
    )
    # The key is untouched.
    mine = client.get(f"{API}/doctors/me/keys", headers=world.doctor.headers).json()["items"]
    assert mine[0]["status"] == "active"


def test_roles_listed_in_the_403(client, world):
    r = client.get(f"{API}/prescriptions/queue", headers=auth(world.patient))
    assert r.json()["error"]["details"]["allowed_roles"] == sorted(
        [Role.DOCTOR.value, Role.PHARMACIST.value]
    )

"""Proof of possession: a doctor's key is approved only after the doctor signed the server's
challenge with the key's private key; a wrong signature, an expired challenge and another doctor's
key are refused, and a proved key approved by a second admin signs prescriptions that verify."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.users.models import Role, User
from prescriptions import doctor_keys, signing
from prescriptions.models import DoctorKey
from tests.factories import auth, make_user
from tests.prescriptions.helpers import (
    API,
    Doctor,
    claim_and_issue,
    items_for,
    prove_key,
    request_rx,
)


def _register(client, doctor_headers, private_key) -> dict:
    r = client.post(
        f"{API}/doctors/me/keys",
        json={"public_key": signing.public_key_b64(private_key)},
        headers=doctor_headers,
    )
    assert r.status_code == 201, r.text
    return r.json()


def _sign(private_key, payload_b64: str) -> str:
    return signing.b64encode(signing.sign(private_key, signing.b64decode(payload_b64)))


def _proof(client, headers, key_id: int, signature: str):
    return client.post(
        f"{API}/doctors/me/keys/{key_id}/proof", json={"signature": signature}, headers=headers
    )


def _status(client, headers, key_id: int) -> dict:
    items = client.get(f"{API}/doctors/me/keys", headers=headers).json()["items"]
    return next(k for k in items if k["id"] == key_id)


def test_registration_answers_a_challenge_bound_to_the_key_and_doctor(client, db):
    doctor = make_user(db, role=Role.DOCTOR)
    key = signing.generate_private_key()
    registered = _register(client, auth(doctor), key)
    assert registered["proved_at"] is None
    challenge = registered["challenge"]
    assert challenge["key_id"] == registered["id"]
    document = signing.b64decode(challenge["payload"]).decode()
    assert f'"doctor_id":{doctor.id}' in document and f'"key_id":{registered["id"]}' in document
    assert signing.public_key_b64(key) in document
    # Two registrations never get the same challenge.
    other = _register(client, auth(doctor), signing.generate_private_key())
    assert other["challenge"]["payload"] != challenge["payload"]


def test_approval_is_refused_before_the_proof(client, db):
    admin = make_user(db, role=Role.ADMIN)
    doctor = make_user(db, role=Role.DOCTOR)
    key = signing.generate_private_key()
    registered = _register(client, auth(doctor), key)
    r = client.post(f"{API}/admin/doctor-keys/{registered['id']}/approve", headers=auth(admin))
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_not_proved"
    assert _status(client, auth(doctor), registered["id"])["status"] == "pending"

    prove_key(client, auth(doctor), key, registered)
    r = client.post(f"{API}/admin/doctor-keys/{registered['id']}/approve", headers=auth(admin))
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert r.json()["proved_at"] is not None


def test_a_signature_by_another_key_or_of_other_bytes_is_refused(client, db):
    admin = make_user(db, role=Role.ADMIN)
    doctor = make_user(db, role=Role.DOCTOR)
    key = signing.generate_private_key()
    registered = _register(client, auth(doctor), key)
    payload = registered["challenge"]["payload"]
    # The doctor's public key, someone else's private key: no proof.
    wrong = _sign(signing.generate_private_key(), payload)
    r = _proof(client, auth(doctor), registered["id"], wrong)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_signature"
    # The right key over other bytes (a prescription-like payload) proves nothing either.
    other_bytes = signing.b64encode(signing.sign(key, b'{"items":[]}'))
    r = _proof(client, auth(doctor), registered["id"], other_bytes)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_signature"
    r = _proof(client, auth(doctor), registered["id"], "not base64!")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_signature"
    assert _status(client, auth(doctor), registered["id"])["proved_at"] is None
    r = client.post(f"{API}/admin/doctor-keys/{registered['id']}/approve", headers=auth(admin))
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_not_proved"


def test_an_expired_challenge_is_refused_and_a_new_one_can_be_asked_for(client, db):
    doctor = make_user(db, role=Role.DOCTOR)
    key = signing.generate_private_key()
    registered = _register(client, auth(doctor), key)
    old_payload = registered["challenge"]["payload"]
    later = clock.now() + timedelta(minutes=16)
    with clock.use(lambda: later):
        r = _proof(client, auth(doctor), registered["id"], _sign(key, old_payload))
        assert r.status_code == 409 and r.json()["error"]["code"] == "challenge_expired"

        r = client.post(f"{API}/doctors/me/keys/{registered['id']}/challenge", headers=auth(doctor))
        assert r.status_code == 200, r.text
        renewed = r.json()
        assert renewed["payload"] != old_payload
        # The earlier challenge stops being accepted once a new one is issued.
        r = _proof(client, auth(doctor), registered["id"], _sign(key, old_payload))
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_signature"
        r = _proof(client, auth(doctor), registered["id"], _sign(key, renewed["payload"]))
        assert r.status_code == 200 and r.json()["proved_at"] is not None

        # Used once: a proved key takes no more proofs or challenges.
        r = _proof(client, auth(doctor), registered["id"], _sign(key, renewed["payload"]))
        assert r.status_code == 409 and r.json()["error"]["code"] == "key_already_proved"
        r = client.post(f"{API}/doctors/me/keys/{registered['id']}/challenge", headers=auth(doctor))
        assert r.status_code == 409 and r.json()["error"]["code"] == "key_already_proved"


def test_another_doctors_key_is_not_found(client, db):
    doctor = make_user(db, role=Role.DOCTOR)
    other = make_user(db, role=Role.DOCTOR)
    key = signing.generate_private_key()
    registered = _register(client, auth(doctor), key)
    signature = _sign(key, registered["challenge"]["payload"])
    # Even with the right signature in hand, another doctor cannot prove (or renew) this key.
    r = _proof(client, auth(other), registered["id"], signature)
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"
    r = client.post(f"{API}/doctors/me/keys/{registered['id']}/challenge", headers=auth(other))
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"
    assert _status(client, auth(doctor), registered["id"])["proved_at"] is None
    # The owner still can.
    assert _proof(client, auth(doctor), registered["id"], signature).status_code == 200


def test_a_revoked_unproved_key_cannot_be_proved(client, db):
    admin = make_user(db, role=Role.ADMIN)
    doctor = make_user(db, role=Role.DOCTOR)
    key = signing.generate_private_key()
    registered = _register(client, auth(doctor), key)
    client.post(f"{API}/admin/doctor-keys/{registered['id']}/revoke", headers=auth(admin))
    r = _proof(
        client, auth(doctor), registered["id"], _sign(key, registered["challenge"]["payload"])
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_not_pending"


def test_proof_then_a_second_admins_approval_signs_prescriptions_that_verify(client, db, world):
    creator = make_user(db, role=Role.ADMIN)
    second_admin = make_user(db, role=Role.ADMIN)
    r = client.post(
        f"{API}/admin/users",
        json={
            "email": "dr.proof@test.example.com",
            "password": "a-long-password-1",
            "name": "Dr Proof",
            "role": "doctor",
        },
        headers=auth(creator),
    )
    assert r.status_code == 201, r.text
    token = client.post(
        f"{API}/auth/token",
        data={"username": "dr.proof@test.example.com", "password": "a-long-password-1"},
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    user = db.scalar(select(User).where(User.email == "dr.proof@test.example.com"))
    doctor = Doctor(user=user, private_key=signing.generate_private_key(), headers=headers)
    registered = _register(client, headers, doctor.private_key)
    doctor.key_id = registered["id"]

    approve = f"{API}/admin/doctor-keys/{doctor.key_id}/approve"
    r = client.post(approve, headers=auth(second_admin))
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_not_proved"
    prove_key(client, headers, doctor.private_key, registered)
    r = client.post(approve, headers=auth(creator))
    assert r.status_code == 403 and r.json()["error"]["code"] == "four_eyes_required"
    r = client.post(approve, headers=auth(second_admin))
    assert r.status_code == 200 and r.json()["status"] == "active"

    pid = request_rx(client, world.patient, world.order(db))["id"]
    issued = claim_and_issue(client, doctor, pid, items_for((world.rx, 2)))
    assert issued["status"] == "issued"
    r = client.post(
        f"{API}/prescriptions/{pid}/review",
        json={"decision": "approve"},
        headers=auth(world.pharmacist),
    )
    assert r.status_code == 200, r.text
    assert r.json()["order_status"] == "released"


PROOFS = 6


def test_concurrent_proofs_of_one_challenge_one_wins(engine, committed):
    """The same signed challenge sent at once from several connections: one proof is taken, the
    others are told the key is already proved (the challenge is used once)."""
    from main import create_app

    key = signing.generate_private_key()
    with Session(engine, expire_on_commit=False) as s:
        doctor = make_user(s, role=Role.DOCTOR)
        row = doctor_keys.register_key(s, doctor, signing.public_key_b64(key))
        key_id, challenge = row.id, row.proof_challenge
        s.commit()
    signature = signing.b64encode(signing.sign(key, challenge))

    app = create_app()
    barrier = threading.Barrier(PROOFS)

    def prove(_):
        with TestClient(app, raise_server_exceptions=False) as c:
            barrier.wait(timeout=30)
            return _proof(c, auth(doctor), key_id, signature)

    with ThreadPoolExecutor(PROOFS) as pool:
        results = list(pool.map(prove, range(PROOFS)))

    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [409] * (PROOFS - 1), [r.text for r in results]
    assert {r.json()["error"]["code"] for r in results if r.status_code == 409} == {
        "key_already_proved"
    }
    with Session(engine) as s:
        stored = s.get(DoctorKey, key_id)
        assert stored.proved_at is not None and stored.proof_challenge is None

"""Doctors' keys: registration, approval (one active key per doctor), revocation, and the
`python -m o2o doctor keygen|sign` tools that make and use them."""

import base64
import os
import stat
import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from o2o import pagination
from o2o.users.models import Role
from prescriptions import router as prescriptions_router
from prescriptions import signing
from prescriptions.cli import app as doctor_cli
from tests.conftest import ROOT
from tests.factories import auth, make_user
from tests.prescriptions.helpers import API, prove_key


def _register(client, doctor, key=None):
    key = key or signing.generate_private_key()
    return client.post(
        f"{API}/doctors/me/keys",
        json={"public_key": signing.public_key_b64(key)},
        headers=auth(doctor),
    )


def _proved(client, doctor) -> int:
    """Register a new key and prove holding it; return its id."""
    key = signing.generate_private_key()
    r = _register(client, doctor, key)
    assert r.status_code == 201, r.text
    prove_key(client, auth(doctor), key, r.json())
    return r.json()["id"]


def test_register_returns_pending(client, db):
    doctor = make_user(db, role=Role.DOCTOR)
    r = _register(client, doctor)
    assert r.status_code == 201
    assert r.json()["status"] == "pending" and isinstance(r.json()["id"], int)


@pytest.mark.parametrize(
    "public_key",
    [
        "not base64!",
        base64.b64encode(b"\x01" * 31).decode(),
        base64.b64encode(b"\x01" * 33).decode(),
        "",
    ],
)
def test_register_refuses_malformed_keys(client, db, public_key):
    doctor = make_user(db, role=Role.DOCTOR)
    r = client.post(f"{API}/doctors/me/keys", json={"public_key": public_key}, headers=auth(doctor))
    assert r.status_code == 422
    assert r.json()["error"]["code"] in {"invalid_public_key", "invalid_input"}


def test_same_key_cannot_be_registered_twice(client, db):
    doctor = make_user(db, role=Role.DOCTOR)
    other = make_user(db, role=Role.DOCTOR)
    key = signing.generate_private_key()
    assert _register(client, doctor, key).status_code == 201
    r = _register(client, other, key)
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_already_registered"


def test_approving_a_new_key_supersedes_the_old(client, db):
    admin = make_user(db, role=Role.ADMIN)
    doctor = make_user(db, role=Role.DOCTOR)
    first = _proved(client, doctor)
    second = _proved(client, doctor)
    pending = client.get(f"{API}/admin/doctor-keys?status=pending", headers=auth(admin)).json()
    assert {k["id"] for k in pending["items"]} >= {first, second}

    r = client.post(f"{API}/admin/doctor-keys/{first}/approve", headers=auth(admin))
    assert r.status_code == 200 and r.json()["status"] == "active"
    r = client.post(f"{API}/admin/doctor-keys/{second}/approve", headers=auth(admin))
    assert r.status_code == 200 and r.json()["status"] == "active"
    keys = {
        k["id"]: k["status"]
        for k in client.get(f"{API}/doctors/me/keys", headers=auth(doctor)).json()["items"]
    }
    assert keys == {first: "superseded", second: "active"}
    # A superseded key cannot come back.
    r = client.post(f"{API}/admin/doctor-keys/{first}/approve", headers=auth(admin))
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_not_pending"


def test_database_refuses_two_active_keys(db):
    doctor = make_user(db, role=Role.DOCTOR)
    for n in (1, 2):
        stmt = text(
            "INSERT INTO doctor_keys (doctor_id, public_key, status) VALUES (:d, :k, 'active')"
        )
        if n == 1:
            db.execute(stmt, {"d": doctor.id, "k": bytes([n]) * 32})
        else:
            with pytest.raises(IntegrityError), db.begin_nested():
                db.execute(stmt, {"d": doctor.id, "k": bytes([n]) * 32})


def test_revoke_is_idempotent_and_final(client, db):
    admin = make_user(db, role=Role.ADMIN)
    doctor = make_user(db, role=Role.DOCTOR)
    key_id = _proved(client, doctor)
    client.post(f"{API}/admin/doctor-keys/{key_id}/approve", headers=auth(admin))
    for _ in range(2):
        r = client.post(f"{API}/admin/doctor-keys/{key_id}/revoke", headers=auth(admin))
        assert r.status_code == 200 and r.json()["status"] == "revoked"
    r = client.post(f"{API}/admin/doctor-keys/{key_id}/approve", headers=auth(admin))
    assert r.status_code == 409
    assert (
        client.post(f"{API}/admin/doctor-keys/999999/revoke", headers=auth(admin)).status_code
        == 404
    )
    assert (
        client.post(f"{API}/admin/doctor-keys/99999999999/revoke", headers=auth(admin)).status_code
        == 422
    )


# --- the command-line tools --------------------------------------------------------------------


def test_keygen_writes_a_private_key_0600_and_prints_the_public_key(tmp_path):
    out = tmp_path / "doctor.key"
    result = CliRunner().invoke(doctor_cli, ["keygen", "--out", str(out)])
    assert result.exit_code == 0, result.output
    public_key = result.stdout.strip()
    assert len(base64.b64decode(public_key)) == 32
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert signing.public_key_b64(signing.read_private_key(out)) == public_key
    # Never overwrites an existing key.
    again = CliRunner().invoke(doctor_cli, ["keygen", "--out", str(out)])
    assert again.exit_code == 1
    assert signing.public_key_b64(signing.read_private_key(out)) == public_key


def test_sign_prints_a_signature_the_server_accepts(tmp_path):
    out = tmp_path / "doctor.key"
    public_key = CliRunner().invoke(doctor_cli, ["keygen", "--out", str(out)]).stdout.strip()
    payload = signing.canonical_bytes({"prescription_id": "x", "items": []})
    result = CliRunner().invoke(
        doctor_cli, ["sign", "--key", str(out), "--payload", signing.b64encode(payload)]
    )
    assert result.exit_code == 0, result.output
    signature = base64.b64decode(result.stdout.strip())
    assert signing.verify(base64.b64decode(public_key), payload, signature)
    assert not signing.verify(base64.b64decode(public_key), payload + b" ", signature)


def test_sign_refuses_bad_input(tmp_path):
    out = tmp_path / "doctor.key"
    CliRunner().invoke(doctor_cli, ["keygen", "--out", str(out)])
    bad = CliRunner().invoke(doctor_cli, ["sign", "--key", str(out), "--payload", "***"])
    assert bad.exit_code == 2
    missing = CliRunner().invoke(
        doctor_cli, ["sign", "--key", str(tmp_path / "none"), "--payload", "e30="]
    )
    assert missing.exit_code == 1
    not_a_key = tmp_path / "junk"
    not_a_key.write_text("hello")
    junk = CliRunner().invoke(doctor_cli, ["sign", "--key", str(not_a_key), "--payload", "e30="])
    assert junk.exit_code == 1


def test_cli_is_registered_under_python_m_o2o_doctor(tmp_path):
    out = tmp_path / "doctor.key"
    env = {**os.environ}
    done = subprocess.run(
        [sys.executable, "-m", "o2o", "doctor", "keygen", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(base64.b64decode(done.stdout.strip())) == 32


def test_key_lists_page_with_cursors_of_their_own(client, db):
    doctor = make_user(db, role=Role.DOCTOR)
    admin = make_user(db, role=Role.ADMIN)
    registered = [_register(client, doctor).json()["id"] for _ in range(3)]
    first = client.get(f"{API}/doctors/me/keys?limit=2", headers=auth(doctor)).json()
    assert [k["id"] for k in first["items"]] == registered[:2] and first["next_cursor"]
    rest = client.get(
        f"{API}/doctors/me/keys?limit=2&cursor={first['next_cursor']}", headers=auth(doctor)
    ).json()
    assert [k["id"] for k in rest["items"]] == registered[2:] and rest["next_cursor"] is None
    # A key list's cursor means nothing to another list, and a bare id is not a cursor.
    audit_cursor = pagination.encode_cursor(prescriptions_router.AUDIT_LISTING, [registered[0]])
    for cursor in (audit_cursor, str(registered[0])):
        r = client.get(f"{API}/doctors/me/keys?cursor={cursor}", headers=auth(doctor))
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_cursor"
    pending = client.get(
        f"{API}/admin/doctor-keys?status=pending&limit=1&cursor={first['next_cursor']}",
        headers=auth(admin),
    )
    assert pending.status_code == 200

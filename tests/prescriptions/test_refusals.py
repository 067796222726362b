"""Every way a prescription step is refused: the error says why, and nothing changes."""

import base64
import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from o2o import clock
from o2o.orders.models import OrderStatus
from prescriptions import issuing, service, signing, sweeps
from prescriptions.models import Prescription, PrescriptionAudit
from tests.factories import auth
from tests.prescriptions.helpers import (
    API,
    EXE,
    JPEG,
    PDF,
    PNG,
    claim_and_issue,
    items_for,
    prepare,
    prove_key,
    request_body,
    request_rx,
    sign_payload,
)


def _error(r) -> str:
    return r.json()["error"]["code"]


def _status(db, pid: str) -> str:
    db.expire_all()
    return db.get(Prescription, uuid.UUID(pid)).status.value


def _review(client, world, pid, decision="approve", reason=None, who=None):
    body = {"decision": decision}
    if reason:
        body["reason"] = reason
    return client.post(
        f"{API}/prescriptions/{pid}/review", json=body, headers=auth(who or world.pharmacist)
    )


@pytest.fixture
def claimed(client, db, world) -> tuple[str, str]:
    """A request claimed by the doctor, and its prepared payload."""
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    assert client.post(f"{API}/prescriptions/{pid}/claim", headers=world.doctor.headers).is_success
    return pid, prepare(client, world.doctor, pid, items_for((world.rx, 2)))


# --- signing -----------------------------------------------------------------------------------


def test_forged_signature_is_refused(client, db, world, claimed):
    pid, payload = claimed
    forger = signing.generate_private_key()
    forged = signing.b64encode(signing.sign(forger, base64.b64decode(payload)))
    r = client.post(
        f"{API}/prescriptions/{pid}/issue",
        json={"payload": payload, "signature": forged},
        headers=world.doctor.headers,
    )
    assert r.status_code == 422 and _error(r) == "invalid_signature"
    assert _status(db, pid) == "claimed"
    # Garbage that is not base64 at all.
    r = client.post(
        f"{API}/prescriptions/{pid}/issue",
        json={"payload": payload, "signature": "not*base64"},
        headers=world.doctor.headers,
    )
    assert r.status_code == 422 and _error(r) == "invalid_signature"


def test_payload_changed_after_signing_is_refused(client, db, world, claimed):
    pid, payload = claimed
    document = json.loads(base64.b64decode(payload))
    document["items"][0]["quantity"] = 20
    document["refills"] = 5
    changed = signing.canonical_bytes(document)
    # Signed by the right key, but not what the server prepared.
    r = client.post(
        f"{API}/prescriptions/{pid}/issue",
        json={
            "payload": signing.b64encode(changed),
            "signature": signing.b64encode(signing.sign(world.doctor.private_key, changed)),
        },
        headers=world.doctor.headers,
    )
    assert r.status_code == 422 and _error(r) == "payload_mismatch"
    # The original signature over a changed payload.
    r = client.post(
        f"{API}/prescriptions/{pid}/issue",
        json={
            "payload": signing.b64encode(changed),
            "signature": sign_payload(world.doctor, payload),
        },
        headers=world.doctor.headers,
    )
    assert r.status_code == 422 and _error(r) == "payload_mismatch"
    assert _status(db, pid) == "claimed"


def test_revoked_key_cannot_issue(client, db, world, claimed):
    pid, payload = claimed
    r = client.post(
        f"{API}/admin/doctor-keys/{world.doctor.key_id}/revoke", headers=auth(world.admin)
    )
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    r = client.post(
        f"{API}/prescriptions/{pid}/issue",
        json={"payload": payload, "signature": sign_payload(world.doctor, payload)},
        headers=world.doctor.headers,
    )
    assert r.status_code == 422 and _error(r) == "key_revoked"
    assert _status(db, pid) == "claimed"
    # And no new payload without an active key.
    r = client.post(
        f"{API}/prescriptions/{pid}/signing-payload",
        json={"items": items_for((world.rx, 2))},
        headers=world.doctor.headers,
    )
    assert r.status_code == 409 and _error(r) == "no_active_key"


def test_key_revoked_after_issue_blocks_approval(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)))
    client.post(f"{API}/admin/doctor-keys/{world.doctor.key_id}/revoke", headers=auth(world.admin))
    r = _review(client, world, pid)
    assert r.status_code == 409 and _error(r) == "key_revoked"
    db.expire(order)
    assert order.status is OrderStatus.AWAITING_PRESCRIPTION
    assert _status(db, pid) == "issued"


def test_superseded_key_still_verifies_what_it_signed(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)))
    # The doctor rotates keys: the new one is approved, the old one superseded (not revoked).
    new_key = signing.generate_private_key()
    r = client.post(
        f"{API}/doctors/me/keys",
        json={"public_key": signing.public_key_b64(new_key)},
        headers=world.doctor.headers,
    )
    prove_key(client, world.doctor.headers, new_key, r.json())
    client.post(f"{API}/admin/doctor-keys/{r.json()['id']}/approve", headers=auth(world.admin))
    assert _review(client, world, pid).status_code == 200


def test_tampered_stored_prescription_is_refused_at_review(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)))
    p = db.get(Prescription, uuid.UUID(pid))
    document = json.loads(p.signed_payload)
    document["items"][0]["quantity"] = 50
    p.signed_payload = signing.canonical_bytes(document)
    db.flush()
    r = _review(client, world, pid)
    assert r.status_code == 409 and _error(r) == "invalid_signature"


def test_signing_payload_is_stale_after_the_window(client, db, world, claimed):
    pid, payload = claimed
    later = clock.now() + timedelta(minutes=31)
    with clock.use(lambda: later):
        r = client.post(
            f"{API}/prescriptions/{pid}/issue",
            json={"payload": payload, "signature": sign_payload(world.doctor, payload)},
            headers=world.doctor.headers,
        )
    assert r.status_code == 409 and _error(r) == "payload_stale"


def test_issue_without_a_prepared_payload_is_refused(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    client.post(f"{API}/prescriptions/{pid}/claim", headers=world.doctor.headers)
    r = client.post(
        f"{API}/prescriptions/{pid}/issue",
        json={"payload": "e30=", "signature": "AAAA"},
        headers=world.doctor.headers,
    )
    assert r.status_code == 409 and _error(r) == "no_pending_payload"


@pytest.mark.parametrize(
    "change, code",
    [
        ({"valid_hours": 73}, "invalid_input"),
        ({"valid_hours": 0}, "invalid_input"),
        ({"refills": -1}, "invalid_input"),
        ({"items": []}, "invalid_input"),
    ],
)
def test_signing_payload_bad_decisions(client, db, world, claimed, change, code):
    pid, _ = claimed
    body = {"items": items_for((world.rx, 2)), **change}
    r = client.post(
        f"{API}/prescriptions/{pid}/signing-payload", json=body, headers=world.doctor.headers
    )
    assert r.status_code == 422 and _error(r) == code


def test_signing_payload_refuses_unknown_and_duplicate_products(client, db, world, claimed):
    pid, _ = claimed
    items = items_for((world.rx, 2))
    r = client.post(
        f"{API}/prescriptions/{pid}/signing-payload",
        json={"items": [{**items[0], "product_id": 999_999}]},
        headers=world.doctor.headers,
    )
    assert r.status_code == 422 and _error(r) == "unknown_product"
    r = client.post(
        f"{API}/prescriptions/{pid}/signing-payload",
        json={"items": items + items},
        headers=world.doctor.headers,
    )
    assert r.status_code == 422 and _error(r) == "repeated_product"


def test_validity_defaults_to_24_hours_and_allows_72(client, db, world, claimed):
    pid, payload = claimed
    validity = json.loads(base64.b64decode(payload))["validity"]
    issued = issuing.parse_signed_time(validity["issued_at"])
    assert issuing.parse_signed_time(validity["expires_at"]) - issued == timedelta(hours=24)
    payload = prepare(client, world.doctor, pid, items_for((world.rx, 2)), valid_hours=72)
    validity = json.loads(base64.b64decode(payload))["validity"]
    assert issuing.parse_signed_time(validity["expires_at"]) - issuing.parse_signed_time(
        validity["issued_at"]
    ) == timedelta(hours=72)


# --- another doctor ----------------------------------------------------------------------------


def test_another_doctor_cannot_act_on_a_claimed_request(client, db, world, claimed):
    pid, payload = claimed
    other = world.other_doctor
    for path, body in [
        ("claim", None),
        ("signing-payload", {"items": items_for((world.rx, 2))}),
        ("issue", {"payload": payload, "signature": sign_payload(other, payload)}),
        ("decline", {"reason": "not mine"}),
    ]:
        r = client.post(f"{API}/prescriptions/{pid}/{path}", json=body, headers=other.headers)
        assert r.status_code == 409, (path, r.text)
        assert _error(r) == "claimed_by_another_doctor"
    # Nor read it.
    for path in ("", "/audit", "/fhir", "/attachment"):
        assert (
            client.get(f"{API}/prescriptions/{pid}{path}", headers=other.headers).status_code == 404
        )
    assert _status(db, pid) == "claimed"


def test_doctor_must_claim_before_signing_or_declining(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    r = client.post(
        f"{API}/prescriptions/{pid}/decline", json={"reason": "x"}, headers=world.doctor.headers
    )
    assert r.status_code == 409 and _error(r) == "not_claimed"
    r = client.post(
        f"{API}/prescriptions/{pid}/signing-payload",
        json={"items": items_for((world.rx, 2))},
        headers=world.doctor.headers,
    )
    assert r.status_code == 409 and _error(r) == "not_claimed"


def test_claiming_twice_by_the_same_doctor_is_harmless(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    for _ in range(2):
        r = client.post(f"{API}/prescriptions/{pid}/claim", headers=world.doctor.headers)
        assert r.status_code == 200
    claims = db.scalar(
        select(func.count())
        .select_from(PrescriptionAudit)
        .where(
            PrescriptionAudit.prescription_id == uuid.UUID(pid),
            PrescriptionAudit.action == "claimed",
        )
    )
    assert claims == 1


# --- review ------------------------------------------------------------------------------------


def test_expired_prescription_cannot_be_approved(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)), valid_hours=1)
    later = clock.now() + timedelta(hours=1, seconds=1)
    with clock.use(lambda: later):
        r = _review(client, world, pid)
        assert r.status_code == 409 and _error(r) == "prescription_expired"
        db.expire(order)
        assert order.status is OrderStatus.AWAITING_PRESCRIPTION
        # Once the sweep has marked it expired, still refused.
        assert sweeps.expire_issued(db, later) == 1
        r = _review(client, world, pid)
        assert r.status_code == 409 and _error(r) == "prescription_expired"


def test_used_prescription_cannot_be_approved_again(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)))
    assert _review(client, world, pid).status_code == 200
    r = _review(client, world, pid)
    assert r.status_code == 409 and _error(r) == "prescription_used"
    db.expire(order)
    service.mark_dispensed(db, order, actor_id=world.pharmacist.id)
    assert _status(db, pid) == "dispensed"
    r = _review(client, world, pid)
    assert r.status_code == 409 and _error(r) == "prescription_used"
    # mark_dispensed is idempotent.
    service.mark_dispensed(db, order)
    actions = [
        e["action"]
        for e in client.get(f"{API}/prescriptions/{pid}/audit", headers=auth(world.patient)).json()[
            "items"
        ]
    ]
    assert actions.count("dispensed") == 1


def test_wrong_stores_pharmacist_gets_404(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)))
    r = _review(client, world, pid, who=world.other_pharmacist)
    assert r.status_code == 404 and _error(r) == "prescription_not_found"
    queue = client.get(f"{API}/prescriptions/queue", headers=auth(world.other_pharmacist)).json()
    assert queue["items"] == []
    assert _status(db, pid) == "issued"


def test_quantities_above_the_prescription_are_refused(client, db, world):
    order = world.order(db, rx_qty=3)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)))
    r = _review(client, world, pid)
    assert r.status_code == 422 and _error(r) == "exceeds_prescription"
    assert r.json()["error"]["details"]["items"] == [
        {"product_id": world.rx.id, "ordered": 3, "prescribed": 2, "reason": "more than prescribed"}
    ]
    db.expire(order)
    assert order.status is OrderStatus.AWAITING_PRESCRIPTION


def test_prescription_for_another_medicine_does_not_cover_the_order(client, db, world):
    from tests.factories import make_product

    other_medicine = make_product(db, rx_only=True)
    order = world.order(db, rx_qty=1)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((other_medicine, 1)))
    r = _review(client, world, pid)
    assert r.status_code == 422
    assert r.json()["error"]["details"]["items"][0]["reason"] == "not prescribed"


def test_review_before_issue_is_refused(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    r = _review(client, world, pid)
    assert r.status_code == 409 and _error(r) == "illegal_transition"


# --- the request -------------------------------------------------------------------------------


def test_one_open_request_per_order(client, db, world):
    order = world.order(db)
    first = request_rx(client, world.patient, order)
    r = client.post(f"{API}/prescriptions", json=request_body(order), headers=auth(world.patient))
    assert r.status_code == 409 and _error(r) == "prescription_already_requested"
    assert r.json()["error"]["details"]["prescription_id"] == first["id"]


def test_request_for_someone_elses_order_is_404(client, db, world):
    order = world.order(db)
    r = client.post(
        f"{API}/prescriptions", json=request_body(order), headers=auth(world.other_patient)
    )
    assert r.status_code == 404 and _error(r) == "order_not_found"
    r = client.post(
        f"{API}/prescriptions",
        json=request_body(order, order_id=str(uuid.uuid4())),
        headers=auth(world.patient),
    )
    assert r.status_code == 404


def test_request_for_an_order_not_awaiting_a_prescription_is_409(client, db, world):
    from tests.prescriptions.helpers import make_rx_order

    order = make_rx_order(
        db, world.patient, world.store, [(world.rx, 1, world.rx_lot)], status=OrderStatus.RELEASED
    )
    r = client.post(f"{API}/prescriptions", json=request_body(order), headers=auth(world.patient))
    assert r.status_code == 409 and _error(r) == "order_not_awaiting_prescription"


@pytest.mark.parametrize(
    "override",
    [
        {"id_number": "12"},
        {"id_number": "1101-<script>"},
        {"patient_name": ""},
        {"symptoms": "   "},
        {"order_id": "not-a-uuid"},
        {"allergies": "x" * 2001},
    ],
)
def test_request_with_bad_fields_is_422(client, db, world, override):
    order = world.order(db)
    r = client.post(
        f"{API}/prescriptions", json=request_body(order, **override), headers=auth(world.patient)
    )
    assert r.status_code == 422 and _error(r) == "invalid_input"
    assert db.scalar(select(func.count()).select_from(Prescription)) == 0


def test_request_malformed_json_and_wrong_content_type(client, db, world):
    headers = {**auth(world.patient), "Content-Type": "application/json"}
    r = client.post(f"{API}/prescriptions", content=b"{not json", headers=headers)
    assert r.status_code == 422 and _error(r) == "malformed_json"
    headers = {**auth(world.patient), "Content-Type": "text/plain"}
    r = client.post(f"{API}/prescriptions", content=b"hello", headers=headers)
    assert r.status_code == 415 and _error(r) == "unsupported_media_type"


# --- attachments -------------------------------------------------------------------------------


def _upload(client, world, order, filename, data, content_type):
    return client.post(
        f"{API}/prescriptions",
        data=request_body(order),
        files={"attachment": (filename, data, content_type)},
        headers=auth(world.patient),
    )


@pytest.mark.parametrize(
    "filename, data, content_type, expected",
    [
        ("scan.png", PNG, "image/png", "image/png"),
        ("photo.jpg", JPEG, "image/jpeg", "image/jpeg"),
        ("old-prescription.pdf", PDF, "application/pdf", "application/pdf"),
        ("upload", PDF, "application/octet-stream", "application/pdf"),
    ],
)
def test_accepted_attachments(client, db, world, filename, data, content_type, expected):
    order = world.order(db)
    r = _upload(client, world, order, filename, data, content_type)
    assert r.status_code == 201, r.text
    assert r.json()["attachment"]["content_type"] == expected
    got = client.get(r.json()["attachment"]["url"], headers=auth(world.patient))
    assert got.content == data and got.headers["content-type"] == expected


@pytest.mark.parametrize(
    "filename, data, content_type, code",
    [
        ("scan.png", PDF, "image/png", "attachment_type_mismatch"),
        ("scan.png", EXE, "image/png", "unsupported_attachment_type"),
        ("setup.exe", EXE, "application/octet-stream", "unsupported_attachment_type"),
        ("scan.png", b"<svg onload=alert(1)>", "image/png", "unsupported_attachment_type"),
        ("photo.jpg", PNG, "image/jpeg", "attachment_type_mismatch"),
        ("invoice.pdf.exe", PDF, "application/pdf", "attachment_type_mismatch"),
        ("empty.png", b"", "image/png", "empty_attachment"),
    ],
)
def test_wrong_type_attachments_are_refused(client, db, world, filename, data, content_type, code):
    order = world.order(db)
    r = _upload(client, world, order, filename, data, content_type)
    assert r.status_code == 422 and _error(r) == code, r.text
    assert db.scalar(select(func.count()).select_from(Prescription)) == 0


def test_oversized_attachment_is_refused(client, db, world):
    order = world.order(db)
    data = PNG + b"\x00" * (10 * 1024 * 1024)  # just over 10 MB
    r = _upload(client, world, order, "scan.png", data, "image/png")
    assert r.status_code == 413 and _error(r) == "attachment_too_large"
    assert db.scalar(select(func.count()).select_from(Prescription)) == 0
    # Exactly at the limit is fine.
    at_limit = PNG + b"\x00" * (10 * 1024 * 1024 - len(PNG))
    r = _upload(client, world, order, "scan.png", at_limit, "image/png")
    assert r.status_code == 201, r.text
    assert r.json()["attachment"]["size_bytes"] == 10 * 1024 * 1024


def test_attachment_must_be_a_file_field(client, db, world):
    order = world.order(db)
    r = client.post(
        f"{API}/prescriptions",
        data=request_body(order),
        files={"attachment": (None, "just text")},  # a plain form field, not a file
        headers=auth(world.patient),
    )
    assert r.status_code == 422 and _error(r) == "invalid_attachment"


# --- the audit table refuses change ------------------------------------------------------------


_AUDIT_REFUSED = "append-only|permission denied for table prescription_audit"


def test_audit_rows_cannot_be_updated_or_deleted(client, db, world, engine):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    assert db.scalar(select(func.count()).select_from(PrescriptionAudit)) == 1
    for statement in (
        "UPDATE prescription_audit SET reason = 'rewritten'",
        "UPDATE prescription_audit SET reason = 'x' WHERE false",
        "DELETE FROM prescription_audit",
        f"DELETE FROM prescription_audit WHERE prescription_id = '{pid}'",
    ):
        # The runtime role lacks the privilege; the trigger stands behind it for the owner
        # (tests/test_database_privileges.py).
        with pytest.raises(DBAPIError, match=_AUDIT_REFUSED), db.begin_nested():
            db.execute(text(statement))
    rows = db.scalars(select(PrescriptionAudit)).all()
    assert len(rows) == 1 and rows[0].reason is None
    # Nor through the ORM.
    rows[0].reason = "rewritten"
    with pytest.raises(DBAPIError, match=_AUDIT_REFUSED), db.begin_nested():
        db.flush()

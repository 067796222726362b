"""Attachments bounded: a per-patient quota on stored attachments and a rate limit on requests;
the attachment of a cancelled or expired request is purged after the retention period, and the
audit trail keeps its hash."""

import hashlib
from datetime import timedelta

from sqlalchemy import func, select

from o2o import clock
from o2o.config import get_settings
from prescriptions import sweeps
from prescriptions.models import Prescription, PrescriptionAttachment, PrescriptionAudit
from tests.factories import auth
from tests.prescriptions.helpers import API, PNG, request_body, request_rx


def _upload(client, world, order, data):
    return client.post(
        f"{API}/prescriptions",
        data=request_body(order),
        files={"attachment": ("scan.png", data, "image/png")},
        headers=auth(world.patient),
    )


def test_a_patient_cannot_store_more_than_the_quota(client, db, world, monkeypatch):
    monkeypatch.setattr(get_settings(), "prescription_attachment_quota_bytes", 3 * 1024 * 1024)
    data = PNG + b"\x00" * (2 * 1024 * 1024)
    assert _upload(client, world, world.order(db), data).status_code == 201
    r = _upload(client, world, world.order(db), data)
    assert r.status_code == 422 and r.json()["error"]["code"] == "attachment_quota_exceeded"
    assert db.scalar(select(func.count()).select_from(PrescriptionAttachment)) == 1
    assert db.scalar(select(func.count()).select_from(Prescription)) == 1
    # Another patient has a quota of their own.
    other = world.order(db, patient=world.other_patient)
    r = client.post(
        f"{API}/prescriptions",
        data=request_body(other),
        files={"attachment": ("scan.png", data, "image/png")},
        headers=auth(world.other_patient),
    )
    assert r.status_code == 201, r.text


def test_prescription_requests_are_rate_limited_per_patient(client, db, world, monkeypatch):
    monkeypatch.setattr(get_settings(), "prescription_request_rate_limit", "2/hour")
    request_rx(client, world.patient, world.order(db))
    request_rx(client, world.patient, world.order(db))
    r = client.post(
        f"{API}/prescriptions", json=request_body(world.order(db)), headers=auth(world.patient)
    )
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert db.scalar(select(func.count()).select_from(Prescription)) == 2


def test_attachments_of_cancelled_requests_are_purged_after_retention(client, db, world):
    data = PNG + b"\x01" * 1000
    order = world.order(db)
    created = _upload(client, world, order, data).json()
    kept = _upload(client, world, world.order(db), data).json()  # still open: kept
    r = client.post(
        f"{API}/orders/{order.id}/cancel",
        json={"reason": "Bought elsewhere"},
        headers=auth(world.patient),
    )
    assert r.status_code == 200, r.text

    days = get_settings().prescription_attachment_retention_days
    assert sweeps.purge_attachments(db, now=clock.now() + timedelta(days=days - 1)) == 0
    assert sweeps.purge_attachments(db, now=clock.now() + timedelta(days=days, hours=1)) == 1

    got = client.get(created["attachment"]["url"], headers=auth(world.patient))
    assert got.status_code == 404
    assert client.get(kept["attachment"]["url"], headers=auth(world.patient)).status_code == 200
    purged = db.scalars(
        select(PrescriptionAudit).where(PrescriptionAudit.action == "attachment_purged")
    ).all()
    assert len(purged) == 1
    assert purged[0].details["sha256"] == hashlib.sha256(data).hexdigest()
    assert str(purged[0].prescription_id) == created["id"]
    # Once only.
    assert sweeps.purge_attachments(db, now=clock.now() + timedelta(days=days + 5)) == 0

"""The queue: oldest first, paged, and only what awaits the caller."""

import uuid
from datetime import timedelta

from prescriptions.models import Prescription
from tests.factories import auth
from tests.prescriptions.helpers import API, claim_and_issue, items_for, request_rx


def _ids(page):
    return [i["id"] for i in page["items"]]


def test_doctor_queue_oldest_first_paged_and_only_unclaimed_or_mine(client, db, world):
    pids = [request_rx(client, world.patient, world.order(db, rx_qty=1))["id"] for _ in range(4)]
    # Make the request times distinct and out of creation order.
    base = db.get(Prescription, uuid.UUID(pids[0])).requested_at
    for minutes, pid in zip((30, 10, 20, 40), pids, strict=True):
        db.get(Prescription, uuid.UUID(pid)).requested_at = base - timedelta(minutes=minutes)
    db.flush()
    oldest_first = [pids[3], pids[0], pids[2], pids[1]]

    client.post(f"{API}/prescriptions/{pids[2]}/claim", headers=world.other_doctor.headers)
    client.post(f"{API}/prescriptions/{pids[1]}/claim", headers=world.doctor.headers)

    first = client.get(f"{API}/prescriptions/queue?limit=2", headers=world.doctor.headers).json()
    assert _ids(first) == [pids[3], pids[0]] and first["next_cursor"]
    second = client.get(
        f"{API}/prescriptions/queue?limit=2&cursor={first['next_cursor']}",
        headers=world.doctor.headers,
    ).json()
    # pids[2] is claimed by another doctor: not in this doctor's queue.
    assert _ids(second) == [pids[1]] and second["next_cursor"] is None
    assert second["items"][0]["claimed_by_me"] is True
    assert [p for p in oldest_first if p != pids[2]] == _ids(first) + _ids(second)
    assert first["items"][0]["waited_minutes"] >= 40

    other = client.get(f"{API}/prescriptions/queue", headers=world.other_doctor.headers).json()
    assert _ids(other) == [pids[3], pids[0], pids[2]]


def test_pharmacist_queue_shows_issued_of_their_stores(client, db, world):
    waiting = request_rx(client, world.patient, world.order(db, rx_qty=1))["id"]
    issued = request_rx(client, world.patient, world.order(db, rx_qty=1))["id"]
    claim_and_issue(client, world.doctor, issued, items_for((world.rx, 1)))
    page = client.get(f"{API}/prescriptions/queue", headers=auth(world.pharmacist)).json()
    assert _ids(page) == [issued]
    assert page["items"][0]["store_id"] == world.store.id
    assert page["items"][0]["expires_at"] is not None
    assert waiting not in _ids(page)


def test_bad_cursor_and_limit_are_422(client, world):
    for query in ("cursor=%%%", "cursor=bm90LWpzb24", "limit=0", "limit=101"):
        r = client.get(f"{API}/prescriptions/queue?{query}", headers=world.doctor.headers)
        assert r.status_code == 422, query


def test_openapi_documents_both_request_encodings(client):
    spec = client.get(f"{API}/openapi.json").json()
    content = spec["paths"]["/api/v1/prescriptions"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert (
        content["multipart/form-data"]["schema"]["properties"]["attachment"]["format"] == "binary"
    )

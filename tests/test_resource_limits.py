"""Resource limits: Redis-backed rate limits (429 + Retry-After) on sign-in, sign-up, search and
order placement; caps on page sizes, cart size, upload size and request bodies (413, also for a
streamed body, which is cut off without being read to the end); the production server's limits
on slow and idle connections."""

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest

from o2o.config import get_settings
from o2o.redis import get_redis
from o2o.users.models import Role
from tests.factories import (
    PASSWORD,
    auth,
    make_lot,
    make_product,
    make_store,
    make_user,
    offset,
    payment_app,
)
from tests.orders import helpers as order_helpers
from tests.prescriptions import helpers as rx_helpers

API = "/api/v1"
ROOT = Path(__file__).resolve().parent.parent


def _assert_limited(r) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 3600


def _limit_keys() -> list[bytes]:
    return list(get_redis().scan_iter(match="LIMITS:*"))


def test_failed_sign_ins_are_limited_then_even_the_right_password_waits(client, db):
    user = make_user(db, role=Role.PATIENT)
    allowed = get_settings().login_failures_allowed
    for _ in range(allowed):
        r = client.post(f"{API}/auth/token", data={"username": user.email, "password": "wrong"})
        assert r.status_code == 401
    r = client.post(f"{API}/auth/token", data={"username": user.email, "password": PASSWORD})
    _assert_limited(r)
    assert _limit_keys(), "the counters live in Redis"


def test_sign_ups_are_limited_per_address(client, monkeypatch):
    monkeypatch.setattr(get_settings(), "register_rate_limit", "2/hour")
    for n in range(2):
        body = {"email": f"new{n}@test.example.com", "password": "long-password-1", "name": "N"}
        assert client.post(f"{API}/auth/register", json=body).status_code == 201
    body = {"email": "new9@test.example.com", "password": "long-password-1", "name": "N"}
    _assert_limited(client.post(f"{API}/auth/register", json=body))
    assert _limit_keys()


def _stocked(db):
    store = make_store(db, at=offset(500, 0))
    product = make_product(db)
    make_lot(db, store, product, on_hand=100)
    return store, product


def test_searches_are_limited_per_address(client, db, monkeypatch):
    monkeypatch.setattr(get_settings(), "search_rate_limit", "3/minute")
    _, product = _stocked(db)
    body = {
        "location": {"lat": order_helpers.HOME[0], "lon": order_helpers.HOME[1]},
        "items": [{"product_id": product.id, "quantity": 1}],
    }
    for _ in range(3):
        assert client.post(f"{API}/search/stores", json=body).status_code == 200
    _assert_limited(client.post(f"{API}/search/stores", json=body))


def test_order_placement_is_limited_per_patient(client, db, monkeypatch):
    monkeypatch.setattr(get_settings(), "order_rate_limit", "2/minute")
    payment_app(db)
    _, product = _stocked(db)
    patient = make_user(db)
    body = order_helpers.order_body([(product.id, 1)])
    for _ in range(2):
        r = client.post(f"{API}/orders", json=body, headers=auth(patient))
        assert r.status_code == 201, r.text
    r = client.post(f"{API}/orders", json=body, headers=auth(patient))
    _assert_limited(r)
    # Another patient is not held back by the first one's window.
    other = make_user(db)
    assert client.post(f"{API}/orders", json=body, headers=auth(other)).status_code == 201


@pytest.mark.parametrize(
    ("role", "path"),
    [
        (Role.PATIENT, "/orders"),
        (Role.PATIENT, "/products"),
        (Role.PATIENT, "/stores/nearby?lat=31.23&lon=121.47"),
        (Role.DOCTOR, "/prescriptions/queue"),
        (Role.ADMIN, "/admin/doctor-keys"),
    ],
)
def test_page_size_is_capped_at_100(client, db, role, path):
    headers = auth(make_user(db, role=role))
    sep = "&" if "?" in path else "?"
    assert client.get(f"{API}{path}{sep}limit=100", headers=headers).status_code == 200
    r = client.get(f"{API}{path}{sep}limit=101", headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"


def test_cart_size_is_capped(client, db):
    patient = make_user(db)
    items = [(n, 1) for n in range(1, 52)]
    r = client.post(f"{API}/orders", json=order_helpers.order_body(items), headers=auth(patient))
    assert r.status_code == 422
    body = {
        "location": {"lat": 31.23, "lon": 121.47},
        "items": [dict(product_id=n, quantity=1) for n in range(1, 52)],
    }
    assert client.post(f"{API}/search/stores", json=body).status_code == 422


def test_upload_over_the_cap_is_refused_with_413(client, db, monkeypatch):
    monkeypatch.setattr(get_settings(), "prescription_attachment_max_bytes", 1024)
    store = make_store(db)
    product = make_product(db, rx_only=True)
    lot = make_lot(db, store, product)
    patient = make_user(db, role=Role.PATIENT)
    order = rx_helpers.make_rx_order(db, patient, store, [(product, 1, lot)])
    r = client.post(
        f"{API}/prescriptions",
        data=rx_helpers.request_body(order),
        files={"attachment": ("scan.png", rx_helpers.PNG + b"\x00" * 2048, "image/png")},
        headers=auth(patient),
    )
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "attachment_too_large"


@pytest.fixture
def small_body_app(monkeypatch):
    """The real app with a 64 KB body cap (the middleware reads the setting when built)."""
    from main import create_app

    monkeypatch.setattr(get_settings(), "max_body_bytes", 64 * 1024)
    return create_app()


def test_announced_body_over_the_cap_gets_413(small_body_app):
    from fastapi.testclient import TestClient

    with TestClient(small_body_app, raise_server_exceptions=False) as c:
        r = c.post(
            f"{API}/search/stores",
            content=b"x" * (65 * 1024),
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


def test_streamed_body_is_cut_off_at_the_cap(small_body_app):
    """A chunked body with no Content-Length: refused once the cap is passed, the rest unread."""
    chunk = b"x" * 16 * 1024
    total_chunks = 1000  # 16 MB if it were all read
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < total_chunks}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}/search/stores",
        "raw_path": f"{API}/search/stores".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    # A thread of its own: its own event loop, whatever else runs in the test thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(anyio.run, small_body_app, scope, receive, send).result(timeout=60)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert pulled <= 6, f"read {pulled} chunks of a body already over the cap"


def test_production_server_bounds_slow_and_idle_connections():
    """The image's server command (`o2o.serve`, uvicorn's options) carries the limits
    documented beside it in the Dockerfile."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    cmd = next(line for line in text.splitlines() if line.startswith("CMD"))
    for flag, value in [
        ("--timeout-keep-alive", "5"),
        ("--limit-concurrency", "256"),
        ("--backlog", "2048"),
        ("--h11-max-incomplete-event-size", "16384"),
        ("--workers", "4"),
    ]:
        assert re.search(rf'"{flag}",\s*"{value}"', cmd), flag
    assert get_settings().max_body_bytes <= 16 * 1024 * 1024

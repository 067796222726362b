"""Throttling nobody can hold: failed sign-ins are counted per account and address, so an attacker
cannot lock the owner out; guessing from many addresses slows down with growing delays that spare
the addresses the owner signs in from; client addresses come from trusted proxies only."""

import pytest
from fastapi.testclient import TestClient

from o2o.config import get_settings
from tests.factories import PASSWORD, make_user

API = "/api/v1"
PROXY = ("10.0.0.5", 40000)


@pytest.fixture
def behind_proxy(app, monkeypatch):
    """A client connecting through the trusted reverse proxy; each call names its address."""
    monkeypatch.setattr(get_settings(), "trusted_proxies", "10.0.0.0/24")
    with TestClient(app, client=PROXY, raise_server_exceptions=False) as c:

        def sign_in(email: str, password: str, address: str) -> int:
            r = c.post(
                f"{API}/auth/token",
                data={"username": email, "password": password},
                headers={"X-Forwarded-For": f"{address}, 10.0.0.7"},
            )
            return r.status_code

        yield sign_in


def test_an_attacker_cannot_lock_the_owner_out(db, behind_proxy):
    user = make_user(db)
    for _ in range(8):
        behind_proxy(user.email, "wrong-password", "203.0.113.9")
    assert behind_proxy(user.email, PASSWORD, "203.0.113.9") == 429  # the attacker is held
    assert behind_proxy(user.email, PASSWORD, "198.51.100.7") == 200  # the owner is not


def test_guessing_from_many_addresses_slows_down_but_spares_the_owners_address(
    db, behind_proxy, monkeypatch
):
    monkeypatch.setattr(get_settings(), "login_account_ceiling", 3)
    user = make_user(db)
    assert behind_proxy(user.email, PASSWORD, "198.51.100.7") == 200  # the owner's usual address
    statuses = [behind_proxy(user.email, "wrong-password", f"203.0.113.{n}") for n in range(1, 7)]
    assert statuses[:3] == [401, 401, 401]
    assert 429 in statuses[3:]  # past the ceiling, a new address must wait
    assert behind_proxy(user.email, PASSWORD, "203.0.113.99") == 429
    assert behind_proxy(user.email, PASSWORD, "198.51.100.7") == 200


def test_forwarded_for_from_an_untrusted_peer_is_ignored(app, db, monkeypatch):
    monkeypatch.setattr(get_settings(), "trusted_proxies", "10.0.0.0/24")
    user = make_user(db)
    with TestClient(app, client=("198.51.100.50", 1), raise_server_exceptions=False) as c:
        for n in range(5):
            r = c.post(
                f"{API}/auth/token",
                data={"username": user.email, "password": "wrong-password"},
                headers={"X-Forwarded-For": f"192.0.2.{n}"},
            )
            assert r.status_code == 401
        r = c.post(
            f"{API}/auth/token",
            data={"username": user.email, "password": PASSWORD},
            headers={"X-Forwarded-For": "192.0.2.200"},
        )
    assert r.status_code == 429

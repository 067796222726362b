"""Webhooks stay outside: registration refuses URLs that lead inside, every send resolves and
checks again and connects to the address it checked, and the local allow-list (the suite's own
receivers on 127.0.0.1) is honoured in development and test only."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from o2o import outbound, outbox
from o2o.config import Settings
from o2o.db import session_scope
from o2o.users.models import Role
from o2o.webhooks import relay
from o2o.webhooks.models import OutboxDelivery
from tests.dispatch import helpers
from tests.factories import auth

API = "/api/v1"
SECRET = "a-test-secret-that-is-long-enough-0123"
INSIDE = [
    "http://localhost:8000/hook",
    "http://127.0.0.2/hook",
    "http://[::1]/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.9/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://0.0.0.0/hook",
    "https://db:5432/",
    "https://redis/",
    "https://api.internal/hook",
    "https://printer.local/hook",
    "https://user:pw@hooks.example.com/hook",
]


@pytest.mark.parametrize("url", INSIDE)
def test_registration_refuses_urls_that_lead_inside(db, client, url):
    admin = helpers.make_user_fast(db, Role.ADMIN)
    r = client.post(
        f"{API}/admin/webhooks", json={"url": url, "event_types": ["*"]}, headers=auth(admin)
    )
    assert r.status_code == 422, r.text
    assert relay.list_endpoints(db) == []


@pytest.mark.parametrize("url", INSIDE[::4])
def test_payment_app_registration_refuses_urls_that_lead_inside(db, client, url):
    """A payment app's URL receives signed payment and refund requests: the same rule holds."""
    admin = helpers.make_user_fast(db, Role.ADMIN)
    r = client.post(
        f"{API}/admin/payment-apps",
        json={"name": "Inside pay", "webhook_url": url},
        headers=auth(admin),
    )
    assert r.status_code == 422, r.text
    assert relay.list_endpoints(db) == []


def test_outside_production_https_is_required_and_the_allow_list_is_ignored(monkeypatch):
    production = Settings(
        env="production",
        database_url="postgresql+psycopg://app:pw@db:5432/o2o",
        token_secret_key="t" * 40,
        session_secret_key="s" * 40,
        identity_pepper="p" * 40,
        outbound_allowed_hosts="127.0.0.1",
    )
    outbound.check_registration("http://127.0.0.1/hook")  # test: allow-listed
    monkeypatch.setattr(outbound, "get_settings", lambda: production)
    with pytest.raises(outbound.UnsafeURL, match="https"):
        outbound.check_registration("http://hooks.example.com/hook")
    with pytest.raises(outbound.UnsafeURL):
        outbound.check_registration("https://127.0.0.1/hook")
    # A public address is fine, and is what the request is pinned to.
    target = outbound.resolve_for_send("https://93.184.215.14:8443/hook")
    url, headers, extensions = outbound.pinned_request_args(target)
    assert url == "https://93.184.215.14:8443/hook" and headers["Host"] == "93.184.215.14:8443"


def test_pinned_request_keeps_the_name_for_host_and_tls():
    target = outbound.Target(
        url="https://hooks.example.com/o2o?x=1", host="hooks.example.com", address="203.0.113.7"
    )
    url, headers, extensions = outbound.pinned_request_args(target)
    assert url == "https://203.0.113.7/o2o?x=1"
    assert headers == {"Host": "hooks.example.com"}
    assert extensions == {"sni_hostname": "hooks.example.com"}


class _Listener:
    """An HTTP server on another loopback address, standing for an inside service that a
    registered name was re-pointed at after registration."""

    def __init__(self, host: str) -> None:
        self.hits = 0
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                listener.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_each_send_checks_again_and_refuses_an_inside_address(committed):
    inside = _Listener("127.0.0.2")
    try:
        # Stored as if it had passed registration (the name then resolved outside).
        with committed() as session:
            relay.create_endpoint(
                session, url=inside.url, event_types=["*"], secret=SECRET, description="rebound"
            )
            outbox.emit(session, "order.status_changed", "order", "o-1", {"n": 1})
            session.commit()
        result = relay.relay(session_scope)
        assert result.delivered == 0 and inside.hits == 0
        with committed() as session:
            (delivery,) = session.scalars(select(OutboxDelivery)).all()
        assert delivery.last_error.startswith("refused:")
    finally:
        inside.close()

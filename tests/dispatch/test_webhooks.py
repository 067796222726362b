"""Webhooks: a real HTTP receiver on 127.0.0.1 checks signatures, retries after 500s with
exponential backoff (on a stepped clock, not wall-clock sleeps), and that no event reaches an
endpoint twice; the admin API registers endpoints."""

import hashlib
import hmac
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from o2o import clock, outbox
from o2o.config import get_settings
from o2o.db import session_scope
from o2o.users.models import Role
from o2o.webhooks import relay
from o2o.webhooks.models import DeliveryStatus, OutboxDelivery
from tests.dispatch import helpers
from tests.factories import auth

API = "/api/v1"
SECRET = "a-test-secret-that-is-long-enough-0123"


class Receiver:
    """A webhook endpoint: answers 500 to the first `fail_first` tries of each event, then 200."""

    def __init__(self, *, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.tries: Counter[str] = Counter()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event_id = self.headers.get("X-O2O-Event-Id", "")
                with receiver.lock:
                    tries = receiver.tries[event_id]
                    receiver.tries[event_id] += 1
                status = 500 if tries < receiver.fail_first else 200
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver.lock:
                    receiver.requests.append(
                        {"headers": dict(self.headers), "body": body, "status": status}
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/o2o"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class SteppedClock:
    """The relay's clock, stepped by the test: backoff is checked without waiting for it.

    It starts a second ahead of real time, so deliveries the fan-out stamps with the database's
    now() are due at once.
    """

    def __init__(self) -> None:
        self.now = clock.now() + timedelta(seconds=1)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def relay_clock() -> Iterator[SteppedClock]:
    stepped = SteppedClock()
    with clock.use(lambda: stepped.now):
        yield stepped


def _deliveries(committed) -> list[OutboxDelivery]:
    with committed() as session:
        return list(session.scalars(select(OutboxDelivery).order_by(OutboxDelivery.id)))


def _register(committed, url: str, event_types: list[str]) -> int:
    with committed() as session:
        endpoint = relay.create_endpoint(
            session, url=url, event_types=event_types, secret=SECRET, description="test"
        )
        session.commit()
        return endpoint.id


def _emit(committed, *event_types: str) -> list[str]:
    with committed() as session:
        events = [
            outbox.emit(session, t, "order", f"order-{i}", {"n": i, "type": t})
            for i, t in enumerate(event_types)
        ]
        session.commit()
        return [str(e.id) for e in events]


def test_signed_deliveries_are_retried_with_backoff_and_never_duplicated(committed, relay_clock):
    base_s = get_settings().webhook_backoff_base_s
    with Receiver(fail_first=1) as receiver:
        _register(committed, receiver.url, ["order.*"])
        wanted = _emit(committed, "order.sla_at_risk", "order.sla_breached", "order.status_changed")
        _emit(committed, "prescription.issued")  # not subscribed
        sent_from = int(time.time())

        first = relay.relay(session_scope)
        assert (first.fanned_out, first.delivered, first.retrying) == (3, 0, 3)
        failed_at = relay_clock.now
        for row in _deliveries(committed):
            assert (row.status, row.attempts, row.last_status_code) == (
                DeliveryStatus.PENDING,
                1,
                500,
            )
            assert row.next_attempt_at == failed_at + timedelta(seconds=base_s)

        relay_clock.advance(base_s - 1)  # the backoff has not passed: nothing is sent
        early = relay.relay(session_scope)
        assert (early.delivered, early.retrying, len(receiver.requests)) == (0, 0, 3)

        relay_clock.advance(1)
        second = relay.relay(session_scope)
        assert (second.delivered, second.retrying) == (3, 0)
        relay_clock.advance(3600)
        third = relay.relay(session_scope)
        assert (third.fanned_out, third.delivered, third.retrying) == (0, 0, 0)
        sent_until = int(time.time())

    by_event = defaultdict(list)
    for request in receiver.requests:
        headers, body = request["headers"], request["body"]
        timestamp = headers["X-O2O-Timestamp"]
        expected = hmac.new(
            SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
        ).hexdigest()
        assert headers["X-O2O-Signature"] == f"sha256={expected}"
        assert relay.verify(SECRET, timestamp, body, headers["X-O2O-Signature"])
        assert sent_from <= int(timestamp) <= sent_until  # real time, whatever the relay's clock
        payload = json.loads(body)
        assert payload["id"] == headers["X-O2O-Event-Id"]
        assert payload["type"] == headers["X-O2O-Event-Type"]
        by_event[payload["id"]].append((request["status"], body))
    assert sorted(by_event) == sorted(wanted)
    for attempts in by_event.values():
        assert [status for status, _ in attempts] == [500, 200]
        assert attempts[0][1] == attempts[1][1]  # a retry is byte-for-byte the same event
    acknowledged = [r["headers"]["X-O2O-Event-Id"] for r in receiver.requests if r["status"] == 200]
    assert len(acknowledged) == len(set(acknowledged)) == 3
    assert {(r.status, r.attempts) for r in _deliveries(committed)} == {
        (DeliveryStatus.DELIVERED, 2)
    }


def test_two_relays_at_once_never_send_the_same_delivery(committed, monkeypatch):
    monkeypatch.setattr(get_settings(), "webhook_batch_size", 4)
    with Receiver(delay_s=0.02) as receiver:
        _register(committed, receiver.url, ["*"])
        wanted = _emit(committed, *["order.status_changed"] * 30)
        barrier = threading.Barrier(2)
        errors = []

        def run() -> None:
            try:
                barrier.wait(timeout=10)
                relay.relay(session_scope, max_batches=20)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    received = [r["headers"]["X-O2O-Event-Id"] for r in receiver.requests]
    assert sorted(received) == sorted(wanted)  # every one, each exactly once


def test_backoff_doubles_and_a_delivery_is_given_up_after_the_last_attempt(
    committed, relay_clock, monkeypatch
):
    monkeypatch.setattr(get_settings(), "webhook_max_attempts", 3)
    base_s = get_settings().webhook_backoff_base_s
    with Receiver(fail_first=100) as receiver:
        _register(committed, receiver.url, ["order.sla_breached"])
        _emit(committed, "order.sla_breached")
        waits = []
        for attempt in (1, 2):
            assert relay.relay(session_scope).retrying == 1
            (row,) = _deliveries(committed)
            assert row.attempts == attempt
            waits.append((row.next_attempt_at - relay_clock.now).total_seconds())
            relay_clock.advance(waits[-1])
        assert waits == [base_s, 2 * base_s]
        assert relay.relay(session_scope).gave_up == 1
        relay_clock.advance(24 * 3600)
        assert relay.relay(session_scope) == relay.RelayResult()
    assert len(receiver.requests) == 3
    (row,) = _deliveries(committed)
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.GAVE_UP, 3, 500)


def test_an_unreachable_endpoint_is_retried_later(committed, relay_clock):
    with Receiver() as receiver:
        url = receiver.url
    # The receiver is gone: the connection is refused.
    _register(committed, url, ["*"])
    _emit(committed, "order.created")
    result = relay.relay(session_scope)
    assert result.retrying == 1
    with committed() as session:
        row = session.scalars(select(OutboxDelivery)).one()
        assert row.status is DeliveryStatus.PENDING and row.attempts == 1
        assert "ConnectError" in row.last_error


def test_verify_accepts_a_fresh_signature_and_refuses_tampering():
    body = b'{"id":"e1"}'
    now = 1_800_000_000
    header = relay.sign(SECRET, now, body)
    assert relay.verify(SECRET, str(now), body, header, now=now + 10)
    assert not relay.verify(SECRET, str(now), body + b" ", header, now=now)
    assert not relay.verify("another-secret", str(now), body, header, now=now)
    assert not relay.verify(SECRET, str(now), body, header, now=now + 3600)  # replayed later
    assert not relay.verify(SECRET, "soon", body, header, now=now)


def test_admin_registers_lists_and_removes_endpoints(db, client):
    admin = helpers.make_user_fast(db, Role.ADMIN)
    body = {
        "url": "https://hooks.example.com/o2o",
        "event_types": ["order.*", "prescription.issued"],
    }
    r = client.post(f"{API}/admin/webhooks", json=body, headers=auth(admin))
    assert r.status_code == 201, r.text
    created = r.json()
    assert len(created["secret"]) >= 32
    assert created["event_types"] == ["order.*", "prescription.issued"]

    listed = client.get(f"{API}/admin/webhooks", headers=auth(admin)).json()
    assert [e["id"] for e in listed["items"]] == [created["id"]]
    assert "secret" not in listed["items"][0]

    r = client.delete(f"{API}/admin/webhooks/{created['id']}", headers=auth(admin))
    assert r.status_code == 204
    listed = client.get(f"{API}/admin/webhooks", headers=auth(admin)).json()
    assert listed["items"][0]["is_active"] is False
    assert client.delete(f"{API}/admin/webhooks/999999", headers=auth(admin)).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://hooks.example.com", "event_types": ["*"]},
        {"url": "not a url", "event_types": ["*"]},
        {"url": "https://hooks.example.com", "event_types": []},
        {"url": "https://hooks.example.com", "event_types": ["Order Created"]},
        {"url": "https://hooks.example.com", "event_types": ["*"], "secret": "short"},
        {"url": "https://hooks.example.com", "event_types": ["*"], "extra": 1},
    ],
)
def test_bad_webhook_registrations_are_refused(db, client, body):
    admin = helpers.make_user_fast(db, Role.ADMIN)
    r = client.post(f"{API}/admin/webhooks", json=body, headers=auth(admin))
    assert r.status_code == 422
    assert relay.list_endpoints(db) == []


def test_only_admins_manage_webhooks(db, client):
    for role in (Role.PATIENT, Role.PHARMACIST, Role.COURIER, Role.DOCTOR):
        headers = auth(helpers.make_user_fast(db, role))
        body = {"url": "https://hooks.example.com/x", "event_types": ["*"]}
        assert client.post(f"{API}/admin/webhooks", json=body, headers=headers).status_code == 403
        assert client.get(f"{API}/admin/webhooks", headers=headers).status_code == 403
    assert relay.list_endpoints(db) == []

"""Redis stopped: the API keeps serving search and order reads (and takes orders), readiness
reports Redis down, and the queued work (the outbox relay, sent by beat through the broker)
resumes by itself once Redis is back: an event written during the outage is delivered."""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o.payments.models import Payment
from o2o.webhooks import relay
from tests.factories import (
    auth,
    make_lot,
    make_product,
    make_store,
    make_user,
    offset,
    payment_app,
    payment_event,
)
from tests.faults.conftest import celery_worker, kill, running_api, service_env
from tests.orders.helpers import HOME, order_body
from tests.polling import wait_for
from tests.spare_services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.worker]


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (the http.server hook name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    handler = type("Receiver", (_Receiver,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler.received
    server.shutdown()
    server.server_close()


def _created(received: list[dict], order_id: str) -> bool:
    return any(e["type"] == "order.created" and e["data"]["order_id"] == order_id for e in received)


def test_with_redis_down_reads_work_readiness_says_so_and_queued_work_resumes(
    spare_pg, spare_engine, spare_redis, receiver, tmp_path
):
    server, received = receiver
    with Session(spare_engine, expire_on_commit=False) as s:
        store = make_store(s, at=offset(500, 0))
        product = make_product(s)
        make_lot(s, store, product, on_hand=1000)
        headers = auth(make_user(s))
        payment_app(s)
        relay.create_endpoint(
            s,
            url=f"http://127.0.0.1:{server.server_address[1]}/hook",
            event_types=["order.created"],
            secret=None,
            description="fault test receiver",
        )
        s.commit()
    env = service_env(spare_pg.url, spare_redis.url, O2O_ORDER_RATE_LIMIT="100000/minute")
    search = {
        "location": {"lat": HOME[0], "lon": HOME[1]},
        "items": [{"product_id": product.id, "quantity": 1}],
        "fulfillment": "any",
        "limit": 5,
    }
    # A worker with its beat inside: the beat sends the relay every few seconds via Redis.
    worker = celery_worker(
        env, "faults-relay-worker", "--pool=solo", "-B", "-s", str(tmp_path / "beat")
    )
    try:
        with (
            running_api(env, "faults-api-redis.log") as base,
            httpx.Client(base_url=base, timeout=20, headers=headers) as api,
        ):

            def place() -> str:
                r = api.post(
                    "/api/v1/orders",
                    json=order_body([(product.id, 1)]),
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                )
                assert r.status_code == 201, r.text
                return r.json()["id"]

            before = place()
            # Paid as the payment app pays: a signed captured event.
            with Session(spare_engine) as s:
                payment = s.scalar(select(Payment).where(Payment.order_id == uuid.UUID(before)))
                event_headers, raw = payment_event(s, payment.id)
            paid = api.post("/api/v1/payments/events", content=raw, headers=event_headers)
            assert paid.status_code == 200, paid.text
            wait_for(lambda: _created(received, before), 90, "the relay before the outage", 0.5)

            spare_redis.stop()
            r = api.get("/readyz")
            assert r.status_code == 503
            assert r.json()["error"]["details"] == {"database": "ok", "redis": "down"}

            found = api.post("/api/v1/search/stores", json=search)
            assert found.status_code == 200, found.text
            assert found.json()["results"][0]["store"]["id"] == store.id
            assert api.get(f"/api/v1/orders/{before}").json()["status"] == "released"
            assert before in [o["id"] for o in api.get("/api/v1/orders").json()["items"]]

            # The database is the source of truth: orders are still taken, their events wait in
            # the outbox while nothing can carry the relay.
            during = place()
            # Longer than the beat's relay period: with no broker, nothing carries the work.
            time.sleep(6)
            assert not _created(received, during)

            spare_redis.start()
            wait_for(lambda: api.get("/readyz").status_code == 200, 30, "readiness", 0.5)
            wait_for(lambda: _created(received, during), 90, "the relay after Redis returned", 0.5)
    finally:
        kill(worker)
    # Each event was delivered once: the outage caused no repeat.
    ids = [e["id"] for e in received]
    assert len(ids) == len(set(ids))

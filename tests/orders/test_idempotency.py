"""Idempotency-Key on POST /orders, with real commits: a retry gets the first answer."""

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.util import await_only

from o2o import clock, idempotency
from o2o.config import get_settings
from o2o.db import psycopg_url, session_scope
from o2o.idempotency import IdempotencyRecord
from o2o.order_flow import checkout, limits
from o2o.order_flow.router import ORDERS_PATH
from o2o.order_flow.schemas import OrderIn
from o2o.order_flow.tasks import purge_idempotency_records
from o2o.orders.models import Order
from o2o.users.models import Role
from stores.models import Lot
from tests.factories import auth, make_lot, make_product, make_store, make_user, offset
from tests.orders.helpers import order_body
from tests.polling import wait_for

URL = "/api/v1/orders"


@pytest.fixture
def world(real_client):
    with session_scope() as s:
        store = make_store(s, at=offset(400, 0))
        product = make_product(s)
        other = make_product(s)
        lot = make_lot(s, store, product, on_hand=10)
        make_lot(s, store, other, on_hand=10)
        patient = make_user(s, role=Role.PATIENT)
        second = make_user(s, role=Role.PATIENT)
        return {
            "client": real_client,
            "lot_id": lot.id,
            "product_id": product.id,
            "other_id": other.id,
            "patient": patient,
            "headers": auth(patient),
            "second_headers": auth(second),
        }


def orders() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Order))


def reserved(w) -> int:
    with session_scope() as s:
        return s.get(Lot, w["lot_id"]).reserved


def keyed(w, key: str, headers=None) -> dict:
    return {**(headers or w["headers"]), "Idempotency-Key": key}


def fingerprint(body: dict) -> str:
    return idempotency.request_hash("POST", ORDERS_PATH, OrderIn(**body).model_dump(mode="json"))


def test_a_retry_with_the_same_key_returns_the_first_order_not_a_second(world):
    client, body = world["client"], order_body([(world["product_id"], 2)])
    first = client.post(URL, json=body, headers=keyed(world, "k-1"))
    again = client.post(URL, json=body, headers=keyed(world, "k-1"))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("Idempotency-Replayed") == "true"
    assert orders() == 1 and reserved(world) == 2


def test_the_same_key_with_another_body_is_refused(world):
    client = world["client"]
    client.post(URL, json=order_body([(world["product_id"], 2)]), headers=keyed(world, "k-2"))
    r = client.post(URL, json=order_body([(world["product_id"], 3)]), headers=keyed(world, "k-2"))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "idempotency_key_reused"
    assert orders() == 1 and reserved(world) == 2


def test_keys_belong_to_one_patient(world):
    client, body = world["client"], order_body([(world["product_id"], 1)])
    a = client.post(URL, json=body, headers=keyed(world, "shared"))
    b = client.post(URL, json=body, headers=keyed(world, "shared", world["second_headers"]))
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


def test_a_refusal_is_replayed_too(world):
    client = world["client"]
    body = order_body([(world["product_id"], 11)])
    first = client.post(URL, json=body, headers=keyed(world, "k-3"))
    assert first.status_code == 409 and first.json()["error"]["code"] == "insufficient_stock"
    with session_scope() as s:
        s.get(Lot, world["lot_id"]).on_hand = 50
    again = client.post(URL, json=body, headers=keyed(world, "k-3"))
    assert (again.status_code, again.json()) == (409, first.json())
    assert client.post(URL, json=body, headers=keyed(world, "k-4")).status_code == 201


def test_without_a_key_each_post_is_a_new_order(world):
    client, body = world["client"], order_body([(world["product_id"], 1)])
    assert client.post(URL, json=body, headers=world["headers"]).status_code == 201
    assert client.post(URL, json=body, headers=world["headers"]).status_code == 201
    assert orders() == 2


def _placements_wait(monkeypatch, started, release: threading.Event) -> None:
    """Make each placement call `started` as its work begins, then wait until `release` is set.
    The placement runs in the event loop: it waits there as on a slow database, letting the loop
    serve other requests meanwhile."""
    real_place = checkout.place

    def slow_place(*args, **kwargs):
        started()
        assert await_only(asyncio.to_thread(release.wait, 30))
        return real_place(*args, **kwargs)

    monkeypatch.setattr(checkout, "place", slow_place)


def test_a_twin_sent_while_the_first_is_in_flight_gets_409_then_the_first_answer(
    world, monkeypatch
):
    client, body = world["client"], order_body([(world["product_id"], 1)])
    inside, release = threading.Event(), threading.Event()
    _placements_wait(monkeypatch, inside.set, release)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(client.post, URL, json=body, headers=keyed(world, "k-5"))
        assert inside.wait(20)
        twin = client.post(URL, json=body, headers=keyed(world, "k-5"))
        release.set()
        first = first.result(timeout=30)
    assert twin.status_code == 409
    assert twin.json()["error"]["code"] == "request_in_flight"
    assert first.status_code == 201
    retry = client.post(URL, json=body, headers=keyed(world, "k-5"))
    assert retry.json()["id"] == first.json()["id"]
    assert orders() == 1


def test_many_concurrent_twins_make_exactly_one_order(world):
    client, body = world["client"], order_body([(world["product_id"], 1)])
    start = threading.Barrier(8)

    def send(_):
        start.wait()
        return client.post(URL, json=body, headers=keyed(world, "k-6"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(send, range(8)))
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    assert all(
        r.status_code == 201 or r.json()["error"]["code"] == "request_in_flight" for r in responses
    )
    assert orders() == 1 and reserved(world) == 1


def test_placements_at_work_hold_none_of_the_connections_the_hot_reads_share(world, monkeypatch):
    # A placement reads its patient and claims its key on a driver connection lent for each and
    # taken back at once: as many placements at work as the driver pool has connections leave
    # the nearby list its connections (held, they would starve it until the pool timed out).
    client, body = world["client"], order_body([(world["product_id"], 1)])
    in_flight = get_settings().db_async_pool_size
    with session_scope() as s:
        patients = [auth(make_user(s, role=Role.PATIENT)) for _ in range(in_flight)]
    at_work, release = threading.Semaphore(0), threading.Event()
    _placements_wait(monkeypatch, at_work.release, release)
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        placing = [
            pool.submit(client.post, URL, json=body, headers={**h, "Idempotency-Key": "k-busy"})
            for h in patients
        ]
        assert all(at_work.acquire(timeout=20) for _ in patients)
        lat, lon = body["location"]["lat"], body["location"]["lon"]
        nearby = client.get("/api/v1/stores/nearby", params={"lat": lat, "lon": lon})
        release.set()
        placed = [f.result(timeout=60) for f in placing]
    assert nearby.status_code == 200, nearby.text
    assert len(nearby.json()["items"]) == 1
    assert [p.status_code for p in placed] == [201] * in_flight
    assert orders() == in_flight and reserved(world) == in_flight


def test_a_patients_placement_at_work_keeps_none_of_their_next_claims_waiting(world, monkeypatch):
    # The first placement holds its patient's lock (one placement per patient at a time) while
    # the same patient sends as many more, each with a key of its own: their keys are claimed on
    # lent driver connections without waiting for that lock (a claim's row refers to the
    # patient), and the nearby list is served meanwhile. They wait for the lock on the writers'.
    client, body = world["client"], order_body([(world["product_id"], 1)])
    more = get_settings().db_async_pool_size
    locked, release = threading.Event(), threading.Event()
    real_check = limits._check_caps

    def first_holds_the_lock(*args, **kwargs):
        real_check(*args, **kwargs)
        if not locked.is_set():
            locked.set()
            assert await_only(asyncio.to_thread(release.wait, 30))

    monkeypatch.setattr(limits, "_check_caps", first_holds_the_lock)
    with ThreadPoolExecutor(max_workers=more + 1) as pool:
        first = pool.submit(client.post, URL, json=body, headers=keyed(world, "k-first"))
        assert locked.wait(20)
        placing = [
            pool.submit(client.post, URL, json=body, headers=keyed(world, f"k-next-{i}"))
            for i in range(more)
        ]
        try:
            wait_for(
                lambda: _claims(world["patient"].id) == more + 1,
                20,
                "the next placements' keys claimed while the first holds its lock",
            )
            lat, lon = body["location"]["lat"], body["location"]["lon"]
            nearby = client.get("/api/v1/stores/nearby", params={"lat": lat, "lon": lon})
        finally:
            release.set()
        answers = [f.result(timeout=60) for f in [first, *placing]]
    assert nearby.status_code == 200, nearby.text
    assert answers[0].status_code == 201
    assert all(
        a.status_code == 201 or a.json()["error"]["code"] == "too_many_open_orders" for a in answers
    ), [a.text for a in answers]


def test_a_twin_of_a_placement_committing_its_answer_waits_at_most_the_lock_timeout(
    world, monkeypatch
):
    # The first placement has written its answer to its key's row and not committed (the lots'
    # takes and the COMMIT come next): a twin's claim waits on that row, on a driver connection,
    # for the driver pool's lock timeout at most, then answers 409 `request_in_flight`.
    client, body = world["client"], order_body([(world["product_id"], 1)])
    answered, release = threading.Event(), threading.Event()
    real_finish = idempotency.finish

    def slow_commit(*args, **kwargs):
        done = real_finish(*args, **kwargs)
        answered.set()
        assert await_only(asyncio.to_thread(release.wait, 30))
        return done

    monkeypatch.setattr(idempotency, "finish", slow_commit)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(client.post, URL, json=body, headers=keyed(world, "k-twin"))
        assert answered.wait(20)
        twin = pool.submit(client.post, URL, json=body, headers=keyed(world, "k-twin"))
        try:
            twin = twin.result(timeout=15)
        finally:
            release.set()
        first = first.result(timeout=30)
    assert twin.status_code == 409, twin.text
    assert twin.json()["error"]["code"] == "request_in_flight"
    assert first.status_code == 201
    retry = client.post(URL, json=body, headers=keyed(world, "k-twin"))
    assert retry.json()["id"] == first.json()["id"]
    assert orders() == 1


def _claims(user_id: int) -> int:
    with session_scope() as s:
        return s.scalar(
            select(func.count())
            .select_from(IdempotencyRecord)
            .where(IdempotencyRecord.user_id == user_id)
        )


def test_a_claim_left_by_a_crashed_request_is_taken_over_after_a_minute(world):
    client, body = world["client"], order_body([(world["product_id"], 1)])
    with session_scope() as s:
        s.add(
            IdempotencyRecord(
                user_id=world["patient"].id,
                key="k-7",
                request_hash=fingerprint(body),
                claim_token=uuid.uuid4(),
                created_at=clock.now() - timedelta(seconds=30),
                expires_at=clock.now() + timedelta(hours=24),
            )
        )
    assert client.post(URL, json=body, headers=keyed(world, "k-7")).status_code == 409
    with session_scope() as s:
        s.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "k-7")
            .values(created_at=clock.now() - timedelta(seconds=61))
        )
    r = client.post(URL, json=body, headers=keyed(world, "k-7"))
    assert r.status_code == 201
    assert client.post(URL, json=body, headers=keyed(world, "k-7")).json()["id"] == r.json()["id"]


def _claim(user_id: int, key: str) -> idempotency.Claim | idempotency.Replay:
    """Claim a key as a placement does: on a connection of its own, in autocommit."""

    async def claiming():
        url = psycopg_url(get_settings().database_url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await idempotency.claim(conn, user_id=user_id, key=key, request_hash="h")

    return asyncio.run(claiming())


def test_a_request_whose_claim_was_taken_over_cannot_store_its_answer(world):
    user_id = world["patient"].id
    old = _claim(user_id, "k-8")
    with session_scope() as s:
        s.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "k-8")
            .values(created_at=clock.now() - timedelta(minutes=5))
        )
    new = _claim(user_id, "k-8")
    assert isinstance(new, idempotency.Claim) and new.token != old.token
    with session_scope() as s:
        assert idempotency.finish(s, old, 201, {"id": "late"}) is False
        assert idempotency.finish(s, new, 201, {"id": "winner"}) is True
    assert _claim(user_id, "k-8") == idempotency.Replay(201, {"id": "winner"})


def test_an_unexpected_failure_gives_the_key_back(world, monkeypatch):
    client, body = world["client"], order_body([(world["product_id"], 1)])

    def broken(*args, **kwargs):
        raise RuntimeError("database fell over")

    monkeypatch.setattr(checkout, "place", broken)
    assert client.post(URL, json=body, headers=keyed(world, "k-9")).status_code == 500
    monkeypatch.undo()
    assert client.post(URL, json=body, headers=keyed(world, "k-9")).status_code == 201


def test_answers_are_kept_a_day_then_purged_and_the_key_is_free_again(world):
    client = world["client"]
    client.post(URL, json=order_body([(world["product_id"], 1)]), headers=keyed(world, "old"))
    client.post(URL, json=order_body([(world["product_id"], 1)]), headers=keyed(world, "new"))
    with session_scope() as s:
        record = s.get(IdempotencyRecord, (world["patient"].id, "old"))
        assert record.expires_at - record.created_at >= timedelta(hours=24)
        record.expires_at = clock.now() - timedelta(seconds=1)
    assert purge_idempotency_records() == 1
    with session_scope() as s:
        keys = s.scalars(select(IdempotencyRecord.key)).all()
    assert keys == ["new"]
    other_body = order_body([(world["other_id"], 1)])
    assert client.post(URL, json=other_body, headers=keyed(world, "old")).status_code == 201


def test_an_expired_answer_is_not_replayed(world):
    client, body = world["client"], order_body([(world["product_id"], 1)])
    first = client.post(URL, json=body, headers=keyed(world, "k-10"))
    with session_scope() as s:
        s.get(IdempotencyRecord, (world["patient"].id, "k-10")).expires_at = (
            clock.now() - timedelta(seconds=1)
        )
    second = client.post(URL, json=body, headers=keyed(world, "k-10"))
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]


def test_an_overlong_key_is_refused(world):
    r = world["client"].post(
        URL, json=order_body([(world["product_id"], 1)]), headers=keyed(world, "k" * 256)
    )
    assert r.status_code == 422
    assert orders() == 0

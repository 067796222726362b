"""An exhausted connection pool is an overload the client can retry (503), never a 500: on the
sync engine (endpoints in the thread pool), on the async engine (async endpoints) and on the
driver pool (the nearby list). Placements take their connections from a pool of their own."""

import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import create_engine, event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from o2o.config import get_settings
from o2o.db import (
    Runner,
    get_driver,
    get_runner,
    get_session,
    make_async_engine,
    psycopg_url,
    session_scope,
)
from o2o.users.models import Role
from tests.factories import auth, make_lot, make_product, make_store, make_user, offset, payment_app
from tests.orders.helpers import order_body


def _assert_503(response) -> None:
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "service_unavailable"


def _runner_on(engine):
    """The async endpoints' session dependency, on `engine` instead of the app's."""

    async def runner() -> AsyncIterator[Runner]:
        session = AsyncSession(engine)
        try:
            yield Runner(lambda: session)
            await session.commit()
        finally:
            await session.close()

    return runner


def test_a_request_that_waits_out_the_pool_gets_503_with_retry_after(engine, committed):
    with session_scope() as s:
        patient = make_user(s, role=Role.PATIENT)
    tiny = create_engine(engine.url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    make_session = sessionmaker(bind=tiny)

    def session_from_tiny_pool() -> Iterator[Session]:
        session = make_session()
        try:
            yield session
            session.commit()
        finally:
            session.close()

    from main import create_app

    app = create_app()
    app.dependency_overrides[get_session] = session_from_tiny_pool
    try:
        # Someone else holds the only connection for longer than the pool timeout.
        with tiny.connect(), TestClient(app, raise_server_exceptions=False) as client:
            _assert_503(client.get("/api/v1/users/me", headers=auth(patient)))
        # Once the connection is free the same request is served.
        with TestClient(app, raise_server_exceptions=False) as client:
            served = client.get("/api/v1/users/me", headers=auth(patient))
        assert served.status_code == 200
        assert served.json()["email"] == patient.email
    finally:
        tiny.dispose()


def test_an_async_request_that_waits_out_the_async_pool_gets_503_with_retry_after(
    engine, committed
):
    with session_scope() as s:
        patient = make_user(s, role=Role.PATIENT)
    tiny = create_async_engine(engine.url, pool_size=1, max_overflow=0, pool_timeout=0.2)

    from main import create_app

    app = create_app()
    app.dependency_overrides[get_runner] = _runner_on(tiny)
    with TestClient(app, raise_server_exceptions=False) as client:
        # Someone else holds the only connection (in the app's event loop) past the timeout.
        held = client.portal.call(tiny.connect().start)
        _assert_503(client.get("/api/v1/orders", headers=auth(patient)))
        client.portal.call(held.close)
        served = client.get("/api/v1/orders", headers=auth(patient))
        assert served.status_code == 200
        assert served.json() == {"items": [], "next_cursor": None}
        client.portal.call(tiny.dispose)


def test_a_burst_of_async_requests_waits_for_the_fixed_pool_instead_of_opening_connections(
    committed,
):
    # The async endpoints' pool has no overflow: a burst larger than it is served in turn on
    # the connections it keeps, never by connections opened (and closed again) for the burst.
    from main import create_app

    with session_scope() as s:
        patient = make_user(s, role=Role.PATIENT)
    settings = get_settings().model_copy(update={"db_async_pool_size": 3})
    pool_of_three = make_async_engine(settings)
    opened = []
    event.listen(pool_of_three.sync_engine, "connect", lambda *_: opened.append(1))

    app = create_app()
    app.dependency_overrides[get_runner] = _runner_on(pool_of_three)
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = _burst(lambda i: client.get("/api/v1/orders", headers=auth(patient)))
        client.portal.call(pool_of_three.dispose)

    assert [a.status_code for a in answers] == [200] * 20
    assert len(opened) <= 3


def _burst(ask) -> list:
    """Send 20 requests at once from 20 threads; return the answers."""
    start = threading.Barrier(20)

    def one(i: int):
        start.wait()
        return ask(i)

    with ThreadPoolExecutor(max_workers=20) as threads:
        return list(threads.map(one, range(20)))


def _nearby(client: TestClient, i: int = 0):
    return client.get("/api/v1/stores/nearby", params={"lat": 31.23, "lon": 121.47 + i / 1e4})


def test_the_nearby_lists_driver_pool_keeps_its_size_under_a_burst(committed, monkeypatch):
    from main import create_app

    monkeypatch.setattr(get_settings(), "db_async_pool_size", 3)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        answers = _burst(lambda i: _nearby(client, i))
        stats = client.app_state["driver_pool"].get_stats()

    assert [a.status_code for a in answers] == [200] * 20
    assert stats["pool_max"] == 3
    assert stats["connections_num"] <= 3  # connections ever opened
    assert stats["requests_num"] == 20  # the 20 answers each took a connection of the pool


def test_a_nearby_request_that_waits_out_the_driver_pool_gets_503_with_retry_after(committed):
    from main import create_app

    tiny = AsyncConnectionPool(
        psycopg_url(get_settings().database_url), min_size=1, max_size=1, timeout=0.2, open=False
    )

    async def on_tiny():
        async with tiny.connection() as conn:
            yield conn

    app = create_app()
    app.dependency_overrides[get_driver] = on_tiny
    with TestClient(app, raise_server_exceptions=False) as client:
        client.portal.call(tiny.open)
        # Someone else holds the only connection past the timeout.
        held = client.portal.call(tiny.getconn)
        _assert_503(_nearby(client))
        client.portal.call(tiny.putconn, held)
        assert _nearby(client).status_code == 200
        client.portal.call(tiny.close)


def test_placements_take_their_connections_from_the_writers_pool_not_the_hot_one(committed):
    # A flash sale's placements may wait on row locks while they hold their connection: they
    # must not take the few connections the hot reads and claims share.
    from main import create_app

    with session_scope() as s:
        store = make_store(s, at=offset(300, 0))
        product = make_product(s)
        make_lot(s, store, product, on_hand=5)
        patient = make_user(s, role=Role.PATIENT)
        payment_app(s)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        taken = {"hot": 0, "writers": 0}
        for name, sessions in (("hot", "async_sessions"), ("writers", "writer_sessions")):
            engine = client.app_state[sessions].kw["bind"]
            event.listen(
                engine.sync_engine,
                "checkout",
                lambda *_, name=name: taken.__setitem__(name, taken[name] + 1),
            )
        body = order_body([(product.id, 1)])
        placed = client.post("/api/v1/orders", json=body, headers=auth(patient))
        assert placed.status_code == 201, placed.text
        assert taken == {"hot": 0, "writers": 1}
        read = client.get(f"/api/v1/orders/{placed.json()['id']}", headers=auth(patient))
        assert read.status_code == 200
        assert taken == {"hot": 1, "writers": 1}

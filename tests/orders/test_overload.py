"""An exhausted connection pool is an overload the client can retry (503), never a 500: on the
sync engine (endpoints in the thread pool) and on the async engine (async endpoints)."""

import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from o2o.config import get_settings
from o2o.db import Runner, get_runner, get_session, make_async_engine, session_scope
from o2o.users.models import Role
from tests.factories import auth, make_user


def _assert_503(response) -> None:
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "service_unavailable"


def _runner_on(engine):
    """The async endpoints' session dependency, on `engine` instead of the app's."""

    async def runner() -> AsyncIterator[Runner]:
        session = AsyncSession(engine)
        try:
            yield Runner(session)
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

    settings = get_settings().model_copy(update={"db_async_pool_size": 3})
    pool_of_three = make_async_engine(settings)
    opened = []
    event.listen(pool_of_three.sync_engine, "connect", lambda *_: opened.append(1))

    app = create_app()
    app.dependency_overrides[get_runner] = _runner_on(pool_of_three)
    start = threading.Barrier(20)

    def ask(i: int):
        start.wait()
        return client.get("/api/v1/stores/nearby", params={"lat": 31.23, "lon": 121.47 + i / 1e4})

    with TestClient(app, raise_server_exceptions=False) as client:
        with ThreadPoolExecutor(max_workers=20) as threads:
            answers = list(threads.map(ask, range(20)))
        client.portal.call(pool_of_three.dispose)

    assert [a.status_code for a in answers] == [200] * 20
    assert len(opened) <= 3

"""Orders test fixtures: a real-commit client for the tests that need separate transactions
(idempotency, races, workers)."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def real_client(committed) -> Iterator[TestClient]:
    """A client on the real application: every request has its own committed transaction."""
    from main import create_app
    from o2o.db import session_scope
    from tests.factories import payment_app

    with session_scope() as session:
        payment_app(session)
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(autouse=True)
def _payment_app(request) -> None:
    """Register the test payment app in each test's transaction: online orders are paid to it."""
    if "db" in request.fixturenames:
        from tests.factories import payment_app

        payment_app(request.getfixturevalue("db"))

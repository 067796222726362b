import pytest

from o2o.users.models import Role
from tests.factories import make_lot, make_product, make_store, make_user, payment_app
from tests.pickup_points import helpers


@pytest.fixture(autouse=True)
def _payment_app(request) -> None:
    """Register the test payment app in each test's transaction: online orders are paid to it."""
    if "db" in request.fixturenames:
        payment_app(request.getfixturevalue("db"))


@pytest.fixture
def store(db):
    return make_store(db)


@pytest.fixture
def leader(db):
    return make_user(db, role=Role.LEADER)


@pytest.fixture
def point(db, store, leader):
    return helpers.make_point(db, store, leader=leader)


@pytest.fixture
def lot(db, store):
    return make_lot(db, store, make_product(db), on_hand=20, price_minor=1850)


@pytest.fixture
def staff(db, store):
    return make_user(db, role=Role.PHARMACIST, store_ids=[store.id])

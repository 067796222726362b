import pytest

from o2o.users.models import Role
from tests import factories
from tests.dispatch import helpers
from tests.factories import auth, make_store


@pytest.fixture
def store(db):
    return make_store(db, at=factories.SHANGHAI, zone_half_side_m=helpers.DELIVERY_ZONE_M)


@pytest.fixture
def courier(db, store):
    """A courier whose home store is `store`, standing 300 m from it."""
    return helpers.make_courier(db, home_store=store, at=factories.offset(300, 0))


@pytest.fixture
def courier_headers(courier):
    return auth(courier)


@pytest.fixture
def admin(db):
    return helpers.make_user_fast(db, Role.ADMIN)


@pytest.fixture
def committed(engine):
    """Sessions that really commit (threads, tasks, a worker); every table is emptied after."""
    from sqlalchemy.orm import sessionmaker

    from tests.conftest import truncate_all

    truncate_all(engine)
    yield sessionmaker(bind=engine, expire_on_commit=False)
    truncate_all(engine)

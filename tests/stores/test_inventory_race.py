"""Two identical point-of-sale syncs at once, in real transactions: the sync applies once."""

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from stores import inventory
from stores.models import InventorySync, Lot, Product, Store
from stores.schemas import InventoryIn
from tests.factories import make_product, make_store
from tests.stores.helpers import lot_line

HOLD_S = 0.5


@pytest.fixture
def sessions(engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@pytest.fixture
def world(sessions) -> Iterator[tuple[int, int]]:
    """A committed store and product, deleted afterwards (lots and syncs go with the store)."""
    with sessions.begin() as session:
        store_id, product_id = make_store(session).id, make_product(session).id
    yield store_id, product_id
    with sessions.begin() as session:
        session.execute(delete(Store).where(Store.id == store_id))
        session.execute(delete(Product).where(Product.id == product_id))


def _sync(product_id: int) -> InventoryIn:
    return InventoryIn(sync_id="pos-race-1", lots=[lot_line(product_id, on_hand=7)])


def _race(sessions, store_id, product_id, *, first_commits: bool) -> dict:
    """Run sync A, hold its transaction open, start an identical sync B, then end A."""
    outcome: dict = {}
    a_applied = threading.Event()

    def first() -> None:
        session = sessions()
        try:
            store = session.get(Store, store_id)
            sync = _sync(product_id)
            outcome["a"] = inventory.apply_inventory_sync(session, store, sync).applied
            a_applied.set()
            time.sleep(HOLD_S)  # B is now blocked on A's claim of the sync id
            session.commit() if first_commits else session.rollback()
        finally:
            a_applied.set()
            session.close()

    def second() -> None:
        a_applied.wait(10)
        started = time.monotonic()
        try:
            with sessions.begin() as session:
                store = session.get(Store, store_id)
                sync = _sync(product_id)
                outcome["b"] = inventory.apply_inventory_sync(session, store, sync).applied
        except Exception as exc:  # reported by the test, not lost in the thread
            outcome["b"] = exc
        outcome["b_waited_s"] = time.monotonic() - started

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcome


def _committed(sessions, store_id):
    with sessions() as session:
        syncs = session.scalar(
            select(func.count())
            .select_from(InventorySync)
            .where(InventorySync.store_id == store_id)
        )
        lots = session.execute(
            select(Lot.lot_number, Lot.on_hand).where(Lot.store_id == store_id)
        ).all()
    return syncs, lots


def test_two_identical_syncs_at_once_apply_once(sessions, world):
    store_id, product_id = world
    outcome = _race(sessions, store_id, product_id, first_commits=True)
    assert outcome["a"] is True
    assert outcome["b"] is False  # no error, no second application
    assert outcome["b_waited_s"] >= HOLD_S * 0.8  # B really ran while A was open
    assert _committed(sessions, store_id) == (1, [("L1", 7)])


def test_if_the_first_sync_rolls_back_the_waiting_one_applies(sessions, world):
    store_id, product_id = world
    outcome = _race(sessions, store_id, product_id, first_commits=False)
    assert (outcome["a"], outcome["b"]) == (True, True)
    assert _committed(sessions, store_id) == (1, [("L1", 7)])

"""Nearest-first walks the index refuses: PostGIS' geography index misorders a store on the
searched point written another way (here: the north pole at other longitudes), and PostgreSQL
refuses the ordered scan."""

import pytest
from sqlalchemy import text

from stores import nearby, proximity
from tests.factories import make_store

POLE = (90.0, 2.220446049250313e-16)


def test_a_walk_refused_without_its_savepoint_is_run_again_by_its_caller(db):
    stores = [make_store(db, at=(90.0, 0.0)), make_store(db, at=(90.0, 121.0))]
    db.commit()
    where = {"lat": POLE[0], "lon": POLE[1], "radius_m": 5000, "limit": 10}

    def listed() -> list[int]:
        # Inside the session's transaction, as a placement's walks are.
        db.execute(text("SELECT 1"))
        page, _ = nearby.nearby_stores(db, **where)
        return sorted(item.store_id for item in page)

    # Unguarded, the refusal ends the transaction: the caller is told, to roll back and redo.
    with proximity.redone_on_refusal(db), pytest.raises(proximity.WalkRefused):
        listed()
    db.rollback()
    # Guarded (the default), the walk runs in a savepoint and again without the index's order.
    assert listed() == sorted(store.id for store in stores)

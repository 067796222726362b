"""`make fuzz`'s hooks: the shared check (tests.schema_checks), and bodies that can succeed.

Generated bodies rarely name a product in stock near a real place, so the stateful phase would
create nothing and walk no link. As in the suite's stateful test, every other schema-valid call
to a creating operation (an order, a store, a product) sends a body built from the demo city
instead: the walk then goes on along the links from what it created (read, cancel, prepare...).
Invalid cases are left as generated. It is the hooks module of the settings file `make fuzz`
writes; the database is the one the served API uses (O2O_DATABASE_URL).
"""

import itertools
from collections.abc import Callable

import schemathesis
from schemathesis.generation import GenerationMode
from sqlalchemy import text

import tests.schema_checks  # noqa: F401  (registers the shared check)
from o2o.db import session_scope
from tests.orders.helpers import order_body
from tests.stores.helpers import product_body, store_body


def _demo_order() -> Callable[[], dict]:
    """A pickup order of one OTC product in stock, placed at the store that holds it."""
    with session_scope() as session:
        row = session.execute(
            text(
                """
                SELECT l.product_id, ST_Y(s.location::geometry) AS lat,
                       ST_X(s.location::geometry) AS lon
                FROM lots l JOIN products p ON p.id = l.product_id
                JOIN stores s ON s.id = l.store_id
                WHERE NOT p.rx_only AND l.on_hand - l.reserved >= 50
                ORDER BY l.on_hand - l.reserved DESC, l.id LIMIT 1
                """
            )
        ).one()
    return lambda: order_body([(row.product_id, 1)], at=(row.lat, row.lon))


VALID_BODIES: dict[tuple[str, str], Callable[[], dict]] = {
    ("POST", "/api/v1/orders"): _demo_order(),
    ("POST", "/api/v1/stores"): store_body,
    ("POST", "/api/v1/products"): product_body,
}
_turns = itertools.count()


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Every other schema-valid call to a creating operation sends a body that can succeed."""
    valid = VALID_BODIES.get((case.method.upper(), case.path))
    if valid is None:
        return
    positive = case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE
    if positive and next(_turns) % 2 == 0:
        case.body = valid()

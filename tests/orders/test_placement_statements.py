"""What one placement asks of the database, counted: under a flash sale a placement's cost is its
statements, each through the ORM's Python (docs/BENCHMARKS.md, "Load"), so a change that adds
one to the common path shows here."""

from o2o.db import session_scope
from o2o.users.models import Role
from tests.factories import auth, make_lot, make_product, make_store, make_user, offset
from tests.orders.helpers import order_body, watched

# The caller, the Idempotency-Key's claim, the cart's products, the patient's lock and caps,
# the routing walk (in a savepoint) and the cart's equivalents, the chosen store, the stock's
# plan, the order, its lines and their lots, the payment app, the timeline entry, the outbox
# events (one INSERT), the payment and its delivery to the payment app, the key's answer and
# the lot's UPDATE.
PLACEMENT_STATEMENTS = 21


def test_an_online_pickup_with_an_idempotency_key_runs_its_statements_and_no_more(real_client):
    with session_scope() as s:
        store = make_store(s, at=offset(400, 0), name="Renmin Road Pharmacy")
        product = make_product(s, name="Mask pack")
        make_lot(s, store, product, on_hand=20)
        patient = make_user(s, role=Role.PATIENT)
        product_id, store_id = product.id, store.id
    headers = auth(patient)
    # The first placement fills the process's caches (the cart's store counts, the hours): an
    # app's patients order the same products again and again.
    warm = real_client.post(
        "/api/v1/orders",
        json=order_body([(product_id, 1)]),
        headers=headers | {"Idempotency-Key": "a"},
    )
    assert warm.status_code == 201, warm.text

    with watched() as seen:
        placed = real_client.post(
            "/api/v1/orders",
            json=order_body([(product_id, 2)]),
            headers=headers | {"Idempotency-Key": "b"},
        )
    statements = seen.run

    assert placed.status_code == 201, placed.text
    assert placed.json()["store"] == {"id": store_id, "name": "Renmin Road Pharmacy"}
    assert len(statements) <= PLACEMENT_STATEMENTS, "\n".join(statements)
    # The store the answer names is the one placement read, not read again for the answer.
    assert sum(s.startswith("SELECT stores.id") for s in statements) == 1, "\n".join(statements)
    # Every statement was compiled by the first placement and comes from SQLAlchemy's cache: one
    # SQLAlchemy cannot cache (such as its PostgreSQL INSERT ... ON CONFLICT), or one whose cache
    # key differs on every call, costs every placement its compilation. (A statement rebuilt on
    # every call in the same shape is still found in the cache: this does not catch that.)
    assert seen.compiled_anew == [], "\n".join(seen.compiled_anew)

"""The hot requests on the ORM ask SQLAlchemy for no compilation once they have run: reading and
listing orders, the catalogue search, the job board. A statement SQLAlchemy cannot cache (its
PostgreSQL INSERT ... ON CONFLICT, say) or one whose cache key differs on every call is compiled
on every request, which under load costs about what running it does. (The nearby list, search,
the next-job claim and a courier's position report run plain SQL on the driver's connections,
with nothing to compile; placing an order is held to the same rule in
test_placement_statements.py.)"""

from o2o.db import session_scope
from o2o.users.models import Role
from tests.dispatch import helpers as dispatch_helpers
from tests.factories import (
    SHANGHAI,
    auth,
    make_lot,
    make_product,
    make_store,
    make_user,
    offset,
    square_zone,
)
from tests.orders.helpers import order_body, watched

API = "/api/v1"


def _compiled_anew(client, method: str, path: str, **kwargs) -> list[str]:
    """Ask twice; return the statements of the second request that did not come from
    SQLAlchemy's cache."""
    first = client.request(method, path, **kwargs)
    assert first.status_code == 200, first.text
    with watched() as seen:
        second = client.request(method, path, **kwargs)
    assert second.status_code == 200, second.text
    return seen.compiled_anew


def test_the_hot_reads_on_the_orm_compile_nothing_once_they_have_run(real_client):
    with session_scope() as s:
        store = make_store(s, at=offset(400, 0), zone_half_side_m=dispatch_helpers.DELIVERY_ZONE_M)
        product = make_product(s, name="Mask pack")
        make_lot(s, store, product, on_hand=20)
        patient = make_user(s, role=Role.PATIENT)
        courier = dispatch_helpers.make_courier(
            s, area=square_zone(SHANGHAI, 6000), at=offset(300, 0)
        )
        dispatch_helpers.make_delivery_order(s, store)  # a job on the board
        product_id, patient_headers, courier_headers = product.id, auth(patient), auth(courier)
    placed = real_client.post(
        f"{API}/orders", json=order_body([(product_id, 1)]), headers=patient_headers
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]
    here = {"lat": offset(300, 0)[0], "lon": offset(300, 0)[1]}

    anew = {
        "an order": _compiled_anew(
            real_client, "GET", f"{API}/orders/{order_id}", headers=patient_headers
        ),
        "the patient's orders": _compiled_anew(
            real_client, "GET", f"{API}/orders", headers=patient_headers
        ),
        "the catalogue": _compiled_anew(
            real_client, "GET", f"{API}/products", params={"q": "Mask"}
        ),
        "the job board": _compiled_anew(
            real_client, "GET", f"{API}/dispatch/jobs", params=here, headers=courier_headers
        ),
    }

    assert anew == {name: [] for name in anew}

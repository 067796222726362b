"""Object-level access: every endpoint that takes an id, tried by the one who may use it and by
everyone who may not (another patient, a pharmacist of another store, a courier not on the job, a
doctor not on the request, anonymous). Only what DESIGN.md allows succeeds; the others get 401
(not signed in), 403 (a role that may never do this) or 404 (not yours: as if it did not exist),
and nothing changes. The rows come from the app's routes: a new id-taking route without a row
fails `test_every_id_route_has_a_row`.

Then the answers themselves: no password hash anywhere, no other patient's rows in lists, pickup
and delivery codes only to the order's patient, the identity number only masked.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from o2o.orders.models import Order, OrderEvent
from prescriptions.models import PrescriptionAudit
from tests.factories import auth
from tests.pickup_points.helpers import POINT_AT
from tests.seeded_world import API, World, seed


@pytest.fixture
def world(db, client) -> World:
    return seed(db, client)


ANON = "anonymous"
STRANGERS = (
    "other_patient",
    "other_pharmacist",
    "other_courier",
    "other_doctor",
    "other_leader",
    ANON,
)
ROLE_OF = {
    "other_patient": "patient",
    "other_pharmacist": "pharmacist",
    "other_courier": "courier",
    "other_doctor": "doctor",
    "other_leader": "leader",
}


@dataclass(frozen=True)
class Row:
    """One endpoint: who may use it (`allowed`: actor -> the statuses that mean "let in") and
    the roles that may never call it (403); every other stranger must get 404, anonymous 401."""

    method: str
    path: str
    id_of: Callable[[World], dict[str, str]]
    allowed: dict[str, set[int]]
    roles: set[str]
    body: Callable[[World], dict] | None = None
    query: Callable[[World], dict] = field(default=lambda w: {})
    # Strangers refused otherwise than with the default, and why (see the rows).
    denied: dict[str, set[int]] = field(default_factory=dict)


def _order(w: World) -> dict[str, str]:
    return {"order_id": str(w.pickup_order.id)}


def _rx(w: World) -> dict[str, str]:
    return {"prescription_id": w.prescription_id}


def _job(w: World) -> dict[str, str]:
    return {"job_id": str(w.job.id)}


def _store(w: World) -> dict[str, str]:
    return {"store_id": str(w.store.id)}


def _point(w: World) -> dict[str, str]:
    return {"point_id": str(w.pickup_point.id)}


# A pickup point's counter: its leader (or an admin); another leader or a pharmacist is told
# there is no such point (404), other roles may never stand behind a point's counter (403).
COUNTER = {"leader", "pharmacist", "admin"}


ADMIN_ONLY = {"admin"}
STAFF = {"pharmacist", "admin"}
OK = {200}
# Allowed past the access check; the object's state may still refuse the action (409).
OK_OR_STATE = {200, 409}
# Doctors see every unclaimed request in their queue; once one doctor claims it, the others are
# refused as a state conflict (409 claimed_by_another_doctor), which tells them nothing new.
CLAIMED_BY_ANOTHER = {"other_doctor": {409}}
# Stores are public: "not staff of this store" (403) hides nothing; some store-scoped reads
# answer "no such store" (404) instead. Either refuses without showing the store's rows.
NOT_STAFF = {"other_pharmacist": {403, 404}}

ROWS = [
    # Orders: the patient who placed it and the store's staff.
    Row(
        "GET", "/orders/{order_id}", _order, {"patient": OK, "pharmacist": OK}, {"patient", *STAFF}
    ),
    Row(
        "POST",
        "/orders/{order_id}/cancel",
        _order,
        {"patient": OK},
        {"patient", *STAFF},
        body=lambda w: {"reason": "Changed my mind"},
    ),
    # A split order: its patient (and an admin) read it whole; staff read their part as an order.
    Row(
        "GET",
        "/split-orders/{split_order_id}",
        lambda w: {"split_order_id": w.split_order_id},
        {"patient": OK, "admin": OK},
        {"patient", "admin"},
    ),
    # The dispense record: the seeded order is not handed over yet (409 order_not_completed).
    Row(
        "GET",
        "/orders/{order_id}/fhir/dispense",
        _order,
        {"patient": {409}, "pharmacist": {409}},
        {"patient", *STAFF},
    ),
    Row("POST", "/orders/{order_id}/prepare", _order, {"pharmacist": OK}, STAFF),
    Row("POST", "/orders/{order_id}/ready", _order, {"pharmacist": OK_OR_STATE}, STAFF),
    # Nothing to move in the seeded order (409 order_not_short): past the access check all the same.
    Row("POST", "/orders/{order_id}/reallocate", _order, {"pharmacist": {409}}, STAFF),
    Row(
        "POST",
        "/orders/{order_id}/handover",
        _order,
        {"pharmacist": OK_OR_STATE},
        STAFF,
        body=lambda w: {"pickup_code": w.pickup_order.pickup_code},
    ),
    # Substitutions: the store's staff substitutes (the seeded line has no equivalent: 422
    # not_equivalent past the access check); the order's patient answers (no such substitution
    # on the seeded order: 404 substitution_not_found past the access check, see
    # tests/orders/test_substitutions.py for answers by the wrong patient).
    Row(
        "POST",
        "/orders/{order_id}/substitutions",
        _order,
        {"pharmacist": {422}},
        STAFF,
        body=lambda w: {
            "product_id": w.otc.id,
            "to_product_id": w.rx.id,
            "reason": "out_of_stock",
        },
    ),
    *[
        Row(
            "POST",
            "/orders/{order_id}/substitutions/{substitution_id}/" + answer,
            lambda w: {**_order(w), "substitution_id": "7f1c2b1e-2d3a-4c5b-8e9f-0a1b2c3d4e5f"},
            {"patient": {404}},
            {"patient"},
        )
        for answer in ("accept", "decline")
    ],
    # Prescriptions: the patient, the doctor on the request, the store's pharmacist.
    *[
        Row(
            "GET",
            "/prescriptions/{prescription_id}" + tail,
            _rx,
            {"patient": OK, "doctor": OK, "pharmacist": OK, "admin": OK},
            {"patient", "doctor", *STAFF},
        )
        for tail in ("", "/attachment", "/audit")
    ],
    Row(
        "POST",
        "/prescriptions/{prescription_id}/refill",
        _rx,
        # Not yet filled, and its order already has this request open: a state conflict.
        {"patient": {409}},
        {"patient"},
        body=lambda w: {"order_id": str(w.rx_order.id)},
    ),
    Row(
        "GET",
        "/prescriptions/{prescription_id}/fhir",
        _rx,
        # Claimed, not yet issued: there is nothing signed to export.
        {"patient": {409}, "doctor": {409}, "pharmacist": {409}, "admin": {409}},
        {"patient", "doctor", *STAFF},
    ),
    Row(
        "POST",
        "/prescriptions/{prescription_id}/claim",
        _rx,
        {"doctor": OK_OR_STATE},
        {"doctor"},
        denied=CLAIMED_BY_ANOTHER,
    ),
    Row(
        "POST",
        "/prescriptions/{prescription_id}/signing-payload",
        _rx,
        {"doctor": OK},
        {"doctor"},
        denied=CLAIMED_BY_ANOTHER,
        body=lambda w: {
            "items": [
                {
                    "product_id": w.rx.id,
                    "quantity": 2,
                    "dose": "500 mg",
                    "frequency": "three times a day",
                    "duration_days": 7,
                }
            ]
        },
    ),
    Row(
        "POST",
        "/prescriptions/{prescription_id}/issue",
        _rx,
        {"doctor": {409, 422}},
        {"doctor"},
        denied=CLAIMED_BY_ANOTHER,
        body=lambda w: {"payload": "AAAA", "signature": "AAAA"},
    ),
    Row(
        "POST",
        "/prescriptions/{prescription_id}/decline",
        _rx,
        {"doctor": OK},
        {"doctor"},
        denied=CLAIMED_BY_ANOTHER,
        body=lambda w: {"reason": "Needs an examination in person"},
    ),
    Row(
        "POST",
        "/prescriptions/{prescription_id}/review",
        _rx,
        {"pharmacist": {409}},
        {"pharmacist"},
        body=lambda w: {"decision": "approve", "reason": "Checked"},
    ),
    # Courier jobs: the courier holding it; unlock is for the store's staff.
    Row("GET", "/dispatch/jobs/{job_id}", _job, {"courier": OK}, {"courier"}),
    Row("POST", "/dispatch/jobs/{job_id}/claim", _job, {"courier": OK_OR_STATE}, {"courier"}),
    Row("POST", "/dispatch/jobs/{job_id}/pickup", _job, {"courier": OK}, {"courier"}),
    Row(
        "POST",
        "/dispatch/jobs/{job_id}/deliver",
        _job,
        {"courier": {409}},
        {"courier"},
        body=lambda w: {"delivery_code": w.delivery_order.delivery_code},
    ),
    Row(
        "POST",
        "/dispatch/jobs/{job_id}/fail",
        _job,
        {"courier": OK_OR_STATE},
        {"courier"},
        body=lambda w: {"reason": "Nobody at the door"},
    ),
    Row("POST", "/dispatch/jobs/{job_id}/release", _job, {"courier": OK}, {"courier"}),
    Row("POST", "/dispatch/jobs/{job_id}/unlock", _job, {"pharmacist": OK_OR_STATE}, STAFF),
    # A doctor's own keys: the seeded doctor's key is proved and active already (409).
    Row(
        "POST",
        "/doctors/me/keys/{key_id}/proof",
        lambda w: {"key_id": str(w.doctor.key_id)},
        {"doctor": {409}},
        {"doctor"},
        body=lambda w: {"signature": "AAAA"},
    ),
    Row(
        "POST",
        "/doctors/me/keys/{key_id}/challenge",
        lambda w: {"key_id": str(w.doctor.key_id)},
        {"doctor": {409}},
        {"doctor"},
    ),
    # Admin objects.
    *[
        Row(
            "POST",
            "/admin/doctor-keys/{key_id}/" + action,
            lambda w: {"key_id": str(w.doctor.key_id)},
            {"admin": OK_OR_STATE},
            ADMIN_ONLY,
        )
        for action in ("approve", "revoke")
    ],
    Row(
        "GET",
        "/admin/couriers/{user_id}",
        lambda w: {"user_id": str(w.courier.id)},
        {"admin": OK},
        ADMIN_ONLY,
    ),
    Row(
        "PUT",
        "/admin/couriers/{user_id}",
        lambda w: {"user_id": str(w.courier.id)},
        {"admin": OK},
        ADMIN_ONLY,
        body=lambda w: {"home_store_id": w.store.id},
    ),
    Row(
        "POST",
        "/admin/users/{user_id}/deactivate",
        lambda w: {"user_id": str(w.courier.id)},
        {"admin": OK},
        ADMIN_ONLY,
    ),
    Row(
        "POST",
        "/admin/users/{user_id}/reactivate",
        lambda w: {"user_id": str(w.courier.id)},
        {"admin": OK},
        ADMIN_ONLY,
    ),
    Row(
        "DELETE",
        "/admin/webhooks/{endpoint_id}",
        lambda w: {"endpoint_id": w.webhook_id},
        {"admin": {204}},
        ADMIN_ONLY,
    ),
    Row(
        "POST",
        "/admin/payment-apps/{app_id}/rotate-secret",
        lambda w: {"app_id": w.payment_app_id},
        {"admin": OK},
        ADMIN_ONLY,
    ),
    # Stores and the catalogue are public to read; changing them is for admins and the staff.
    Row(
        "GET",
        "/stores/{store_id}",
        _store,
        {name: OK for name in ("patient", *STRANGERS)},
        set(),
    ),
    Row(
        "GET",
        "/stores/{store_id}/delivery-slots",
        _store,
        {name: OK for name in ("patient", *STRANGERS)},
        set(),
    ),
    Row(
        "PATCH",
        "/stores/{store_id}",
        _store,
        {"admin": OK},
        ADMIN_ONLY,
        body=lambda w: {"prep_minutes": 12},
    ),
    Row(
        "GET",
        "/products/{product_id}",
        lambda w: {"product_id": str(w.otc.id)},
        {name: OK for name in ("patient", *STRANGERS)},
        set(),
    ),
    Row(
        "GET",
        "/products/{product_id}/equivalents",
        lambda w: {"product_id": str(w.otc.id)},
        {name: OK for name in ("patient", *STRANGERS)},
        set(),
    ),
    Row("GET", "/stores/{store_id}/inventory", _store, {"pharmacist": OK}, STAFF, denied=NOT_STAFF),
    # Stock analytics: the store's staff and admins; another store's pharmacist sees no store.
    Row("GET", "/stores/{store_id}/analytics/abc", _store, {"pharmacist": OK, "admin": OK}, STAFF),
    Row(
        "GET",
        "/stores/{store_id}/analytics/turnover",
        _store,
        {"pharmacist": OK, "admin": OK},
        STAFF,
    ),
    Row(
        "PUT",
        "/stores/{store_id}/inventory",
        _store,
        {"pharmacist": OK},
        STAFF,
        denied=NOT_STAFF,
        body=lambda w: {
            "sync_id": "matrix-0001",
            "lots": [
                {
                    "product_id": w.otc.id,
                    "lot_number": "M1",
                    "expiry_date": "2030-01-31",
                    "on_hand": 5,
                    "price_minor": 990,
                    "currency": "CNY",
                }
            ],
        },
    ),
    # Community pickup points: the admin registers them; the point's leader works its counter.
    Row(
        "POST",
        "/stores/{store_id}/pickup-points",
        _store,
        {"admin": {201}},
        ADMIN_ONLY,
        body=lambda w: {
            "name": "Matrix lobby",
            "address": "1 Matrix Road",
            "location": {"lat": POINT_AT[0], "lon": POINT_AT[1]},
            "commission_rate_bp": 800,
        },
    ),
    *[
        Row(
            "GET", "/pickup-points/{point_id}/" + tail, _point, {"leader": OK, "admin": OK}, COUNTER
        )
        for tail in ("parcels", "runs", "statement")
    ],
    Row(
        "POST",
        "/pickup-points/{point_id}/handover",
        _point,
        {"leader": OK},
        COUNTER,
        # The right code: only the point's own leader may use it.
        body=lambda w: {
            "order_id": str(w.point_order.id),
            "pickup_code": w.point_order.pickup_code,
        },
    ),
    # Ids in the query: a store's orders and its SLA report, for its staff.
    Row(
        "GET",
        "/orders?store_id",
        lambda w: {},
        {"pharmacist": OK},
        {"patient", *STAFF},
        query=lambda w: {"store_id": w.store.id},
        # A patient's list is always their own orders, whatever the filter (empty here).
        denied={"other_patient": {200}, **NOT_STAFF},
    ),
    Row(
        "GET",
        "/sla/report?store_id",
        lambda w: {},
        {"pharmacist": OK},
        STAFF,
        query=lambda w: {"store_id": w.store.id},
        denied=NOT_STAFF,
    ),
]


def _row_id(row: Row) -> str:
    return f"{row.method} {row.path}"


def _expected(row: Row, actor: str) -> set[int]:
    if actor in row.denied:
        return row.denied[actor]
    if actor == ANON:
        return {401}
    if ROLE_OF[actor] not in row.roles:
        # A role that may never do this: 403, or 404 where the object's existence is itself
        # private (prescriptions answer "no such prescription" to every outsider).
        return {403, 404}
    return {404}


def _call(client, w: World, row: Row, actor: str):
    path = row.path.split("?")[0].format(**row.id_of(w))
    user = w.user(actor)
    headers = auth(user) if user is not None else {}
    kwargs = {"headers": headers, "params": row.query(w)}
    if row.body is not None:
        kwargs["json"] = row.body(w)
    return client.request(row.method, API + path, **kwargs)


def _private(w: World) -> list[str]:
    """What no stranger may read: the patient's order and prescription ids and codes."""
    orders = (w.pickup_order, w.delivery_order, w.rx_order, w.point_order)
    return [
        w.prescription_id,
        *(str(o.id) for o in orders),
        *(o.pickup_code for o in orders),
        *(o.delivery_code for o in orders),
    ]


def _state(db) -> tuple:
    """What a refused call must leave as it was: order events, audit rows, order statuses."""
    db.expire_all()
    return (
        db.scalar(select(func.count()).select_from(OrderEvent)),
        db.scalar(select(func.count()).select_from(PrescriptionAudit)),
        tuple(db.execute(select(Order.id, Order.status).order_by(Order.id)).all()),
    )


def test_every_id_route_has_a_row(app):
    routes = {
        f"{method} {re.sub(r'^/api/v1', '', route.path_format)}"
        for route in app.routes
        if isinstance(route, APIRoute) and route.dependant.path_params
        for method in route.methods
    }
    missing = routes - {_row_id(row) for row in ROWS}
    assert not missing, f"id-taking routes without an access-matrix row: {sorted(missing)}"


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_only_those_allowed_get_in(client, db, world, row):
    before = _state(db)
    for actor in STRANGERS:
        if actor in row.allowed:
            continue
        r = _call(client, world, row, actor)
        assert r.status_code in _expected(row, actor), (actor, r.status_code, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]["code"], r.text
        for secret in _private(world):
            assert secret not in r.text, (actor, secret)
    assert _state(db) == before, "a refused call changed something"
    for actor, statuses in row.allowed.items():
        r = _call(client, world, row, actor)
        assert r.status_code in statuses, (actor, r.status_code, r.text)
        assert "password" not in r.text.lower()


def _get(client, w: World, actor: str, path: str, **params):
    r = client.get(API + path, headers=auth(w.user(actor)), params=params)
    assert r.status_code == 200, (actor, path, r.text)
    return r


def test_codes_only_to_the_orders_patient(client, world):
    order = world.pickup_order
    mine = _get(client, world, "patient", f"/orders/{order.id}").json()
    assert mine["pickup_code"] == order.pickup_code
    staff = _get(client, world, "pharmacist", f"/orders/{order.id}").json()
    assert staff.get("pickup_code") is None and staff.get("delivery_code") is None
    listed = _get(client, world, "pharmacist", "/orders", store_id=world.store.id).json()
    assert listed["items"], "the store's list shows its orders"
    for item in listed["items"]:
        assert item.get("pickup_code") is None and item.get("delivery_code") is None
    job = _get(client, world, "courier", f"/dispatch/jobs/{world.job.id}").text
    assert world.delivery_order.delivery_code not in job
    assert world.delivery_order.pickup_code not in job


def test_lists_never_show_another_patients_rows(client, world):
    theirs = {str(world.pickup_order.id), str(world.delivery_order.id), str(world.rx_order.id)}
    mine = {item["id"] for item in _get(client, world, "patient", "/orders").json()["items"]}
    assert theirs <= mine
    other = _get(client, world, "other_patient", "/orders").json()["items"]
    assert other == []
    # Another store's pharmacist, a doctor not on the request, a courier not on the job.
    queue = _get(client, world, "other_pharmacist", "/prescriptions/queue").text
    assert world.prescription_id not in queue
    queue = _get(client, world, "other_doctor", "/prescriptions/queue").text
    assert world.prescription_id not in queue
    jobs = _get(client, world, "other_courier", "/dispatch/jobs").text
    assert str(world.job.id) not in jobs and str(world.delivery_order.id) not in jobs
    held = _get(client, world, "other_courier", "/couriers/me/jobs").json()
    assert held == []


def test_no_password_hash_or_identity_number_in_any_answer(client, world):
    reads = [
        ("patient", "/users/me"),
        ("patient", "/users/me/membership"),
        ("patient", "/orders"),
        ("patient", f"/prescriptions/{world.prescription_id}"),
        ("patient", f"/prescriptions/{world.prescription_id}/audit"),
        ("doctor", "/prescriptions/queue"),
        ("doctor", f"/prescriptions/{world.prescription_id}"),
        ("pharmacist", f"/prescriptions/{world.prescription_id}"),
        ("admin", "/admin/doctor-keys"),
        ("admin", f"/admin/couriers/{world.courier.id}"),
        ("admin", "/admin/webhooks"),
        ("admin", "/admin/payment-apps"),
    ]
    hash_prefix = world.patient.password_hash[:20]
    for actor, path in reads:
        text = _get(client, world, actor, path).text
        assert "password" not in text.lower(), path
        assert hash_prefix not in text, path
        assert "110101199001011234" not in text, path
    r = client.post(
        API + "/admin/users",
        json={"email": "new.courier@test.example.com", "password": "a-long-password-1", "name": "C"}
        | {"role": "courier"},
        headers=auth(world.admin),
    )
    assert r.status_code == 201 and "password" not in r.text.lower()

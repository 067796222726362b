"""Schema fuzzing: schemathesis generates requests from the app's own OpenAPI document (valid
and invalid ones) through its examples, coverage and fuzzing phases, then walks the document's
links in its stateful phase (place an order, then read, cancel, prepare and hand it over; ask for
a prescription, then claim, sign and review it...), and runs every check it has on every answer:
no 5xx, only documented status codes, bodies and headers as documented, invalid input refused,
valid input accepted, missing headers and unsupported methods answered properly, no
use-after-delete, resources available after creation, no ignored authentication, no object read
across users.

Each generated request with valid data is sent in-process to the ASGI app as every role
(patient, doctor, pharmacist, courier, admin) against a seeded world, twice: once with the
generated path ids (which mostly do not exist) and once with the ids of seeded rows, so the
handlers behind the 404 are exercised too. Invalid data is sent once, as each role in turn. Runs are deterministic (derandomized) and bounded
(MAX_EXAMPLES per operation, STATEFUL_EXAMPLES walks per role).

One check differs from schemathesis' own: positive_data_acceptance is replaced by
tests.schema_checks.valid_data_is_not_refused_as_invalid, which accepts a 422 to schema-valid data
only with a code the operation's OpenAPI 422 lists as a rule on meaning. `make fuzz` runs the
same checks from outside, longer.
"""

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.generation import GenerationMode
from schemathesis.python.asgi import ASGIClient
from schemathesis.specs.openapi.checks import positive_data_acceptance

from main import create_app
from tests import factories, schema_checks
from tests.factories import auth
from tests.orders.helpers import order_body
from tests.seeded_world import World, seed
from tests.stores.helpers import product_body, store_body


@pytest.fixture
def world(db, client) -> World:
    return seed(db, client)


MAX_EXAMPLES = 4
STATEFUL_EXAMPLES = 3
ROLES = ("patient", "doctor", "pharmacist", "courier", "admin")

schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app())
# The operational endpoints answer plain text (Prometheus) or only report health.
schema = schema.exclude(path_regex=r"/metrics$")

load_all_checks()
ALL_CHECKS = [check for check in CHECKS.get_all() if check is not positive_data_acceptance]
assert schema_checks.valid_data_is_not_refused_as_invalid in ALL_CHECKS

_NEXT_ROLE = itertools.cycle(ROLES)

FUZZ_SETTINGS = {
    "derandomize": True,
    "deadline": None,
    "database": None,
    "suppress_health_check": list(HealthCheck),
}


def _valid_creations(world: World) -> dict:
    """Bodies that create something in the seeded world, for the stateful walk."""
    lat, lon = factories.SHANGHAI
    return {
        ("POST", "/api/v1/orders"): lambda: order_body([(world.otc.id, 1)], at=(lat, lon)),
        ("POST", "/api/v1/stores"): store_body,
        ("POST", "/api/v1/products"): product_body,
    }


def _seeded_ids(world: World) -> dict[str, str]:
    return {
        "order_id": str(world.pickup_order.id),
        "split_order_id": world.split_order_id,
        "prescription_id": world.prescription_id,
        "job_id": str(world.job.id),
        "key_id": str(world.doctor.key_id),
        "store_id": str(world.store.id),
        "product_id": str(world.otc.id),
        "user_id": str(world.courier.id),
        "endpoint_id": world.webhook_id,
    }


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, **FUZZ_SETTINGS)
def test_api_conforms_to_its_schema(case, app, world):
    session = ASGIClient(app)
    positive = case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE
    generated_path = dict(case.path_parameters or {})
    seeded = {k: v for k, v in _seeded_ids(world).items() if k in generated_path}
    # Invalid data is refused before anyone's rights are looked at: one role each (in turn)
    # answers for all; valid data is sent as every role.
    roles = ROLES if positive else (next(_NEXT_ROLE),)
    for role in roles:
        headers = auth(world.user(role))
        case.path_parameters = dict(generated_path)
        case.call_and_validate(session=session, headers=headers, checks=ALL_CHECKS)
        if positive and seeded:
            case.path_parameters = {**generated_path, **seeded}
            case.call_and_validate(session=session, headers=headers, checks=ALL_CHECKS)
    case.path_parameters = generated_path


@pytest.mark.parametrize("role", ROLES)
def test_api_holds_along_its_links(role, app, world):
    """The stateful phase: sequences of calls that follow the OpenAPI links, as each role."""
    session = ASGIClient(app)
    headers = auth(world.user(role))

    valid_bodies = _valid_creations(world)
    turns = itertools.count()

    class Walk(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"session": session, "headers": headers}

        def before_call(self, case):
            # Generated bodies rarely name a product in stock or a real place: every other call
            # to a creating operation sends one that can succeed, so the walk goes on along the
            # links (read, cancel, prepare, hand over the order it placed...).
            valid = valid_bodies.get((case.method.upper(), case.path))
            positive = case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE
            if valid is not None and positive and next(turns) % 2 == 0:
                case.body = valid()

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response, checks=ALL_CHECKS, headers=headers, transport_kwargs=kwargs
            )

    Walk.run(settings=settings(max_examples=STATEFUL_EXAMPLES, **FUZZ_SETTINGS))


def test_the_links_lead_from_what_is_created():
    """Guard the stateful phase: it has the creating operations' links to follow."""
    document = schema.raw_schema
    for path, method in (
        ("/api/v1/orders", "post"),
        ("/api/v1/prescriptions", "post"),
        ("/api/v1/stores", "post"),
        ("/api/v1/dispatch/jobs", "get"),
    ):
        responses = document["paths"][path][method]["responses"]
        assert any(r.get("links") for r in responses.values()), (path, method)


def test_the_seeded_ids_exist_for_their_owner(client, world):
    """Guard the fuzzing itself: the seeded ids must reach the handlers, not a 404 for everyone."""
    r = client.get(f"/api/v1/orders/{world.pickup_order.id}", headers=auth(world.patient))
    assert r.status_code == 200, r.text
    r = client.get(f"/api/v1/prescriptions/{world.prescription_id}", headers=auth(world.patient))
    assert r.status_code == 200, r.text
    r = client.get(f"/api/v1/dispatch/jobs/{world.job.id}", headers=auth(world.courier))
    assert r.status_code == 200, r.text

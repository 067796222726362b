"""Schema fuzzing: schemathesis generates requests from the app's own OpenAPI document (valid and
invalid ones) and runs its default checks on every answer: no 5xx, only documented status codes,
bodies and headers that match the documented schemas, invalid input refused, valid input not
refused for being invalid.

Each generated request is sent in-process to the ASGI app as every role (patient, doctor,
pharmacist, courier, admin) against a seeded world, twice when its data is valid: once with the
generated path ids (which mostly do not exist) and once with the ids of seeded rows, so the
handlers behind the 404 are exercised too. Runs are deterministic (derandomized) and bounded
(MAX_EXAMPLES per operation: about two minutes for the module on a quiet 2-core machine).

Valid data refused as invalid: schemathesis' positive_data_acceptance is replaced by
valid_data_is_not_refused_as_invalid, the same check with one exception. API.md answers some
schema-valid requests 422 on their meaning (an id that names no product, a cursor this list did
not give out, a polygon that crosses itself, a wrong GTIN check digit, a product listed twice),
which no JSON schema can state; those answers carry their own code (SEMANTIC_422; models raise
them with o2o.errors.rule_error) and are allowed. A 422 `invalid_input` (or a 400, 413, 415...)
to schema-valid data still fails: it means the schema leaves out a rule the API enforces, and the
fix is to state the rule in the model (pattern, bounds, one shape per case), never to add a code.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation import GenerationMode
from schemathesis.python.asgi import ASGIClient
from schemathesis.specs.openapi.checks import (
    is_unexpected_http_status_case,
    positive_data_acceptance,
)

from main import create_app
from o2o.text import unstorable_reason
from tests.factories import auth
from tests.seeded_world import World, seed


@pytest.fixture
def world(db, client) -> World:
    return seed(db, client)


MAX_EXAMPLES = 6
ROLES = ("patient", "doctor", "pharmacist", "courier", "admin")

schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app())
# The operational endpoints answer plain text (Prometheus) or only report health.
schema = schema.exclude(path_regex=r"/metrics$")


# Refusals of schema-valid data that no schema can state: the API answers them 422 with these
# codes (API.md: 422 for invalid input), e.g. an id that names no product, a cursor this list did
# not give out, a polygon that intersects itself.
UNSTORABLE_REASONS = {unstorable_reason("\x00"), unstorable_reason("\ud800")}

SEMANTIC_422 = {
    "currency_mismatch",
    "empty_opening_interval",
    "gtin_check_digit",
    "idempotency_key_reused",
    "invalid_area",
    "invalid_cursor",
    "invalid_delivery_slot",
    "invalid_features",
    "invalid_public_key",
    "invalid_shift_end",
    "invalid_zone",
    "location_required",
    "overlapping_hours",
    "repeated_lot",
    "repeated_product",
    "store_ids_not_allowed",
    "unknown_product",
    "unknown_store",
    "unknown_timezone",
    "unsupported_attachment_type",
    "zone_required",
}


# What schemathesis' positive_data_acceptance accepts for schema-valid data (its defaults): an
# answer, or a refusal about who is asking, what exists, the state of things or the rate. 5xx is
# left to not_a_server_error.
ACCEPTABLE_TO_VALID_DATA = {401, 403, 404, 409, 429}


def valid_data_is_not_refused_as_invalid(ctx, response, case):
    """Schema-valid data may be refused on its meaning (422 with a semantic code), never as
    malformed: that would mean the OpenAPI schema leaves out a rule the API enforces.

    This takes the place of schemathesis' positive_data_acceptance and is that check with one
    exception: it counts every 422 to valid data as a failure, although API.md answers unknown
    ids and stale cursors with 422. Any other refusal (400, 405, 413, 415, 422 invalid_input...)
    still fails.
    """
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return None
    if is_unexpected_http_status_case(case):  # a probe of a method the path does not serve
        return None
    status = response.status_code
    if status < 400 or status >= 500 or status in ACCEPTABLE_TO_VALID_DATA:
        return None
    if status == 422:
        error = response.json()["error"]
        if error["code"] in SEMANTIC_422 or _unstorable_text(error):
            return None
        raise AssertionError(
            f"schema-valid request refused as 422 {error['code']}: {response.text[:300]}"
        )
    raise AssertionError(f"schema-valid request refused with {status}: {response.text[:300]}")


def _unstorable_text(error: dict) -> bool:
    """A refusal of text the database cannot store (a NUL, a lone surrogate): the 422 each
    operation documents for it, a rule JSON Schema cannot state for every string (o2o.text)."""
    details = error.get("details")
    return (
        error["code"] == "invalid_input"
        and isinstance(details, dict)
        and details.get("reason") in UNSTORABLE_REASONS
    )


CHECKS = {
    "excluded_checks": [positive_data_acceptance],
    "additional_checks": [valid_data_is_not_refused_as_invalid],
}


def _seeded_ids(world: World) -> dict[str, str]:
    return {
        "order_id": str(world.pickup_order.id),
        "prescription_id": world.prescription_id,
        "job_id": str(world.job.id),
        "key_id": str(world.doctor.key_id),
        "store_id": str(world.store.id),
        "product_id": str(world.otc.id),
        "user_id": str(world.courier.id),
        "endpoint_id": world.webhook_id,
    }


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, app, world):
    session = ASGIClient(app)
    positive = case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE
    generated_path = dict(case.path_parameters or {})
    seeded = {k: v for k, v in _seeded_ids(world).items() if k in generated_path}
    for role in ROLES:
        headers = auth(world.user(role))
        case.path_parameters = dict(generated_path)
        case.call_and_validate(session=session, headers=headers, **CHECKS)
        if positive and seeded:
            case.path_parameters = {**generated_path, **seeded}
            case.call_and_validate(session=session, headers=headers, **CHECKS)
    case.path_parameters = generated_path


def test_the_seeded_ids_exist_for_their_owner(client, world):
    """Guard the fuzzing itself: the seeded ids must reach the handlers, not a 404 for everyone."""
    r = client.get(f"/api/v1/orders/{world.pickup_order.id}", headers=auth(world.patient))
    assert r.status_code == 200, r.text
    r = client.get(f"/api/v1/prescriptions/{world.prescription_id}", headers=auth(world.patient))
    assert r.status_code == 200, r.text
    r = client.get(f"/api/v1/dispatch/jobs/{world.job.id}", headers=auth(world.courier))
    assert r.status_code == 200, r.text

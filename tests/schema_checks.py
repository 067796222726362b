"""The fuzzing's one departure from schemathesis' checks, shared by the suite and `make fuzz`
(loaded there as a hooks module: SCHEMATHESIS_HOOKS=tests.schema_checks).

schemathesis' positive_data_acceptance fails every 4xx other than 401, 403, 404, 409 and 429 to
schema-valid data. The API also refuses schema-valid data with 422 on its meaning (an id in a
body that names nothing, a cursor no list gave out, a polygon that crosses itself, a key reused
with another body), rules no JSON schema can state. Each operation's OpenAPI 422 answer lists
those codes as an enum on the error code (o2o.openapi); this check accepts a 422 to valid data
only with one of them, or for text the database cannot store (a NUL, a lone surrogate: a rule on
every string that the 422 describes). A 422 `invalid_input`, `malformed_json` or any other
refusal (400, 405, 413, 415...) to valid data still fails: the schema would be leaving out a
rule the API enforces, and the fix is to state it in the schema.
"""

import schemathesis
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import is_unexpected_http_status_case

from o2o.errors import MALFORMED_INPUT_CODES
from o2o.text import unstorable_reason

UNSTORABLE_REASONS = {unstorable_reason("\x00"), unstorable_reason("\ud800")}

# What positive_data_acceptance accepts: an answer, or a refusal about who is asking, what
# exists, the state of things or the rate. 5xx is left to not_a_server_error.
ACCEPTABLE_TO_VALID_DATA = {401, 403, 404, 409, 429}


def documented_rules(case) -> list[str]:
    """The 422 codes the operation documents as rules on meaning (beyond malformed input)."""
    response = case.operation.definition.raw.get("responses", {}).get("422", {})
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    for part in schema.get("allOf", []):
        code = part.get("properties", {}).get("error", {}).get("properties", {}).get("code", {})
        if "enum" in code:
            return [c for c in code["enum"] if c not in MALFORMED_INPUT_CODES]
    return []


@schemathesis.check
def valid_data_is_not_refused_as_invalid(ctx, response, case):
    """Schema-valid data may be refused on a documented rule of meaning, never as malformed."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return None
    if is_unexpected_http_status_case(case):  # a probe of a method the path does not serve
        return None
    status = response.status_code
    if status < 400 or status >= 500 or status in ACCEPTABLE_TO_VALID_DATA:
        return None
    if status == 422:
        error = response.json()["error"]
        if error["code"] in documented_rules(case) or _unstorable_text(error):
            return None
        raise AssertionError(
            f"schema-valid request refused as 422 {error['code']}, which the operation does not "
            f"document as a rule: {response.text[:300]}"
        )
    raise AssertionError(f"schema-valid request refused with {status}: {response.text[:300]}")


def _unstorable_text(error: dict) -> bool:
    details = error.get("details")
    return (
        error["code"] == "invalid_input"
        and isinstance(details, dict)
        and details.get("reason") in UNSTORABLE_REASONS
    )

"""Document the error answers every route shares, derived from what the route depends on.

Routes declare their own refusals (`responses=error_responses(e409=...)`); the answers that follow
from the platform itself are added here so no route can forget them: 401 when a token is needed,
403 when only some roles may call, 404 when the path names an object, 400 and 413 when there is a
body, 422 in the one error shape (FastAPI would document its own validation shape), and 503 while
the database is unreachable. A route's own description of a status wins.
"""

import json
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from o2o.errors import ErrorOut
from o2o.users.dependencies import get_current_user

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _common_errors(route: APIRoute) -> dict[str, str]:
    calls = list(_calls(route.dependant))
    errors: dict[str, str] = {}
    if any(call is get_current_user for call in calls):
        errors["401"] = "not_authenticated; invalid_token; token_expired"
    roles = [getattr(call, "allowed_roles", None) for call in calls]
    roles = [r for r in roles if r]
    if roles:
        allowed = sorted({role.value for group in roles for role in group})
        errors["403"] = f"forbidden: only {', '.join(allowed)} may do this"
    if route.dependant.path_params:
        errors["404"] = "not_found: it does not exist or is not yours to see"
    if route.body_field is not None:
        errors["400"] = "bad_request: the body could not be read as the declared media type"
        errors["413"] = "payload_too_large"
    dependant = route.dependant
    if route.body_field is not None or any(
        (dependant.path_params, dependant.query_params, dependant.header_params)
    ):
        errors["422"] = (
            "invalid_input (also text with a NUL character or an unpaired surrogate, which the "
            "database cannot store); malformed_json; malformed_body"
        )
    errors["503"] = "service_unavailable: the database is briefly unreachable (Retry-After)"
    return errors


def install_error_docs(app: FastAPI) -> None:
    """Make app.openapi() document the shared error answers of every route."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        error_schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in error_schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault("ErrorOut", error_schema)
        for route in app.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods:
                operation = schema["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                for status, description in _common_errors(route).items():
                    documented = responses.get(status)
                    # FastAPI's own 422 describes its validation shape, not ours: replace it.
                    if documented is None or status == "422" and _is_fastapi_422(documented):
                        responses[status] = {
                            "description": description,
                            "content": {"application/json": {"schema": ERROR_REF}},
                        }
        for unused in ("HTTPValidationError", "ValidationError"):
            if unused in components and f'"#/components/schemas/{unused}"' not in json.dumps(
                schema
            ):
                del components[unused]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _is_fastapi_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref") == "#/components/schemas/HTTPValidationError"

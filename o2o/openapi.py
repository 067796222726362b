"""Document the error answers every route shares, derived from what the route depends on.

Routes declare their own refusals (`responses=error_responses(e409=...)`); the answers that follow
from the platform itself are added here so no route can forget them: 401 when a token is needed,
403 when only some roles may call, 404 when the path names an object, 400 and 413 when there is a
body, 422 in the one error shape (FastAPI would document its own validation shape), and 503 while
the database is unreachable. A route's own description of a status wins.
"""

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from o2o.api import reads_body
from o2o.errors import MALFORMED_INPUT_CODES, REFUSAL_CODES_KEY, ErrorOut
from o2o.users.dependencies import oauth2_scheme

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _common_errors(route: APIRoute) -> dict[str, str]:
    calls = list(_calls(route.dependant))
    errors: dict[str, str] = {}
    # Whatever loads the caller (on a session, the async engine, the writers' pool or the driver),
    # it reads the bearer token.
    if oauth2_scheme in calls:
        errors["401"] = "not_authenticated; invalid_token; token_expired"
    roles = [getattr(call, "allowed_roles", None) for call in calls]
    roles = [r for r in roles if r]
    if roles:
        allowed = sorted({role.value for group in roles for role in group})
        errors["403"] = f"forbidden: only {', '.join(allowed)} may do this"
    if route.dependant.path_params:
        errors["404"] = "not_found: it does not exist or is not yours to see"
    if reads_body(route):
        errors["400"] = "bad_request: the body could not be read as the declared media type"
        errors["413"] = "payload_too_large"
    dependant = route.dependant
    if reads_body(route) or any(
        (dependant.path_params, _query_params(route), dependant.header_params)
    ):
        errors["422"] = (
            "invalid_input: the input does not fit the schema, or holds text with a NUL "
            "character or an unpaired surrogate, which the database cannot store"
        )
        if reads_body(route):
            errors["422"] += "; malformed_json; malformed_body: the body cannot be read"
    errors["503"] = "service_unavailable: the database is briefly unreachable (Retry-After)"
    return errors


def _query_params(route: APIRoute) -> list[str]:
    """The route's query parameters: FastAPI's, and those it documents itself (a query read as
    one model, `o2o.api.QueryModel`, in its `openapi_extra`)."""
    extra = (route.openapi_extra or {}).get("parameters", [])
    return [param.alias for param in route.dependant.query_params] + [
        param["name"] for param in extra if param.get("in") == "query"
    ]


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
                common = _common_errors(route)
                for status, description in common.items():
                    documented = responses.get(status)
                    # FastAPI's own 422 describes its validation shape, not ours: replace it.
                    if documented is None or status == "422" and _is_fastapi_422(documented):
                        responses[status] = {
                            "description": description,
                            "content": {"application/json": {"schema": ERROR_REF}},
                        }
                if "422" in responses:
                    responses["422"] = _refusals(responses["422"], common.get("422"), route)
        for unused in ("HTTPValidationError", "ValidationError"):
            if unused in components and f'"#/components/schemas/{unused}"' not in json.dumps(
                schema
            ):
                del components[unused]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _refusals(response: dict[str, Any], common: str | None, route: APIRoute) -> dict[str, Any]:
    """The 422 answer with the codes it may carry: malformed input (what every route with input
    answers) and the route's own rules on meaning, stated as an enum on the error code."""
    rules = response.pop(REFUSAL_CODES_KEY, [])
    if "cursor" in _query_params(route):
        rules = [*rules, "invalid_cursor"]  # a well-formed cursor that no page gave out
    malformed = list(MALFORMED_INPUT_CODES) if reads_body(route) else ["invalid_input"]
    if common and rules:
        response["description"] = f"{common}; {response['description']}"
    codes = list(dict.fromkeys(malformed + rules))
    code_enum = {"type": "string", "enum": codes}
    schema = {
        "allOf": [
            ERROR_REF,
            {"type": "object", "properties": {"error": {"properties": {"code": code_enum}}}},
        ]
    }
    response["content"] = {"application/json": {"schema": schema}}
    return response


def _is_fastapi_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref") == "#/components/schemas/HTTPValidationError"


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: a `source` answer (method, path, status) gives `params` of a `target`
    operation (method, path), as runtime expressions such as "$response.body#/id"."""

    source: tuple[str, str, str]
    target: tuple[str, str]
    params: dict[str, str]


def install_links(app: FastAPI, links: Sequence[Link]) -> None:
    """Make app.openapi() carry `links`; a link naming an operation the app lacks is an error."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        paths = schema["paths"]
        for link in links:
            method, path, status = link.source
            target_method, target_path = link.target
            try:
                response = paths[path][method.lower()]["responses"][status]
                target = paths[target_path][target_method.lower()]
            except KeyError as missing:
                raise LookupError(f"link {link} names an unknown operation ({missing})") from None
            pointer = target_path.replace("~", "~0").replace("/", "~1")
            response.setdefault("links", {})[target["operationId"]] = {
                "operationRef": f"#/paths/{pointer}/{target_method.lower()}",
                "parameters": dict(link.params),
            }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

"""The OpenAPI document states what the API enforces: each operation's 422 lists its codes, and
links lead from what is created to the operations on it."""

import pytest
from fastapi import FastAPI

from o2o.api import ApiRoute
from o2o.errors import error_responses
from o2o.openapi import Link, install_error_docs, install_links
from tests.documented_errors import documented_422_codes


def _app() -> FastAPI:
    app = FastAPI()
    app.router.route_class = ApiRoute

    @app.get("/things/{thing_id}")
    def read_thing(thing_id: int, cursor: str | None = None) -> dict:
        return {"id": thing_id}

    @app.post("/things", status_code=201, responses=error_responses(e422=("unknown_kind",)))
    def make_thing(body: dict) -> dict:
        return {"id": 1}

    @app.get("/health")
    def health() -> dict:
        return {}

    install_error_docs(app)
    return app


def _codes(app: FastAPI, method: str, path: str) -> list[str]:
    for known_method, pattern, codes in documented_422_codes(app.openapi()):
        if known_method == method and pattern.match(path):
            return codes
    raise AssertionError(f"{method} {path} not in the document")


def test_a_422_lists_malformed_input_and_the_route_s_own_rules():
    app = _app()
    assert _codes(app, "POST", "/things") == [
        "invalid_input",
        "malformed_json",
        "malformed_body",
        "unknown_kind",
    ]
    # A list taking a cursor may refuse one that no page gave out.
    assert _codes(app, "GET", "/things/1") == ["invalid_input", "invalid_cursor"]
    # No input, no 422.
    assert "422" not in app.openapi()["paths"]["/health"]["get"]["responses"]


def test_links_point_at_the_operations_they_name():
    app = _app()
    install_links(
        app,
        [
            Link(
                ("POST", "/things", "201"),
                ("GET", "/things/{thing_id}"),
                {"thing_id": "$response.body#/id"},
            )
        ],
    )
    links = app.openapi()["paths"]["/things"]["post"]["responses"]["201"]["links"]
    (link,) = links.values()
    assert link == {
        "operationRef": "#/paths/~1things~1{thing_id}/get",
        "parameters": {"thing_id": "$response.body#/id"},
    }


def test_a_link_to_an_operation_that_does_not_exist_is_an_error():
    app = _app()
    install_links(app, [Link(("POST", "/things", "201"), ("DELETE", "/things/{thing_id}"), {})])
    with pytest.raises(LookupError):
        app.openapi()


def test_every_operation_that_needs_a_token_documents_the_401(_built_app):
    # However its caller is loaded (a session, the async engine, the writers' pool, the driver's
    # connection), an operation secured by the bearer token says it may answer 401. Placing an
    # order and the next-job claim, whose callers are loaded off the session, are among them.
    document = _built_app.openapi()
    secured = [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("security")
    ]
    assert ("post", "/api/v1/orders") in {(m, p) for m, p, _ in secured}
    assert ("post", "/api/v1/dispatch/claim") in {(m, p) for m, p, _ in secured}
    missing = [f"{m.upper()} {p}" for m, p, op in secured if "401" not in op["responses"]]
    assert missing == []

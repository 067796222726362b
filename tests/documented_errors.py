"""Hold every 422 the suite sees to the OpenAPI document: its error code must be one the
operation lists (o2o.openapi states them as an enum), so a rule the API enforces on meaning can
never go unstated in the schema the apps and outside fuzzers read."""

import re
from collections.abc import Callable

import httpx

API_PREFIX = "/api/v1"


def _codes(response: dict) -> list[str]:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    for part in schema.get("allOf", []):
        code = part.get("properties", {}).get("error", {}).get("properties", {}).get("code", {})
        if "enum" in code:
            return code["enum"]
    return []


def documented_422_codes(openapi: dict) -> list[tuple[str, re.Pattern, list[str]]]:
    """(method, path pattern, documented 422 codes) for every operation of the document."""
    index = []
    for template, operations in openapi["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method, operation in operations.items():
            codes = _codes(operation.get("responses", {}).get("422", {}))
            index.append((method.upper(), pattern, codes))
    return index


def check_422_is_documented(openapi: dict) -> Callable[[httpx.Response], None]:
    """An httpx response hook failing the test on a 422 whose code its operation does not list."""
    index = documented_422_codes(openapi)

    def hook(response: httpx.Response) -> None:
        path = response.request.url.path
        if response.status_code != 422 or not path.startswith(API_PREFIX):
            return
        response.read()
        code = response.json()["error"]["code"]
        method = response.request.method
        for known_method, pattern, codes in index:
            if known_method == method and pattern.match(path):
                assert code in codes, (
                    f"{method} {path} answered 422 {code}, which its OpenAPI 422 does not list "
                    f"({', '.join(codes) or 'no 422 documented'}): name it in the route's "
                    f"error_responses(e422=...)"
                )
                return

    return hook

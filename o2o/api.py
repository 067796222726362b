"""The route class of every API router: text the database cannot store refused at the edge, JSON
numbers read the way JSON Schema reads them, and each sync endpoint's request session committed as
the endpoint returns."""

import email.message
import functools
import inspect
import json
import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python
from starlette.datastructures import UploadFile

from o2o.db import INT4_MAX, commit_on_return
from o2o.text import check_storable


def _json_number(text: str) -> int | float:
    # JSON has one kind of number, and JSON Schema counts 3.0 as an integer: read a whole number
    # as an int, so integer fields take it while 2.5, true and "3" are still refused.
    value = float(text)
    return int(value) if value.is_integer() else value


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_float=_json_number)
        return self._json


# A row id in a path: the schema states the column's range, so an id past it is refused as
# invalid input (422), never looked up.
RowId = Annotated[int, Path(ge=1, le=INT4_MAX)]

# A page cursor as the lists give it out (`o2o.pagination`): URL-safe base64 without padding. The
# schema states the alphabet and the length; a well-formed cursor that no list gave out is refused
# with 422 `invalid_cursor`.
MAX_CURSOR_LENGTH = 512
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
CURSOR_DESCRIPTION = "The `next_cursor` of the previous page; omit it for the first page."
CursorQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        pattern=CURSOR_PATTERN,
        description=CURSOR_DESCRIPTION,
    ),
]

# How a JSON document's bytes can carry text the database cannot store (`o2o.text`): a NUL or
# surrogate escape (`\u0000`, `\ud800`-`\udfff`), a surrogate encoded as if it were UTF-8 (which
# `json.loads` accepts), or a NUL byte (a raw one, or a UTF-16 or UTF-32 document, which
# `json.loads` also reads). A body with none of them is not walked; one with any is, in full.
_MAY_BE_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\x00|\xed[\xa0-\xbf]")


def query_may_be_unstorable(query_string: bytes) -> bool:
    """Whether a query string can hold a value the database cannot store. Starlette reads its
    bytes as Latin-1 (no surrogate there) and percent-decodes them as UTF-8 with invalid bytes
    replaced (`parse_qsl`), so a surrogate never comes out of it: only a NUL can, raw or as
    `%00`. Most query strings are then never walked (tests/unit/test_query_text.py)."""
    return b"\x00" in query_string or b"%00" in query_string


# Headers whose values the platform stores (the others are only read).
STORED_HEADERS = ("idempotency-key",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def check_request_text(request: JsonRequest, *, reads_body: bool) -> None:
    """Refuse a request carrying text the database cannot store, wherever it is: path, query,
    stored headers, a JSON body or a form (field values and file names). A body is looked at
    only by a route that reads one."""
    check_storable(request.scope.get("path_params", {}), "path")
    if query_may_be_unstorable(request.scope.get("query_string", b"")):
        for name, value in request.query_params.multi_items():
            check_storable({name: value}, "query")
    for name in STORED_HEADERS:
        if (value := request.headers.get(name)) is not None:
            check_storable({name: value}, "header")
    if not reads_body:
        return
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(FORM_TYPES):
        # Parsed from a replay of the body: the handler then parses the same bytes with its own
        # limits (files, fields), as if nothing had read them before.
        body = await request.body()

        async def replay() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form()
        except Exception:  # noqa: BLE001 - a malformed form is refused by the handler itself
            return
        try:
            for name, value in form.multi_items():
                text = (value.filename or "") if isinstance(value, UploadFile) else value
                check_storable({name: text}, "form")
        finally:
            await form.close()
    elif _read_as_json(content_type):
        if not _MAY_BE_UNSTORABLE.search(await request.body()):
            return  # no way to write such text in these bytes: no need to walk the document
        try:
            body = await request.json()
        except ValueError:  # malformed JSON is refused by the handler in the one error shape
            return
        check_storable(body, "body")


@functools.lru_cache(maxsize=64)
def _read_as_json(content_type: str) -> bool:
    """Whether FastAPI reads a body sent with this Content-Type as JSON: its own test (no type at
    all, or application/json or application/*+json, in any letter case, with any parameters)."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def reads_body(route: APIRoute) -> bool:
    """Whether the route reads a request body: a declared one, or one it parses itself (a
    multipart form read by the handler)."""
    return route.body_field is not None or bool(route.methods & BODY_METHODS)


class ApiRoute(APIRoute):
    """A route that refuses unstorable text, reads whole JSON numbers as integers and commits
    sync endpoints on return."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = commit_on_return(endpoint)
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            request = JsonRequest(request.scope, request.receive, request._send)
            await check_request_text(request, reads_body=reads_body(self))
            return await handler(request)

        return handle


def model_json(model: BaseModel, status_code: int = 200) -> Response:
    """Answer with a validated model as JSON, serialized once (a Response is sent as it is, so
    the route's response_model, which still documents it, does not validate it again)."""
    return Response(
        model.model_dump_json(by_alias=True), status_code=status_code, media_type="application/json"
    )


# How the hot reads write JSON: UTC times end in Z, as pydantic writes them; keys that are not
# text (ids) are written as text; anything orjson does not know (a Decimal, a timedelta) is
# written as pydantic would write it.
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def data_json(data: Any, status_code: int = 200) -> Response:
    """Answer with plain data (dicts and lists of numbers, text, datetimes, enums) as JSON in one
    pass, with no model in between: for the hottest requests (the nearby list, search, a
    courier's position report), whose services build exactly the route's documented model (tests
    validate those answers against it). Values are written as pydantic's serializer writes them
    (datetimes in ISO 8601 with Z for UTC, enums by value, anything else through pydantic itself;
    tests/o2o/test_data_json.py), by orjson, which writes a large page (the nearby list's, each
    store with its week of hours) faster. Unlike pydantic, it refuses a whole number past 64 bits
    and writes an infinite or NaN float as null; the hot reads' answers hold neither."""
    return Response(
        orjson.dumps(data, default=to_jsonable_python, option=_JSON_OPTIONS),
        status_code=status_code,
        media_type="application/json",
    )


M = TypeVar("M", bound=BaseModel)


class QueryModel(Generic[M]):
    """A query string read as one model in one pass, for a hot read: the endpoint takes the
    `Request` and calls `read(request)`, and the route passes `openapi()` as its
    `openapi_extra` to document the model's fields as query parameters.

    FastAPI reads a query model field by field (looking each up, with its own checks of the
    field's type on every request) before it validates the model; this takes the query string
    as a dict and validates it once. The answers are FastAPI's: the last value of a repeated
    parameter, unknown ones ignored, and a 422 whose errors name `("query", field)`
    (`o2o.errors` words them); the parameters and the refusals are documented as FastAPI
    documents a query model (tests/o2o/test_query_model.py). Only for models of single plain
    values (numbers, text, booleans, optional or not): a list would be read as its last value
    and a nested model's schema would not be in the document, so they are refused here.
    """

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self._schema = model.model_json_schema()
        for name, field in self._schema["properties"].items():
            kinds = field.get("anyOf", [field])
            if any("$ref" in kind or kind.get("type") in ("array", "object") for kind in kinds):
                raise TypeError(f"{model.__name__}.{name}: a query model holds plain values only")

    def read(self, request: Request) -> M:
        try:
            return self.model.model_validate(dict(request.query_params))
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from None

    def openapi(self) -> dict[str, Any]:
        """The route's `openapi_extra`: one query parameter per field of the model."""
        required = set(self._schema.get("required", ()))
        parameters = []
        for name, field in self._schema["properties"].items():
            if field.get("default", ...) is None:
                field = {k: v for k, v in field.items() if k != "default"}
            parameter = {"name": name, "in": "query", "required": name in required, "schema": field}
            if "description" in field:
                parameter["description"] = field["description"]
            parameters.append(parameter)
        return {"parameters": parameters}

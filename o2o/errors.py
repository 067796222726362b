"""One error hierarchy and the handlers that turn every error into one JSON shape.

Shape: {"error": {"code": "...", "message": "...", "details": ...}}.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic_core import PydanticCustomError
from python_multipart.exceptions import FormParserError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from o2o.i18n import N_, SOURCE_LOCALE, current_locale
from o2o.i18n import gettext as _

log = logging.getLogger(__name__)


class DomainError(Exception):
    """A refusal the caller can understand and act on."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.details = details
        self.headers = headers


class InvalidInput(DomainError):
    status_code = 422
    code = "invalid_input"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class Unauthorized(DomainError):
    status_code = 401
    code = "not_authenticated"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message if message is not None else _("Sign in to continue."), **kwargs)


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class RateLimited(DomainError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, **kwargs: Any) -> None:
        retry_after_s = max(1, int(retry_after_s))
        super().__init__(
            message,
            headers={"Retry-After": str(retry_after_s)},
            details={"retry_after_seconds": retry_after_s},
            **kwargs,
        )


class ServiceUnavailable(DomainError):
    status_code = 503
    code = "service_unavailable"


class ErrorBodyOut(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    """The one error shape (documented in the OpenAPI schema)."""

    error: ErrorBodyOut


# The 422 codes every route with input may answer (o2o.openapi adds them): input that does not
# fit the schema, or a body that cannot be read at all. Any other 422 code is a rule on meaning
# that the route names itself, and only those may refuse schema-valid input.
MALFORMED_INPUT_CODES = ("invalid_input", "malformed_json", "malformed_body")
REFUSAL_CODES_KEY = "x-refusal-codes"


def error_responses(
    *, e422: Mapping[str, str] | Sequence[str] = (), **by_status: str
) -> dict[int, dict[str, Any]]:
    """Document error answers for a route: error_responses(e409="order_not_open") -> `responses`.

    `e422` names the rules on meaning the route enforces beyond its schema (an id that names
    nothing, a key reused with another body), as codes or as {code: what it means}; the OpenAPI
    document lists them as the only codes its 422 answer may carry besides malformed input.
    """
    responses = {
        int(key.removeprefix("e")): {"model": ErrorOut, "description": description}
        for key, description in by_status.items()
    }
    if isinstance(e422, str):
        raise TypeError("e422 takes codes, e.g. e422=('unknown_product',), not a description")
    if e422:
        notes = dict(e422) if isinstance(e422, Mapping) else dict.fromkeys(e422, "")
        responses[422] = {
            "model": ErrorOut,
            "description": "; ".join(
                f"{code}: {note}" if note else code for code, note in notes.items()
            ),
            REFUSAL_CODES_KEY: list(notes),
        }
    return responses


def rule_error(code: str, message: str) -> PydanticCustomError:
    """Refuse input inside a model on a rule no JSON schema can state (a product listed twice, a
    wrong check digit): the answer is 422 with `code` instead of `invalid_input`."""
    return PydanticCustomError(code, message, {"rule": True})


def _rule_code(exc: RequestValidationError) -> str | None:
    """The code of the first rule broken, when every error is such a rule (none is malformed)."""
    errors = exc.errors()
    if errors and all((err.get("ctx") or {}).get("rule") is True for err in errors):
        return errors[0]["type"]
    return None


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """Build the one error shape."""
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status_code: int, code: str, message: str, details: Any = None, headers=None
) -> JSONResponse:
    return JSONResponse(
        error_body(code, message, details), status_code=status_code, headers=headers
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "service_unavailable",
}


# pydantic's messages for the input errors clients meet most, by error type, so a 422 speaks the
# request's language; placeholders are the error's `ctx`. Other types keep pydantic's English.
VALIDATION_MESSAGES = {
    "missing": N_("Field required"),
    "extra_forbidden": N_("Extra inputs are not permitted"),
    "int_type": N_("Input should be a valid integer"),
    "int_parsing": N_("Input should be a valid integer, unable to parse string as an integer"),
    "int_from_float": N_("Input should be a valid integer, got a number with a fractional part"),
    "float_type": N_("Input should be a valid number"),
    "float_parsing": N_("Input should be a valid number, unable to parse string as a number"),
    "finite_number": N_("Input should be a finite number"),
    "bool_type": N_("Input should be a valid boolean"),
    "bool_parsing": N_("Input should be a valid boolean, unable to interpret input"),
    "string_type": N_("Input should be a valid string"),
    "string_too_short": N_("String should have at least {min_length} characters"),
    "string_too_long": N_("String should have at most {max_length} characters"),
    "string_pattern_mismatch": N_("String should match pattern '{pattern}'"),
    "greater_than": N_("Input should be greater than {gt}"),
    "greater_than_equal": N_("Input should be greater than or equal to {ge}"),
    "less_than": N_("Input should be less than {lt}"),
    "less_than_equal": N_("Input should be less than or equal to {le}"),
    "too_short": N_("List should have at least {min_length} items"),
    "too_long": N_("List should have at most {max_length} items"),
    "list_type": N_("Input should be a valid list"),
    "dict_type": N_("Input should be a valid dictionary"),
    "model_type": N_("Input should be an object"),
    "model_attributes_type": N_("Input should be an object"),
    "enum": N_("Input should be {expected}"),
    "literal_error": N_("Input should be {expected}"),
    "date_type": N_("Input should be a valid date"),
    "date_parsing": N_("Input should be a valid date in the format YYYY-MM-DD"),
    "date_from_datetime_parsing": N_("Input should be a valid date in the format YYYY-MM-DD"),
    "datetime_type": N_("Input should be a valid datetime"),
    "datetime_parsing": N_("Input should be a valid datetime"),
    "datetime_from_date_parsing": N_("Input should be a valid datetime"),
    "timezone_aware": N_("Input should have timezone info"),
    "time_parsing": N_("Input should be in a valid time format"),
    "uuid_parsing": N_("Input should be a valid UUID"),
    "uuid_type": N_("Input should be a valid UUID"),
    "json_invalid": N_("Invalid JSON: {error}"),
    "value_error": N_("Value error, {error}"),
    "url_parsing": N_("Input should be a valid URL"),
    "url_scheme": N_("URL scheme should be {expected_schemes}"),
    "decimal_parsing": N_("Input should be a valid decimal"),
    "multiple_of": N_("Input should be a multiple of {multiple_of}"),
}


def validation_message(err: Mapping[str, Any]) -> str:
    """An input error's message in the request's language (pydantic's own text in English)."""
    msg = str(err.get("msg", ""))
    template = VALIDATION_MESSAGES.get(str(err.get("type", "")))
    if template is None or current_locale() == SOURCE_LOCALE:
        return msg
    ctx = {key: str(value) for key, value in (err.get("ctx") or {}).items()}
    try:
        return _(template).format(**ctx)
    except (KeyError, IndexError, ValueError):
        return msg


# Starlette's own details (the HTTP reason phrases) that reach clients, marked for translation.
HTTP_PHRASES = frozenset(
    {
        N_("Method Not Allowed"),
        N_("Not Acceptable"),
        N_("Unsupported Media Type"),
        N_("Request Entity Too Large"),
        N_("Content Too Large"),
        N_("Bad Request"),
        N_("Unauthorized"),
        N_("Forbidden"),
    }
)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        details.append(
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "message": validation_message(err),
                "type": err.get("type", ""),
            }
        )
    return details


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route_methods
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that make every error one JSON shape."""

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        if any(d["type"] == "json_invalid" for d in details):
            return error_response(
                422, "malformed_json", _("The request body is not valid JSON."), details
            )
        rule = _rule_code(exc)
        if rule is not None:
            return error_response(422, rule, details[0]["message"], details)
        return error_response(422, "invalid_input", _("The request is not valid."), details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = _("Nothing is here.")
        elif message in HTTP_PHRASES:
            message = _(message)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path; a path served by
            # several routes (GET and POST /orders) allows all of their methods.
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return error_response(exc.status_code, code, message, None, headers)

    @app.exception_handler(FormParserError)
    async def _unreadable_form(request: Request, exc: FormParserError) -> JSONResponse:
        # The multipart parser refuses a malformed body with its own error, which Starlette
        # passes through: the body is unreadable, answered as malformed JSON is (422).
        return error_response(
            422, "malformed_body", _("The form body could not be read as multipart/form-data.")
        )

    # The driver pool's own errors (o2o.db.DriverConnection) are answered as SQLAlchemy's are.
    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(OperationalError)
    async def _db_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc.__class__.__name__)
        return error_response(
            503,
            "service_unavailable",
            _("The service is briefly unavailable; try again."),
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(psycopg_pool.PoolTimeout)
    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
        # Every pooled connection stayed busy for the whole pool timeout: the service is
        # overloaded, not broken, and the request changed nothing; a client may retry.
        log.warning("database connection pool exhausted")
        return error_response(
            503,
            "service_unavailable",
            _("The service is busy; try again in a moment."),
            details={"retry_after_seconds": 2},
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(DBAPIError)
    async def _db_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return error_response(
                503,
                "service_unavailable",
                _("The service is briefly unavailable; try again."),
                headers={"Retry-After": "5"},
            )
        log.exception("database error")
        return error_response(500, "internal_error", _("Something went wrong on our side."))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", _("Something went wrong on our side."))

"""The web console: a sub-application mounted at /console with its own HTML error pages.

Pages are server-rendered (Jinja2); htmx and a little plain JavaScript are served from static/,
never from the internet.
"""

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from o2o.console import pages
from o2o.console.auth import ConsoleSessionMiddleware, LoginRequired, login_redirect_target
from o2o.console.rendering import render
from o2o.errors import HTTP_PHRASES, DomainError, validation_message
from o2o.i18n import N_
from o2o.i18n import gettext as _

STATIC_DIR = Path(__file__).resolve().parent / "static"

log = logging.getLogger(__name__)

# Everything the pages load comes from this origin; no inline script, so injected markup cannot
# run code. Inline SVG uses presentation attributes, which style-src does not govern.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeadersMiddleware:
    """Add the console's security headers; pages are never cached (they show patient data)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_static = "/static/" in scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                ]
                if is_static:
                    extra.append((b"cache-control", b"public, max-age=3600"))
                else:
                    extra.append((b"cache-control", b"no-store"))
                headers.extend((k, v) for k, v in extra if k not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error_page(
    request: Request,
    status_code: int,
    title: str,
    message: str,
    *,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = render(
        request,
        "error.html",
        {"title": title, "message": message, "details": details, "status_code": status_code},
        status_code=status_code,
    )
    if headers:
        response.headers.update(headers)
    return response


_TITLES = {
    400: N_("Bad request"),
    401: N_("Sign in needed"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    405: N_("Not allowed"),
    409: N_("Cannot do that now"),
    413: N_("Too large"),
    422: N_("Check the form"),
    429: N_("Too many attempts"),
    503: N_("Briefly unavailable"),
}


def _title(status_code: int, default: str) -> str:
    return _(_TITLES.get(status_code, default))


def _install_error_pages(console: FastAPI) -> None:
    @console.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        target = login_redirect_target(request)
        if request.headers.get("hx-request"):
            return Response(status_code=200, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    @console.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        title = _title(exc.status_code, N_("Something is wrong"))
        return _error_page(
            request, exc.status_code, title, exc.message, details=None, headers=exc.headers
        )

    @console.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{where}: {validation_message(err)}")
        return _error_page(
            request,
            422,
            _title(422, ""),
            _("Some of what was sent is not valid."),
            details=problems,
        )

    @console.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else ""
        if exc.status_code == 404:
            message = _("There is no such page.")
        elif message in HTTP_PHRASES:
            message = _(message)
        return _error_page(
            request,
            exc.status_code,
            _title(exc.status_code, N_("Error")),
            message,
            headers=getattr(exc, "headers", None),
        )

    @console.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("console page failed")
        return _error_page(
            request,
            500,
            _("Something went wrong"),
            _("Something went wrong on our side; try again."),
        )


def create_console_app(dependency_overrides: dict | None = None) -> FastAPI:
    """Create the console sub-application (mount it at /console).

    dependency_overrides: the parent application's overrides dict, shared (not copied), so an
    override set on the parent (tests swap the database session) also applies here.
    """
    console = FastAPI(
        title="O2O console", openapi_url=None, docs_url=None, redoc_url=None, version="1"
    )
    if dependency_overrides is not None:
        console.dependency_overrides = dependency_overrides
    _install_error_pages(console)
    console.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    console.include_router(pages.router)
    console.add_middleware(ConsoleSessionMiddleware)
    console.add_middleware(SecurityHeadersMiddleware)
    return console

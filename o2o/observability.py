"""Structured logs with a request id, Prometheus metrics, the request-body size cap and the
security headers of every answer.

They are one plain ASGI middleware (no BaseHTTPMiddleware, no layer each) so they add little to
every request.
"""

import contextlib
import functools
import json
import logging
import secrets
import sys
import time
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from o2o import i18n
from o2o.errors import error_body
from o2o.i18n import gettext as _

REQUESTS = Counter(
    "o2o_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"]
)
LATENCY = Histogram(
    "o2o_http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# Every log line's level and time (ISO 8601 in UTC), the access line's included.
_LEVEL_AND_TIME = [
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


@functools.lru_cache(maxsize=1024)
def _route_metrics(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    """A route's request counter and latency histogram for one method and status, looked up
    once (each lookup by labels takes a lock and checks every label)."""
    return REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route)


def configure_logging(json_logs: bool) -> None:
    """Log as JSON lines (production) or readable lines (development), with context vars."""
    shared = [structlog.contextvars.merge_contextvars, *_LEVEL_AND_TIME]
    renderer = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=shared,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("uvicorn.access").handlers = []
    logging.getLogger("uvicorn.access").propagate = False
    # The access log writes a line for every request: rendered by the same processors as every
    # other line, but called straight, without the logging module's records and handlers or
    # structlog's bound logger and context merge (the request id is passed in).
    global access_log
    access_log = AccessLog(renderer)


class AccessLog:
    """The access log: one line on stderr for each request, with its method, path, status,
    duration and request id, leveled, time-stamped and rendered as every other line is. It is
    the costliest part of what every request passes through, so the processors are called
    straight (docs/BENCHMARKS.md, "Load"). The context's variables are not merged into it: the
    request id, the one the edge binds, is passed in; a variable bound later for other lines
    must be passed here too to reach the access line."""

    def __init__(self, renderer: Any) -> None:
        self.processors = [*_LEVEL_AND_TIME, renderer]

    def request(
        self, *, method: str, path: str, status: int, duration_ms: float, request_id: str
    ) -> None:
        line: Any = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "event": "request",
            "request_id": request_id,
        }
        for processor in self.processors:
            line = processor(None, "info", line)
        # stderr closed under us (a test harness's capture): the line is dropped.
        with contextlib.suppress(ValueError):
            sys.stderr.write(line + "\n")


# Replaced by configure_logging as the application starts.
access_log = AccessLog(structlog.processors.JSONRenderer())


class _BodyTooLarge(Exception):
    pass


HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
NOSNIFF = (b"x-content-type-options", b"nosniff")


class EdgeMiddleware:
    """What every request passes through, in one layer (each layer costs every request):

    - its language, from Accept-Language (first, so every answer, a 413 included, speaks it),
      said in Content-Language;
    - an id (X-Request-ID in and out), its time, a count and an access-log line;
    - the body-size cap: a body over `max_bytes` is refused with 413, announced or streamed;
    - nosniff on every answer, and HSTS in production (served over TLS behind the proxy).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, hsts: bool) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.headers = [NOSNIFF, HSTS] if hsts else [NOSNIFF]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        locale_token, locale = i18n.enter_request_locale(scope)
        request_id = (_header(scope, b"x-request-id") or secrets.token_hex(16))[:64]
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        received = 0
        too_large = refused = False

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                present = {name.lower() for name, _ in headers}
                message["headers"] = [
                    *headers,
                    *(h for h in self.headers if h[0] not in present),
                    (b"x-request-id", request_id.encode("latin-1")),
                    *i18n.language_headers(locale),
                ]
            await send(message)

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The app may catch the exception and answer on its own (FastAPI turns body errors
            # into 400); whatever it answers, an oversized body gets the 413.
            nonlocal refused
            if too_large:
                if not refused:
                    refused = True
                    await self._refuse(answer)
                return
            await answer(message)

        try:
            if self._announced_too_large(scope):
                await self._refuse(answer)
                return
            try:
                await self.app(scope, counting_receive, guarded_send)
            except _BodyTooLarge:
                if not refused:
                    await self._refuse(answer)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            count, latency = _route_metrics(method, route_path, status)
            count.inc()
            latency.observe(elapsed)
            access_log.request(
                method=method,
                path=scope.get("path", ""),
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                request_id=request_id,
            )
            structlog.contextvars.unbind_contextvars("request_id")
            i18n.leave_request_locale(locale_token)

    def _announced_too_large(self, scope: Scope) -> bool:
        declared = _header(scope, b"content-length")
        try:
            return declared is not None and int(declared) > self.max_bytes
        except ValueError:
            return False

    async def _refuse(self, send: Send) -> None:
        mb = self.max_bytes / (1024 * 1024)
        body = json.dumps(
            error_body(
                "payload_too_large",
                _("The request body is larger than {mb:g} MB.").format(mb=mb),
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None

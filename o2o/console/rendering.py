"""Templates and the formatting filters the pages share (times in the store's zone, money)."""

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

templates = Jinja2Templates(directory=TEMPLATES_DIR)

# ISO 4217 currencies without minor units; every other currency the platform sells in has 2.
_ZERO_DECIMAL = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"})


def money(amount_minor: int | None, currency: str = "CNY") -> str:
    """Format integer minor units as "18.50 CNY"."""
    if amount_minor is None:
        return "–"
    if currency.upper() in _ZERO_DECIMAL:
        return f"{amount_minor:,} {currency}"
    sign = "-" if amount_minor < 0 else ""
    whole, cents = divmod(abs(amount_minor), 100)
    return f"{sign}{whole:,}.{cents:02d} {currency}"


def zone_named(name: str | None) -> ZoneInfo:
    """The named time zone (UTC if the name is unknown)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(value: datetime | None, tz: str | None = None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Show a UTC timestamp in the store's time zone."""
    if value is None:
        return "–"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(zone_named(tz)).strftime(fmt)


def waited(minutes: float | int | None) -> str:
    """Say how long something has waited: "45 min", "2 h 05 min", "3 d 4 h"."""
    if minutes is None:
        return "–"
    minutes = max(0, int(minutes))
    if minutes < 60:
        return f"{minutes} min"
    hours, mins = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {mins:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def iso(value: datetime | date | None) -> str:
    """Machine-readable timestamp for <time datetime> and data attributes."""
    if value is None:
        return ""
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def humanize(value: Any) -> str:
    """Turn an enum value such as "awaiting_prescription" into "awaiting prescription"."""
    text = getattr(value, "value", value)
    return str(text).replace("_", " ")


def console_url(request: Request, name: str, /, **params: Any) -> str:
    """Path of a console route by name, under wherever the console is mounted.

    Starlette's url_for resolves names against the top-level app; console names live in the
    mounted sub-app, so resolve them there and prefix the mount path (the scope's root_path).
    """
    path = request.app.url_path_for(name, **{k: str(v) for k, v in params.items()})
    return request.scope.get("root_path", "") + str(path)


@pass_context
def _url_for(context: Any, name: str, /, **params: Any) -> str:
    return console_url(context["request"], name, **params)


templates.env.globals["url_for"] = _url_for
templates.env.filters.update(
    money=money, local_time=local_time, waited=waited, iso=iso, humanize=humanize
)


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render a page with what every page needs: the user, the CSRF token, the nav."""
    session = getattr(request.state, "console_session", None)
    ctx: dict[str, Any] = {
        "user": getattr(request.state, "console_user", None),
        "csrf_token": session.csrf if session is not None else "",
        "store": None,
        "section": None,
    }
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code, headers=headers)

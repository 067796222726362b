"""Templates and the filters the pages share: gettext, times in the store's zone, money, numbers,
all in the page's language (o2o.i18n)."""

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context

from o2o import i18n
from o2o.console.words import WORDS
from o2o.i18n import gettext as _

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

templates = Jinja2Templates(directory=TEMPLATES_DIR)

# The strftime shapes the templates used before, as CLDR skeletons: each locale orders the parts.
_SKELETONS = {
    "%Y-%m-%d %H:%M": i18n.DATETIME,
    "%H:%M": i18n.TIME,
    "%H:%M:%S": i18n.TIME_SECONDS,
    "%a %H:%M": i18n.WEEKDAY_TIME,
    "%d %b %H:%M": "MMMdHm",
    "%Y-%m-%d": i18n.DATE,
}


def money(amount_minor: int | None, currency: str = "CNY") -> str:
    """Format integer minor units in the page's language ("¥18.50", "CN¥18.50")."""
    return i18n.money(amount_minor, currency)


def zone_named(name: str | None) -> ZoneInfo:
    """The named time zone (UTC if the name is unknown)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(value: datetime | None, tz: str | None = None, fmt: str = i18n.DATETIME) -> str:
    """Show a UTC timestamp in the store's time zone, formatted for the page's language.

    fmt is a CLDR skeleton (i18n.DATETIME, i18n.TIME, ...); the old strftime shapes still work.
    """
    return i18n.local_datetime(value, zone_named(tz).key, _SKELETONS.get(fmt, fmt))


def waited(minutes: float | int | None) -> str:
    """Say how long something has waited: "45 min", "2 h 05 min", "3 d 4 h"."""
    if minutes is None:
        return "–"
    minutes = max(0, int(minutes))
    if minutes < 60:
        return _("{minutes} min").format(minutes=minutes)
    hours, mins = divmod(minutes, 60)
    if hours < 48:
        return _("{hours} h {minutes:02d} min").format(hours=hours, minutes=mins)
    days, hours = divmod(hours, 24)
    return _("{days} d {hours} h").format(days=days, hours=hours)


def iso(value: datetime | date | None) -> str:
    """Machine-readable timestamp for <time datetime> and data attributes."""
    if value is None:
        return ""
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def humanize(value: Any) -> str:
    """Turn an enum value such as "awaiting_prescription" into words in the page's language."""
    text = str(getattr(value, "value", value))
    label = WORDS.get(text)
    return _(label) if label is not None else text.replace("_", " ")


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


templates.env.add_extension("jinja2.ext.i18n")
templates.env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)
templates.env.globals["url_for"] = _url_for
templates.env.globals["languages"] = i18n.LANGUAGES
templates.env.globals["current_locale"] = i18n.current_locale
templates.env.filters.update(
    money=money,
    local_time=local_time,
    waited=waited,
    iso=iso,
    humanize=humanize,
    number=i18n.number,
    percent=i18n.percent,
    day=i18n.day,
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

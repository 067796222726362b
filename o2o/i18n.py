"""Languages: the request's locale, the gettext catalogues (Babel) and locale-aware formatting.

The source strings are English (`en`); `zh_CN` (Simplified Chinese) comes from the catalogue in
o2o/locale/zh_CN/LC_MESSAGES/messages.po. The locale of a request lives in a context variable:
the request's edge (`o2o.observability.EdgeMiddleware`) sets it from `Accept-Language`, and the console replaces it
with the cookie or the signed-in user's choice. Code marks text with `gettext` (imported as `_`)
where it is shown, and with `N_` where it is only defined (module constants), translating it with
`_()` when used. Outside a request (Celery, the CLI) the locale is the source language.
"""

import gettext as gettext_module
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from io import BytesIO
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_skeleton, match_skeleton
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent, get_currency_precision
from babel.support import Translations
from starlette.types import Scope

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
SOURCE_LOCALE = "en"
# The languages the platform speaks, as (locale, the language's own name for itself).
LANGUAGES = (("zh_CN", "中文"), ("en", "English"))
SUPPORTED = tuple(code for code, _ in LANGUAGES)
DEFAULT_LOCALE = SOURCE_LOCALE


@dataclass
class _RequestLocale:
    """Mutable, so a dependency running in a worker thread (a copied context) can change it."""

    locale: str


_current: ContextVar[_RequestLocale | None] = ContextVar("o2o_locale", default=None)


def normalize(value: str | None) -> str | None:
    """Map a language tag ("zh-CN", "zh-Hans", "en-GB", "zh_CN") to a supported locale."""
    if not value:
        return None
    tag = value.strip().replace("_", "-").lower()
    if not tag or tag == "*":
        return None
    primary = tag.split("-", 1)[0]
    if primary == "zh":
        return "zh_CN"
    if primary == "en":
        return "en"
    return None


def negotiate(accept_language: str | None) -> str:
    """Choose the supported locale an Accept-Language header prefers (English if none fits)."""
    if not accept_language:
        return DEFAULT_LOCALE
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        locale = normalize(tag)
        if locale is not None and quality > 0:
            ranked.append((-quality, index, locale))
    return min(ranked)[2] if ranked else DEFAULT_LOCALE


def current_locale() -> str:
    """The locale of the request being served (the source language outside one)."""
    box = _current.get()
    return box.locale if box is not None else DEFAULT_LOCALE


def set_locale(locale: str) -> None:
    """Switch the current request to a supported locale (from a cookie or the user's choice)."""
    if locale not in SUPPORTED:
        return
    box = _current.get()
    if box is None:
        _current.set(_RequestLocale(locale))
    else:
        box.locale = locale


@contextmanager
def use_locale(locale: str) -> Iterator[None]:
    """Speak `locale` inside the block (tests, the CLI, a task rendering for someone)."""
    token = _current.set(_RequestLocale(locale if locale in SUPPORTED else DEFAULT_LOCALE))
    try:
        yield
    finally:
        _current.reset(token)


def catalogue_paths(locale: str) -> tuple[Path, Path]:
    """The .po (source of truth) and the compiled .mo of a locale."""
    folder = LOCALE_DIR / locale / "LC_MESSAGES"
    return folder / f"{DOMAIN}.po", folder / f"{DOMAIN}.mo"


@cache
def translations(locale: str) -> gettext_module.NullTranslations:
    """The catalogue of a locale: the compiled .mo, or the .po compiled in memory if the .mo is
    missing or older (so a checkout never shows stale text before `scripts/i18n.sh compile`)."""
    if locale == SOURCE_LOCALE or locale not in SUPPORTED:
        return gettext_module.NullTranslations()
    po_path, mo_path = catalogue_paths(locale)
    if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
        with mo_path.open("rb") as mo:
            return Translations(mo, domain=DOMAIN)
    with po_path.open("rb") as po:
        catalog = read_po(po, locale=locale)
    buffer = BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def gettext(message: str) -> str:
    """Translate a message into the current locale."""
    return translations(current_locale()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """Translate a message with a count into the current locale."""
    return translations(current_locale()).ngettext(singular, plural, n)


def N_(message: str) -> str:  # noqa: N802 (the gettext convention extraction knows)
    """Mark a message for extraction only; translate it with gettext where it is shown."""
    return message


_ = gettext


def babel_locale() -> Locale:
    """The current locale as Babel's Locale."""
    return Locale.parse(current_locale())


def money(amount_minor: int | None, currency: str = "CNY") -> str:
    """Format integer minor units for the locale: "¥18.50" (zh_CN), "CN¥18.50" (en)."""
    if amount_minor is None:
        return "–"
    digits = get_currency_precision(currency.upper())
    amount = Decimal(amount_minor).scaleb(-digits)
    return format_currency(amount, currency.upper(), locale=current_locale())


def number(value: int | float | Decimal | None, *, digits: int | None = None) -> str:
    """Format a number for the locale (grouping, decimal sign); `digits` fixes the decimals."""
    if value is None:
        return "–"
    if digits is None:
        return format_decimal(value, locale=current_locale())
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(value, format=pattern, locale=current_locale())


def percent(ratio: float | None, *, digits: int = 1) -> str:
    """Format a ratio (0.953) as a percentage for the locale ("95.3%")."""
    if ratio is None:
        return "–"
    pattern = "#,##0" + ("." + "0" * digits if digits else "") + "%"
    return format_percent(ratio, format=pattern, locale=current_locale())


# Skeletons (CLDR) for the console's date and time shapes; each locale orders the parts its way.
DATETIME = "yMMMdHm"
DATE = "yMMMd"
TIME = "Hm"
TIME_SECONDS = "Hms"
WEEKDAY_TIME = "EHm"


def local_datetime(value: datetime | None, zone: str | None, skeleton: str = DATETIME) -> str:
    """Show a timestamp in a time zone, formatted for the locale (24-hour clock)."""
    if value is None:
        return "–"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        tz = ZoneInfo(zone or "UTC")
    except (ValueError, KeyError):
        tz = ZoneInfo("UTC")
    return _format_skeleton(skeleton, value.astimezone(tz))


def wall_time(value: datetime, skeleton: str = WEEKDAY_TIME) -> str:
    """Format an aware timestamp in its own time zone for the locale ("Sat 08:00", "周六08:00")."""
    return _format_skeleton(skeleton, value)


def day(value: date | None, skeleton: str | None = None) -> str:
    """Show a calendar date for the locale ("Dec 5, 2026", "2026年12月5日"; "MMMd": "Dec 5")."""
    if value is None:
        return "–"
    if skeleton is None:
        return format_date(value, "medium", locale=current_locale())
    return _format_skeleton(skeleton, datetime(value.year, value.month, value.day))


_DATE_FIELDS = frozenset("GyYuUrQqMLlwWdDFgEec")


def _format_skeleton(skeleton: str, value: datetime) -> str:
    """Format by a CLDR skeleton; a date-and-time skeleton the locale lacks is built from its
    date and time halves, joined the locale's way ("Dec 5, 2026, 15:00", "2026年12月5日 15:00")."""
    locale = babel_locale()
    if match_skeleton(skeleton, locale.datetime_skeletons) is not None:
        return format_skeleton(skeleton, value, locale=locale)
    date_part = "".join(c for c in skeleton if c in _DATE_FIELDS)
    time_part = "".join(c for c in skeleton if c not in _DATE_FIELDS)
    joined = str(locale.datetime_formats["medium"])
    return joined.replace("{1}", format_skeleton(date_part, value, locale=locale)).replace(
        "{0}", format_skeleton(time_part, value, locale=locale)
    )


def enter_request_locale(scope: Scope) -> tuple[Token, _RequestLocale]:
    """Set the request's locale from its Accept-Language header, for the request's edge
    (`o2o.observability.EdgeMiddleware`); return the token that resets it and the locale's box
    (the console may switch it later, from a cookie or the user's choice)."""
    header = None
    for key, value in scope.get("headers", []):
        if key == b"accept-language":
            header = value.decode("latin-1")
            break
    box = _RequestLocale(negotiate(header))
    return _current.set(box), box


def language_headers(box: _RequestLocale) -> list[tuple[bytes, bytes]]:
    """Say which language answered: `Content-Language`, and `Vary: Accept-Language` so a shared
    cache never serves one language's error to a client that asked for another."""
    return [
        (b"content-language", box.locale.replace("_", "-").encode()),
        (b"vary", b"Accept-Language"),
    ]


def leave_request_locale(token: Token) -> None:
    _current.reset(token)

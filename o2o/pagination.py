"""The one cursor codec for keyset-paged lists.

A cursor holds the sort key of the last row sent, tagged with the listing it belongs to, as
URL-safe base64 of a JSON array. A page then costs the same however deep it is, rows added meanwhile
are neither skipped nor repeated, and a cursor from another listing (another location, radius or
query) is refused rather than silently skipping rows.
"""

import base64
import binascii
import json
import math
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from o2o.errors import InvalidInput
from o2o.i18n import gettext as _


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def encode_cursor(listing: str, values: Sequence[Any]) -> str:
    """Return the cursor for the row whose sort key is `values`, in the listing `listing`."""
    raw = json.dumps([listing, *map(_json_value, values)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def integer(value: Any) -> int:
    """Read a whole number (not a boolean, not a float) from a cursor."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("not an integer")
    return value


def number(value: Any) -> float:
    """Read a finite number from a cursor."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("not a finite number")
    return float(value)


def text(value: Any) -> str:
    """Read a string from a cursor."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def timestamp(value: Any) -> datetime:
    """Read an ISO 8601 timestamp from a cursor."""
    return datetime.fromisoformat(text(value))


def day(value: Any) -> date:
    """Read an ISO 8601 date from a cursor."""
    return date.fromisoformat(text(value))


def identifier(value: Any) -> uuid.UUID:
    """Read a UUID from a cursor."""
    return uuid.UUID(text(value))


def decode_cursor(
    cursor: str, listing: str, readers: Sequence[Callable[[Any], Any]]
) -> tuple[Any, ...]:
    """Return the sort key a cursor of `listing` holds, read value by value with `readers`;
    422 `invalid_cursor` for anything this listing did not give out."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(readers) + 1 or raw[0] != listing:
            raise ValueError("a cursor of another listing")
        return tuple(read(value) for read, value in zip(readers, raw[1:], strict=True))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise InvalidInput(
            _("The cursor is not valid for this list; start again without it."),
            code="invalid_cursor",
        ) from None

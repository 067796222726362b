"""Text the database can store: the one rule every string the platform accepts is held to.

PostgreSQL refuses a NUL character in `text`, and a lone UTF-16 surrogate (which JSON's `\\ud800`
escapes can produce) is not valid UTF-8 at all. Such text is refused where it enters (request
bodies, query and path parameters, form fields, stored headers, imported files) with 422
`invalid_input` naming the field, so nothing is written and the database never sees it.
"""

import re
from collections.abc import Iterator
from typing import Any

from o2o.errors import InvalidInput
from o2o.i18n import gettext as _

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# A field whose surrounding whitespace is removed on input must keep something: its schema states
# "at least one character that is not whitespace", so a blank value is refused as the schema
# says. Python's \S is exactly what str.strip() keeps.
NOT_BLANK = r"\S"


def unstorable_reason(text: str) -> str | None:
    """Say why the database cannot store `text` (None when it can)."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character"
    return "contains an unpaired surrogate, which is not valid Unicode text"


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            key_text = str(key)
            yield f"{path}.{key_text}" if path else key_text, key_text
            yield from _strings(item, f"{path}.{key_text}" if path else key_text)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}.{index}" if path else str(index))


def first_unstorable(value: Any, path: str = "") -> tuple[str, str] | None:
    """Return (field, reason) for the first string in `value` (any JSON-like structure, dict keys
    included) that the database cannot store, or None."""
    for field, text in _strings(value, path):
        reason = unstorable_reason(text)
        if reason is not None:
            return field, reason
    return None


def check_storable(value: Any, path: str = "") -> None:
    """Refuse (422 `invalid_input`, naming the field) any string in `value` the database cannot
    store."""
    found = first_unstorable(value, path)
    if found is not None:
        field, reason = found
        raise InvalidInput(
            _("The field {field} {reason}.").format(field=field, reason=reason),
            details={"field": field, "reason": reason},
        )

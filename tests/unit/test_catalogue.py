"""The gettext catalogue: the .pot matches the sources, and zh_CN translates every message of it.

A string marked in the code (`_()`, `gettext()`, `ngettext()`, `N_()`, `{{ _() }}` in a
template) but missing from the committed .pot, or in the .pot without a Chinese translation,
fails here: run `bash scripts/i18n.sh update` and translate the empty msgstr entries
(docs/TRANSLATIONS.md)."""

import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from o2o import i18n

ROOT = Path(__file__).resolve().parents[2]
POT = i18n.LOCALE_DIR / "messages.pot"
TRANSLATED = [code for code in i18n.SUPPORTED if code != i18n.SOURCE_LOCALE]
# Named placeholders of both styles: str.format ("{name}", "{minutes:02d}", "{value!r}") in
# Python, %-style ("%(name)s") in the Jinja2 templates.
PLACEHOLDER = re.compile(r"\{(\w*)(?:![rsa])?(?::[^}]*)?\}|%\((\w+)\)[sd]")


def _key(message_id: str | tuple[str, ...]) -> str:
    return message_id if isinstance(message_id, str) else message_id[0]


def _placeholders(text: str) -> set[str]:
    return {a or b for a, b in PLACEHOLDER.findall(text.replace("{{", "").replace("}}", ""))}


def _catalogue(path: Path, locale: str | None = None):
    with path.open("rb") as f:
        return read_po(f, locale=locale)


def test_the_pot_holds_exactly_the_messages_marked_in_the_sources() -> None:
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    found = {
        _key(message)
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT, method_map, options_map, keywords={**DEFAULT_KEYWORDS, "N_": None}
        )
    }
    committed = {_key(m.id) for m in _catalogue(POT) if m.id}
    assert found - committed == set(), "marked but not in messages.pot: run scripts/i18n.sh update"
    assert committed - found == set(), "in messages.pot but no longer marked: run the update"


@pytest.mark.parametrize("locale", TRANSLATED)
def test_every_message_of_the_pot_has_a_translation(locale: str) -> None:
    po_path, _mo = i18n.catalogue_paths(locale)
    translations = {_key(m.id): m for m in _catalogue(po_path, locale) if m.id}
    untranslated = []
    for message in _catalogue(POT):
        if not message.id:
            continue
        entry = translations.get(_key(message.id))
        strings = [] if entry is None else entry.string
        strings = [strings] if isinstance(strings, str) else list(strings)
        if entry is None or "fuzzy" in entry.flags or not all(s.strip() for s in strings):
            untranslated.append(_key(message.id))
    assert untranslated == [], f"{len(untranslated)} messages lack a {locale} translation"


@pytest.mark.parametrize("locale", TRANSLATED)
def test_translations_keep_every_placeholder(locale: str) -> None:
    po_path, _mo = i18n.catalogue_paths(locale)
    wrong = []
    for message in _catalogue(po_path, locale):
        if not message.id or not message.string:
            continue
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        strings = [message.string] if isinstance(message.string, str) else list(message.string)
        expected = set().union(*(_placeholders(i) for i in ids))
        if any(_placeholders(s) != expected for s in strings):
            wrong.append(_key(message.id))
    assert wrong == []


def test_a_chinese_message_is_served_from_the_catalogue() -> None:
    with i18n.use_locale("zh_CN"):
        assert i18n.gettext("No such order.") == "没有此订单。"
        assert i18n.money(1850, "CNY") == "¥18.50"
    with i18n.use_locale("en"):
        assert i18n.gettext("No such order.") == "No such order."
        assert i18n.money(1850, "CNY") == "CN¥18.50"

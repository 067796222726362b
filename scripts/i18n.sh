#!/usr/bin/env bash
# The gettext catalogues (Babel): extract the marked strings, update the translations, compile.
#   bash scripts/i18n.sh extract   # sources -> o2o/locale/messages.pot
#   bash scripts/i18n.sh update    # extract, then merge the .pot into every locale's .po
#   bash scripts/i18n.sh compile   # every .po -> .mo (run by `make run`, `make test`, the image)
#   bash scripts/i18n.sh check     # fail when the .pot is stale or a zh_CN message is untranslated
set -euo pipefail
cd "$(dirname "$0")/.."
PYBABEL="${PYBABEL:-.venv/bin/pybabel}"
LOCALE_DIR=o2o/locale
POT="$LOCALE_DIR/messages.pot"

extract() {
  "$PYBABEL" -q extract -F babel.cfg -k N_ --no-location --sort-output --omit-header \
    --no-wrap -o "$POT" --project "o2o" . >/dev/null
}

case "${1:-}" in
  extract)
    extract
    ;;
  update)
    extract
    "$PYBABEL" -q update -i "$POT" -d "$LOCALE_DIR" --no-wrap --ignore-obsolete --no-fuzzy-matching \
      >/dev/null
    # Keep the header free of dates and placeholders, so an update without new messages is no diff.
    sed -i -E '/^"(POT-Creation-Date|PO-Revision-Date|Report-Msgid-Bugs-To|Last-Translator|Language-Team): /d; s/^"Project-Id-Version: .*/"Project-Id-Version: o2o\\n"/' \
      "$LOCALE_DIR"/*/LC_MESSAGES/messages.po
    echo "updated; translate the empty msgstr entries: grep -B1 'msgstr \"\"\$' $LOCALE_DIR/*/LC_MESSAGES/messages.po"
    ;;
  compile)
    "$PYBABEL" -q compile -d "$LOCALE_DIR"
    ;;
  check)
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_catalogue.py
    ;;
  *)
    echo "usage: $0 extract|update|compile|check" >&2
    exit 2
    ;;
esac

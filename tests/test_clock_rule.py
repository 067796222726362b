"""Only o2o/clock.py reads the wall clock: every "now" elsewhere is `clock.now()` and every
"today" a place's local day from `clock.today(zone)`, so the suite passes at any hour and a
simulation can run on a clock of its own.

Each module is parsed and its names resolved through its imports, so aliases (`from datetime
import datetime as dt` then `dt` + `.now()`, and the like) are caught, and a
pattern inside a string (this file's own, a docstring) is not.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ["o2o", "stores", "prescriptions", "dispatch", "benchmarks", "migrations", "tests"]
SCANNED_FILES = ["main.py"]
ALLOWED = {Path("o2o/clock.py")}

# (class, method) pairs that read the wall clock, by the class's full name.
FORBIDDEN = {
    ("datetime.datetime", "now"),
    ("datetime.datetime", "utcnow"),
    ("datetime.datetime", "today"),
    ("datetime.date", "today"),
}


def _imported_names(tree: ast.Module) -> dict[str, str]:
    """Map each name a module binds by import to the full name it stands for."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _full_name(node: ast.expr, names: dict[str, str]) -> str | None:
    """The full dotted name an expression such as `dt` or `d.datetime` refers to, if known."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _full_name(node.value, names)
        return f"{base}.{node.attr}" if base else None
    return None


def wall_clock_reads(source: str, filename: str = "<source>") -> list[str]:
    """Return 'line: expression' for each wall-clock read (a call or a reference) in source."""
    tree = ast.parse(source, filename)
    names = _imported_names(tree)
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and (_full_name(node.value, names), node.attr) in FORBIDDEN
    ]
    return [f"{node.lineno}: {ast.unparse(node)}" for node in sorted(found, key=lambda n: n.lineno)]


def _python_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES]
    for folder in SCANNED:
        files += (ROOT / folder).rglob("*.py")
    return sorted(
        path
        for path in files
        if path.relative_to(ROOT) not in ALLOWED and ".venv" not in path.parts
    )


def test_no_module_but_the_clock_reads_the_wall_clock():
    offenders = []
    for path in _python_files():
        for read in wall_clock_reads(path.read_text(), str(path)):
            offenders.append(f"{path.relative_to(ROOT)}:{read}")
    assert offenders == [], (
        "Read the time from o2o.clock: clock.now(), or a place's local day with "
        "clock.today(zone):\n" + "\n".join(offenders)
    )


def test_the_scan_covers_every_folder_it_names():
    scanned = {path.relative_to(ROOT).parts[0] for path in _python_files()}
    assert set(SCANNED) | set(SCANNED_FILES) <= scanned
    assert (ROOT / "o2o/clock.py").exists()  # the one module allowed, still where it was


@pytest.mark.parametrize(
    "source",
    [
        "from datetime import date\ndate." + "today()",
        "from datetime import datetime, UTC\ndatetime." + "now(UTC)",
        "from datetime import datetime\ndatetime." + "utcnow()",
        "from datetime import datetime\ndatetime." + "today()",
        "from datetime import datetime as dt\ndt.now()",
        "from datetime import date as day\nday.today()",
        "import datetime\ndatetime.datetime." + "now()",
        "import datetime as d\nd.date." + "today()",
        "from datetime import datetime\nx = Field(default_factory=datetime.now)",
        "def f():\n    from datetime import datetime\n    return datetime." + "now()",
    ],
)
def test_the_rule_catches_wall_clock_reads_and_their_aliases(source):
    assert len(wall_clock_reads(source)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "from o2o import clock\nclock.now()\nclock.today('Asia/Shanghai')",
        "text = 'date." + "today() and datetime." + "now( are spelled out here'",
        "from datetime import datetime\ndatetime(2026, 3, 10).date()",
        "from datetime import date\ndate.fromisoformat('2026-03-10')",
        "from sqlalchemy import func\nfunc.now()",
        "class Stepped:\n    def now(self): ...\nStepped().now()",
    ],
)
def test_the_rule_leaves_other_code_alone(source):
    assert wall_clock_reads(source) == []

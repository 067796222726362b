"""The floors (DESIGN.md section 3) as CI sees them.

The import-linter contracts in pyproject.toml say which floor may import which (`make lint`
runs them too); this file runs them and checks what they cannot say: that every module of `o2o/`
stands on a floor, and that a domain is reached through its entry points, not its internals."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("o2o", "stores", "prescriptions", "dispatch")
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
# A domain's entry points: what another floor may import from it.
ENTRY_POINTS = {
    # Stores: its rows and shapes, the store and catalogue service, the one writer of order stock
    # (allocation), the cart checks and search checkout uses, the travel-time formula, and the
    # delivery slots checkout books, and the fleet's advice on when to start a delivery.
    # Checkout and the counter also use equivalents (the catalogue's key) and the search that
    # counts them (substitutes); split carts plan with split_search;
    # community pickup points: the points, their run schedule, and their API shapes; and the
    # runner of plans of statements on a session or the driver's connection (dispatch's claim).
    "stores": (
        "statements",
        "service",
        "models",
        "schemas",
        "allocation",
        "cart",
        "search",
        "substitutes",
        "equivalents",
        "eta",
        "slots",
        "fleet_load",
        "split_search",
        "pickup_points",
    ),
    "prescriptions": ("service", "models", "schemas"),
    # Checkout asks dispatch's routing (pure) whether to offer pickup or delivery.
    # Pickup points: checkout books a run, the store's ready books its job, the leader's counter
    # works the parcels at the point.
    "dispatch": ("service", "models", "schemas", "routing", "runs", "point_parcels"),
    # Payments: checkout opens a payment, the views read it, the caps count unpaid orders.
    # Commissions: the leader's statement and the wiring's accrual on completion.
    "o2o.payments": ("service", "models", "schemas", "commissions"),
    # Members: checkout applies the level's benefits, the order views show the waiver.
    "o2o.members": ("service", "models", "schemas"),
    "o2o.analytics": ("service", "schemas"),
    # The order record is reached through its lifecycle, its states, its events and its rows.
    "o2o.orders": ("lifecycle", "states", "events", "models"),
}
COMPOSITION_FLOOR = 0


def floors() -> list[list[str]]:
    contract = next(c for c in CONTRACTS["contracts"] if c["id"] == "floors")
    return [
        [name.strip() for name in layer.replace("|", ":").split(":")]
        for layer in contract["layers"]
    ]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor_of(module: str) -> int | None:
    for level, layer in enumerate(floors()):
        if any(module == name or module.startswith(name + ".") for name in layer):
            return level
    return None


def test_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.split("Contracts:")[-1].replace("0 broken", "")


def test_every_module_of_o2o_stands_on_a_floor() -> None:
    loose = sorted(
        name
        for path in (ROOT / "o2o").rglob("*.py")
        if (name := module_name(path)) != "o2o" and floor_of(name) is None
    )
    assert not loose, f"modules of o2o/ on no floor of the `floors` contract: {loose}"


def project_imports(path: Path) -> set[str]:
    """Return the project modules a file imports (at any depth, including inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from stores import service` imports the module stores.service.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PACKAGES and _is_module(name))
    return found


def _is_module(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def domain_of(module: str) -> str | None:
    return next((d for d in ENTRY_POINTS if module == d or module.startswith(d + ".")), None)


MODULES = {
    module_name(p): p
    for pkg in PACKAGES
    for p in (ROOT / pkg).rglob("*.py")
    if floor_of(module_name(p)) not in (None, COMPOSITION_FLOOR)
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_other_domains_are_reached_through_their_entry_points(module: str) -> None:
    own = domain_of(module)
    reached_in = [
        target
        for target in sorted(project_imports(MODULES[module]))
        if (other := domain_of(target)) is not None
        and other != own
        and target != other
        and target.removeprefix(other + ".").split(".")[0] not in ENTRY_POINTS[other]
    ]
    assert not reached_in, f"{module} reaches into another domain's internals: {reached_in}"

"""Imports run one way (STYLE.md, "Floors"): a module imports only from its own floor or below,
other domains only through their `service` module (or the plain data of `models`/`schemas`), and
nothing imports in a cycle."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("o2o", "stores", "prescriptions", "dispatch")
DOMAINS = ("stores", "prescriptions", "dispatch", "o2o.orders")

# Floors, bottom to top. The first matching prefix decides a module's floor.
FLOORS: list[tuple[str, int]] = [
    ("o2o.orders.lifecycle", 2),
    ("o2o.orders.workflow", 0),
    ("o2o.orders.models", 0),
    ("o2o.orders.schemas", 0),
    ("o2o.orders", 4),  # checkout, service, router, tasks
    ("o2o.console", 5),
    ("o2o.cli", 5),
    ("o2o.demo", 5),
    ("o2o.models", 5),  # the registry of every model, for migrations
    ("o2o.__main__", 5),
    ("dispatch.simulation", 5),  # replays a day through every domain, as the CLI does
    ("o2o", 0),
    ("stores", 1),
    ("prescriptions", 3),
    ("dispatch", 3),
    ("main", 5),
]
CROSS_DOMAIN_ENTRY_POINTS = ("service", "models", "schemas")
# The order state machine is the orders' entry point for the domains above it (STYLE.md).
ORDERS_ENTRY_POINTS = ("lifecycle", "workflow")


def floor(module: str) -> int:
    for prefix, level in FLOORS:
        if module == prefix or module.startswith(prefix + "."):
            return level
    raise AssertionError(f"{module} has no floor in FLOORS")


def domain(module: str) -> str | None:
    return next((d for d in DOMAINS if module == d or module.startswith(d + ".")), None)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


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
        for name in names:
            # A package's __init__ only names the package; the modules imported from it count.
            if name.split(".")[0] in (*PACKAGES, "main") and _is_module(name):
                found.add(name)
    return found


def _is_module(module: str) -> bool:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py").exists()


def all_modules() -> dict[str, Path]:
    files = [ROOT / "main.py"] + [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return {module_name(p): p for p in files}


MODULES = all_modules()
GRAPH = {name: project_imports(path) for name, path in MODULES.items()}


def test_every_module_has_a_floor() -> None:
    for name in MODULES:
        floor(name)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_floors(module: str) -> None:
    upward = [target for target in sorted(GRAPH[module]) if floor(target) > floor(module)]
    assert not upward, f"{module} (floor {floor(module)}) imports from above: {upward}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_other_domains_are_reached_through_their_service(module: str) -> None:
    own = domain(module)
    if floor(module) == 5:
        return  # the app, the console and the CLI assemble every domain
    reached_in = [
        target
        for target in sorted(GRAPH[module])
        if (other := domain(target)) is not None
        and other != own
        and target != other
        and _inner(target, other) not in CROSS_DOMAIN_ENTRY_POINTS
        and not (other == "o2o.orders" and _inner(target, other) in ORDERS_ENTRY_POINTS)
    ]
    assert not reached_in, f"{module} reaches into another domain's internals: {reached_in}"


def test_no_import_cycles() -> None:
    edges = {m: {t for t in ts if t in MODULES} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def _inner(module: str, package: str) -> str:
    return module.removeprefix(package + ".").split(".")[0]

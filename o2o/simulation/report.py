"""The policies' results side by side, and whether the ranked dispatcher met its aims."""

from collections.abc import Callable

from rich.table import Table

from o2o.simulation.day import Options
from o2o.simulation.run import DayResult


def _fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _fmt_min(minutes: float | None) -> str:
    return "-" if minutes is None else f"{minutes:.1f}"


def results_table(plan: Options, results: list[DayResult]) -> Table:
    """The SLA reports of the policies side by side."""
    table = Table(
        title=(
            f"Simulated day: {plan.orders} orders, {plan.couriers} couriers, {plan.hours:g} h, "
            f"seed {plan.seed}"
        )
    )
    table.add_column("measure")
    for r in results:
        table.add_column(r.policy, justify="right")
    rows: list[tuple[str, Callable[[DayResult], str]]] = [
        ("orders placed (refused)", lambda r: f"{r.placed} ({sum(r.refused.values())})"),
        ("with a prescription", lambda r: str(r.rx_orders)),
        ("deliveries", lambda r: str(r.stats["delivered"])),
        ("on time (within 2 h)", lambda r: _fmt_rate(r.stats["on_time_rate"])),
        ("p50 minutes, release to door", lambda r: _fmt_min(r.stats["p50_minutes"])),
        ("p95 minutes, release to door", lambda r: _fmt_min(r.stats["p95_minutes"])),
        ("escalated at risk", lambda r: str(r.at_risk)),
        ("breaches (compensation, minor)", lambda r: f"{r.breaches} ({r.compensation_minor})"),
        ("claims (lost to the stale sweep)", lambda r: f"{r.claims} ({r.claims_lost})"),
        ("failed attempts, wrong codes", lambda r: f"{r.failed_attempts}, {r.wrong_codes}"),
        ("still open at the end", lambda r: str(r.undelivered)),
        ("wall time (s)", lambda r: f"{r.wall_s:.1f}"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results))
    return table


def meets_aims(result: DayResult, baseline: DayResult) -> bool:
    """>= 99% on time, median <= 30 min, and ahead of the baseline (on time, then median)."""
    s, b = result.stats, baseline.stats
    if not s["delivered"] or result.undelivered:
        return False
    ahead = (s["on_time_rate"], -s["p50_minutes"]) > (
        b["on_time_rate"] or 0,
        -(b["p50_minutes"] or 0),
    )
    return s["on_time_rate"] >= 0.99 and s["p50_minutes"] <= 30 and ahead

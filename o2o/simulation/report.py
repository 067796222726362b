"""The policies' results side by side, each policy's one-line summary, and the issue's targets."""

from collections.abc import Callable

from rich.table import Table

from o2o.simulation import measure
from o2o.simulation.day import Options
from o2o.simulation.run import DayResult


def _fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _fmt_min(minutes: float | None) -> str:
    return "-" if minutes is None else f"{minutes:.1f}"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _stage(stage: str) -> Callable[[DayResult], str]:
    return lambda r: _fmt_min(r.line["stages"][stage])


def results_table(plan: Options, results: list[DayResult]) -> Table:
    """The reports of the policies side by side."""
    table = Table(
        title=(
            f"Simulated day ({plan.scenario}): {results[0].asked_delivery if results else 0} "
            f"orders, {plan.couriers} couriers, {plan.hours:g} h from "
            f"{plan.starts_at_hour:02d}:00, seed {plan.seed}"
        )
    )
    table.add_column("measure")
    for r in results:
        table.add_column(r.policy, justify="right")
    rows: list[tuple[str, Callable[[DayResult], str]]] = [
        ("orders placed (refused)", lambda r: f"{r.placed} ({sum(r.refused.values())})"),
        ("with a prescription", lambda r: str(r.rx_orders)),
        ("diverted to a later slot", lambda r: str(r.diverted_slot)),
        ("diverted to pickup (collected)", lambda r: f"{r.diverted_pickup} ({r.collected})"),
        ("deliveries", lambda r: str(r.line["delivered"])),
        ("on time (by the promise given)", lambda r: _fmt_rate(r.line["on_time_rate"])),
        ("p50 minutes, promise start to door", lambda r: _fmt_min(r.line["p50"])),
        ("p95 minutes, promise start to door", lambda r: _fmt_min(r.line["p95"])),
        *((f"  median minutes: {stage}", _stage(stage)) for stage, _, _ in measure.STAGES),
        ("escalated at risk", lambda r: str(r.at_risk)),
        ("breaches (compensation, minor)", lambda r: f"{r.breaches} ({r.compensation_minor})"),
        ("promises broken silently", lambda r: str(r.line["silent_breaks"])),
        ("deliveries per courier-hour, peak hour", lambda r: _fmt(r.line["per_courier_hour"])),
        ("mean batch size (trips)", lambda r: f"{_fmt(r.line['mean_batch'])} ({r.trips})"),
        ("claims (lost to the stale sweep)", lambda r: f"{r.claims} ({r.claims_lost})"),
        ("courier-minutes at counters (parcel not ready)", lambda r: str(r.counter_waits)),
        ("failed attempts, wrong codes", lambda r: f"{r.failed_attempts}, {r.wrong_codes}"),
        ("still open at the end", lambda r: str(r.undelivered)),
        ("wall time (s)", lambda r: f"{r.wall_s:.1f}"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results))
    return table


def policy_line(r: DayResult) -> str:
    """The policy's summary on one line, in the fixed shape scripts and docs quote."""
    m = r.line
    rate = (m["on_time_rate"] or 0.0) * 100
    return (
        f"policy {r.policy}: on-time {rate:.1f}% p50 {_fmt(m['p50'], 1)} min "
        f"p95 {_fmt(m['p95'], 1)} min delivered {m['delivered']} diverted {m['diverted']} "
        f"per-courier-hour {_fmt(m['per_courier_hour'])}"
    )


def targets(plan: Options, results: list[DayResult]) -> list[tuple[str, bool]]:
    """The issue's targets for the scenario, each with whether this run met it."""
    by = {r.policy: r for r in results}
    platform, fifo = by.get("platform"), by.get("fifo")
    out: list[tuple[str, bool]] = []
    if platform is None:
        return out
    m = platform.line
    rate = m["on_time_rate"] or 0.0
    if plan.scenario == "peak":
        out.append(("platform >= 97% on time", rate >= 0.97))
        out.append(("platform p50 <= 45 min", (m["p50"] or 1e9) <= 45))
        if fifo is not None:
            ahead = rate - (fifo.line["on_time_rate"] or 0.0)
            out.append(("platform >= 30 points ahead of fifo", ahead >= 0.30))
        out.append(("at most 15% of delivery asks diverted", m["diverted_share"] <= 0.15))
    elif plan.scenario == "storm":
        out.append(("no promise broken silently", m["silent_breaks"] == 0))
    elif plan.scenario == "default":
        out.append(("platform 100% on time", rate >= 1.0))
        out.append(("platform p50 <= 30 min", (m["p50"] or 1e9) <= 30))
    return out

"""The `simulate` command: replay a day on a database of its own under each policy, print the
reports side by side, each policy's one-line summary, and the scenario's targets."""

import time
from dataclasses import replace
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy.engine import make_url

from o2o.config import get_settings
from o2o.simulation import parallel
from o2o.simulation.day import SCENARIOS, plan_day
from o2o.simulation.report import policy_line, results_table, targets
from o2o.simulation.run import POLICIES, simulate

SIM_DB_SUFFIX = "_sim"


app = typer.Typer(
    help="Replay a day in the demo city through the real services (fifo, ranked, platform).",
    invoke_without_command=True,
)


@app.callback()
def simulate_command(
    scenario: Annotated[
        str, typer.Option(help="Preset day: default, peak or storm (the options below override).")
    ] = "default",
    seed: Annotated[int | None, typer.Option(help="Seed of the day's demand and fleet.")] = None,
    orders: Annotated[
        int | None, typer.Option(min=1, max=20_000, help="Orders placed in the day.")
    ] = None,
    couriers: Annotated[
        int | None, typer.Option(min=1, max=2000, help="Couriers on shift.")
    ] = None,
    hours: Annotated[
        float | None, typer.Option(min=0.25, max=24, help="Length of the day.")
    ] = None,
    policy: Annotated[
        list[str] | None, typer.Option(help="Run only these policies (fifo, ranked, platform).")
    ] = None,
    hindsight: Annotated[
        bool, typer.Option(help="Also plan the day offline with OR-Tools, knowing every order.")
    ] = False,
) -> None:
    """Simulate a day under each policy; print the reports and one summary line per policy."""
    console = Console()
    database = make_url(get_settings().database_url).database or ""
    if not database.endswith(SIM_DB_SUFFIX):
        console.print(
            f"[red]error:[/red] the simulation empties its database; {database!r} does not end "
            f"in {SIM_DB_SUFFIX!r}. Run `make simulate` (it uses a database of its own)."
        )
        raise typer.Exit(2)
    if scenario not in SCENARIOS:
        console.print(f"[red]error:[/red] --scenario is one of {', '.join(SCENARIOS)}.")
        raise typer.Exit(2)
    policies = tuple(policy or POLICIES)
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        console.print(f"[red]error:[/red] unknown policy {unknown[0]!r} ({', '.join(POLICIES)}).")
        raise typer.Exit(2)
    options = SCENARIOS[scenario]
    overrides = {"seed": seed, "orders": orders, "couriers": couriers, "hours": hours}
    options = replace(options, **{k: v for k, v in overrides.items() if v is not None})
    if len(policies) > 1 and parallel.available():
        console.print(
            f"Replaying the {options.scenario} day under {', '.join(policies)} side by side"
        )
        started = time.perf_counter()
        results = parallel.run_all(options, policies, get_settings().database_url)
        console.print(f"done in {time.perf_counter() - started:.0f} s")
    else:
        results = simulate(options, console=console, policies=policies)
    console.print(results_table(options, results))
    for result in results:
        console.print(policy_line(result), markup=False, highlight=False, soft_wrap=True)
    if hindsight:
        if "platform" not in policies:
            console.print("--hindsight plans the platform's deliveries: run the platform policy.")
            raise typer.Exit(2)
        from o2o.simulation import hindsight as offline  # OR-Tools loads only when asked

        url = get_settings().database_url
        if len(policies) > 1 and parallel.available():
            url = parallel.policy_database(url, "platform")
        elif policies[-1] != "platform":
            console.print("--hindsight needs the platform policy to run last (or in parallel).")
            raise typer.Exit(2)
        summary = offline.plan(plan_day(options), url)
        console.print(offline.summary_line(summary), markup=False, highlight=False, soft_wrap=True)
    for label, met in targets(options, results):
        console.print(f"target {'met' if met else 'NOT met'}: {label}", markup=False)

"""The `simulate` command: replay a day on a database of its own under each policy, print the
reports side by side, each policy's one-line summary, and the scenario's targets."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url

from o2o.config import get_settings
from o2o.simulation import parallel
from o2o.simulation.day import SCENARIOS, plan_day
from o2o.simulation.report import policy_line, results_table, targets
from o2o.simulation.run import POLICIES, simulate

SIM_DB_SUFFIX = "_sim"
# Without a terminal (a log file, CI), progress is a line per policy every this many minutes
# and at the end of the day.
PLAIN_PROGRESS_EVERY_MIN = 60


@contextmanager
def policy_progress(
    console: Console, policies: tuple[str, ...], minutes: int
) -> Iterator[Callable[[str, int], None]]:
    """Yield an `on_progress(policy, done)` that shows each policy's simulated minutes: a bar
    each on a terminal, else a plain line per policy every PLAIN_PROGRESS_EVERY_MIN minutes."""
    if not console.is_terminal:
        shown = dict.fromkeys(policies, 0)

        def say(policy: str, done: int) -> None:
            step = min(done, minutes)
            if step < minutes:  # each whole hour, and the day's end
                step = step // PLAIN_PROGRESS_EVERY_MIN * PLAIN_PROGRESS_EVERY_MIN
            if step > shown[policy]:
                shown[policy] = step
                console.print(f"{policy:>10}: {step}/{minutes} simulated minutes", markup=False)

        yield say
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("simulated minutes"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks = {p: bar.add_task(f"{p:>10}", total=minutes) for p in policies}
        yield lambda policy, done: bar.update(tasks[policy], completed=min(done, minutes))


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
        with policy_progress(console, policies, int(options.hours * 60)) as on_progress:
            results = parallel.run_all(
                options, policies, get_settings().database_url, on_progress=on_progress
            )
        console.print(f"done in {time.perf_counter() - started:.0f} s")
    else:
        with policy_progress(console, policies, int(options.hours * 60)) as on_progress:
            results = simulate(options, policies=policies, on_progress=on_progress)
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

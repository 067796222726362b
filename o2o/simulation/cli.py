"""The `simulate` command: replay a day on a database of its own, print both reports."""

from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy.engine import make_url

from o2o.config import get_settings
from o2o.simulation.day import Options
from o2o.simulation.report import meets_aims, results_table
from o2o.simulation.run import simulate

SIM_DB_SUFFIX = "_sim"


app = typer.Typer(
    help="Replay a day in the demo city through the real services (ranked vs first come).",
    invoke_without_command=True,
)


@app.callback()
def simulate_command(
    seed: Annotated[int, typer.Option(help="Seed of the day's demand and fleet.")] = 7,
    orders: Annotated[int, typer.Option(min=1, max=20_000, help="Orders placed in the day.")] = 600,
    couriers: Annotated[int, typer.Option(min=1, max=2000, help="Couriers on shift.")] = 40,
    hours: Annotated[float, typer.Option(min=0.25, max=24, help="Length of the day.")] = 12.0,
) -> None:
    """Simulate a day twice (ranked dispatch, then first come first served); print both reports."""
    console = Console()
    database = make_url(get_settings().database_url).database or ""
    if not database.endswith(SIM_DB_SUFFIX):
        console.print(
            f"[red]error:[/red] the simulation empties its database; {database!r} does not end "
            f"in {SIM_DB_SUFFIX!r}. Run `make simulate` (it uses a database of its own)."
        )
        raise typer.Exit(2)
    options = Options(seed=seed, orders=orders, couriers=couriers, hours=hours)
    results = simulate(options, console=console)
    console.print(results_table(options, results))
    ranked, baseline = results
    if meets_aims(ranked, baseline):
        console.print("Aims met: >= 99% within 2 h, median <= 30 min, ahead of the baseline.")
    else:
        console.print("[yellow]Aims not met[/yellow] (>= 99% within 2 h, median <= 30 min, ahead).")

"""Store commands: `python -m o2o stores ...`."""

import typer

app = typer.Typer(help="Stores, catalogue and inventory.", no_args_is_help=True)

"""Pharmacy commands: `python -m o2o pharmacy ...` (the interaction table)."""

import functools
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from o2o.db import session_scope
from o2o.errors import DomainError
from prescriptions import interaction_import

app = typer.Typer(help="Pharmacy reference data: drug interactions.", no_args_is_help=True)
console = Console(stderr=True)

InputFile = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, show_default=False)
]


@app.callback()
def pharmacy() -> None:
    """Pharmacy reference data: drug interactions."""


def _fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _print_refused(refused: list[dict]) -> None:
    if not refused:
        return
    table = Table(title="Refused rows")
    # The line and the problem stay whole; the reason and the names wrap.
    table.add_column("line", no_wrap=True, justify="right")
    table.add_column("problem", no_wrap=True)
    for column in ("reason", "substance_a", "substance_b"):
        table.add_column(column, overflow="fold")
    for row in refused:
        table.add_row(
            str(row["line"]),
            row["problem"],
            row["reason"],
            str(row["substance_a"] or ""),
            str(row["substance_b"] or ""),
        )
    console.print(table)


def load_file(file: Path) -> interaction_import.InteractionImportResult:
    """Import the file with a progress bar; raise DomainError when it is refused."""
    progress = Progress(
        TextColumn("{task.description:<32}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress, file.open("rb") as stream:
        task = progress.add_task("Reading the file", total=file.stat().st_size)
        phase = functools.partial(progress.update, task)
        with session_scope() as session:
            result = interaction_import.import_interactions_csv(
                session,
                stream,
                on_progress=functools.partial(progress.advance, task),
                on_phase=lambda name: phase(description=name.capitalize()),
            )
            phase(description="Committing")
    return result


@app.command("import-interactions")
def import_interactions(file: InputFile) -> None:
    """Replace the interaction table with a CSV of substance pairs.

    Header: substance_a,substance_b,severity,advice (severity: contraindicated, major, moderate or
    minor; substances by generic name). All or nothing: any bad row refuses the file, with the
    line and reason of each. Lines starting with # before the header are comments.
    """
    started = time.monotonic()
    try:
        result = load_file(file)
    except DomainError as exc:
        _print_refused((exc.details or {}).get("refused", []) if exc.code == "rows_refused" else [])
        _fail(exc.message)
    console.print(
        f"{result.rows:,} row(s) read, {result.written:,} interaction(s) loaded "
        f"(replacing {result.replaced:,}), in {time.monotonic() - started:.1f} s."
    )

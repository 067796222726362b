"""Store commands: `python -m o2o stores ...` (imports of stores and of lots)."""

import functools
import json
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
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
from o2o.text import check_storable
from stores import lot_import, service
from stores.schemas import StoreImportIn

app = typer.Typer(help="Stores, catalogue and inventory.", no_args_is_help=True)
console = Console(stderr=True)

InputFile = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, show_default=False)
]


def _fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _table(title: str, columns: tuple[str, ...], rows: list[tuple]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row))
    return table


def _print_feature_refusals(refused: list[dict]) -> None:
    if refused:
        rows = [(r["index"], r["reason"]) for r in refused]
        console.print(_table("Refused features", ("index", "reason"), rows))


def _print_row_refusals(refused: dict[str, dict]) -> None:
    if refused:
        rows = [
            (problem, r["meaning"], r["rows"], "\n".join(r["sample"]))
            for problem, r in refused.items()
        ]
        console.print(_table("Refused rows", ("problem", "meaning", "rows", "sample"), rows))


@app.command("import-stores")
def import_stores(
    file: InputFile,
    partial: Annotated[
        bool, typer.Option("--partial", help="Import the valid features, report the others.")
    ] = False,
) -> None:
    """Import stores from a GeoJSON FeatureCollection (Point = location, properties = fields).

    All or nothing unless --partial.
    """
    try:
        raw = json.loads(file.read_bytes())
        check_storable(raw)
        collection = StoreImportIn.model_validate(raw)
    except DomainError as exc:
        _fail(f"{file}: {exc.message}", 2)
    except ValidationError as exc:
        _fail(f"{file} is not a FeatureCollection of stores: {exc.errors()[0]['msg']}", 2)
    except ValueError as exc:
        _fail(f"{file} is not JSON: {exc}", 2)
    try:
        with session_scope() as session:
            result = service.import_stores(session, collection, partial=partial)
    except DomainError as exc:
        _print_feature_refusals((exc.details or {}).get("refused", []))
        _fail(exc.message)
    _print_feature_refusals([r.model_dump() for r in result.refused])
    console.print(f"{result.created} store(s) imported, {len(result.refused)} refused.")


@app.command("import-lots")
def import_lots(
    file: InputFile,
    partial: Annotated[
        bool, typer.Option("--partial", help="Load the valid rows, report the refused ones.")
    ] = False,
) -> None:
    """Bulk-load lots of many stores from a CSV; on_hand sets each lot's quantity.

    Header: store_id,gtin,lot_number,expiry_date,on_hand,price_minor,currency. All or nothing
    unless --partial (unknown stores or GTINs, bad values, repeated lots are refused).
    """
    started = time.monotonic()
    progress = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        with progress, file.open("rb") as stream:
            task = progress.add_task("Reading the file", total=file.stat().st_size)
            phase = functools.partial(progress.update, task)
            with session_scope() as session:
                result = lot_import.import_lots_csv(
                    session,
                    stream,
                    partial=partial,
                    on_progress=functools.partial(progress.advance, task),
                    on_phase=lambda name: phase(description=name.capitalize()),
                )
                phase(description="Committing")
    except DomainError as exc:
        details = exc.details if exc.code == "rows_refused" else {}
        _print_row_refusals(details)
        _fail(exc.message)
    _print_row_refusals(result.refusal_details())
    console.print(
        f"{result.rows:,} row(s) read, {result.written:,} lot(s) written "
        f"({result.rows - result.refused_rows - result.written:,} unchanged), "
        f"{result.refused_rows:,} refused, stock counts refreshed for {result.products:,} "
        f"product(s), in {time.monotonic() - started:.1f} s."
    )

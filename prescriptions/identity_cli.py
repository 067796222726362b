"""Identity-number hashes: `python -m o2o identities versions|find` (pepper rotation, real-name
look-ups)."""

from typing import Annotated

import typer
from rich.console import Console

from o2o.config import get_settings
from o2o.db import session_scope
from prescriptions import identity, workflow

app = typer.Typer(help="Patients' identity-number hashes and their pepper versions.")
# Plain lines, never wrapped: ids stay whole for copying and scripts.
console = Console(soft_wrap=True, highlight=False)


@app.command("versions")
def versions() -> None:
    """Count stored hashes per pepper version: which can be dropped, which are unmatched."""
    settings = get_settings()
    with session_scope() as session:
        counts = identity.version_counts(session)
    console.print("version  rows  latest request  pepper")
    for c in counts:
        if c.version == settings.identity_pepper_version:
            state = "current"
        elif c.configured:
            state = "previous (still matched)"
        else:
            state = "NOT CONFIGURED: these rows can no longer be matched"
        console.print(f"{c.version}  {c.rows}  {c.last_requested_at.isoformat()}  {state}")
    configured = sorted(settings.identity_peppers())
    unused = [v for v in configured if v not in {c.version for c in counts}]
    older = sum(c.rows for c in counts if c.version != settings.identity_pepper_version)
    console.print(
        f"current version {settings.identity_pepper_version}; configured {configured}; "
        f"rows on other versions: {older}"
    )
    for v in unused:
        if v != settings.identity_pepper_version:
            console.print(f"version {v} holds no rows: its pepper can be removed.")


@app.command("find")
def find(
    number: Annotated[
        str,
        typer.Option(
            prompt="Identity number",
            hide_input=True,
            help="The identity number (asked for without echo when not given).",
        ),
    ],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """List the prescriptions made out to an identity number (every configured pepper tried)."""
    normalised = workflow.normalise_id_number(number)
    with session_scope() as session:
        rows = identity.find_prescriptions(session, normalised, limit=limit)
        console.print(f"Prescriptions for {workflow.mask_id_number(normalised)}:")
        for p in rows:
            console.print(
                f"{p.id}  {p.status.value}  {p.requested_at.isoformat()}  {p.legal_name}  "
                f"pepper version {p.id_number_pepper_version}"
            )
    console.print(f"{len(rows)} prescription(s)")

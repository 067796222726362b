"""Command line: `python -m o2o COMMAND` (admin users, demo data, imports, tools)."""

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from o2o import wiring
from o2o.db import session_scope
from o2o.errors import DomainError

cli = typer.Typer(help="O2O pharmacy platform administration.", no_args_is_help=True)
console = Console(stderr=True)


def _fail(exc: DomainError) -> None:
    console.print(f"[red]error:[/red] {exc.message}")
    raise typer.Exit(1)


@cli.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="The admin's email (sign-in name).")],
    name: Annotated[str, typer.Option(help="Display name.")] = "Administrator",
    password: Annotated[
        str,
        typer.Option(
            prompt=True, hide_input=True, confirmation_prompt=True, envvar="O2O_ADMIN_PASSWORD"
        ),
    ] = ...,
) -> None:
    """Create the first admin account."""
    from o2o.users import service
    from o2o.users.models import Role
    from o2o.users.schemas import UserCreateIn

    try:
        body = UserCreateIn(email=email, password=password, name=name, role=Role.ADMIN)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        with session_scope() as session:
            user = service.create_user(
                session, email=body.email, password=body.password, name=body.name, role=Role.ADMIN
            )
            console.print(f"created admin {user.email} (id {user.id})")
    except DomainError as exc:
        _fail(exc)


@cli.command("demo-data")
def demo_data() -> None:
    """Load the demo accounts (and demo city); safe to run again."""
    from o2o import demo
    from o2o.config import get_settings

    env = get_settings().env
    if env not in ("development", "test"):
        # Demo accounts have published passwords: never in a deployment.
        console.print(f"[red]demo-data refuses O2O_ENV={env}: its accounts have public passwords.")
        raise typer.Exit(code=1)

    with session_scope() as session:
        created, city = demo.load_demo(session)
    table = Table(title="Demo accounts (development only)")
    table.add_column("email")
    table.add_column("role")
    table.add_column("password")
    for account in demo.DEMO_ACCOUNTS:
        table.add_row(account.email, account.role.value, demo.DEMO_PASSWORD)
    from o2o.demo_sales import DEMO_MEMBERS

    for member in DEMO_MEMBERS:
        table.add_row(member.email, f"patient ({member.level} member)", demo.DEMO_PASSWORD)
    Console().print(table)
    console.print(f"{len(created)} account(s) created, the others existed already.")
    console.print(city.summary())


def main() -> None:
    from o2o.payments.cli import app as payments_cli
    from o2o.simulation.cli import app as simulate_cli
    from prescriptions.cli import app as doctor_cli
    from prescriptions.identity_cli import app as identities_cli
    from prescriptions.pharmacy_cli import app as pharmacy_cli
    from stores.cli import app as stores_cli

    cli.add_typer(stores_cli, name="stores")
    cli.add_typer(doctor_cli, name="doctor")
    cli.add_typer(pharmacy_cli, name="pharmacy")
    cli.add_typer(identities_cli, name="identities")
    cli.add_typer(simulate_cli, name="simulate")
    cli.add_typer(payments_cli, name="payments")
    wiring.connect()
    cli()


if __name__ == "__main__":
    main()

"""`python -m o2o payments ...`: the development payment app."""

from typing import Annotated

import typer
from rich.console import Console

from o2o.db import session_scope
from o2o.payments import dev_app

app = typer.Typer(help="Payments: the development payment app.", no_args_is_help=True)
console = Console(stderr=True)


@app.command("dev-app")
def serve_dev_app(
    port: Annotated[int, typer.Option(help="Local port of its webhook receiver.")] = 8765,
    platform_url: Annotated[
        str, typer.Option(help="Where the platform's API answers.")
    ] = "http://127.0.0.1:8000",
    delay: Annotated[float, typer.Option(help="Seconds before each capture or refund.")] = 2.0,
) -> None:
    """Register and serve the development payment app (refused in production)."""
    try:
        dev_app.refuse_production()
    except dev_app.ProductionRefused as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    with session_scope() as session:
        registered, secret = dev_app.register(session, webhook_url=f"http://127.0.0.1:{port}/hooks")
        session.expunge(registered)
    receiver = dev_app.DevPaymentApp(registered, secret, platform_url=platform_url, delay_s=delay)
    server = receiver.serve("127.0.0.1", port)
    console.print(
        f"development payment app {registered.id} on http://127.0.0.1:{port}/hooks: captures "
        f"each payment after {delay:g} s and confirms each refund (development only)"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

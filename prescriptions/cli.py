"""Doctor key tools: `python -m o2o doctor keygen|sign` (the reference signing client)."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from prescriptions import signing

app = typer.Typer(help="Doctors' Ed25519 signing keys.", no_args_is_help=True)


@app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Where to write the private key (0600).")],
) -> None:
    """Make a key pair: write the private key file and print the base64 public key."""
    key = signing.generate_private_key()
    try:
        signing.write_private_key(key, out)
    except FileExistsError:
        typer.echo(f"error: {out} exists; refusing to overwrite a key", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"error: cannot write {out}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    typer.echo(signing.public_key_b64(key))


@app.command("sign")
def sign(
    key: Annotated[Path, typer.Option("--key", help="The private key file from keygen.")],
    payload: Annotated[
        str,
        typer.Option(
            "--payload",
            help="The base64 payload from signing-payload or a key challenge ('-': stdin).",
        ),
    ],
) -> None:
    """Sign a base64 payload (a prescription or a key challenge); print the base64 signature."""
    if payload == "-":
        payload = sys.stdin.read()
    try:
        data = signing.b64decode(payload, what="payload")
    except signing.KeyFormatError:
        typer.echo("error: the payload is not valid base64", err=True)
        raise typer.Exit(2) from None
    try:
        private_key = signing.read_private_key(key)
    except FileNotFoundError:
        typer.echo(f"error: {key} does not exist", err=True)
        raise typer.Exit(1) from None
    except signing.KeyFormatError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(signing.b64encode(signing.sign(private_key, data)))

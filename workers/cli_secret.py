"""``readmodel secret``: keys and encrypted DSNs for the configuration (tenant databases)."""

from __future__ import annotations

import getpass
import sys

import typer

from config.secrets import SECRET_KEY_ENV, encrypt, new_key
from workers.cli_support import EXIT_CONFIG, fail

secret_app = typer.Typer(
    help="Encrypted credentials: write a source's url as fernet:<token>, decrypted with the "
    f"key in {SECRET_KEY_ENV} when the configuration is loaded.",
    no_args_is_help=True,
)


@secret_app.command("key")
def secret_key() -> None:
    """Print a new random key for READMODEL_SECRET_KEY (keep it out of the config file)."""
    typer.echo(new_key())


@secret_app.command("encrypt")
def secret_encrypt() -> None:
    """Read a DSN (from a prompt that does not echo, or standard input) and print it
    encrypted with READMODEL_SECRET_KEY, ready for a url in the config file."""
    if sys.stdin.isatty():
        secret = getpass.getpass("DSN to encrypt: ")
    else:
        secret = sys.stdin.read().strip()
    if not secret:
        raise fail("nothing to encrypt: give the DSN on standard input", EXIT_CONFIG)
    try:
        typer.echo(encrypt(secret))
    except ValueError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None

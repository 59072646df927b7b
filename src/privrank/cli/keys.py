"""``privrank keys create|revoke|list``: the API keys of ``privrank serve``.

Keys live in the serving database (``--database``, else ``$PRIVRANK_SERVE_DATABASE_URL``, else
``$PRIVRANK_HOME/serving.sqlite``) as salted scrypt hashes; ``create`` prints the raw key once.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from privrank.cli.app import app

__all__ = ["keys_app"]

keys_app = typer.Typer(help="Create, revoke and list the API keys of `privrank serve`.")
app.add_typer(keys_app, name="keys", no_args_is_help=True)

Database = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="Serving database URL (sqlite:///FILE or postgresql://...); default "
        "$PRIVRANK_SERVE_DATABASE_URL or $PRIVRANK_HOME/serving.sqlite.",
    ),
]


def _store(database: str | None):
    from privrank.serving.auth import KeyStore
    from privrank.serving.db import default_database_url, make_engine

    return KeyStore(make_engine(database or default_database_url()))


@keys_app.command("create")
def create(
    scope: Annotated[
        str,
        typer.Option(help="read (recommend, rank), write (also events) or admin (also models)."),
    ],
    name: Annotated[str | None, typer.Option(help="A unique name (default key-<id>).")] = None,
    database: Database = None,
) -> None:
    """Create an API key and print it (once: it is stored only as a salted hash)."""
    created = _store(database).create(scope, name=name)
    err = Console(stderr=True)
    err.print(
        f"Created API key [bold]{created.key.name}[/] with scope {created.key.scope.value}. "
        "Store it now: it cannot be shown again.",
        highlight=False,
    )
    typer.echo(created.secret)


@keys_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name (see `privrank keys list`).")],
    database: Database = None,
) -> None:
    """Revoke an API key by name (servers refuse it within seconds)."""
    key = _store(database).revoke(name)
    typer.echo(f"revoked {key.name}")


@keys_app.command("list")
def list_keys(database: Database = None) -> None:
    """List the API keys (names, scopes, dates; never the keys themselves)."""
    table = Table("name", "id", "scope", "created", "revoked")
    for key in _store(database).list():
        table.add_row(
            key.name,
            key.key_id,
            key.scope.value,
            key.created_at.isoformat(timespec="seconds"),
            "" if key.revoked_at is None else key.revoked_at.isoformat(timespec="seconds"),
        )
    Console(width=120).print(table)

"""``privrank keys create|revoke|list``: the API keys of ``privrank serve``.

Keys live in the serving database (``--database``, else ``$PRIVRANK_SERVE_DATABASE_URL``, else
``$PRIVRANK_HOME/serving.sqlite``) as salted HMAC-SHA-256 hashes under a server-side pepper;
``create`` prints the raw key once. A revoked key stops working at once in new server processes
and within the key cache's TTL (``--key-cache-ttl``, 5 s by default) in running ones.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from privrank.cli._console import make_console, styled
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
        typer.Option(
            help="read (history recommendations, similar items, ranking for a history), "
            "service (also any user id), write (also events and user tokens) or admin (also "
            "model versions)."
        ),
    ],
    name: Annotated[str | None, typer.Option(help="A unique name (default key-<id>).")] = None,
    database: Database = None,
) -> None:
    """Create an API key and print it (once: it is stored only as a salted hash)."""
    created = _store(database).create(scope, name=name)
    err = make_console(stderr=True)
    err.print(
        styled(
            "Created API key ",
            (created.key.name, "bold"),
            f" with scope {created.key.scope.value}. Store it now: it cannot be shown again.",
        )
    )
    typer.echo(created.secret)


@keys_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name (see `privrank keys list`).")],
    database: Database = None,
) -> None:
    """Revoke an API key by name, and the user tokens it minted (running servers refuse them
    within their key cache's TTL, 5 s by default)."""
    store = _store(database)
    key = store.revoke(name)
    typer.echo(
        f"revoked {key.name}; running servers refuse it, and the user tokens it minted, within "
        f"their key cache TTL (--key-cache-ttl, default {store.cache_ttl_s:g} s)"
    )


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
    make_console(width=120).print(table)

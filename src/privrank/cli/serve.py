"""``privrank serve``: run the recommendation API with uvicorn.

Serve one model directory (``--model``, a saved model or a ``privrank train`` output) or the
active version of a model store (``--store``, where versions can be activated and rolled back
through the API). The server refuses to start while no API key exists (create one with
``privrank keys create``), unless ``--insecure-dev`` is given, which is only allowed on a
loopback address. The operator console is served under ``/console/`` (sign in with an admin key;
``--runs`` and ``--ledger`` say where its evaluation runs and privacy ledger are; ``--no-console``
leaves it out).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from privrank.cli._console import MODE, JsonFormatter, LogFormat, make_console, styled
from privrank.cli.app import app
from privrank.config_errors import config_error
from privrank.errors import ConfigError

__all__ = [
    "check_startup",
    "describe_retrieval",
    "serve",
    "settings_from_options",
    "store_add",
    "store_list",
]

WORKER_HEALTHCHECK_TIMEOUT_S = 120
"""Seconds a ``--workers`` process may take to answer uvicorn's supervisor (startup included)."""

store_app = typer.Typer(help="Manage a model store for `privrank serve --store`.")
app.add_typer(store_app, name="store", no_args_is_help=True)


def settings_from_options(**options):
    """:class:`~privrank.serving.ServeSettings` from CLI options, errors as one ConfigError
    naming each bad option, its setting, the value and what was expected."""
    from privrank.serving.settings import ServeSettings

    try:
        return ServeSettings(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        flags = {k: _SETTING_OPTIONS.get(k, "--" + k.replace("_", "-")) for k in options}
        raise config_error(exc, "ServeSettings", model=ServeSettings, options=flags) from exc


#: Settings whose ``privrank serve`` option is not ``--`` + the setting's name, dashed.
_SETTING_OPTIONS = {
    "model_dir": "--model",
    "store_dir": "--store",
    "database_url": "--database",
    "key_cache_ttl_s": "--key-cache-ttl",
    "runs_dir": "--runs",
    "ledger_url": "--ledger",
    "console_session_ttl_s": "--console-session-ttl",
    "search_dir": "--search-model",
}


def check_startup(settings, host: str):
    """Refuse to start without API keys (unless insecure dev mode on loopback); load the
    model once, with its retrieval index, so a bad model or an index below the recall floor
    fails here, with a clear message.

    Returns:
        The :class:`~privrank.serving.store.ServedModel` that will be served.

    Raises:
        ConfigError: No active API key and no ``--insecure-dev``, or ``--insecure-dev`` on a
            non-loopback address.
        ArtifactError: The model cannot be loaded, or its index misses the recall floor
            (:class:`~privrank.serving.errors.IndexQualityError`).
    """
    from privrank.serving.auth import KeyStore
    from privrank.serving.db import make_engine
    from privrank.serving.events import EventStore
    from privrank.serving.settings import is_loopback
    from privrank.serving.store import IndexOptions, ModelStore

    if settings.insecure_dev and not is_loopback(host):
        raise ConfigError(
            f"--insecure-dev serves without API keys and is only allowed on a loopback "
            f"address (127.0.0.1, ::1, localhost), not {host!r}"
        )
    # Create the tables here, once, rather than racing to create them in every worker.
    engine = make_engine(settings.database_url)
    try:
        active = KeyStore(engine).count_active()
        EventStore(engine)
    finally:
        engine.dispose()
    if not settings.insecure_dev and active == 0:
        raise ConfigError(
            "refusing to serve without API keys: create one with `privrank keys create "
            "--scope read` (same --database), or pass --insecure-dev for local development"
        )
    options = IndexOptions.from_settings(settings)
    if settings.model_dir is not None:
        store = ModelStore.single(settings.model_dir, index=options)
    else:
        store = ModelStore(settings.store_dir, index=options)
    return store.start()


def describe_retrieval(served) -> str:
    """One line on how answers are computed (index kind and recall check)."""
    index, neighbours = served.index, served.neighbours
    if index is not None:
        r = index.report
        text = f"{r.kind} FAISS index over {r.n_items:,} items, recall@{r.recall_k} {r.recall:.3f}"
        return text + (f" (fell back from hnsw: {r.fallback})" if r.fallback else "")
    if neighbours is not None:
        r = neighbours.report
        kept = "every weight" if r.exact else f"top {r.k} weights/item"
        return f"sparse neighbour matrix ({kept}), recall@{r.recall_k} {r.recall:.3f}"
    return "the model scores every item"


@store_app.command("add")
def store_add(
    store: Annotated[Path, typer.Argument(help="The model store directory (created if new).")],
    model: Annotated[
        Path, typer.Argument(help="A model directory (saved model or `privrank train` output).")
    ],
    version: Annotated[str | None, typer.Option(help="Version name (default v<N+1>).")] = None,
    activate: Annotated[
        bool, typer.Option("--activate", help="Make it the active version at once.")
    ] = False,
) -> None:
    """Copy a verified model into a model store as a new version.

    A running server picks up an activation within a second; or activate later with
    POST /v1/models/{version}/activate (admin key).
    """
    from privrank.serving.store import ModelStore

    name = ModelStore(store).add(model, version, activate=activate)
    typer.echo(f"added {name}" + (" (active)" if activate else ""))


@store_app.command("list")
def store_list(
    store: Annotated[Path, typer.Argument(help="The model store directory.")],
) -> None:
    """List the versions of a model store and which one is active."""
    from privrank.serving.store import ModelStore

    for info in ModelStore(store).versions():
        marker = "*" if info.active else " "
        typer.echo(f"{marker} {info.version}\t{info.model or '?'}")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at most 64: the default worker
    count, since a worker's requests are CPU-bound (one worker per core saturates them)."""
    from privrank.models._config import available_cores

    return max(1, min(available_cores(), 64))


def _log_config(level: str) -> dict:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["privrank"] = {"handlers": ["default"], "level": level.upper()}
    if MODE.log_format is LogFormat.json:  # uvicorn's and privrank's records as JSON lines
        for name in config["formatters"]:
            config["formatters"][name] = {"()": f"{JsonFormatter.__module__}.JsonFormatter"}
    return config


@app.command("serve")
def serve(
    model: Annotated[
        Path | None,
        typer.Option(help="A model directory (saved model or `privrank train` output)."),
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help="A model store directory (versions, activation, rollback).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes (default: one per core this process may use). Each holds "
            "the model in memory and has its own per-key rate limit; all stop when the "
            "supervising process does, even if it is killed.",
            min=1,
            max=64,
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            help="Database of API keys and events (default $PRIVRANK_HOME/serving.sqlite)."
        ),
    ] = None,
    insecure_dev: Annotated[
        bool, typer.Option("--insecure-dev", help="Serve WITHOUT API keys (loopback only).")
    ] = False,
    max_body_bytes: Annotated[
        int | None, typer.Option(help="Largest request body accepted (default 1 MiB).")
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option(help="Requests/s per API key and worker (0: no limit).")
    ] = None,
    rate_burst: Annotated[int | None, typer.Option(help="Burst size per API key.")] = None,
    key_cache_ttl: Annotated[
        float | None,
        typer.Option(
            help="Seconds a verified key is trusted before the database is asked again: how "
            "long a key revoked elsewhere (and its user tokens) still works here (default 5)."
        ),
    ] = None,
    auth_failure_rate: Annotated[
        float | None,
        typer.Option(help="Failed authentications/s allowed per client address (default 1)."),
    ] = None,
    read_max_k: Annotated[
        int | None,
        typer.Option(
            help="Largest k a read key or user token may ask for (default 100; service keys: 1000)."
        ),
    ] = None,
    index: Annotated[
        str | None,
        typer.Option(
            help="Retrieval for factor models: auto (exact up to --index-exact-threshold "
            "items, HNSW above), exact, hnsw, ivf, or off (models score every item)."
        ),
    ] = None,
    index_exact_threshold: Annotated[
        int | None,
        typer.Option(help="Largest catalogue searched exactly with --index auto (20000)."),
    ] = None,
    index_recall_floor: Annotated[
        float | None,
        typer.Option(
            help="Lowest recall@10 vs exact of an approximate index or pruned neighbour matrix "
            "(0.95): auto falls back to exact below it, explicit choices are refused."
        ),
    ] = None,
    neighbours: Annotated[
        int | None,
        typer.Option(
            help="Item-item models: weights kept per item in the sparse neighbour matrix "
            "(default: all for ItemKNN, dense scoring for EASE; 0: off)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    console: Annotated[
        bool,
        typer.Option("--console/--no-console", help="Serve the operator console under /console."),
    ] = True,
    runs: Annotated[
        Path | None,
        typer.Option(
            help="Where the console finds `privrank evaluate --out` runs and `privrank train` "
            "outputs (default $PRIVRANK_HOME/runs)."
        ),
    ] = None,
    ledger: Annotated[
        str | None,
        typer.Option(
            help="The privacy ledger the console shows (default $PRIVRANK_LEDGER_URL, else "
            "$PRIVRANK_HOME/ledger.sqlite)."
        ),
    ] = None,
    console_session_ttl: Annotated[
        float | None,
        typer.Option(help="Seconds a console sign-in lasts (default 28800: 8 hours)."),
    ] = None,
    ads_model: Annotated[
        Path | None,
        typer.Option(help="A click-model directory (privrank ads train) for /v1/ads/rank."),
    ] = None,
    search_model: Annotated[
        Path | None,
        typer.Option(help="A `privrank search build` directory to serve at POST /v1/search."),
    ] = None,
) -> None:
    """Serve recommendations over HTTP (FastAPI + uvicorn), versioned under /v1."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise ConfigError(
            f"serving needs the 'serve' extra ({exc.name} is not installed): "
            "pip install 'privrank[serve]'"
        ) from exc

    from privrank.serving.settings import SETTINGS_ENV

    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"--log-level must be debug, info, warning or error. Got {log_level!r}")
    settings = settings_from_options(
        model_dir=model,
        store_dir=store,
        database_url=database,
        insecure_dev=insecure_dev,
        max_body_bytes=max_body_bytes,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        key_cache_ttl_s=key_cache_ttl,
        auth_failure_rate=auth_failure_rate,
        read_max_k=read_max_k,
        index=index,
        index_exact_threshold=index_exact_threshold,
        index_recall_floor=index_recall_floor,
        neighbours=neighbours,
        console=console,
        runs_dir=runs,
        ledger_url=ledger,
        console_session_ttl_s=console_session_ttl,
        ads_model=ads_model,
        search_dir=search_model,
    )
    served = check_startup(settings, host)
    version = served.version
    workers = workers or usable_cores()
    make_console(stderr=True).print(
        styled(
            "serving model version ",
            (str(version), "bold"),
            f" on http://{host}:{port} ({describe_retrieval(served)}; "
            f"{workers} worker{'s' if workers > 1 else ''}; revoked keys stop working within "
            f"{settings.key_cache_ttl_s:g} s)",
            ("  INSECURE DEV MODE: no API keys" if insecure_dev else "", "bold red"),
        )
    )
    if settings.console:
        make_console(stderr=True).print(
            f"console: http://{host}:{port}/console/ (sign in with an admin API key)"
        )
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    uvicorn.run(
        "privrank.serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        server_header=False,
        log_level=log_level,
        log_config=_log_config(log_level),
        # A worker answers uvicorn's health pings only once imports and the model load are
        # done; on a busy machine that takes longer than uvicorn's 5 s default, and the
        # supervisor would kill and respawn every worker forever.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_TIMEOUT_S,
    )

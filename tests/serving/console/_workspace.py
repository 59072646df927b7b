"""A real privrank workspace for the console tests, built with the ``privrank`` commands.

A tiny synthetic dataset is split, trained on (EASE and most-popular, without DP; EASE with
user-level DP, spent from the ledger, and its release artifact), evaluated with plots
(``privrank evaluate --model``), and the three servable models go into a model store. The
ledger also holds a spend a crashed run left reserved and one released.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

import privrank.cli.data_io
import privrank.cli.data_split
import privrank.cli.evaluate
import privrank.cli.release
import privrank.cli.train  # noqa: F401  (register the commands)
from privrank.cli.app import app
from privrank.data.interactions import DatasetMetadata
from privrank.privacy.ledger import Ledger
from privrank.serving import KeyStore, ModelStore, make_engine
from privrank.testing import synthetic_interactions

runner = CliRunner()

#: A history of items the tiny dataset knows, for previews and API calls.
HISTORY = ["i01", "i02", "i03"]


@dataclass(frozen=True)
class Workspace:
    """Paths and keys of a built workspace.

    Attributes:
        home: ``PRIVRANK_HOME`` (the ledger is ``home/ledger.sqlite``).
        runs: The runs directory (evaluation ``eval-ease``; trained ``ease``, ``popular``,
            ``dp-ease``).
        store: The model store (v1 EASE active, v2 most-popular, v3 DP-EASE release).
        database_url: The serving database (keys, sessions).
        admin_key: An admin key (``console-admin``).
        service_key: A service key (``backend``).
        read_key: A read key (``reader``).
    """

    home: Path
    runs: Path
    store: Path
    database_url: str
    admin_key: str
    service_key: str
    read_key: str


def _cli(*args: str) -> None:
    done = runner.invoke(app, list(args), catch_exceptions=False)
    assert done.exit_code == 0, done.output


def build_workspace(root: Path) -> Workspace:
    """Build the workspace under ``root``; ``PRIVRANK_HOME`` must already be ``root/home``."""
    home, runs = root / "home", root / "home" / "runs"
    data = synthetic_interactions(n_users=60, n_items=40, seed=0)
    dataset = data.with_metadata(DatasetMetadata(name="tiny")).save(root / "tiny")
    _cli("data", "split", str(dataset), "--protocol", "holdout", "--out", str(root / "split"))
    _cli("train", "--data", str(root / "split"), "--model", "ease", "--out", str(runs / "ease"))
    _cli(
        "train", "--data", str(root / "split"), "--model", "most-popular",
        "--out", str(runs / "popular"),
    )  # fmt: skip
    _cli(
        "evaluate", "--model", str(runs / "ease"), "--out", str(runs / "eval-ease"),
        "--resamples", "200",
    )  # fmt: skip
    book = Ledger()
    book.set_budget("tiny", 3.0, 1e-2)
    _cli(
        "train", "--data", str(dataset), "--model", "ease", "--epsilon", "2",
        "--max-per-user", "10", "--out", str(runs / "dp-ease"),
    )  # fmt: skip
    _cli("privacy", "release", str(runs / "dp-ease"), "--out", str(root / "dp-ease-release"))
    book.reserve("tiny", epsilon=0.25, delta=1e-4, description="a run that crashed")
    book.release(book.reserve("tiny", epsilon=0.5, delta=1e-4, description="a run given back"))
    book.close()
    store = ModelStore(root / "store")
    store.add(runs / "ease", "v1")
    store.add(runs / "popular", "v2")
    store.add(root / "dp-ease-release", "v3")
    store.activate("v1")
    database_url = f"sqlite:///{root / 'serving.sqlite'}"
    engine = make_engine(database_url)
    keys = KeyStore(engine)
    admin = keys.create("admin", "console-admin").secret
    service = keys.create("service", "backend").secret
    read = keys.create("read", "reader").secret
    engine.dispose()
    return Workspace(home, runs, root / "store", database_url, admin, service, read)

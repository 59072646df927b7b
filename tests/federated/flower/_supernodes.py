"""A real Flower deployment on loopback for the ``flower``-marked tests: ML-100K's holdout
training part cut into node files, a ledger with a budget for the served run and one for its
in-process oracle, ``privrank federated serve`` from the Flower environment, then one
``flower-supernode`` process per node file. Every process still running is stopped on exit."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from privrank.privacy.ledger import Ledger

if TYPE_CHECKING:
    from privrank.federated.flower.job import FlowerJob
    from privrank.federated.secure_aggregation import SecureAggregation

ROOT = Path(__file__).resolve().parents[3]
FLOWER = Path(os.environ.get("PRIVRANK_FLOWER_VENV", ROOT / ".venv-flower")) / "bin"


@dataclass
class Deployment:
    """The served run's files and processes.

    Attributes:
        train: ML-100K's holdout training part (the devices' histories).
        devices: The folder of node files (``node-K.npz``).
        ledger_url: The ledger; budgets ``ml-100k`` (the served run) and ``oracle``.
        out: The served model's directory (``--out``); its run directory is ``run_dir``.
        logs: ``serve.log`` and one ``nK.log`` per SuperNode.
    """

    train: object
    devices: Path
    ledger_url: str
    out: Path
    run_dir: Path
    logs: Path
    serve: subprocess.Popen | None = None
    nodes: list[subprocess.Popen] = field(default_factory=list)

    def serve_log(self) -> str:
        """The end of the server's log (for an assertion's message)."""
        return (self.logs / "serve.log").read_text()[-3000:]


def _supernode(
    node_file: Path,
    number: int,
    home: Path,
    log: Path,
    port: int,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    env = dict(os.environ, FLWR_HOME=str(home), PATH=f"{FLOWER}{os.pathsep}{os.environ['PATH']}")
    env.update(extra_env or {})
    command = [
        str(FLOWER / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
        "--port", str(port + 1 + number), "--node-config", f"node-file='{node_file}'",
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


@contextmanager
def deployment(
    tmp_path: Path,
    serve_args: Sequence[str],
    *,
    nodes: int,
    port: int,
    node_env: Mapping[str, str] | None = None,
) -> Iterator[Deployment]:
    """Start ``privrank federated serve --data ml100k-holdout --out … --ledger … --port …
    --min-nodes …`` with ``serve_args``, then the SuperNodes (their environment, and so their
    ClientApp processes', updated with ``node_env``); yield while they run."""
    if not (FLOWER / "flower-supernode").exists():
        pytest.fail(f"{FLOWER} holds no Flower environment: run `make flower-env`")
    from privrank.federated.flower.devices import partition
    from privrank.workflow.protocols import prepare

    train = prepare("ml100k-holdout").train
    devices = tmp_path / "devices"
    partition(train, nodes, devices)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(ledger_url) as book:
        book.set_budget("ml-100k", 100.0, 0.5)
        book.set_budget("oracle", 100.0, 0.5)
    run = Deployment(
        train, devices, ledger_url, tmp_path / "model", tmp_path / "model.run", tmp_path / "logs"
    )
    run.logs.mkdir()
    env = dict(os.environ, PATH=f"{FLOWER}{os.pathsep}{os.environ['PATH']}")
    command = [
        str(FLOWER / "privrank"), "federated", "serve", "--data", "ml100k-holdout",
        "--out", str(run.out), "--ledger", ledger_url, "--port", str(port),
        "--min-nodes", str(nodes), *serve_args,
    ]  # fmt: skip
    with (run.logs / "serve.log").open("wb") as log:
        run.serve = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        time.sleep(5)
        run.nodes = [
            _supernode(devices / f"node-{k}.npz", k, tmp_path / f"home-{k}",
                       run.logs / f"n{k}.log", port, node_env)
            for k in range(nodes)
        ]  # fmt: skip
        yield run
    finally:
        for process in run.nodes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        if run.serve.poll() is None:
            run.serve.kill()


def oracle_job(
    run: Deployment,
    tmp_path: Path,
    *,
    rounds: int,
    cohort: int,
    sampling: str = "poisson",
    secure: SecureAggregation | None = None,
    settings: Mapping[str, object] | None = None,
    **job: object,
) -> FlowerJob:
    """The in-process oracle of a served run: the job that ``privrank federated serve`` built
    from the tests' common arguments (``--param factors=4 --seed 1 --epsilon 30
    --max-per-user 50 --clipping-norm 0.5 --noise-seed 5``), charged to the ``oracle`` budget
    and kept in ``tmp_path/oracle``; ``settings`` adds to the round settings, ``job`` to the
    job's fields."""
    from privrank.data.fingerprint import fingerprint
    from privrank.federated import FederatedSettings
    from privrank.federated.flower.job import FlowerJob
    from privrank.models import FedMFConfig
    from privrank.privacy.spec import PrivacySpec

    return FlowerJob(
        model=FedMFConfig(factors=4),
        settings=FederatedSettings(
            rounds=rounds, clients_per_round=cohort, seed=1, sampling=sampling, **(settings or {})
        ),
        privacy=PrivacySpec(
            epsilon=30, max_interactions_per_user=50, clipping_norm=0.5, noise_seed=5
        ),
        population=run.train.n_users,
        n_items=run.train.n_items,
        data_fingerprint=fingerprint(run.train),
        run_dir=str(tmp_path / "oracle"),
        ledger_key="oracle",
        ledger_url=run.ledger_url,
        secure=secure,
        **job,  # type: ignore[arg-type]
    )

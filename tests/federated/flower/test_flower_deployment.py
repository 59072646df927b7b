"""End to end on Flower's deployment runtime (``make test-flower``; needs ``.venv-flower``).

Real processes on loopback: ``privrank federated serve`` (the SuperLink and, in it, the
ServerApp) from the Flower environment, 10 ``flower-supernode`` processes each holding the
devices of one node file of the ML-100K holdout's training part. One SuperNode is frozen and
killed while round 2 is in flight; the round completes with the survivors. The server keeps at
most 4 messages outstanding (``--max-in-flight 4``), so the frozen node holds one of the 4 slots
until the round's timeout while the other nodes go through the other 3. The run is DP-FedAvg
(noise seeded), so the model is checked against the in-process deployment rounds
(:func:`run_deployment`, itself checked against the simulator in
``test_deployment_rounds.py``) with the same node dropped from the same rounds; the ledger
holds the counts and exactly the released rounds; ``privrank evaluate --model`` (main
environment) reads the model directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tests.federated.flower._supernodes import deployment, oracle_job

from privrank.privacy.ledger import Ledger

pytestmark = [pytest.mark.flower, pytest.mark.realdata]

NODES = 10
KILLED = 3
PORT = 19391
ROUNDS = 2


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_ten_supernodes_one_killed_mid_round(real_data_dir, tmp_path):
    from tests.federated.flower.test_deployment_rounds import LocalTransport

    from privrank.federated.flower.rounds import run_deployment

    serve_args = [
        "--param", "factors=4", "--rounds", str(ROUNDS), "--clients-per-round", "300",
        "--seed", "1", "--epsilon", "30", "--max-per-user", "50", "--clipping-norm", "0.5",
        "--noise-seed", "5", "--budget-key", "ml-100k", "--enrol-timeout", "600",
        "--round-timeout", "300", "--max-in-flight", "4",
    ]  # fmt: skip
    with deployment(tmp_path, serve_args, nodes=NODES, port=PORT) as run:
        deadline = time.monotonic() + 900
        while len(_metrics(run.run_dir)) < 1:
            assert run.serve.poll() is None, run.serve_log()
            assert time.monotonic() < deadline, "round 1 never finished"
            time.sleep(0.2)
        # Round 2 starts right after round 1's line: freeze the node so that it cannot answer,
        # then kill it (and its ClientApp) while the round waits for it.
        os.killpg(run.nodes[KILLED].pid, signal.SIGSTOP)
        time.sleep(3)
        os.killpg(run.nodes[KILLED].pid, signal.SIGKILL)
        assert run.serve.wait(timeout=900) == 0, run.serve_log()
    train, devices, ledger_url = run.train, run.devices, run.ledger_url
    out, run_dir = run.out, run.run_dir
    lines = _metrics(run_dir)
    assert [line["released"] for line in lines] == [True] * ROUNDS
    assert lines[0]["refused"]["dropped"] == 0
    killed = np.arange(KILLED, train.n_users, NODES)
    assert lines[1]["refused"]["dropped"] > 0
    for line in lines[1:]:
        assert line["accepted"] + line["refused"]["dropped"] == line["clients"]

    # The oracle: the same rounds in-process, the killed node silent from round 2 on.
    job = oracle_job(run, tmp_path, rounds=ROUNDS, cohort=300)
    dropped = {r: {KILLED} for r in range(2, ROUNDS + 1)}
    transport = LocalTransport(devices, NODES, drop=dropped, config=job.model)
    oracle = run_deployment(job, transport)
    for number, line in enumerate(lines, start=1):
        asked = transport.asked[number - 1].get(KILLED, np.zeros(0))
        assert set(asked.tolist()) <= set(killed.tolist())
        if number >= 2:
            assert line["refused"]["dropped"] == len(asked)
    with np.load(run_dir / "state.npz") as state:
        np.testing.assert_allclose(
            state["item_factors"], oracle.state.arrays["item_factors"], rtol=1e-4, atol=1e-6
        )

    with Ledger(ledger_url) as book:
        spent = book.budget("ml-100k")
        reference = book.budget("oracle")
    assert spent.epsilon_spent == pytest.approx(oracle.plan.epsilon_after(ROUNDS), rel=1e-9)
    assert spent.epsilon_spent == pytest.approx(reference.epsilon_spent, rel=1e-12)
    record = json.loads((out / "training.json").read_text())
    assert len(record["privacy"]["spend_ids"]) == 1 + ROUNDS  # the counts + every round

    evaluated = subprocess.run(
        [sys.executable, "-m", "privrank.cli.main", "evaluate", "--model", str(out),
         "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert list((tmp_path / "eval").iterdir())

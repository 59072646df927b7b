"""SecAgg+ end to end on Flower's deployment runtime (``make test-flower``; needs ``.venv-flower``).

``privrank federated serve --aggregation secagg`` (the SuperLink and, in it, the ServerApp) with
10 ``flower-supernode`` processes holding the ML-100K holdout's devices; central DP-FedAvg over
SecAgg+ with fixed cohorts. The masks cancel exactly, so the model must equal the in-process
secure deployment (:class:`SecureTransport`, itself checked against the plaintext sums and the
simulator's SecAgg+ path in ``test_secure_deployment.py``) on the same seeds, and the ledger must
hold exactly the charges of that oracle: the counts (with δ) and every released round.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tests.federated.flower._supernodes import FLOWER, deployment, oracle_job

from privrank.privacy.ledger import Ledger

pytestmark = [pytest.mark.flower, pytest.mark.realdata]

NODES = 10
PORT = 19491
ROUNDS = 2
COHORT = 500  # 2 counts groups + 2 rounds = 16 SecAgg+ stages over the SuperNodes


def test_secagg_over_ten_supernodes_equals_the_in_process_secure_rounds(real_data_dir, tmp_path):
    from tests.federated.flower.test_secure_deployment import SecureTransport

    from privrank.federated.flower.rounds import run_deployment
    from privrank.federated.secure_aggregation import SecureAggregation

    serve_args = [
        "--param", "factors=4", "--rounds", str(ROUNDS), "--clients-per-round", str(COHORT),
        "--sampling", "fixed", "--seed", "1", "--epsilon", "30", "--max-per-user", "50",
        "--clipping-norm", "0.5", "--noise-seed", "5", "--budget-key", "ml-100k",
        "--enrol-timeout", "600", "--round-timeout", "300", "--aggregation", "secagg",
    ]  # fmt: skip
    with deployment(tmp_path, serve_args, nodes=NODES, port=PORT) as run:
        assert run.serve.wait(timeout=1500) == 0, run.serve_log()
    devices, ledger_url = run.devices, run.ledger_url
    out, run_dir = run.out, run.run_dir
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    assert [line["released"] for line in lines] == [True] * ROUNDS
    assert [line["accepted"] for line in lines] == [COHORT] * ROUNDS

    job = oracle_job(run, tmp_path, rounds=ROUNDS, cohort=COHORT, sampling="fixed",
                     secure=SecureAggregation())  # fmt: skip
    transport = SecureTransport(devices, NODES)
    transport.config = job.model
    oracle = run_deployment(job, transport)
    with np.load(run_dir / "state.npz") as state:
        np.testing.assert_array_equal(state["item_counts"], oracle.state.arrays["item_counts"])
        np.testing.assert_allclose(
            state["item_factors"], oracle.state.arrays["item_factors"], rtol=1e-5, atol=1e-6
        )
    with Ledger(ledger_url) as book:
        ours = [(s.epsilon, s.delta) for s in book.spends("ml-100k", status="committed")]
        theirs = [(s.epsilon, s.delta) for s in book.spends("oracle", status="committed")]
    assert len(ours) == 1 + ROUNDS
    assert np.asarray(ours) == pytest.approx(np.asarray(theirs), rel=1e-12)
    record = json.loads((out / "training.json").read_text())
    assert record["federated"]["aggregation"] == "secagg"


def test_distributed_dp_over_ten_supernodes_equals_the_in_process_rounds(real_data_dir, tmp_path):
    """Distributed DP on the deployment runtime: every device of a SuperNode clips, rounds and
    adds its own discrete Gaussian share (seeded per device by ``--noise-seed``, so that the
    oracle can redo it) before SecAgg+ masking; the ServerApp adds no noise. The item counts
    are integer sums of the devices' noisy encodings, so they equal the in-process run's
    exactly; the model equals it up to float rounding; the ledger holds exactly the in-process
    run's charges, which are the simulator's (``test_secure_deployment.py``)."""
    from tests.federated.flower.test_secure_deployment import SecureTransport

    from privrank.federated.flower.rounds import run_deployment
    from privrank.federated.secure_aggregation import SecureAggregation

    serve_args = [
        "--param", "factors=4", "--rounds", str(ROUNDS), "--clients-per-round", str(COHORT),
        "--seed", "1", "--epsilon", "30", "--max-per-user", "50", "--clipping-norm", "0.5",
        "--noise-seed", "5", "--budget-key", "ml-100k", "--enrol-timeout", "600",
        "--round-timeout", "300", "--aggregation", "secagg", "--distributed-dp",
        "--no-adaptive-clipping", "--min-clients", "100",
    ]  # fmt: skip
    with deployment(tmp_path, serve_args, nodes=NODES, port=PORT + 100) as run:
        assert run.serve.wait(timeout=1500) == 0, run.serve_log()
    lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines() if x]
    assert [line["released"] for line in lines] == [True] * ROUNDS

    job = oracle_job(run, tmp_path, rounds=ROUNDS, cohort=COHORT, secure=SecureAggregation(),
                     settings={"min_clients": 100, "adaptive_clipping": False},
                     distributed_dp=True)  # fmt: skip
    transport = SecureTransport(run.devices, NODES)
    transport.config = job.model
    oracle = run_deployment(job, transport)
    assert [line["accepted"] for line in lines] == [
        int(json.loads(x)["accepted"])
        for x in (tmp_path / "oracle" / "metrics.jsonl").read_text().splitlines()
        if x
    ]
    with np.load(run.run_dir / "state.npz") as state:
        np.testing.assert_array_equal(state["item_counts"], oracle.state.arrays["item_counts"])
        np.testing.assert_allclose(
            state["item_factors"], oracle.state.arrays["item_factors"], rtol=1e-5, atol=1e-6
        )
    with Ledger(run.ledger_url) as book:
        ours = [(s.epsilon, s.delta) for s in book.spends("ml-100k", status="committed")]
        theirs = [(s.epsilon, s.delta) for s in book.spends("oracle", status="committed")]
    assert len(ours) == 1 + ROUNDS
    assert np.asarray(ours) == pytest.approx(np.asarray(theirs), rel=1e-12)
    record = json.loads((run.out / "training.json").read_text())
    assert record["federated"]["distributed_dp"] is True
    assert record["privacy"]["epsilon"] == pytest.approx(oracle.guarantee.epsilon, rel=1e-12)


def test_every_secagg_stage_through_flowers_codec_and_the_clientapp_handler(tmp_path):
    """In the Flower environment, without the runtime: every stage's content goes through
    ``RecordDict`` → protobuf bytes → ``RecordDict`` both ways and the ClientApp's handler keeps
    each node's state in a ``RecordDict``; the private run equals the codec-free one exactly."""
    if not (FLOWER / "python").exists():
        pytest.fail(f"{FLOWER} holds no Flower environment: run `make flower-env`")
    script = Path(__file__).with_name("_wire_secagg.py")
    done = subprocess.run(
        [str(FLOWER / "python"), str(script)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("OK")

"""Adaptive clipping under distributed DP on Flower's deployment runtime (``make test-flower``).

Real processes on loopback: ``privrank federated serve --aggregation secagg --distributed-dp``
at the default clipping (adaptive, from ``--clipping-norm``) and 4 ``flower-supernode``
processes holding the ML-100K holdout's devices. Each device appends its clipping bit
:math:`b = [\\lVert\\Delta\\rVert \\le C_t]` to its SecAgg+ input; the server unmasks only the
(noisy) bit sum :math:`\\hat B_t` and steps
:math:`C_{t+1} = C_t \\exp(-\\eta_C(\\hat B_t/\\text{accepted}_t - \\gamma))`.

The SuperNodes, and the ClientApp processes they start, run with every mechanism's noise at
zero: a test-only ``sitecustomize`` on their ``PYTHONPATH`` sets privrank's noise scale to 0
before anything else is imported. The server process is unchanged (under distributed DP it adds
no noise; it cannot tell, which is the trust model: each device is trusted for its own share).
Without noise:

- the bit sum of every round, read back from C's step in ``metrics.jsonl``, is an integer;
- in round 1 (the public initial model) it equals the number of surviving devices whose update
  norm is at most :math:`C_1`, counted here from the node files (an independent oracle);
- C moves round by round exactly as the simulator's does for the same run without noise, and
  the ledger holds exactly the simulator's charges.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from tests.federated.flower._supernodes import ROOT, deployment

from privrank.privacy.ledger import Ledger

pytestmark = [pytest.mark.flower, pytest.mark.realdata]

NODES = 4
PORT = 19691
ROUNDS = 3
COHORT = 300
MIN_CLIENTS = 150
C0 = 2.0  # the update norms are about 1 to 2.5 here: every round clips some devices, not all

ZERO_NOISE = '''"""Test-only (tests/federated/flower/test_flower_adaptive_ddp.py): every privrank
mechanism made in this process adds no noise."""
import contextvars

from privrank.privacy import mechanism

mechanism._NOISE_SCALE = contextvars.ContextVar("privrank_noise_scale", default=0.0)
'''


def _zero_noise_env(tmp_path) -> dict[str, str]:
    folder = tmp_path / "zero-noise"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(ZERO_NOISE)
    paths = [str(folder), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _round_one_unclipped(run, settings, config) -> tuple[int, int]:
    """(devices in round 1's cohort, those whose update norm is ≤ C0), from the node files."""
    from privrank.federated.cohorts import sample_cohort
    from privrank.federated.flower.devices import device_updates, load_node
    from privrank.models._fedmf_rounds import FedMFServer

    cohort = sample_cohort(settings, run.train.n_users, 1)
    factors = FedMFServer.initial_factors(config, run.train.n_items, settings.seed)
    unclipped = 0
    for k in range(NODES):
        node = load_node(run.devices / f"node-{k}.npz")
        mine = np.intersect1d(node.device_ids, cohort)
        vectors, _ = device_updates(node, mine, config, factors, None)
        unclipped += int((np.linalg.norm(vectors, axis=1) <= C0).sum())
    return len(cohort), unclipped


def test_adaptive_distributed_dp_over_four_supernodes_counts_the_unclipped_devices(
    real_data_dir, tmp_path
):
    serve_args = [
        "--param", "factors=4", "--rounds", str(ROUNDS), "--clients-per-round", str(COHORT),
        "--seed", "1", "--epsilon", "30", "--max-per-user", "50", "--clipping-norm", str(C0),
        "--noise-seed", "5", "--budget-key", "ml-100k", "--enrol-timeout", "600",
        "--round-timeout", "300", "--aggregation", "secagg", "--distributed-dp",
        "--min-clients", str(MIN_CLIENTS),
    ]  # fmt: skip
    env = _zero_noise_env(tmp_path)
    with deployment(tmp_path, serve_args, nodes=NODES, port=PORT, node_env=env) as run:
        assert run.serve.wait(timeout=1500) == 0, run.serve_log()
    _check(run, tmp_path)


def _check(run, tmp_path) -> None:
    """The assertions on a finished served run (the module docstring)."""
    from privrank.federated import FederatedSettings, simulate
    from privrank.federated.secure_aggregation import SecureAggregation
    from privrank.models import FedMFConfig
    from privrank.privacy.mechanism import _noise_scale_for_testing
    from privrank.privacy.spec import PrivacySpec
    from privrank.workflow.spend import RoundLedger

    lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines() if x]
    assert [line["released"] for line in lines] == [True] * ROUNDS
    assert all(not any(line["refused"].values()) for line in lines)  # none dropped or refused
    final = json.loads((run.run_dir / "state.json").read_text())["clipping_norm"]
    norms = [line["clipping_norm"] for line in lines] + [final]
    assert norms[0] == C0 and len(set(norms)) == ROUNDS + 1  # C moved every round

    settings = FederatedSettings(
        rounds=ROUNDS, clients_per_round=COHORT, seed=1, min_clients=MIN_CLIENTS
    )
    assert settings.adaptive_clipping  # the default
    gamma, eta = settings.target_quantile, settings.clipping_learning_rate
    bit_sums = [
        line["accepted"] * (gamma - math.log(after / before) / eta)
        for line, before, after in zip(lines, norms[:-1], norms[1:], strict=True)
    ]
    assert bit_sums == pytest.approx(np.round(bit_sums), abs=1e-6)  # no noise: integer sums
    assert all(0 < b < line["accepted"] for b, line in zip(bit_sums, lines, strict=True))

    with np.load(run.run_dir / "state.npz") as state:
        counts = state["item_counts"]
    config = FedMFConfig(factors=4).resolved(counts, run.train.n_users)  # the devices' α₀
    sampled, unclipped = _round_one_unclipped(run, settings, config)
    assert lines[0]["accepted"] == sampled  # no dropout: every sampled device survived
    assert round(bit_sums[0]) == unclipped

    privacy = PrivacySpec(epsilon=30, max_interactions_per_user=50, clipping_norm=C0, noise_seed=5)
    reports: list = []
    with _noise_scale_for_testing(0.0), RoundLedger("oracle", "simulator", run.ledger_url) as book:
        reference = simulate(
            FedMFConfig(factors=4), run.train, settings, run_dir=tmp_path / "sim", spec=privacy,
            ledger=book, secure=SecureAggregation(masks=False), distributed_dp=True,
            progress=reports.append,
        )  # fmt: skip
    assert reference.distributed_plan is not None and reference.distributed_plan.bits is not None
    np.testing.assert_allclose(
        norms, [r.clipping_norm for r in reports] + [reference.state.clipping_norm], rtol=1e-12
    )
    with Ledger(run.ledger_url) as ledger:
        ours = [(s.epsilon, s.delta) for s in ledger.spends("ml-100k", status="committed")]
        theirs = [(s.epsilon, s.delta) for s in ledger.spends("oracle", status="committed")]
    assert len(ours) == 1 + ROUNDS
    assert np.asarray(ours) == pytest.approx(np.asarray(theirs), rel=1e-12)
    record = json.loads((run.out / "training.json").read_text())
    assert record["federated"]["distributed_dp"] is True
    assert record["federated"]["settings"]["adaptive_clipping"] is True
    assert record["privacy"]["epsilon"] == pytest.approx(reference.guarantee.epsilon, rel=1e-12)
    assert "clipping bit" in reference.guarantee.accounting  # the bit's release is charged

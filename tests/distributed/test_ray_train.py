"""SASRec and Mult-VAE trained data-parallel on Ray Train (TorchTrainer, gloo, CPU workers).

Oracles: the single-process fit with the same seed (one worker equals it exactly; two workers
equal it to float tolerance where nothing is drawn per worker: no dropout, full softmax), and
plain autograd of the whole batch's mean loss for one DDP step. Private fits: the same spec and
noise seed give the single-process fit's model, guarantee and ε (pinned), noise is added once
per logical step (its std is m·C/b, not √workers times that), and the ledger is charged once.

Each Ray Train run starts worker processes that import torch and privrank (about a minute on
the shared 2-core machine), so these tests are marked ``slow``.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest

from privrank.models import FitOptions, create_model
from privrank.privacy.dpsgd import plan_dpsgd
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import fit_and_spend

pytestmark = [pytest.mark.ray, pytest.mark.slow]

DATA = synthetic_interactions(n_users=240, n_items=50, seed=3)
SASREC = {"factors": 16, "max_length": 10, "epochs": 3, "batch_size": 32, "negatives": 16}
EXACT_SASREC = SASREC | {"dropout": 0.0, "loss": "softmax"}  # nothing drawn per worker
VAE = {"hidden": 32, "latent": 8, "epochs": 3, "batch_size": 40}
SPEC = PrivacySpec(epsilon=4.0, max_interactions_per_user=20, clipping_norm=1.0, noise_seed=11)


@pytest.fixture(scope="module")
def engines(ray_local):
    from privrank.distributed import RayEngine

    return {workers: RayEngine(workers=workers) for workers in (1, 2)}


def _fit(name, config, engine=None, spec=None):
    options = FitOptions(seed=5, threads=1, privacy=spec, engine=engine)
    return create_model(name, config).fit(DATA, options)


def _network(model) -> dict[str, np.ndarray]:
    return {k: v for k, v in model._state().items() if k.startswith("network.")}


def _effective(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # The attention's key bias shifts every score of a query equally: softmax cancels it, so
    # its gradient is 0 up to float rounding, which Adam's normalised step turns into
    # lr-sized moves of either sign. It changes no output; compare the other weights.
    return {k: v for k, v in weights.items() if not k.endswith("key.bias")}


def _assert_same_network(a, b, exact: bool = True, **tolerance) -> None:
    mine, theirs = _network(a), _network(b)
    if not exact:
        mine, theirs = _effective(mine), _effective(theirs)
    assert mine.keys() == theirs.keys() and mine
    for key in mine:
        np.testing.assert_allclose(mine[key], theirs[key], err_msg=key, **tolerance)


@pytest.mark.parametrize(("name", "config"), [("sasrec", SASREC), ("mult-vae", VAE)])
def test_one_worker_equals_the_single_process_fit(engines, name, config) -> None:
    local = _fit(name, config)
    ray = _fit(name, config, engines[1])
    _assert_same_network(ray, local, rtol=0, atol=0)
    np.testing.assert_array_equal(ray.loss_history_, local.loss_history_)
    np.testing.assert_array_equal(ray.item_popularity_, local.item_popularity_)
    if name == "sasrec":  # the workers refit too (the carve chose the epochs), as one process
        assert ray.refit_epochs_ == local.refit_epochs_ == local.best_epoch_ >= 1


def test_two_workers_take_the_whole_batch_step(engines) -> None:
    # No dropout and the full softmax: the shares' gradients, weighted by their positions and
    # summed over the workers, are the whole batch's; only float addition order differs.
    local = _fit("sasrec", EXACT_SASREC)
    ray = _fit("sasrec", EXACT_SASREC, engines[2])
    _assert_same_network(ray, local, exact=False, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ray.loss_history_, local.loss_history_, rtol=1e-5)
    assert ray.loss_history_[-1] < ray.loss_history_[0]


def test_two_worker_mult_vae_learns(engines) -> None:
    ray = _fit("mult-vae", VAE | {"epochs": 4}, engines[2])
    assert np.all(np.diff(ray.loss_history_) < 0), ray.loss_history_
    assert ray.network_.training is False


def test_a_private_two_worker_fit_is_the_single_process_fit(engines, tmp_path: Path) -> None:
    # Same noise seed: the same Poisson batches, the same clipped sum (split over the
    # workers) and ONE draw of the noise per step. Noise added by every worker would move the
    # weights far beyond this tolerance.
    local = _fit("sasrec", EXACT_SASREC, spec=SPEC)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("toy", 10.0, 1e-2)
    options = FitOptions(seed=5, threads=1, privacy=SPEC, engine=engines[2])
    with fit_and_spend(
        create_model("sasrec", EXACT_SASREC),
        DATA,
        options,
        budget_key="toy",
        description="ray train",
        ledger_url=url,
    ) as fitted:
        ray = fitted.model
    with Ledger(url) as book:
        spends = book.spends("toy")
    assert [s.status.value for s in spends] == ["committed"] and spends[0].epsilon == 4.0
    _assert_same_network(ray, local, exact=False, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(ray.item_popularity_, local.item_popularity_)
    mine, theirs = ray.privacy_guarantee_, local.privacy_guarantee_
    assert mine is not None and theirs is not None
    assert mine.to_dict() == theirs.to_dict()
    # Pinned: the single-process plan of the same config (q = 32/240, T = 3 · 8 steps) and
    # the accountant's ε of the composition, equal on both fits.
    plan = plan_dpsgd(SPEC.resolve(240), 240, 32, 3)
    step = mine.composition[-1]
    assert step.count == plan.steps == 24 and step.sampling_rate == plan.sampling_rate == 32 / 240
    assert step.noise_multiplier == plan.noise_multiplier
    assert mine.epsilons["pld"] == theirs.epsilons["pld"] == pytest.approx(plan.pld_epsilon)
    assert mine.epsilons["rdp"] == theirs.epsilons["rdp"]
    assert mine.epsilon == theirs.epsilon == 4.0 and plan.pld_epsilon <= 4.0


def test_a_private_one_worker_mult_vae_is_the_single_process_fit(engines) -> None:
    local = _fit("mult-vae", VAE, spec=SPEC)
    ray = _fit("mult-vae", VAE, engines[1], spec=SPEC)
    _assert_same_network(ray, local, rtol=0, atol=0)
    assert ray.privacy_guarantee_.to_dict() == local.privacy_guarantee_.to_dict()


def test_a_driver_drawn_noise_seed_is_not_recorded(engines) -> None:
    spec = SPEC.model_copy(update={"noise_seed": None})
    ray = _fit("mult-vae", VAE | {"epochs": 1}, engines[2], spec=spec)
    assert ray.privacy_guarantee_.noise_seed is None and ray.privacy_guarantee_.is_private


# -------------------------------------------------------------------- one step on two workers
def _step_worker(config: dict) -> None:
    """Two workers, one logical batch: (a) the non-private DDP step, (b) the DP-SGD step with
    no noise and no clipping, (c) the DP-SGD noise alone (zero gradients)."""
    import ray.train
    import torch

    from privrank.distributed.ray_train import TorchWorkers
    from privrank.models.parallel import all_reduce_gradients, share
    from privrank.models.vae import MultVAENetwork, vae_loss, vae_user_losses
    from privrank.privacy.dpsgd import DPSGDTrainer, GhostClipping, VmapClipping
    from privrank.privacy.mechanism import _noise_scale_for_testing

    torch.randn_like = torch.zeros_like  # z = μ: the step is deterministic on both workers
    workers = TorchWorkers()
    x = (torch.rand(11, 30, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    x[:, 0] = 1.0
    mine = share(workers, x)

    def network():
        torch.manual_seed(3)
        return MultVAENetwork(30, 12, 4, 0.0).train()

    plain = network()
    vae_loss(mine, *plain(mine), 0.2).backward()
    all_reduce_gradients(workers, list(plain.parameters()), float(len(mine)))
    # Oracle: autograd of the whole batch's mean loss in this process.
    whole = network()
    vae_loss(x, *whole(x), 0.2).backward()

    private = network()
    engine = GhostClipping(private, lambda m, b: vae_user_losses(b, *m(b), 0.2), 1e9)
    with _noise_scale_for_testing(0.0):
        quiet = DPSGDTrainer(
            engine,
            None,
            noise_multiplier=2.0,
            expected_batch_size=len(x),
            noise=torch.Generator().manual_seed(0),
            reducer=workers,
        )
    quiet.privatise(mine)
    engine.close()

    m, c, b = 1.7, 0.5, 4.0
    named = {"w": torch.zeros(40_000, requires_grad=True)}
    noisy = DPSGDTrainer(
        VmapClipping(named, lambda p, local, data: (p["w"][data[0]] * 0.0).sum(), c),
        None,
        noise_multiplier=m,
        expected_batch_size=b,
        noise=torch.Generator().manual_seed(1 + workers.rank),
        reducer=workers,
    )
    noisy.privatise((), (share(workers, torch.arange(8).reshape(8, 1)),))
    noise = named["w"].grad
    spread = torch.tensor([float(noise.std()), float(noise.mean())], dtype=torch.float64)
    copy = noise.clone()
    workers.broadcast(copy)  # rank 0's, to check that every replica holds the same
    differs = torch.tensor([float((copy - noise).abs().max())], dtype=torch.float64)
    workers.all_reduce([differs])

    def gap(a, b):
        return max(float((p.grad - q.grad).abs().max()) for p, q in zip(a, b, strict=True))

    found = {
        "world": workers.world_size,
        "ddp_vs_whole": gap(plain.parameters(), whole.parameters()),
        "dp_vs_ddp": gap(private.parameters(), plain.parameters()),
        "noise_std": float(spread[0]),
        "noise_mean": float(spread[1]),
        "replicas_differ": float(differs[0]),
        "expected_std": m * c / b,
    }
    with tempfile.TemporaryDirectory() as scratch:  # Ray Train returns metrics with a checkpoint
        checkpoint = None
        if workers.rank == 0:
            (Path(scratch) / "found.json").write_text(json.dumps(found))
            checkpoint = ray.train.Checkpoint.from_directory(scratch)
        ray.train.report(found, checkpoint=checkpoint)


def test_one_ddp_step_and_its_dp_sgd_step_on_two_workers(ray_local, tmp_path: Path) -> None:
    import sys

    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    result = TorchTrainer(
        _step_worker,
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name="step", storage_path=str(tmp_path)),
    ).fit()
    with result.checkpoint.as_directory() as directory:
        found = json.loads((Path(directory) / "found.json").read_text())
    assert found["world"] == 2
    assert found["ddp_vs_whole"] < 1e-6  # DDP step = the whole batch's step
    assert found["dp_vs_ddp"] < 1e-6  # zero noise, no clipping = the non-private DDP step
    assert found["replicas_differ"] == 0.0
    # Noise once: std m·C/b (4e4 draws: ±1% at 3σ); noise on both workers would be √2 × it.
    assert found["noise_std"] == pytest.approx(found["expected_std"], rel=0.02)
    assert abs(found["noise_mean"]) < 4 * found["expected_std"] / math.sqrt(40_000)

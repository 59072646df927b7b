"""A Ray Train worker killed mid-fit: the fit resumes and ends as if nothing had happened.

One worker of a two-worker data-parallel fit kills its own process (SIGKILL: no clean-up, no
exception) at its n-th ``torch.distributed.all_reduce`` — in the middle of an epoch, after at
least one epoch's checkpoint. Oracles: the uninterrupted two-worker fit with the same seed
(written without checkpoints), whose weights and losses the recovered fit must equal bit for
bit; for a private fit, the single-process fit with the same spec and noise seed (to float
tolerance, as in test_ray_train.py), the same guarantee, and one committed charge in the ledger.

Each Ray Train run starts worker processes that import torch and privrank (tens of seconds on
the shared 2-core machine), so these tests are marked ``slow``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.distributed._lost_worker import (
    DATA,
    SASREC,
    SPEC,
    assert_private_fit_charged_once,
    ray_engine,
)

from privrank.errors import DistributedFitError
from privrank.models import FitOptions, create_model

pytestmark = [pytest.mark.ray, pytest.mark.slow]

VAE = {"hidden": 32, "latent": 8, "epochs": 4, "batch_size": 40}


def _dying_worker(marker: str, after_epoch: int, at_call: int, config: dict) -> None:
    """The Ray Train worker of :mod:`privrank.distributed.ray_train`, except that rank 1 kills
    its own process at its ``at_call``-th all-reduce after its report of epoch
    ``after_epoch`` (0: the report at the start of the attempt), once (``marker`` records
    that it did)."""
    import ray.train
    import torch.distributed as dist

    from privrank.distributed import ray_train

    real_all_reduce, real_report = dist.all_reduce, ray.train.report
    calls: list[int] = []  # all-reduces since the report of epoch ``after_epoch``

    def report(metrics, *args, **kwargs):
        real_report(metrics, *args, **kwargs)
        if metrics.get("epoch") == after_epoch:
            calls.append(0)

    def all_reduce(tensor, *args, **kwargs):
        if calls:
            calls[0] += 1
            if dist.get_rank() == 1 and calls[0] == at_call and not os.path.exists(marker):
                Path(marker).write_text(f"epoch {after_epoch}, call {at_call}")
                os.kill(os.getpid(), signal.SIGKILL)
        return real_all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = all_reduce
    ray.train.report = report
    ray_train._train_worker(config)


@pytest.fixture
def dying(ray_local, monkeypatch, tmp_path: Path):
    """Make the next Ray Train fits kill one worker at the given all-reduce; yields a setter
    that returns the marker file written when the worker dies."""
    from ray import cloudpickle

    from privrank.distributed import ray_train

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests

    def arm(after_epoch: int, at_call: int) -> Path:
        marker = tmp_path / f"died-after-{after_epoch}-at-{at_call}"
        worker = functools.partial(_dying_worker, str(marker), after_epoch, at_call)
        monkeypatch.setattr(ray_train, "_train_worker", worker)
        return marker

    return arm


def _assert_same_fit(a, b) -> None:
    mine = {k: v for k, v in a._state().items() if k.startswith("network.")}
    theirs = {k: v for k, v in b._state().items() if k.startswith("network.")}
    assert mine.keys() == theirs.keys() and mine
    for key in mine:
        np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)
    np.testing.assert_array_equal(a.loss_history_, b.loss_history_)


@pytest.mark.parametrize(("name", "config"), [("sasrec", SASREC), ("mult-vae", VAE)])
def test_a_worker_killed_mid_fit_resumes_to_the_uninterrupted_fit(dying, name, config) -> None:
    whole = create_model(name, config).fit(
        DATA, FitOptions(seed=5, threads=1, engine=ray_engine(0))
    )
    assert whole.recoveries_ == 0 and whole.resumed_from_epoch_ is None
    marker = dying(2, 3)
    epochs: list[int] = []
    recovered = create_model(name, config).fit(
        DATA,
        FitOptions(
            seed=5, threads=1, engine=ray_engine(1), progress=lambda r: epochs.append(r.epoch)
        ),
    )
    assert marker.exists(), "no worker died: the test tested nothing"
    assert recovered.recoveries_ == 1
    # Epoch 3 was lost. Every worker waits until epoch 2's checkpoint is committed before it
    # starts epoch 3 (ray_train._WorkerReports.report), so the restart resumes from epoch 2.
    assert recovered.resumed_from_epoch_ == 2
    # The driver hears of every epoch once: the selection run's, then (SASRec) the refit's.
    assert epochs == list(range(1, 5 + getattr(whole, "refit_epochs_", 0)))
    assert name != "sasrec" or whole.refit_epochs_ == whole.best_epoch_ >= 1


def test_a_worker_killed_in_sasrecs_refit_resumes_from_the_refit_checkpoint(dying) -> None:
    # The refit is the fit's second loop, checkpointed as its own stage: a worker lost in the
    # refit's epoch 3 (after its epoch-2 checkpoint, progress epoch 4 + 2 = 6) takes the
    # selection run's finished checkpoint (nothing retrained) and goes on from the refit's.
    whole = create_model("sasrec", SASREC).fit(
        DATA, FitOptions(seed=5, threads=1, engine=ray_engine(0))
    )
    run = len(whole.loss_history_)
    assert run == SASREC["epochs"] and whole.refit_epochs_ >= 3, "the refit is too short"
    marker = dying(run + 2, 3)
    epochs: list[int] = []
    recovered = create_model("sasrec", SASREC).fit(
        DATA,
        FitOptions(
            seed=5, threads=1, engine=ray_engine(1), progress=lambda r: epochs.append(r.epoch)
        ),
    )
    assert marker.exists(), "no worker died: the test tested nothing"
    assert recovered.recoveries_ == 1
    assert recovered.resumed_from_epoch_ == run + 2  # numbered as the progress reports
    assert recovered.refit_epochs_ == whole.refit_epochs_
    assert epochs == list(range(1, run + whole.refit_epochs_ + 1))
    _assert_same_fit(recovered, whole)
    _assert_same_fit(recovered, whole)


def test_a_failed_run_resumes_from_the_checkpoint_directory(dying, tmp_path: Path) -> None:
    # No restarts allowed: the run fails; running the same fit again with the same checkpoint
    # directory resumes from the epoch Ray Train's storage holds there.
    whole = create_model("mult-vae", VAE).fit(
        DATA, FitOptions(seed=5, threads=1, engine=ray_engine(0))
    )
    marker = dying(2, 3)
    options = FitOptions(seed=5, threads=1, engine=ray_engine(0), checkpoint_dir=tmp_path / "ck")
    with pytest.raises(DistributedFitError):
        create_model("mult-vae", VAE).fit(DATA, options)
    assert marker.exists()
    assert list((tmp_path / "ck" / "ray-train").iterdir())  # the run's storage is kept
    again = create_model("mult-vae", VAE).fit(DATA, options)
    assert again.recoveries_ == 0 and again.resumed_from_epoch_ in (1, 2)
    _assert_same_fit(again, whole)


def test_a_private_fit_with_a_killed_worker_is_charged_once(dying, tmp_path: Path) -> None:
    # A private fit writes no state: it starts over with the same noise seed, draws the same
    # batches and noise, and releases the uninterrupted fit's weights; the ledger sees one fit.
    # 24 DP-SGD steps: the loss lands mid-fit (epoch 2).
    assert_private_fit_charged_once(tmp_path, lambda: dying(0, 12), "ray train, one worker lost")


def test_a_private_fit_refuses_a_checkpoint_directory_on_ray(ray_local, tmp_path: Path) -> None:
    from privrank.errors import ConfigError

    options = FitOptions(privacy=SPEC, engine=ray_engine(1), checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="private fit writes no checkpoints"):
        create_model("sasrec", SASREC).fit(DATA, options)
    assert not any(tmp_path.iterdir())

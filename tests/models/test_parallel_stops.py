"""Collective stops of data-parallel fits (models/_epochs.py, models/parallel.py).

Two workers meet in a real gloo group (privrank.testing.workers): as threads for the epoch loop
alone, as spawned processes for SASRec and Mult-VAE fits. Their clocks tick at different speeds
and their validation metrics disagree on purpose. Before stops were collective, the worker whose
clock ran past ``max_seconds`` (or whose metric stopped improving) stopped while the other began
the next epoch and waited in the gradient sum until gloo's timeout. The oracles are worked out
by hand from the rule (largest elapsed time, rank 0's metrics) and, for the models, fits of the
same two workers whose epoch count is fixed in advance (no clock, no early stopping).
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch

from privrank.errors import DistributedFitError
from privrank.models._epochs import EpochSchedule, LoopState, Validation, run_epochs
from privrank.models.base import FitOptions
from privrank.models.parallel import gathered, stop_agreement
from privrank.models.sasrec import SASRec
from privrank.models.vae import MultVAE
from privrank.testing import synthetic_interactions
from privrank.testing.workers import GlooWorker, run_in_processes, run_in_threads


class TickingClock:
    """Reads ``0, step, 2 step, ...``: the loop reads it at its start and after each epoch, so
    after epoch ``e`` it counts ``e · step`` seconds."""

    def __init__(self, step: float):
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return (self.reads - 1) * self.step


class Replica:
    """One worker's share of a fake fit: every epoch all-reduces a 'gradient' (as every step of a
    real fit does), so a worker that trains an epoch the others skip waits for them."""

    def __init__(self, worker: GlooWorker, ndcg: list[float] | None = None):
        self.worker = worker
        self.weight = torch.zeros(2, dtype=torch.float64)
        self.epoch = 0
        self.ndcg = ndcg or []
        self.restored: list[float] = []
        self.saved: list[LoopState] = []

    def train_epoch(self, epoch: int) -> float:
        gradient = torch.tensor([float(epoch), 1.0 + self.worker.rank], dtype=torch.float64)
        self.worker.all_reduce([gradient])
        self.weight += gradient
        self.epoch = epoch
        return 1.0 / epoch

    def validation(self) -> Validation:
        def evaluate() -> dict[str, float]:
            value = self.ndcg[self.epoch - 1]
            return {"ndcg@10": value, "hr@10": value / 2}

        def restore(state: dict[str, Any]) -> None:
            self.restored.append(float(state["weight"][0]))

        return Validation(evaluate, lambda: {"weight": self.weight.clone()}, restore)


# ------------------------------------------------------------------ the epoch loop, two threads
@pytest.mark.parametrize("steps", [(4.0, 1.0), (1.0, 4.0)], ids=["rank0-slow", "rank1-slow"])
def test_the_time_budget_counts_the_slowest_worker_and_all_stop_together(steps):
    # Budget 10 s. The slow clock counts 4, 8, 12 after epochs 1-3: past the budget after
    # epoch 3. The fast one counts 3 then: alone, it would go on to epoch 8.
    def work(worker: GlooWorker) -> tuple[Any, ...]:
        replica = Replica(worker)
        history = run_epochs(
            EpochSchedule(epochs=8, max_seconds=10.0),
            replica.train_epoch,
            clock=TickingClock(steps[worker.rank]),
            save=replica.saved.append,
            agree=stop_agreement(worker),
        )
        return history, replica.weight.tolist(), replica.saved

    (h0, w0, saved0), (h1, w1, saved1) = run_in_threads(work, timeout_s=10)
    for history in (h0, h1):
        assert history.epochs_run == 3 and history.stopped_by == "time budget"
        assert history.elapsed_s == 12.0
        assert history.losses.tolist() == [1.0, 1 / 2, 1 / 3]
    # Sum over epochs 1..3 of the all-reduced gradient [2e, 1 + 2] = [12, 9] on both.
    assert w0 == w1 == [12.0, 9.0]
    # Both checkpoint the same loop state after every epoch: the agreed seconds, one end.
    assert [s.elapsed_s for s in saved0] == [s.elapsed_s for s in saved1] == [4.0, 8.0, 12.0]
    assert [s.finished for s in saved0] == [s.finished for s in saved1]
    assert saved0[-1].finished == "time budget"


def test_early_stopping_follows_rank_zeros_metrics_on_every_worker():
    # Rank 0's NDCG@10 peaks at epoch 2; with patience 2 it stops after epoch 4 (epochs 3 and
    # 4 bring nothing). Rank 1's keeps rising: alone it would train all 8 epochs.
    ndcg = {
        0: [0.1, 0.3, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1],
        1: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
    }

    def work(worker: GlooWorker) -> tuple[Any, ...]:
        replica = Replica(worker, ndcg[worker.rank])
        history = run_epochs(
            EpochSchedule(epochs=8, patience=2),
            replica.train_epoch,
            validation=replica.validation(),
            agree=stop_agreement(worker),
        )
        return history, replica.restored

    (h0, restored0), (h1, restored1) = run_in_threads(work, timeout_s=10)
    expected = [[1, 0.1, 0.05], [2, 0.3, 0.15], [3, 0.2, 0.1], [4, 0.2, 0.1]]
    for history in (h0, h1):
        assert history.epochs_run == 4 and history.stopped_by == "early stopping"
        assert history.best_epoch == 2
        np.testing.assert_array_equal(history.evaluations, expected)
    # Each worker puts back its own replica's weights of epoch 2: 2 + 4 after two epochs.
    assert restored0 == restored1 == [6.0]


def test_an_agreed_validation_metric_decides_the_last_epoch_too():
    # Rank 0 stops early (patience 1, after epoch 2) while rank 1 would not: the time budget
    # plays no part, the last evaluation is rank 0's on both.
    ndcg = {0: [0.5, 0.4, 0.9, 0.9], 1: [0.5, 0.6, 0.7, 0.8]}

    def work(worker: GlooWorker) -> Any:
        replica = Replica(worker, ndcg[worker.rank])
        return run_epochs(
            EpochSchedule(epochs=4, patience=1),
            replica.train_epoch,
            validation=replica.validation(),
            agree=stop_agreement(worker),
        )

    for history in run_in_threads(work, timeout_s=10):
        assert history.epochs_run == 2 and history.best_epoch == 1
        assert history.evaluations[:, 1].tolist() == [0.5, 0.4]


def _state(epoch: int, finished: Any = None) -> LoopState:
    return LoopState(
        epoch=epoch,
        losses=(1.0,) * epoch,
        evaluations=(),
        best_value=-np.inf,
        best_epoch=0,
        best_state=None,
        stale=0,
        elapsed_s=float(epoch),
        finished=finished,
    )


@pytest.mark.parametrize(
    "resumes",
    [(_state(2), None), (_state(2), _state(3)), (_state(2, "epochs"), _state(2))],
    ids=["one-afresh", "other-epoch", "one-finished"],
)
def test_workers_resuming_from_different_points_all_raise_instead_of_hanging(resumes):
    def work(worker: GlooWorker) -> Any:
        try:
            run_epochs(
                EpochSchedule(epochs=4),
                Replica(worker).train_epoch,
                resume=resumes[worker.rank],
                agree=stop_agreement(worker),
            )
        except DistributedFitError as exc:
            return str(exc)
        return None

    messages = run_in_threads(work, timeout_s=10)
    assert all(m is not None and "resume from different points" in m for m in messages)
    assert messages[0] == messages[1]


def test_workers_resuming_from_the_same_epoch_go_on_with_the_agreed_time():
    # Both resume after epoch 2 with 5 s spent; their clocks then count 1 s and 3 s per epoch,
    # so the agreed time after epoch 3 is 5 + 3 = 8 and after epoch 4 it is 11 > 10.
    def work(worker: GlooWorker) -> Any:
        return run_epochs(
            EpochSchedule(epochs=6, max_seconds=10.0),
            Replica(worker).train_epoch,
            clock=TickingClock([1.0, 3.0][worker.rank]),
            resume=LoopState(2, (1.0, 0.5), (), -np.inf, 0, None, 0, 5.0, None),
            agree=stop_agreement(worker),
        )

    for history in run_in_threads(work, timeout_s=10):
        assert history.epochs_run == 4 and history.stopped_by == "time budget"
        assert history.elapsed_s == 11.0


def test_gathered_rows_arrive_bit_for_bit():
    values = {
        0: [0.1, 1e-300, 1 / 3, 3.0],
        1: [float(np.nextafter(1.0, 2.0)), -7.5, np.inf, 2.0**-1074],
    }

    def work(worker: GlooWorker) -> np.ndarray:
        return gathered(worker, values[worker.rank])

    for table in run_in_threads(work, timeout_s=10):
        assert table.dtype == np.float64 and table.shape == (2, 4)
        assert table.tobytes() == np.array([values[0], values[1]]).tobytes()


def test_one_process_or_one_worker_decides_alone():
    class One:
        rank, world_size = 0, 1

    assert stop_agreement(None) is None
    assert stop_agreement(One()) is None  # type: ignore[arg-type]


# ------------------------------------------------------------------ SASRec and Mult-VAE fits
DATA = synthetic_interactions(n_users=120, n_items=40, seed=3)
SASREC = {"factors": 8, "blocks": 1, "max_length": 8, "negatives": 8, "batch_size": 32}
VAE = {"hidden": 16, "latent": 8, "batch_size": 32, "anneal_steps": 20}
#: Seconds per epoch on each rank's clock, and the budget: the slow clock (rank 0) is past
#: 10 s after epoch 3 (12 s), the fast one never within these fits.
STEPS, BUDGET = (4.0, 1.0), 10.0


def _fitted(model: Any, worker: GlooWorker) -> dict[str, Any]:
    model.fit(DATA, FitOptions(seed=5, threads=1, parallel=worker))
    weights = {k: v.detach().numpy().copy() for k, v in model.network_.state_dict().items()}
    return {
        "weights": weights,
        "losses": model.loss_history_.tolist(),
        "evaluations": model.validation_history_.tolist(),
        "best_epoch": int(model.best_epoch_),
        "refit_epochs": getattr(model, "refit_epochs_", None),
    }


def _ticking(step: float) -> Any:
    """The torch models' loop, reading a :class:`TickingClock` of ``step`` seconds per epoch
    (a new one for each loop: SASRec's refit is a second loop)."""
    from privrank.models import _torch_training

    def loop(*args: Any, **kwargs: Any) -> Any:
        return run_epochs(*args, clock=TickingClock(step), **kwargs)

    return mock.patch.object(_torch_training, "run_epochs", loop)


def _injected(values: list[float]) -> Any:
    """Every validation of the fit returns the next of ``values`` as NDCG@10."""
    from privrank.models import _torch_training

    stream = iter(values)

    def evaluate(self: Any, score: Any, k: int = 10, batch_size: int = 1024) -> dict[str, float]:
        value = next(stream)
        return {"ndcg@10": value, "hr@10": value}

    return mock.patch.object(_torch_training.ValidationSet, "evaluate", evaluate)


def _fits(worker: GlooWorker) -> dict[str, dict[str, Any]]:
    """Every model scenario on one worker (run in its own process), with its oracle."""
    step = STEPS[worker.rank]
    out: dict[str, dict[str, Any]] = {}
    # The time budget: both stop after epoch 3; the oracle trains 3 epochs, no budget.
    with _ticking(step):
        out["sasrec-budget"] = _fitted(
            SASRec(**SASREC, epochs=6, max_seconds=BUDGET, carve_validation=False), worker
        )
        out["vae-budget"] = _fitted(MultVAE(**VAE, epochs=6, max_seconds=BUDGET), worker)
    out["sasrec-3"] = _fitted(SASRec(**SASREC, epochs=3, carve_validation=False), worker)
    out["vae-3"] = _fitted(MultVAE(**VAE, epochs=3), worker)
    # The refit's budget: the selection run's 3 epochs end at 12 s on rank 0's clock (3 s on
    # rank 1's), so no time is left for the refit on either; the oracle asks for none.
    with _ticking(step):
        out["sasrec-refit"] = _fitted(
            SASRec(**SASREC, epochs=3, patience=0, max_seconds=BUDGET), worker
        )
    out["sasrec-no-refit"] = _fitted(SASRec(**SASREC, epochs=3, patience=0, refit=False), worker)
    # Early stopping: rank 0's metric peaks at epoch 2 (patience 1: stop after epoch 3), rank
    # 1's keeps rising; the oracle trains 2 epochs and keeps the second.
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    with _injected([0.1, 0.3, 0.2, 0.2, 0.2, 0.2] if worker.rank == 0 else rising):
        out["sasrec-early"] = _fitted(SASRec(**SASREC, epochs=6, patience=1, refit=False), worker)
    with _injected(rising):
        out["sasrec-2"] = _fitted(SASRec(**SASREC, epochs=2, patience=0, refit=False), worker)
    return out


@pytest.fixture(scope="module")
def fits() -> list[dict[str, dict[str, Any]]]:
    return run_in_processes(_fits, world_size=2, timeout_s=120, deadline_s=480)


def _same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("model", ["sasrec", "vae"])
def test_fits_stop_on_the_slowest_clock_after_the_same_epoch(fits, model):
    run = [f[f"{model}-budget"] for f in fits]
    oracle = [f[f"{model}-3"] for f in fits]
    for rank in (0, 1):
        assert len(run[rank]["losses"]) == 3 and run[rank]["best_epoch"] == 3
        assert run[rank]["losses"] == oracle[rank]["losses"]
        _same_weights(run[rank]["weights"], oracle[rank]["weights"])
    _same_weights(run[0]["weights"], run[1]["weights"])  # the replicas stayed one network


def test_sasrecs_refit_starts_on_no_worker_when_one_has_spent_the_budget(fits):
    for f in fits:
        run, oracle = f["sasrec-refit"], f["sasrec-no-refit"]
        assert run["refit_epochs"] == 0 and len(run["losses"]) == 3
        assert run["evaluations"] == oracle["evaluations"]
        _same_weights(run["weights"], oracle["weights"])
    _same_weights(fits[0]["sasrec-refit"]["weights"], fits[1]["sasrec-refit"]["weights"])


def test_early_stopping_of_a_fit_follows_rank_zero(fits):
    for f in fits:
        run, oracle = f["sasrec-early"], f["sasrec-2"]
        assert len(run["losses"]) == 3 and run["best_epoch"] == 2
        assert [e[1] for e in run["evaluations"]] == [0.1, 0.3, 0.2]
        assert run["losses"][:2] == oracle["losses"]
        _same_weights(run["weights"], oracle["weights"])
    _same_weights(fits[0]["sasrec-early"]["weights"], fits[1]["sasrec-early"]["weights"])
